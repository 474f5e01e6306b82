"""pickle_tutorial_test.py -- the socket tutorial's pickle client, in its Python 3 spelling,
against examples/pickle_dict.lua: it must print {1: 'hi', 2: 'there'}.

Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import contextlib
import io
import os
import pickle
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, fail  # noqa: E402


def tutorial_client(host, port):
    # The tutorial's code, word for word but for the address.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect((host, port))
    msg = s.recv(1024)
    print(pickle.loads(msg))
    s.close()


def main():
    server = Server("examples/pickle_dict.lua")
    try:
        for i in range(3):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                tutorial_client(server.host, server.port)
            if out.getvalue() != "{1: 'hi', 2: 'there'}\n":
                fail(f"client {i} printed {out.getvalue()!r}")
            print(f"ok: client {i} printed {out.getvalue().strip()}")
        server.stop()
    finally:
        server.close()
    print("3 passed, 0 failed")


if __name__ == "__main__":
    main()
