"""chat_client_test.py -- examples/chat_client.lua against examples/chat.lua.

Through a pseudo-terminal (Python's pty module), as a person would use it: the user types half a
line (no newline yet), another member (a Python socket) says something, and that line must
appear on the terminal while the user's line is still half typed (the client reads the keyboard
and the socket at once); the finished line then reaches the other member, Ctrl-D ends the client
with status 0, and the terminal is still in blocking mode afterwards (the shell's terminal is
never left non-blocking). Then with stdin from a pipe: its lines are said, and the end of the
pipe ends the client cleanly after the answers to its last lines. Run from the repo root with
LUASOCK_BIN set; exit 0 = pass.
"""
import os
import pty
import re
import select
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Checks, Server, fail, is_asan_build, stop_and_check  # noqa: E402

CLIENT = "examples/chat_client.lua"
TIMEOUT = 10.0 if is_asan_build() else 5.0
WELCOME = re.compile(rb"\* welcome to the chat, (\S+)! ")


class Member:
    """Another member of the room: a plain socket, read line by line."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.pending = b""
        self.nick = WELCOME.match(self.line()).group(1).decode()

    def say(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def line(self):
        while b"\n" not in self.pending:
            data = self.sock.recv(4096)
            if not data:
                fail(f"the server closed the member's connection; unfinished {self.pending!r}")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def wait_for(self, want):
        """Reads lines until `want` (bytes); fails after TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        seen = []
        while time.monotonic() < deadline:
            line = self.line()
            if line == want:
                return
            seen.append(line)
        fail(f"the member never got {want!r}; got {seen!r}")

    def has_nothing_pending(self, wait=0.3):
        """True if nothing arrives within `wait` seconds."""
        if self.pending:
            return False
        ready, _, _ = select.select([self.sock], [], [], wait)
        return not ready


class Terminal:
    """The master side of a pty: what the client shows, accumulated."""

    def __init__(self, master):
        self.master = master
        self.shown = b""

    def type(self, text):
        os.write(self.master, text)

    def wait_for(self, pattern):
        """Reads until the regular expression (bytes) matches what was shown; returns the match."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            match = re.search(pattern, self.shown)
            if match:
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"the terminal never showed {pattern!r}; it shows {self.shown!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.shown += os.read(self.master, 4096)
                except OSError:  # EIO: the client closed the terminal
                    pass


def wait_exit(proc, errfile, what):
    try:
        code = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail(f"{what}: the client did not exit")
    errfile.seek(0)
    return code, errfile.read().decode(errors="replace")


def test_terminal(server, checks):
    master, slave = pty.openpty()
    errfile = tempfile.TemporaryFile()
    proc = subprocess.Popen([BIN, "run", CLIENT, server.host, str(server.port)],
                            stdin=slave, stdout=slave, stderr=errfile, start_new_session=True)
    term = Terminal(master)
    nick = term.wait_for(WELCOME).group(1)
    member = Member(server)
    term.wait_for(rb"\* " + member.nick.encode() + rb" joined")
    term.type(b"hello every")
    term.wait_for(rb"hello every")  # echoed by the terminal: the half line is typed
    checks.check(member.has_nothing_pending(), "the half-typed line has not been sent")
    member.say("hi from python")
    shown = term.wait_for(rb"hello every(.*)<" + member.nick.encode() + rb"> hi from python")
    checks.check(b"\n" not in shown.group(1),
                 "the other member's line appeared on the terminal while ours was half typed")
    term.type(b"one\n")
    member.wait_for(b"<" + nick + b"> hello everyone")
    checks.check(True, "the finished line reached the other member")
    term.type(b"\x04")  # Ctrl-D at the start of a line: end of input
    code, err = wait_exit(proc, errfile, "Ctrl-D")
    checks.check(code == 0 and "end of input" in err,
                 f"Ctrl-D ends the client with status 0 (status {code}, stderr {err!r})")
    member.wait_for(b"* " + nick + b" left")
    checks.check(True, "the other member saw the client leave")
    checks.check(os.get_blocking(slave), "the terminal is still in blocking mode")
    os.close(slave)
    os.close(master)
    member.sock.close()


def test_pipe(server, checks):
    member = Member(server)
    errfile = tempfile.TemporaryFile()
    proc = subprocess.Popen([BIN, "run", CLIENT, server.host, str(server.port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile)
    proc.stdin.write(b"/nick piper\nhello from the pipe\n/who")  # last line without newline
    proc.stdin.close()
    member.wait_for(b"<piper> hello from the pipe")
    checks.check(True, "the piped line reached the other member")
    out = proc.stdout.read()
    code, err = wait_exit(proc, errfile, "end of the pipe")
    checks.check(code == 0 and "end of input" in err,
                 f"the end of the pipe ends the client with status 0 ({code}, {err!r})")
    checks.check(b"* you are now piper\n" in out and b"* here: " in out,
                 f"the answers to the last lines were printed ({out!r})")
    member.wait_for(b"* piper left")
    checks.check(True, "the other member saw the piped client leave")
    member.sock.close()


def main():
    checks = Checks()
    server = Server("examples/chat.lua")
    try:
        test_terminal(server, checks)
        test_pipe(server, checks)
        stop_and_check(server, checks)
    finally:
        server.close()
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
