"""tutorial_test.py -- a typical Python socket-tutorial client against prefix.lua and upper.lua.

Uses only what the tutorials use: socket.create_connection, sendall and a recv loop. Run from
the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, fail  # noqa: E402

GREETING = b"Welcome to the server. Type something and hit enter\n"


def recv_until(sock, ending):
    """recv() until the data received so far ends with `ending` (or the server closes)."""
    data = b""
    while not data.endswith(ending):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock):
    """recv() until the server closes the connection."""
    data = b""
    while True:
        chunk = sock.recv(1024)
        if not chunk:
            return data
        data += chunk


def expect(what, want, got):
    if got != want:
        fail(f"{what}: expected {want!r}, got {got!r}")
    shown = repr(got) if len(got) <= 60 else repr(got[:40]) + f"... ({len(got)} bytes)"
    print(f"ok: {what}: {shown}")


def check_prefix(server):
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        expect("prefix greeting", GREETING, recv_until(sock, b"\n"))
        for message in (b"hello", b"How are you?", b"a" * 3000):
            sock.sendall(message + b"\n")
            expect(f"prefix reply to a {len(message)}-byte line", b"OK..." + message + b"\n",
                   recv_until(sock, b"\n"))
        sock.sendall(b"one\ntwo\n")
        expect("prefix replies to two lines in one send", b"OK...one\nOK...two\n",
               recv_until(sock, b"OK...two\n"))
        sock.shutdown(socket.SHUT_WR)
        expect("prefix closes after the client's EOF", b"", recv_all(sock))


def check_upper(server):
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"hello there")
        expect("upper reply, then close", b"HELLO THERE", recv_all(sock))
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"second connection\n")
        expect("upper on a second connection", b"SECOND CONNECTION\n", recv_all(sock))


def run(script, check):
    server = Server(script)
    try:
        check(server)
        server.stop()
        print(f"ok: {script} stopped with exit status 0")
    finally:
        server.close()


def main():
    run("examples/prefix.lua", check_prefix)
    run("examples/upper.lua", check_upper)
    print("tutorial_test: passed")


if __name__ == "__main__":
    main()
