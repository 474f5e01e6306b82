"""chat_test.py -- examples/chat.lua with plain Python socket clients.

Three members chat through socket.create_connection, sendall and a recv loop split into lines:
nicknames, /who, /me, /quit, unknown commands, join and leave announcements, an over-long line
(answered with an error, the member stays), control characters stripped, and a member whose
connection ends with an RST (SO_LINGER 0), announced as "left (reset)". Run from the repo root
with LUASOCK_BIN set; exit 0 = pass.
"""
import os
import re
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, fail  # noqa: E402

SCRIPT = "examples/chat.lua"
TIMEOUT = 5.0
WELCOME = re.compile(
    r"^\* welcome to the chat, (\S+)! commands: /nick NAME, /who, /me ACTION, /quit$")


class Member:
    """A chat client: sends lines, reads lines (each recv may hold several or half of one)."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.pending = b""
        welcome = self.line()
        match = WELCOME.match(welcome)
        if not match:
            fail(f"unexpected welcome line {welcome!r}")
        self.nick = match.group(1)

    def say(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def line(self):
        """The next line without its newline; fails if the server closes first."""
        while b"\n" not in self.pending:
            data = self.sock.recv(4096)
            if not data:
                fail(f"the server closed the connection; unfinished line {self.pending!r}")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def expect_next(self, want):
        """The very next line must be `want`."""
        got = self.line()
        if got != want:
            fail(f"{self.nick}: expected the next line to be {want!r}, got {got!r}")
        shown = want if len(want) <= 60 else f"{want[:40]}... ({len(want)} bytes)"
        print(f"ok: {self.nick} got {shown!r} next")

    def expect_eof(self):
        rest = self.pending
        while True:
            data = self.sock.recv(4096)
            if not data:
                break
            rest += data
        if rest:
            fail(f"{self.nick}: unexpected data before the close: {rest!r}")
        print(f"ok: the server closed {self.nick}'s connection")

    def close(self):
        self.sock.close()


def check_chat(server):
    a = Member(server)
    b = Member(server)
    a.expect_next(f"* {b.nick} joined")
    c = Member(server)
    a.expect_next(f"* {c.nick} joined")
    b.expect_next(f"* {c.nick} joined")
    if len({a.nick, b.nick, c.nick}) != 3:
        fail(f"members got the same nick: {a.nick}, {b.nick}, {c.nick}")

    old_a = a.nick
    a.say("/nick alice")
    a.expect_next("* you are now alice")
    b.expect_next(f"* {old_a} is now alice")
    c.expect_next(f"* {old_a} is now alice")
    a.nick = "alice"
    b.say("/nick alice")
    b.expect_next("* alice is taken")
    b.say("/nick " + "x" * 21)
    b.expect_next("* names are 1 to 20 letters, digits, _ or -")

    b.say("hello there")
    a.expect_next(f"<{b.nick}> hello there")
    c.expect_next(f"<{b.nick}> hello there")
    a.say("/me waves")
    b.expect_next("* alice waves")
    c.expect_next("* alice waves")
    c.say("/dance")
    c.expect_next("* unknown command /dance")
    c.say("colour \x1b[31mred\x07")
    a.expect_next(f"<{c.nick}> colour [31mred")
    b.expect_next(f"<{c.nick}> colour [31mred")

    c.say("/who")
    c.expect_next("* here: " + ", ".join(sorted(["alice", b.nick, c.nick])))
    # The sender never hears itself: after its own line, c's next line is b's answer.
    c.say("from c")
    a.expect_next(f"<{c.nick}> from c")
    b.expect_next(f"<{c.nick}> from c")
    b.say("from b")
    c.expect_next(f"<{b.nick}> from b")
    a.expect_next(f"<{b.nick}> from b")

    c.say("/quit")
    c.expect_next("* bye")
    c.expect_eof()
    a.expect_next(f"* {c.nick} left")
    b.expect_next(f"* {c.nick} left")
    for member in (a, b, c):
        member.close()


def check_long_line(server):
    a = Member(server)
    b = Member(server)
    a.expect_next(f"* {b.nick} joined")
    b.sock.sendall(b"y" * 5000 + b"\nstill here\n")
    b.expect_next("* line too long (at most 1024 bytes)")
    a.expect_next(f"<{b.nick}> still here")
    b.say("z" * 1025)
    b.expect_next("* line too long (at most 1024 bytes)")
    exact = "z" * 1024
    b.say(exact)
    a.expect_next(f"<{b.nick}> {exact}")
    b.say("/who")
    b.expect_next("* here: " + ", ".join(sorted([a.nick, b.nick])))
    a.close()
    b.close()


def check_reset(server):
    a = Member(server)
    b = Member(server)
    a.expect_next(f"* {b.nick} joined")
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.close()  # SO_LINGER with a zero timeout: close sends an RST
    a.expect_next(f"* {b.nick} left (reset)")
    a.say("/who")
    a.expect_next(f"* here: {a.nick}")
    a.close()


def main():
    for check in (check_chat, check_long_line, check_reset):
        server = Server(SCRIPT)
        try:
            check(server)
            server.stop()
            print(f"ok: {check.__name__}: server stopped with exit status 0")
        finally:
            server.close()
    print("chat_test: passed")


if __name__ == "__main__":
    main()
