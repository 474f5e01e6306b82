#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/{codec,reader,addr,pickle}/.

The files are checked in; rerun this after changing it (it empties those directories first).
Seeds are named after what they hold, so that a failing one in `ctest -R fuzz` says what broke.
Crashes found by fuzzing go in regressions/<target>/ instead, by hand, never rewritten here.

  codec   one MessagePack value (or a malformed, truncated, too deep or trailing one), built by
          hand so that every header form is there, not only the smallest ones a packer picks
  reader  the header described in fuzz_reader.c (request, limit, delimiter, split seed), then
          the stream
  addr    --listen address text, good and bad
  pickle  pickles written by Python's pickle (every protocol, optimized by pickletools too) and
          hostile ones by hand
"""
import os
import pickle
import pickletools
import re
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- MessagePack, by hand ----

def nil():
    return b"\xc0"


def boolean(v):
    return b"\xc3" if v else b"\xc2"


def u8(v): return b"\xcc" + struct.pack(">B", v)
def u16(v): return b"\xcd" + struct.pack(">H", v)
def u32(v): return b"\xce" + struct.pack(">I", v)
def u64(v): return b"\xcf" + struct.pack(">Q", v)
def i8(v): return b"\xd0" + struct.pack(">b", v)
def i16(v): return b"\xd1" + struct.pack(">h", v)
def i32(v): return b"\xd2" + struct.pack(">i", v)
def i64(v): return b"\xd3" + struct.pack(">q", v)
def f32(v): return b"\xca" + struct.pack(">f", v)
def f64(v): return b"\xcb" + struct.pack(">d", v)


def fixint(v):
    assert -32 <= v <= 127
    return struct.pack(">b", v) if v < 0 else bytes([v])


def str_(b, form=None):
    """A str with the given header form: 'fix', 8, 16 or 32 (default: the smallest)."""
    if isinstance(b, str):
        b = b.encode()
    n = len(b)
    if form is None:
        form = "fix" if n < 32 else 8 if n < 256 else 16 if n < 65536 else 32
    head = {"fix": lambda: bytes([0xa0 | n]), 8: lambda: b"\xd9" + struct.pack(">B", n),
            16: lambda: b"\xda" + struct.pack(">H", n), 32: lambda: b"\xdb" + struct.pack(">I", n)}
    return head[form]() + b


def bin_(b, form=8):
    n = len(b)
    head = {8: b"\xc4" + struct.pack(">B", n), 16: b"\xc5" + struct.pack(">H", n),
            32: b"\xc6" + struct.pack(">I", n)}
    return head[form] + b


def array(items, form=None):
    n = len(items)
    if form is None:
        form = "fix" if n < 16 else 16
    head = {"fix": lambda: bytes([0x90 | n]), 16: lambda: b"\xdc" + struct.pack(">H", n),
            32: lambda: b"\xdd" + struct.pack(">I", n)}
    return head[form]() + b"".join(items)


def map_(pairs, form=None):
    n = len(pairs)
    if form is None:
        form = "fix" if n < 16 else 16
    head = {"fix": lambda: bytes([0x80 | n]), 16: lambda: b"\xde" + struct.pack(">H", n),
            32: lambda: b"\xdf" + struct.pack(">I", n)}
    return head[form]() + b"".join(k + v for k, v in pairs)


def nested(depth, inner=b"\xc0", head=b"\x91"):
    return head * depth + inner


def codec_seeds():
    s = {}
    s["nil"] = nil()
    s["false"] = boolean(False)
    s["true"] = boolean(True)
    s["fixint_0"] = fixint(0)
    s["fixint_127"] = fixint(127)
    s["negfixint_-1"] = fixint(-1)
    s["negfixint_-32"] = fixint(-32)
    s["uint8_max"] = u8(255)
    s["uint16_max"] = u16(65535)
    s["uint32_max"] = u32(2**32 - 1)
    s["uint64_maxinteger"] = u64(2**63 - 1)
    s["uint64_above_maxinteger"] = u64(2**63)
    s["uint64_max"] = u64(2**64 - 1)
    s["uint8_small_nonminimal"] = u8(1)
    s["int8_min"] = i8(-128)
    s["int16_min"] = i16(-32768)
    s["int32_min"] = i32(-2**31)
    s["int64_min"] = i64(-2**63)
    s["int64_max"] = i64(2**63 - 1)
    s["int64_positive_nonminimal"] = i64(5)
    s["float32_1.5"] = f32(1.5)
    s["float32_nan"] = b"\xca\x7f\xc0\x00\x00"
    s["float32_inf"] = f32(float("inf"))
    s["float32_integral"] = f32(3.0)
    s["float64_pi"] = f64(3.141592653589793)
    s["float64_-0"] = f64(-0.0)
    s["float64_-inf"] = f64(float("-inf"))
    s["float64_nan"] = b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x01"
    s["float64_2^63"] = f64(2.0**63)
    s["fixstr_empty"] = str_(b"")
    s["fixstr_hello"] = str_("hello")
    s["fixstr_31"] = str_(b"x" * 31)
    s["str8"] = str_("héllo wörld", 8)
    s["str8_32"] = str_(b"y" * 32)
    s["str16"] = str_("str16 header", 16)
    s["str16_300"] = str_(b"z" * 300)
    s["str32"] = str_("str32 header", 32)
    s["str_invalid_utf8"] = str_(b"\xff\xfe\xc0\x80\xed\xa0\x80")
    s["str_utf8_4byte"] = str_("\U0001f600 \u20ac \u00e9")
    s["bin8"] = bin_(b"\x00\x01\x02\xff", 8)
    s["bin8_empty"] = bin_(b"", 8)
    s["bin16"] = bin_(b"bin16 payload", 16)
    s["bin32"] = bin_(b"\x80\x81bin32", 32)
    s["bin_valid_utf8"] = bin_(b"text in a bin", 8)
    s["array_empty"] = array([])
    s["array_123"] = array([fixint(1), fixint(2), fixint(3)])
    s["array_holes"] = array([nil(), fixint(1), nil(), nil()])
    s["array16"] = array([fixint(i) for i in range(20)], 16)
    s["array16_small"] = array([str_("a")], 16)
    s["array32"] = array([boolean(True), nil(), f64(0.5)], 32)
    s["map_empty"] = map_([])
    s["map_simple"] = map_([(str_("a"), fixint(1)), (str_("b"), array([boolean(True), nil()]))])
    s["map16"] = map_([(fixint(i), str_("v%d" % i)) for i in range(17)], 16)
    s["map32"] = map_([(str_("k"), map_([]))], 32)
    s["map_int_keys_as_array"] = map_([(fixint(2), str_("b")), (fixint(1), str_("a"))])
    s["map_float_key_integral"] = map_([(f64(1.0), str_("one")), (f64(2.5), str_("x"))])
    s["map_float_key_-0"] = map_([(f64(-0.0), str_("zero"))])
    s["map_nil_key"] = map_([(nil(), fixint(1))])
    s["map_nan_key"] = map_([(f64(float("nan")), fixint(1))])
    s["map_nil_value"] = map_([(str_("gone"), nil()), (str_("kept"), fixint(1))])
    s["map_duplicate_keys"] = map_([(str_("k"), fixint(1)), (str_("k"), fixint(2))])
    s["map_table_key"] = map_([(array([fixint(1)]), str_("array key")),
                               (map_([]), str_("map key"))])
    s["map_bool_keys"] = map_([(boolean(True), fixint(1)), (boolean(False), fixint(0))])
    s["map_binary_key"] = map_([(bin_(b"\x00\xff"), fixint(7))])
    s["mixed"] = map_([
        (str_("ints"), array([fixint(0), fixint(-1), u8(200), i16(-300), u32(70000),
                              i64(-2**40), u64(2**64 - 1)])),
        (str_("floats"), array([f32(0.25), f64(-1e300), f64(5e-324)])),
        (str_("strs"), array([str_("", 8), str_("\u00fc", 16), bin_(b"\xc1", 32)])),
        (str_("nested"), map_([(str_("deeper"), array([map_([(fixint(1), array([]))])]))])),
        (fixint(-5), boolean(False)),
    ])
    s["nested_31"] = nested(31)
    s["nested_32"] = nested(32)
    s["nested_33"] = nested(33)
    s["nested_64_maps"] = nested(64, fixint(1), b"\x81\xa1k")
    s["nested_99"] = nested(99)
    s["nested_100"] = nested(100)
    s["nested_101_too_deep"] = nested(101)
    s["nested_200_too_deep"] = nested(200, array([]))
    s["nested_40_mixed_keys"] = b"\x81\x91" * 20 + b"\xc0" + (b"\xc0" * 20)
    s["wide_and_deep"] = array([nested(40, fixint(i)) for i in range(5)])
    s["fixext1"] = b"\xd4\x01\x00"
    s["fixext16"] = b"\xd8\x02" + b"\x00" * 16
    s["ext8"] = b"\xc7\x03\x05abc"
    s["ext16_in_array"] = array([b"\xc8\x00\x01\x07z"])
    s["ext32_timestamp"] = b"\xc9\x00\x00\x00\x04\xff\x00\x00\x00\x01"
    s["ext8_timestamp96"] = b"\xc7\x0c\xff" + b"\x00" * 11 + b"\x01"
    s["ext_as_map_key"] = b"\x81\xd4\x01\x00\x01"
    s["nil_in_array_and_map"] = array([b"\xc0", map_([(str_("k"), b"\xc0")]), b"\xc0"])
    s["uint64_max_and_bin_key"] = map_([(bin_(b"k", 8), b"\xcf" + b"\xff" * 8)])
    s["empty_containers"] = array([array([]), map_([]), array([array([])])])
    s["reserved_c1"] = b"\xc1"
    s["reserved_in_map"] = map_([(str_("k"), b"\xc1")])
    s["truncated_str8"] = b"\xd9\x10abc"
    s["truncated_uint64"] = b"\xcf\x00\x00"
    s["truncated_array16"] = b"\xdc\x03\xe8" + b"\xc0" * 10
    s["truncated_map"] = b"\x82\xa1a\x01\xa1b"
    s["truncated_header_only"] = b"\xdb\x00"
    s["huge_array32"] = b"\xdd\xff\xff\xff\xff\xc0"
    s["huge_map32"] = b"\xdf\x7f\xff\xff\xff\xc0\xc0"
    s["huge_str32"] = b"\xdb\xff\xff\xff\xffabc"
    s["huge_bin32"] = b"\xc6\x00\x10\x00\x01xyz"
    s["trailing_bytes"] = array([fixint(1)]) + b"\xc0\xc0"
    s["two_values"] = str_("first") + str_("second")
    s["float32_array"] = array([f32(i / 3) for i in range(15)])
    return s


# ---- reader: header (fuzz_reader.c) + stream ----

LINE, UNTIL, COUNT, ANY, ALL = range(5)
PIECES_64, BYTEWISE, WHOLE, MIXED = range(4)


def reader(kind, split, amount, stream, delim=b"", seed=0x12345678):
    if amount == "huge":
        amount_bytes = bytes([0, 0xff])  # math.maxinteger
    else:
        amount_bytes = struct.pack("<H", amount)
    dl = (len(delim) - 1) % 8 if kind == UNTIL else 0
    assert kind != UNTIL or 1 <= len(delim) <= 8
    head = bytes([kind + 5 * split]) + amount_bytes + bytes([dl]) + struct.pack("<I", seed)
    return head + (delim if kind == UNTIL else b"") + stream


def reader_seeds():
    s = {}
    lines = b"hello\nworld\r\n\r\n\nsecond to last\r\nno newline at the end"
    s["line_pieces"] = reader(LINE, PIECES_64, 100, lines)
    s["line_bytewise"] = reader(LINE, BYTEWISE, 100, lines)
    s["line_whole"] = reader(LINE, WHOLE, 100, lines)
    s["line_mixed"] = reader(LINE, MIXED, 100, lines, seed=0xdeadbeef)
    s["line_crlf_at_limit"] = reader(LINE, BYTEWISE, 4, b"abcd\r\nabcd\rx\nabcde\r\nab\r")
    s["line_long"] = reader(LINE, PIECES_64, 16,
                            b"short\n" + b"L" * 100 + b"\nafter the long one\n" + b"M" * 40)
    s["line_long_bytewise"] = reader(LINE, BYTEWISE, 8, b"x" * 30 + b"\r\nok\n" + b"y" * 9)
    s["line_limit_0"] = reader(LINE, MIXED, 0, b"\n\r\na\nbb\r\n\n")
    s["line_empty_stream"] = reader(LINE, WHOLE, 10, b"")
    s["line_only_cr"] = reader(LINE, BYTEWISE, 3, b"\r\r\r\r\r\r\r\n\r")
    s["line_http"] = reader(LINE, PIECES_64, 8192,
                            b"GET / HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n")
    s["line_huge_limit"] = reader(LINE, PIECES_64, "huge", b"a line\nand half a line")
    s["until_crlfcrlf"] = reader(UNTIL, BYTEWISE, 200,
                                 b"Host: a\r\nX: b\r\n\r\nbody\r\n\r\r\n\r\n", b"\r\n\r\n")
    s["until_boundary"] = reader(UNTIL, MIXED, 64,
                                 b"part one--boundarypart two-boundary--boundary--bound",
                                 b"--bounda")
    s["until_self_overlap"] = reader(UNTIL, BYTEWISE, 10, b"aaab" * 5 + b"aaaaab" + b"aa",
                                     b"aab")
    s["until_nul"] = reader(UNTIL, PIECES_64, 5, b"one\0two\0three!\0\0", b"\0")
    s["until_too_long"] = reader(UNTIL, MIXED, 3, b"abcd--ef--" + b"g" * 50 + b"-",
                                 b"--")
    s["until_8_byte_delim"] = reader(UNTIL, PIECES_64, 20,
                                     b"x12345678y1234567" + b"8" * 3 + b"12345678", b"12345678")
    s["until_limit_0"] = reader(UNTIL, BYTEWISE, 0, b"ab|c||d|", b"|")
    s["count_3"] = reader(COUNT, PIECES_64, 3, b"abcdefghij")
    s["count_1_bytewise"] = reader(COUNT, BYTEWISE, 1, b"xyz")
    s["count_0"] = reader(COUNT, WHOLE, 0, b"anything")
    s["count_large"] = reader(COUNT, MIXED, 1000, b"q" * 2500)
    s["any_5"] = reader(ANY, PIECES_64, 5, b"receiveany takes what is there, up to max")
    s["any_bytewise"] = reader(ANY, BYTEWISE, 1, b"abc")
    s["any_big"] = reader(ANY, MIXED, 4096, b"w" * 700)
    s["all_fits"] = reader(ALL, PIECES_64, 1000, b"everything until the end\n" * 4)
    s["all_too_large"] = reader(ALL, BYTEWISE, 10, b"more than ten bytes")
    s["all_exact"] = reader(ALL, MIXED, 10, b"0123456789")
    s["all_empty"] = reader(ALL, WHOLE, 0, b"")
    return s


# ---- addr: --listen text ----

def addr_seeds():
    good = ["127.0.0.1:80", "[::1]:9090", "*:0", "unix:/tmp/x", "udp:0.0.0.0:53", "udp:[::]:53",
            "udp:*:9", "localhost:8080", "0.0.0.0:65535", ":80", "[]:80", "[*]:1", "[udp]:2",
            "[unix]:3", "a]:4", "[fe80::1%eth0]:443", "host: 80", "host:+80", "host:-0",
            "host:00080", "unix:relative/path", "unix:" + "p" * 107, "h" * 255 + ":1",
            "udp:udp:5", "tls:127.0.0.1:443", "tls:[::1]:9443", "tls:unix:/tmp/x", "tls:*:0",
            "tls:[udp]:2", "tls:tls:3"]
    bad = ["", ":", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "[::1]",
           "[::1]80", "::1:80", "unix:", "unix:" + "p" * 108, "udp:", "udp:unix:/x",
           "h" * 256 + ":1", "host:80x", "host:0x50", "host:99999999999999999999", "[::1:80",
           "host:1234567", "*:", "udp:[::1]", "tcp://host:80", "tls:", "tls:udp:0.0.0.0:53",
           "udp:tls:1.2.3.4:5", "tls:unix:"]
    def name(kind, i, a):
        return "%s_%02d_%s" % (kind, i, re.sub(r"[^A-Za-z0-9.]+", "_", a)[:40])
    seeds = {name("good", i, a): a.encode() for i, a in enumerate(good)}
    seeds.update({name("bad", i, a): a.encode() for i, a in enumerate(bad)})
    return seeds


# ---- pickle: by Python's pickle, and by hand ----

class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def pickle_seeds():
    s = {}
    l = [1, "shared"]
    values = {
        "none": None, "true": True, "ints": [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1,
                                             2**31, 2**63 - 1, -2**63, 2**63, 2**64 - 1],
        "floats": [0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e300, 5e-324],
        "strs": ["", "hi", "h\u00e9llo \\ \n \r \x00", "\U0001f600", "\ud800", "x" * 300],
        "tutorial_dict": {1: "hi", 2: "there"},
        "nested": {"a": [1, (2, 3), {"b": None}], "c": (), "d": [], "e": {}},
        "shared": [l, l, (l,)],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        "deep_99": None,
    }
    deep = []
    for _ in range(98):
        deep = [deep]
    values["deep_99"] = deep
    recursive = []
    recursive.append(recursive)
    values["recursive_list"] = recursive
    for name, value in values.items():
        for protocol in range(6):
            data = pickle.dumps(value, protocol=protocol)
            s["py_%s_p%d" % (name, protocol)] = data
            s["py_%s_p%d_optimized" % (name, protocol)] = pickletools.optimize(data)
    for protocol in (3, 4, 5):
        s["py_bytes_p%d" % protocol] = pickle.dumps([b"\x00bin", b"x" * 300], protocol=protocol)
    for protocol in (4, 5):
        s["py_sets_p%d" % protocol] = pickle.dumps([{1, "a", (2, 3)}, frozenset({b"b"})],
                                                   protocol=protocol)
    s["py_bytearray_p5"] = pickle.dumps(bytearray(b"ba"), protocol=5)
    s["py_big_frame_p4"] = pickle.dumps(["x" * 10, "y" * 70000], protocol=4)
    for protocol in range(6):
        s["evil_reduce_p%d" % protocol] = pickle.dumps(Evil(), protocol=protocol)
        s["evil_set_p%d" % protocol] = pickle.dumps({1, 2}, protocol=protocol)
    for name, op in [("global", b"c"), ("stack_global", b"\x93"), ("reduce", b"R"),
                     ("build", b"b"), ("inst", b"i"), ("obj", b"o"), ("newobj", b"\x81"),
                     ("newobj_ex", b"\x92"), ("ext1", b"\x82"), ("ext2", b"\x83"),
                     ("ext4", b"\x84"), ("persid", b"P"), ("binpersid", b"Q"),
                     ("next_buffer", b"\x97"), ("readonly_buffer", b"\x98"), ("string", b"S"),
                     ("unknown", b"\xff")]:
        s["refused_" + name] = b"\x80\x04N" + op + b"."
    u64 = lambda n: n.to_bytes(8, "little")
    s["memo_get_missing"] = b"\x80\x04h\x05."
    s["memo_long_get_missing"] = b"\x80\x04N\x94j\x07\x00\x00\x00."
    s["memo_put_empty"] = b"p0\n."
    s["memoize_after_put"] = b"K\x07q\x05K\x08\x94(h\x05h\x01t."
    s["huge_binunicode8"] = b"\x80\x04\x8d" + u64(2**62) + b"abc."
    s["huge_binbytes8"] = b"\x80\x04\x8e" + u64(2**63) + b"abc."
    s["huge_bytearray8"] = b"\x80\x05\x96" + u64(2**40)
    s["huge_frame"] = b"\x80\x04\x95" + u64(2**40) + b"N."
    s["huge_binunicode"] = b"\x80\x03X\xff\xff\xff\xff"
    s["frame_crossed"] = b"\x80\x04\x95" + u64(3) + b"\x8c\x05hello."
    s["frame_in_frame"] = b"\x80\x04\x95" + u64(10) + b"\x95" + u64(1) + b"N."
    s["deep_101_lists"] = b"]" * 101 + b"a" * 100 + b"."
    s["marks_200"] = b"(" * 200 + b"N."
    s["stack_of_lists"] = b"]" * 1000 + b"."
    s["pop_mark_via_pop"] = b"K\x01(0\x85."
    s["pop_mark"] = b"K\x01(K\x021."
    s["dict_odd"] = b"}(K\x01u."
    s["append_to_dict"] = b"}K\x01" + b"a."
    s["none_key"] = b"}(NK\x01u."
    s["nan_member"] = b"\x8f(G\x7f\xf8\x00\x00\x00\x00\x00\x00\x90."
    s["long1_9_bytes"] = b"\x8a\x09" + b"\xff" * 8 + b"\x00."
    s["long1_too_big"] = b"\x8a\x09" + b"\x00" * 8 + b"\x01."
    s["long4_redundant"] = b"\x8b\x10\x00\x00\x00" + b"\x00" * 16 + b"."
    s["int_text_bad"] = b"I1x\n."
    s["float_text"] = b"F-1e+300\n."
    s["unicode_escapes"] = b"V\\u00e9\\\\u\\U0001F600\xff\n."
    s["unicode_bad_escape"] = b"V\\U00110000\n."
    s["proto_6"] = b"\x80\x06N."
    s["stop_empty"] = b"."
    s["trailing"] = b"N.N."
    s["truncated"] = pickle.dumps({"a": [1, 2, 3]}, protocol=4)[:-3]
    return s


def write(target, seeds):
    path = os.path.join(HERE, "corpus", target)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for name, data in seeds.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
    print("%s: %d files, %d bytes" % (path, len(seeds), sum(map(len, seeds.values()))))


if __name__ == "__main__":
    write("codec", codec_seeds())
    write("reader", reader_seeds())
    write("addr", addr_seeds())
    write("pickle", pickle_seeds())
