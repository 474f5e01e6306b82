"""objects_property_test.py -- MessagePack values survive a trip through examples/objects.lua in
exact mode, for random values made by hypothesis.

The server runs with OBJECTS_EXACT=1 (exact_objects). Each case is a random nested value: None,
bools, ints across the whole int64 and uint64 ranges, floats (-0.0, inf and NaN included), str
(non-BMP characters included), bytes, lists, dicts with str, int and bytes keys, ext values and
msgpack Timestamps (ext -1). It goes out as msgpack.packb({"op": "echo", "args": [v]}) on one
connection and must come back as {"ok": True, "result": v}: equal, with the same types (an int is
not a float, a list is not a dict, bytes are not str), floats compared by bit pattern (so NaN
equals itself and -0.0 differs from 0.0).

OBJECTS_PROPERTY_CASES sets the number of cases (default 2000, so CI stays fast). Prints
"N passed, N failed" (failed counts every run hypothesis made of a failing case, shrinking
included) and exits 1 on a failure, after printing the smallest failing value. Run from the repo
root with LUASOCK_BIN set.
"""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import ASAN, Server, fail, require_debian_module, require_hypothesis  # noqa: E402,E501

msgpack = require_debian_module("msgpack")
hypothesis = require_hypothesis()
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SCRIPT = "examples/objects.lua"
CASES = int(os.environ.get("OBJECTS_PROPERTY_CASES", "2000"))
TIMEOUT = 20.0 if ASAN else 5.0

INT_EDGES = [0, 1, -1, 127, 128, -32, -33, 255, 256, 2**16, 2**31, -2**31 - 1, 2**32, 2**53 + 1,
             2**63 - 1, 2**63, 2**64 - 1, -2**63]
FLOAT_EDGES = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 1.7976931348623157e308]

ints = st.integers(-2**63, 2**64 - 1) | st.sampled_from(INT_EDGES)
floats = st.floats() | st.sampled_from(FLOAT_EDGES)
# Python's ExtType takes the application codes 0..127; of the reserved negative ones, -1 (the
# timestamp, which the Unpacker turns into a Timestamp) comes from timestamps.
exts = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=40))
# packb picks the 4-, 8- or 12-byte form from the value; negative seconds need the 12-byte one.
timestamps = st.builds(msgpack.Timestamp,
                       st.integers(0, 2**32 - 1) | st.integers(0, 2**34 - 1)
                       | st.integers(-2**63, 2**63 - 1),
                       st.integers(0, 999_999_999))
leaves = (st.none() | st.booleans() | ints | floats | st.text() | st.binary() | exts
          | timestamps)
keys = st.text() | ints | st.binary()
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30)


def same(want, got):
    """Equal with the same types all the way down; floats by bit pattern."""
    if type(want) is not type(got):
        return False
    if isinstance(want, float):
        return struct.pack(">d", want) == struct.pack(">d", got)
    if isinstance(want, list):
        return len(want) == len(got) and all(same(w, g) for w, g in zip(want, got))
    if isinstance(want, dict):
        if len(want) != len(got):
            return False
        for key, value in want.items():
            match = [k for k in got if type(k) is type(key) and k == key]
            if len(match) != 1 or not same(value, got[match[0]]):
                return False
        return True
    return want == got


class Client:
    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, timestamp=0,
                                         max_buffer_size=8 * 1024 * 1024)

    def call(self, request):
        self.sock.sendall(msgpack.packb(request))
        while True:
            for answer in self.unpacker:
                return answer
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.unpacker.feed(data)


def main():
    os.environ["OBJECTS_EXACT"] = "1"
    server = Server(SCRIPT)
    counts = {"passed": 0, "failed": 0}
    started = time.monotonic()
    try:
        client = [Client(server)]

        @settings(max_examples=CASES, deadline=None, database=None, print_blob=False,
                  suppress_health_check=list(HealthCheck))
        @given(values)
        def echo_returns_its_argument(value):
            try:
                answer = client[0].call({"op": "echo", "args": [value]})
            except (EOFError, OSError) as error:
                # The server refused the value: the next case gets a new connection.
                client[0].sock.close()
                client[0] = Client(server)
                answer = f"nothing ({error})"
            ok = same({"ok": True, "result": value}, answer)
            counts["passed" if ok else "failed"] += 1
            assert ok, f"sent {value!r}, got back {answer!r}"

        failure = None
        try:
            echo_returns_its_argument()
        except Exception as error:  # the failing case, or hypothesis's own complaint
            failure = error
        elapsed = time.monotonic() - started
        print(f"objects_property_test: {counts['passed'] + counts['failed']} cases in "
              f"{elapsed:.1f} s")
        print(f"{counts['passed']} passed, {counts['failed']} failed")
        if failure is not None:
            fail(f"a value did not survive the trip: {failure}")
        server.stop()
    finally:
        server.close()
    print("objects_property_test: passed")


if __name__ == "__main__":
    main()
