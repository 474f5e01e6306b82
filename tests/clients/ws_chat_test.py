"""ws_chat_test.py -- examples/ws_chat.lua (issue 15) with Python's websockets client.

The room's framing is OpenResty's nginx.websocket.protocol (Debian's lua-nginx-websocket,
unmodified) running on `require "luasock.ngx"`. Checked here: the page at GET / and the
handshake's answers (101 with the right Sec-WebSocket-Accept, 426 for another version, 404);
two members join, one speaks and the other receives the broadcast; a fragmented and a 20 kB
message; ping and pong; 50 members all receive one line; a close frame is answered with a
close frame and the connection ends cleanly, announced as a leave; malformed frames (unmasked,
reserved opcode, RSV bits, a fragmented or long control frame, a binary message, a text that
is not UTF-8, a message over the limit) are each answered with a close frame of the right code
and cost only that connection, while the other members keep talking. The server must exit 0
without an [error] line. Needs Debian's python3-websockets. Run from the repo root with
LUASOCK_BIN set; exit 0 = pass.
"""
import asyncio
import base64
import hashlib
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import ASAN, Checks, Server, require_debian_module, stop_and_check  # noqa: E402

websockets = require_debian_module("websockets")

SCRIPT = "examples/ws_chat.lua"
TIMEOUT = 10.0 if ASAN else 5.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MEMBERS = 50


