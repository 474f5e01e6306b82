"""slow_http.py -- an HTTP server on 127.0.0.1 that answers GETs after a delay (a helper
for tests/spec/socket_compat_spec.lua, not a test).

Usage: python3 tests/clients/slow_http.py DELAY_SECONDS
It binds 127.0.0.1:0, prints the port on stdout (one line) when ready, and answers each request
in a thread of its own: a GET after DELAY_SECONDS with the body "hello PATH", a POST at once with
"posted " and the request body (status 201). It runs until killed.
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        time.sleep(DELAY)
        body = ("hello " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = b"posted " + data
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 50 clients connect at once


DELAY = float(sys.argv[1])
server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
