"""objects_test.py -- examples/objects.lua with a Python MessagePack client, written as a
Python user writes one.

Requests go out as msgpack.packb(...) over socket.create_connection; answers come from a
msgpack.Unpacker fed from sock.recv. Checks add, mul, unknown ops, echo (which answers its first
argument) of bytes, str, 64-bit integers and nested maps, many pipelined requests, and that
garbage closes only the client that sent it. Run from the repo root with LUASOCK_BIN set; exit 0
= pass.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, fail, require_msgpack  # noqa: E402

msgpack = require_msgpack()

SCRIPT = "examples/objects.lua"
TIMEOUT = 5.0


class Client:
    """One connection: sends requests with packb, reads answers through an Unpacker."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.unpacker = msgpack.Unpacker()

    def send(self, *requests):
        self.sock.sendall(b"".join(msgpack.packb(request) for request in requests))

    def receive(self):
        """The next answer; raises EOFError when the server closes first."""
        while True:
            for answer in self.unpacker:
                return answer
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.unpacker.feed(data)

    def call(self, request):
        self.send(request)
        return self.receive()

    def close(self):
        self.sock.close()


def expect(what, want, got):
    """Compares values and their types (so 3 and 3.0 differ), recursively."""
    if not same(want, got):
        fail(f"{what}: expected {want!r}, got {got!r}")
    shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:70] + "..."
    print(f"ok: {what}: {shown}")


def same(want, got):
    if type(want) is not type(got):
        return False
    if isinstance(want, dict):
        return want.keys() == got.keys() and all(same(want[k], got[k]) for k in want)
    if isinstance(want, list):
        return len(want) == len(got) and all(same(w, g) for w, g in zip(want, got))
    return want == got


def check_ops(server):
    client = Client(server)
    expect("add 1 + 2", {"ok": True, "result": 3}, client.call({"op": "add", "args": [1, 2]}))
    expect("add of no args", {"ok": True, "result": 0}, client.call({"op": "add", "args": []}))
    expect("mul of ints stays an int", {"ok": True, "result": 42},
           client.call({"op": "mul", "args": [6, 7]}))
    expect("mul with a float", {"ok": True, "result": 5.0},
           client.call({"op": "mul", "args": [2, 2.5]}))
    expect("add of 1.0 stays a float", {"ok": True, "result": 1.0},
           client.call({"op": "add", "args": [1.0]}))
    expect("unknown op", {"ok": False, "error": "unknown op"},
           client.call({"op": "divide", "args": [1, 2]}))
    expect("args that are not numbers", {"ok": False, "error": "args must be numbers"},
           client.call({"op": "add", "args": [1, "two"]}))
    expect("a request that is not a map", {"ok": False, "error": "request must be a map"},
           client.call("add 1 2"))
    expect("the connection still answers", {"ok": True, "result": 10},
           client.call({"op": "add", "args": [4, 6]}))
    client.close()


def check_echo(server):
    client = Client(server)
    binary = bytes(range(256))
    cases = [
        ("bytes with NULs and 0x80-0xff", [b"\x00\x80\xfe\xff", binary], None),
        ("str, also non-ASCII", ["hello", "h\u00e9llo w\u00f6rld \u2603", ""], None),
        ("ints at the 64-bit limits", [2**63 - 1, -2**63, 0, -1, 2**32, -2**31 - 1], None),
        ("an unsigned int above 2^63-1 becomes a float", [2**64 - 1], [float(2**64)]),
        ("floats stay floats", [1.0, -0.0, 1.5, 1e308, 5e-324], None),
        ("nested maps", [{"a": {"b": {"c": [1, 2.5, "three"]}}, "t": True, "e": {}}], None),
        ("true and false", [True, False], None),
        ("a large string", ["x" * 100000], None),
    ]
    for what, values, want in cases:
        for value, wanted in zip(values, want or values):
            answer = client.call({"op": "echo", "args": [value]})
            expect("echo of " + what, {"ok": True, "result": wanted}, answer)
    minus_zero = client.call({"op": "echo", "args": [-0.0]})["result"]
    if str(minus_zero) != "-0.0":
        fail(f"echo of -0.0 lost its sign: {minus_zero!r}")
    print("ok: echo of -0.0 keeps the sign")
    client.close()


def check_pipelined(server):
    client = Client(server)
    count = 500
    client.send(*({"op": "add", "args": [i, i, 0.5 * (i % 2)]} for i in range(count)))
    for i in range(count):
        want = 2 * i + 0.5 if i % 2 else 2 * i + 0.0
        answer = client.receive()
        if not same({"ok": True, "result": want}, answer):
            fail(f"pipelined answer {i}: expected {want!r}, got {answer!r}")
    print(f"ok: {count} pipelined requests in one sendall answered in order")
    client.close()


def expect_closed(client, what):
    """The server must close `client` promptly (EOF or reset), sending nothing."""
    started = time.monotonic()
    try:
        answer = client.receive()
        fail(f"{what}: expected the connection to close, got {answer!r}")
    except (EOFError, ConnectionResetError):
        pass
    except socket.timeout:
        fail(f"{what}: the connection was still open after {TIMEOUT} s")
    print(f"ok: {what}: closed after {time.monotonic() - started:.3f} s")


def check_garbage(server):
    good = Client(server)
    bad = Client(server)
    expect("the good client before", {"ok": True, "result": 3},
           good.call({"op": "add", "args": [1, 2]}))
    expect("the bad client before", {"ok": True, "result": 4},
           bad.call({"op": "add", "args": [2, 2]}))
    bad.sock.sendall(b"\xc1")
    expect_closed(bad, "garbage byte 0xc1")
    bad.close()
    expect("the good client after", {"ok": True, "result": 30},
           good.call({"op": "add", "args": [10, 20]}))
    huge = Client(server)
    huge.sock.sendall(b"\xdd\xff\xff\xff\xff")  # an array of 2^32-1 elements: refused at once
    expect_closed(huge, "an array header of 2^32-1 elements")
    huge.close()
    fresh = Client(server)
    expect("a new client after", {"ok": True, "result": 7.5},
           fresh.call({"op": "mul", "args": [3, 2.5]}))
    expect("the good client still", {"ok": False, "error": "unknown op"},
           good.call({"op": "nope", "args": []}))
    fresh.close()
    good.close()


def main():
    server = Server(SCRIPT)
    try:
        check_ops(server)
        check_echo(server)
        check_pipelined(server)
        check_garbage(server)
        server.stop()
        print("ok: server stopped with exit status 0")
    finally:
        server.close()
    print("objects_test: passed")


if __name__ == "__main__":
    main()