async def join(server):
    """A websockets member of the room, after its welcome; its name is in .nick."""
    ws = await websockets.connect(f"ws://{server.host}:{server.port}/chat",
                                  open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    welcome = await receive(ws)
    if not welcome.startswith("* welcome, "):
        raise AssertionError(f"unexpected welcome {welcome!r}")
    nick = welcome[len("* welcome, "):]
    await expect(ws, f"* {nick} joined")
    ws.nick = nick
    return ws


async def receive(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def expect(ws, want):
    """Reads messages until `want`; fails on a timeout. Returns the messages skipped."""
    skipped = []
    while True:
        got = await receive(ws)
        if got == want:
            return skipped
        skipped.append(got)


def http_exchange(server, request):
    """Sends raw bytes, returns everything the server sends until it closes."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def check_http(checks, server):
    page = http_exchange(server, b"GET /?say=hi HTTP/1.1\r\nHost: x\r\n\r\n")
    checks.check(page.startswith(b"HTTP/1.1 200 OK\r\n") and b"new WebSocket(" in page,
                 "GET /?say=hi answers the page (200, text/html, with its script)")
    missing = http_exchange(server, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    checks.check(missing.startswith(b"HTTP/1.1 404 "), "GET /nothing is 404")
    old = http_exchange(server, b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    checks.check(old.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13" in old,
                 "version 8 is answered 426 with Sec-WebSocket-Version: 13")
    garbage = http_exchange(server, b"\x16\x03\x01 not http\r\n\r\n")
    checks.check(garbage.startswith(b"HTTP/1.1 400 "), "a request that is not HTTP is 400")


class RawMember:
    """A hand-made WebSocket client on a plain socket, to send frames websockets would not."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
        self.pending = b""
        while b"\r\n\r\n" not in self.pending:
            self.pending += self.recv()
        head, self.pending = self.pending.split(b"\r\n\r\n", 1)
        self.head = head.decode()
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed")
        return data

    def frame(self):
        """The next frame from the server (unmasked): (opcode, payload)."""
        while len(self.pending) < 2:
            self.pending += self.recv()
        length, at = self.pending[1] & 0x7F, 2
        if length == 126:
            length, at = struct.unpack("!H", self.pending[2:4])[0], 4
        while len(self.pending) < at + length:
            self.pending += self.recv()
        opcode, payload = self.pending[0] & 0x0F, self.pending[at:at + length]
        self.pending = self.pending[at + length:]
        return opcode, payload

    def close_code(self):
        """Reads frames until a close frame; returns its code, its reason, and whether the
        server then closed the TCP connection."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x8:
                break
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        try:
            ended = self.sock.recv(1) == b"" and not self.pending
        except OSError:
            ended = True
        self.sock.close()
        return code, payload[2:].decode(errors="replace"), ended


def masked(first_byte, payload, mask=b"\x01\x02\x03\x04"):
    """A client frame: first byte as given, masked payload (7-bit or 16-bit length)."""
    length = bytes([0x80 | len(payload)]) if len(payload) < 126 else \
        bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first_byte]) + length + mask + body


MALFORMED = [
    ("an unmasked text frame", b"\x81\x05hello", 1002),
    ("a reserved opcode (0x3)", masked(0x83, b"x"), 1002),
    ("a reserved control opcode (0xB)", masked(0x8B, b""), 1002),
    ("RSV1 set", masked(0xC1, b"x"), 1002),
    ("a fragmented ping", masked(0x09, b"p"), 1002),
    ("a 126-byte ping", masked(0x89, b"p" * 126), 1002),
    ("a continuation with no message begun", masked(0x80, b"x"), 1002),
    ("a binary message", masked(0x82, b"\x00\x01"), 1003),
    ("a text that is not UTF-8", masked(0x81, b"caf\xe9"), 1007),
    ("a 100000-byte message", b"\x81\xff" + struct.pack("!Q", 100000) + b"\x01\x02\x03\x04", 1009),
]


async def check_malformed(checks, server, alice, bob):
    for name, frame, want in MALFORMED:
        raw = RawMember(server)
        checks.check(raw.head.startswith("HTTP/1.1 101 ")
                     and f"Sec-WebSocket-Accept: {raw.accept}" in raw.head,
                     f"{name}: the handshake's Sec-WebSocket-Accept is right")
        welcome = raw.frame()[1].decode()
        nick = welcome[len("* welcome, "):]
        await expect(alice, f"* {nick} joined")
        raw.sock.sendall(frame)
        code, reason, ended = await asyncio.to_thread(raw.close_code)
        checks.check(code == want and ended,
                     f"{name}: close frame {code} ({reason}), expected {want}, then the end of"
                     f" the connection ({ended})")
        await expect(alice, f"* {nick} left")
        await alice.send(f"after {name}")
        await expect(bob, f"<{alice.nick}> after {name}")
    checks.check(True, "the others kept talking after every malformed frame")


async def check_talk(checks, alice, bob):
    await alice.send("hello room")
    await expect(bob, f"<{alice.nick}> hello room")
    await expect(alice, f"<{alice.nick}> hello room")
    checks.check(True, "one member speaks, the other receives the broadcast (and so does she)")
    await bob.send(["frag", "mented ", "message"])
    await expect(alice, f"<{bob.nick}> fragmented message")
    checks.check(True, "a fragmented message arrives joined")
    big = "x" * 20000
    await bob.send(big)
    await expect(alice, f"<{bob.nick}> {big}")
    checks.check(True, "a 20000-byte message is broadcast whole")
    pong = await alice.ping(b"are you there")
    await asyncio.wait_for(pong, TIMEOUT)
    checks.check(True, "a ping is answered with its pong")


async def check_many(checks, server, alice):
    crowd = [await join(server) for _ in range(MEMBERS)]
    for ws in crowd:
        await expect(alice, f"* {ws.nick} joined")
    started = time.monotonic()
    await alice.send("to everyone")
    await asyncio.gather(*(expect(ws, f"<{alice.nick}> to everyone") for ws in crowd))
    elapsed = time.monotonic() - started
    checks.check(True, f"{MEMBERS} members all received one line in {elapsed * 1000:.1f} ms")
    await asyncio.gather(*(ws.close() for ws in crowd))
    checks.check(all(ws.close_code == 1000 for ws in crowd),
                 f"{MEMBERS} members closed cleanly (close code 1000 answered)")


async def check_close(checks, alice, bob):
    await bob.send("bye")  # and read what the room said meanwhile, up to that line
    await expect(bob, f"<{bob.nick}> bye")
    started = time.monotonic()
    await bob.close()
    checks.check(bob.close_code == 1000 and time.monotonic() - started < TIMEOUT,
                 f"a close frame is answered with close {bob.close_code} and the connection ends"
                 f" ({(time.monotonic() - started) * 1000:.1f} ms)")
    await expect(alice, f"* {bob.nick} left")
    checks.check(True, "the room announces the leave")
    await alice.close()


async def run_checks(checks, server):
    alice = await join(server)
    bob = await join(server)
    await expect(alice, f"* {bob.nick} joined")
    checks.check(True, f"two members joined ({alice.nick}, {bob.nick})")
    await check_talk(checks, alice, bob)
    await check_malformed(checks, server, alice, bob)
    await check_many(checks, server, alice)
    await check_close(checks, alice, bob)


def main():
    checks = Checks()
    server = Server(SCRIPT)
    try:
        check_http(checks, server)
        asyncio.run(asyncio.wait_for(run_checks(checks, server), 120))
        stop_and_check(server, checks)
    except (AssertionError, asyncio.TimeoutError, OSError, EOFError,
            websockets.exceptions.WebSocketException) as error:
        checks.check(False, f"{type(error).__name__}: {error}")
        print("server log (last 40 lines):\n" + "\n".join(server.log().splitlines()[-40:]))
    finally:
        server.close()
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
