"""stale_framer_test.py -- issue 12 item 11: a receive_object that timed out on a partial
MessagePack value must not resume from its old position after another read consumed the input
buffer, so one connection can never read another connection's bytes out of the server.

The handler is an ordinary object echo server: it reads MessagePack values with a short
timeout and answers each with {ok = true, echo = value}; a client that stays quiet is told
{idle = true} and may then send one text command line (answered with {line = <its length>})
before objects resume.

1. A victim sends a 40 KiB secret (ASCII text in a MessagePack str) and gets its echo: the
   secret has passed through the server's pooled input and output buffers.
2. An attacker sends the first part of an array (array32 of 9000 fixints, 1000 of them), waits
   for {idle = true} (its receive_object timed out with the partial value buffered), sends a text
   line (consumed by receive("*l") together with the partial value) and, in the same write, the
   header of a bin32 whose length is what a stale framer would take as one value.
3. Today's main resumed the framer 1005 bytes into a buffer that now holds 5: it scanned the
   stale pooled memory behind them (the victim's text: 9000 fixints) and echoed it to the
   attacker inside that bin. Fixed: the header starts a new value, which times out: {idle}.

Checks: the attacker never receives a byte of the secret (its distinctive marker, or any 32-byte
piece of it); a new client is served afterwards; the server exits 0 on SIGTERM with no
sanitizer report. Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import os
import socket
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Checks, Server, require_msgpack, stop_and_check  # noqa: E402

msgpack = require_msgpack()

TIMEOUT = 5.0  # seconds for every client read

HANDLER = """\
-- An object echo server that also takes a text command while a client is idle.
local OBJECT_WAIT = 0.5 -- seconds of silence before a client counts as idle

return {
  idle_timeout = 5,
  handle = function(conn)
    while true do
      conn:settimeout(OBJECT_WAIT)
      local value, err = conn:receive_object()
      if err == "timeout" then
        conn:send_object({ idle = true })
        conn:settimeout(5)
        local line = conn:receive("*l")
        if not line or line == "quit" then return end
        conn:send_object({ line = #line })
      elseif err then
        return
      else
        conn:send_object({ ok = true, echo = value })
      end
    end
  end,
}
"""

# The victim's secret: printable ASCII (to a framer every byte is a one-byte positive fixint)
# with a marker that nothing else in this test sends.
SECRET = b"".join(b"<victim-secret-%05d>" % i for i in range(40 * 1024 // 21 + 1))[:40 * 1024]
MARKER = b"victim-secret"

# The attacker's partial value: array32 of ELEMENTS entries of which PRESENT are sent (fixint 1,
# never a newline). A stale framer goes on with the ELEMENTS - PRESENT entries still missing.
ELEMENTS, PRESENT = 9000, 1000
PARTIAL = b"\xdd" + struct.pack(">I", ELEMENTS) + b"\x01" * PRESENT
LINE = b"hello\n"
# A bin32 header as long as the value a stale framer would find: it resumes at len(PARTIAL) and
# takes ELEMENTS - PRESENT one-byte entries, so its frame is len(PARTIAL) + 8000 bytes.
STALE_FRAME = len(PARTIAL) + ELEMENTS - PRESENT
TRIGGER = b"\xc6" + struct.pack(">I", STALE_FRAME - 5)
assert b"\n" not in PARTIAL + TRIGGER


class Client:
    """One connection; every byte received is kept in `received`, replies are unpacked."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.unpacker = msgpack.Unpacker(raw=True)
        self.received = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """The next reply; None when the server closed the connection (or reset it)."""
        while True:
            for value in self.unpacker:
                return value
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.received += data
            self.unpacker.feed(data)

    def close(self):
        self.sock.close()


def leaked(received):
    """Whether `received` holds the marker or any 32-byte piece of the secret."""
    if MARKER in received:
        return True
    return any(SECRET[i:i + 32] in received for i in range(0, len(SECRET) - 32, 16))


def echo_works(server):
    """Whether a new client gets its value echoed (strings come back as bytes: raw=True)."""
    client = Client(server)
    try:
        client.send(msgpack.packb([1, "two", b"\xff"]))
        return client.reply() == {b"ok": True, b"echo": [1, b"two", b"\xff"]}
    finally:
        client.close()


def run(server, checks):
    victim = Client(server)
    victim.send(msgpack.packb(SECRET.decode()))
    reply = victim.reply()
    checks.check(reply == {b"ok": True, b"echo": SECRET}, "the victim's secret is echoed to it")
    victim.close()

    attacker = Client(server)
    attacker.send(PARTIAL)
    reply = attacker.reply()
    checks.check(reply == {b"idle": True}, f"the partial value timed out: {reply!r}")
    attacker.send(LINE + TRIGGER)
    reply = attacker.reply()
    checks.check(reply == {b"line": len(PARTIAL) + len(LINE) - 1},
                 f"receive('*l') took the partial value and the line: {reply!r}")
    # Fixed: the bin32 header is a new value, incomplete, so the handler times out again.
    # Today's main: the stale framer's frame comes back as {ok, echo = <8 KiB of memory>}.
    reply = attacker.reply()
    shown = repr(reply)[:120]
    checks.check(not leaked(attacker.received),
                 "the attacker received no byte of the victim's secret"
                 + ("" if not leaked(attacker.received) else f" (got {shown})"))
    checks.check(reply == {b"idle": True}, f"the header started a new value: {shown}")
    attacker.close()

    checks.check(echo_works(server), "a new client is served afterwards")


def main():
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="luasock-stale-framer-") as tmp:
        script = os.path.join(tmp, "objects_idle.lua")
        with open(script, "w") as f:
            f.write(HANDLER)
        server = Server(script)
        try:
            try:
                run(server, checks)
            except (OSError, EOFError) as error:
                checks.check(False, f"client error: {error!r}")
            stop_and_check(server, checks)
        finally:
            server.close()
    print(f"stale_framer_test: {checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
