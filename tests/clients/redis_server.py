"""redis_server.py -- starts and stops a real redis-server for the Python client tests.

Not a test itself: the *_test.py files next to it import it. Each RedisServer runs
/usr/bin/redis-server (or $REDIS_SERVER) on a free loopback port (bind port 0, read it, close,
and retry with another port if redis-server could not take it), without persistence
(--save '' --appendonly no), in a temp directory of its own; start-up waits for PING to be
answered (bounded), not for a fixed time. `restart()` starts it again on the same port, as an
operator bringing Redis back would. With tls=True it speaks only TLS on that port, with
certificates from scripts/devcert in its directory (no client certificates asked for), and
`url` is rediss://...?ca=CA.
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse

REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


def free_port():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Reply:
    """Reads RESP2 replies from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis error: " + rest.decode())
        if kind == b":":
            return int(rest)
        n = int(rest)
        if kind == b"$":
            if n < 0:
                return None
            return self._exactly(n + 2)[:-2]
        if kind == b"*":
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply line {line!r}")


class RedisServer:
    def __init__(self, port=None, directory=None, extra=(), start_timeout=5.0, tls=False):
        self.own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="luasock-redis-")
        self.extra = list(extra)
        self.tls = None
        if tls:
            certs = os.path.join(self.dir, "certs")
            subprocess.run(["scripts/devcert", certs], check=True, stdout=subprocess.DEVNULL)
            self.ca = os.path.join(certs, "ca.pem")
            self.tls = ssl.create_default_context(cafile=self.ca)
            self.extra += ["--tls-cert-file", os.path.join(certs, "server.pem"),
                           "--tls-key-file", os.path.join(certs, "server.key"),
                           "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "no"]
        self.proc = None
        for _ in range(5):
            self.port = port or free_port()
            if self._start(start_timeout):
                return
            if port is not None:
                break
        raise RuntimeError(f"redis-server did not start on port {self.port}; log:\n" + self.log())

    @property
    def logfile(self):
        return os.path.join(self.dir, f"redis-{self.port}.log")

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _start(self, timeout):
        log = open(self.logfile, "ab")
        ports = ["--port", "0", "--tls-port", str(self.port)] if self.tls else [
            "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *ports, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *self.extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ping():
                return True
            time.sleep(0.01)
        self.kill()
        return False

    def connect(self, timeout):
        """A connection to the server (over TLS, verified, if it speaks TLS)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            return self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        return sock

    def ping(self):
        try:
            with self.connect(0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self):
        if self.tls:
            return (f"rediss://127.0.0.1:{self.port}?ca="
                    + urllib.parse.quote(self.ca, safe="/"))
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args):
        """One command on a fresh connection; returns the decoded reply."""
        with self.connect(5) as s:
            s.sendall(encode(*args))
            return Reply(s).read()

    def stop(self, timeout=10.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError("redis-server did not exit after SIGTERM")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout=5.0):
        """Starts redis-server again on the same port (after stop())."""
        self.stop()
        deadline = time.monotonic() + timeout
        while not self._start(timeout):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not restart on port {self.port}; log:\n"
                                   + self.log())

    def close(self):
        self.kill()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
