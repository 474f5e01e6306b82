"""udp_tutorial_test.py -- the Python tutorials' UDP client against examples/udp_echo.lua.

The tutorials pair a UDP echo server on port 8888 with a client that does
socket.socket(AF_INET, SOCK_DGRAM), sendto and recvfrom; here the server listens on
udp:127.0.0.1:0 and the client uses the port from its "listening on" line. Run from the repo
root with LUASOCK_BIN set; exit 0 = pass.
"""
import os
import socket
import subprocess
import tempfile
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Server, fail  # noqa: E402


class UdpServer(Server):
    """A running `luasock serve SCRIPT --listen udp:127.0.0.1:0`."""

    def __init__(self, script, start_timeout=5.0):
        self.logfile = tempfile.NamedTemporaryFile(prefix="luasock-log-", suffix=".log")
        self.proc = subprocess.Popen(
            [BIN, "serve", script, "--listen", "udp:127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.logfile)
        self.pid = self.proc.pid
        host, self.port = self._wait_listening(start_timeout)
        self.host = host.removeprefix("udp:")


def expect(what, want, got):
    if got != want:
        fail(f"{what}: expected {want!r}, got {got!r}")
    shown = repr(got) if len(got) <= 60 else repr(got[:40]) + f"... ({len(got)} bytes)"
    print(f"ok: {what}: {shown}")


def tutorial_client(server):
    """The tutorial's client: one message, one reply, from the server's address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    with sock:
        message = b"Hello, UDP server"
        sock.sendto(message, (server.host, server.port))
        data, address = sock.recvfrom(1024)
        expect("reply to the tutorial's message", message, data)
        expect("reply comes from the server's address", (server.host, server.port), address)


def several_datagrams(server):
    """Several datagrams in a row, an empty and a 60000-byte one among them, each echoed whole."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    with sock:
        messages = [b"one", b"", bytes(range(256)) * 4, os.urandom(60000), b"last"]
        for message in messages:
            sock.sendto(message, (server.host, server.port))
        for i, message in enumerate(messages):
            data, _ = sock.recvfrom(65536)
            expect(f"echo of datagram {i} ({len(message)} bytes)", message, data)


def two_clients(server):
    """Each of two clients gets its own datagram back, not the other's."""
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with first, second:
        for sock, message in ((first, b"from first"), (second, b"from second")):
            sock.settimeout(5)
            sock.sendto(message, (server.host, server.port))
        expect("second client's echo", b"from second", second.recvfrom(1024)[0])
        expect("first client's echo", b"from first", first.recvfrom(1024)[0])


def main():
    server = UdpServer("examples/udp_echo.lua")
    try:
        tutorial_client(server)
        several_datagrams(server)
        two_clients(server)
        server.stop()
        print("ok: examples/udp_echo.lua stopped with exit status 0")
    finally:
        server.close()
    print("udp_tutorial_test: passed")


if __name__ == "__main__":
    main()
