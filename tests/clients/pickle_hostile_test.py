"""pickle_hostile_test.py -- hostile pickles against examples/objects.lua speaking pickle
(OBJECTS_CODEC=pickle): every opcode that imports or calls, os.system through GLOBAL+REDUCE (as
pickle.dumps writes an object whose __reduce__ names it), a GET of a memo slot never PUT,
BINUNICODE8/BINBYTES8/FRAME lengths far beyond max_object (sent without their bytes), deep
nesting, a FRAME that an opcode crosses, and truncated pickles. Each must close only its own
connection (with the reason in the log, and os.system never run), while a good client's echo
requests keep answering within 1 s; a request trickled in 2,000 pieces must be answered.

Run from the repo root with LUASOCK_BIN set; prints "N passed, N failed"; exit 0 = pass.
"""
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, Checks  # noqa: E402

TIMEOUT = 5.0
MAX_LATENCY = 1.0
MARKER = os.path.join(tempfile.gettempdir(), f"luasock-pickle-pwned-{os.getpid()}")


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def u64(n):
    return struct.pack("<Q", n)


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def hostile_inputs():
    """(name, bytes, reason expected in the log)."""
    refused = {"GLOBAL": b"c", "STACK_GLOBAL": b"\x93", "REDUCE": b"R", "BUILD": b"b",
               "INST": b"i", "OBJ": b"o", "NEWOBJ": b"\x81", "NEWOBJ_EX": b"\x92",
               "EXT1": b"\x82", "EXT2": b"\x83", "EXT4": b"\x84", "PERSID": b"P",
               "BINPERSID": b"Q"}
    cases = [(f"opcode {name}", b"\x80\x04N" + op,
              f"pickle: opcode {name} not allowed (plain data only)")
             for name, op in refused.items()]
    for protocol in range(6):
        name = "GLOBAL" if protocol < 4 else "STACK_GLOBAL"
        cases.append((f"os.system via {name}+REDUCE, protocol {protocol}",
                      pickle.dumps(Evil(), protocol=protocol),
                      f"pickle: opcode {name} not allowed"))
    cases += [
        ("GET of a missing memo slot", b"\x80\x04h\x05.", "pickle: GET of a memo slot never PUT"),
        ("LONG_BINGET of a missing slot", b"\x80\x04N\x94j\x07\x00\x00\x00.",
         "pickle: GET of a memo slot never PUT"),
        ("BINUNICODE8 of 2^62 bytes", b"\x80\x04\x8d" + u64(2**62), "too large"),
        ("BINBYTES8 of 2^63 bytes", b"\x80\x04\x8e" + u64(2**63), "too large"),
        ("BYTEARRAY8 of 2 MiB", b"\x80\x05\x96" + u64(2 << 20), "too large"),
        ("FRAME of 2^40 bytes", b"\x80\x04\x95" + u64(2**40), "too large"),
        ("200 nested lists", pickle.dumps(nested(200), protocol=4), "pickle: nesting too deep"),
        ("1000 lists appended in each other", b"]" * 1000 + b"a" * 999 + b".",
         "pickle: nesting too deep"),
        ("1000 MARKs", b"\x80\x04" + b"(" * 1000, "pickle: nesting too deep"),
        ("an opcode crossing its FRAME", b"\x80\x04\x95" + u64(3) + b"\x8c\x05hello.",
         "pickle: opcode crosses the end of its FRAME"),
        ("unknown opcode", b"\x80\x04\xff", "pickle: unknown opcode"),
    ]
    return cases


def truncated_inputs():
    """Pickles cut short, then the write side closed: the server must close too."""
    whole = pickle.dumps({"op": "echo", "args": [list(range(50))]}, protocol=4)
    return [("truncated frame", whole[:30]), ("truncated FRAME header", whole[:5]),
            ("truncated BINUNICODE", b"\x80\x04X\x10\x00\x00\x00abc")]


def connect(server):
    return socket.create_connection((server.host, server.port), timeout=TIMEOUT)


def closed_by_server(sock):
    """True if the server closes the connection (EOF or reset) within TIMEOUT."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def call(sock, request):
    sock.sendall(pickle.dumps(request, protocol=4))
    return receive(sock)


def receive(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        data += chunk
        try:
            return pickle.loads(data)
        except (pickle.UnpicklingError, EOFError):
            continue


class GoodClient(threading.Thread):
    """Echo requests one after another while the hostile ones run; records the worst latency."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.sock = connect(server)
        self.stop = threading.Event()
        self.worst = 0.0
        self.calls = 0
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                start = time.monotonic()
                answer = call(self.sock, {"op": "add", "args": [self.calls, 1]})
                self.worst = max(self.worst, time.monotonic() - start)
                if answer != {"ok": True, "result": self.calls + 1}:
                    raise AssertionError(f"answer {answer!r}")
                self.calls += 1
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            self.error = e


def main():
    os.environ["OBJECTS_CODEC"] = "pickle"
    checks = Checks()
    server = Server("examples/objects.lua")
    good = GoodClient(server)
    good.start()
    try:
        for name, data, reason in hostile_inputs():
            with connect(server) as sock:
                sock.sendall(data)
                checks.check(closed_by_server(sock), f"{name}: connection closed")
        for name, data in truncated_inputs():
            with connect(server) as sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                checks.check(closed_by_server(sock), f"{name}: connection closed")
        # A request of about 6 KB trickled in 2,000 pieces is answered.
        value = [list(range(300)), "x" * 3000]
        data = pickle.dumps({"op": "echo", "args": [value]}, protocol=4)
        with connect(server) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cuts = [i * len(data) // 2000 for i in range(2001)]
            pieces = [data[a:b] for a, b in zip(cuts, cuts[1:])]
            for piece in pieces:
                sock.sendall(piece)
            answer = receive(sock)
            checks.check(len(pieces) == 2000 and answer == {"ok": True, "result": value},
                         f"a request trickled in {len(pieces)} pieces is answered")
        log = server.log()
        for name, data, reason in hostile_inputs():
            checks.check(reason in log, f"{name}: logged {reason!r}")
        checks.check(not os.path.exists(MARKER), "os.system never ran")
        good.stop.set()
        good.join(TIMEOUT)
        checks.check(good.error is None and good.calls > 0,
                     f"good client: {good.calls} answers, error {good.error!r}")
        checks.check(good.worst < MAX_LATENCY,
                     f"good client's worst latency {good.worst * 1000:.1f} ms < 1 s")
        server.stop()
    finally:
        server.close()
        if os.path.exists(MARKER):
            os.unlink(MARKER)
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
