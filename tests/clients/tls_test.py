"""tls_test.py -- issue 14: luasock's TLS listeners with clients we did not write.

Python's ssl module (the socket tutorial's client wrapped in an SSLContext that trusts the
test CA, and asyncio for the bulk echo), `openssl s_client` and `curl --cacert` against luasock
servers whose certificates scripts/devcert makes in a temp directory (plus pairs signed by the
same CA for SNI and reloads). Every handler reports conn:tls() back as a line, so each check
compares what the client saw with what the server saw.

  Echo            lines, and 1 MiB both ways at once (asyncio), byte for byte
  Fields          conn:tls() version and cipher as the client negotiated them (TLS 1.3 and
                  1.2), "plaintext" on a plain listener of the same server
  Sni             certs = {...}: a.test, the wildcard *.b.test, an unknown name and no name
                  (the default certificate); also through curl --resolve and s_client
  Alpn            alpn = {"h2", "http/1.1"}: the server's first choice that the client offers
  Resumption      a second connection with the first's session: resumed on both sides (1.3, 1.2)
  CloseNotify     conn:close(), shutdown("send") and a returning handler end with close_notify:
                  Python's recv returns b'' (a bare FIN would raise SSLEOFError), s_client reads
                  the alert and exits 0
  Records         a TLS 1.3 key update asked for by s_client is answered and the echo goes on;
                  a TLS 1.2 renegotiation is refused (no_renegotiation)
  Curl            an HTTP handler over TLS: curl --cacert gets its page, curl without the CA
                  refuses the certificate
  MutualTls       verify_client: a client certificate from the CA is accepted (subject,
                  issuer, verified), none or a foreign one is refused while others are served
  Ciphers         ciphers (TLS 1.2) and ciphersuites (TLS 1.3) decide what is negotiated
  Tls13Only       min_version = "1.3" refuses a TLS 1.2 client; session_tickets = false: no
                  resumption
  Workers         --workers 2: sessions resume whichever worker accepts, also after a reload
  Reload          certificates replaced under load (new handshakes and open connections in
                  threads) with SIGHUP: no failed handshake, new connections get the new
                  certificate, a broken pair logs "reload failed: tls ..." and the last good
                  one keeps serving; --watch picks up replaced certificate files
  Addresses       tls:unix:/path and tls:[::1]:0 listeners
  Shutdown        SIGTERM with TLS connections in a read and handshakes unfinished: exit 0,
                  close_notify for the open ones
  CommandLine     --tls-cert/--tls-key override the script's pair, and serve examples/echo.lua

Run from the repo root with LUASOCK_BIN set; exit 0 = pass. Test names as arguments run only
those (e.g. `python3 tests/clients/tls_test.py Sni`).
"""
import asyncio
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import SANITIZER_TEXT  # noqa: E402
from tls_support import (ASAN, REPO, TLS_LINE_LUA, Certs, Lines, TlsServer,  # noqa: E402
                         client_context, client_hello, connect, parse_info, peer_cn)

IO_TIMEOUT = 15.0 if ASAN else 5.0
RELOAD_TIMEOUT = 10.0 if ASAN else 5.0   # seconds from a SIGHUP to its log line
MiB = 1024 * 1024
BULK = 1 * MiB
DEV_CLIENT = "/CN=luasock development client"
DEV_CA = "/CN=luasock development CA"
RELOADED = re.compile(r"\[info\] reloaded \S+ in [\d.]+ ms")
RELOAD_FAILED = re.compile(r"\[error\] reload failed: tls \S*live\.(pem|key): \S")
HANDSHAKE_FAILED = re.compile(r"tls handshake failed: \S")

# The handler of every server here: the connection's first line says what it does.
HANDLER = """-- TLS test handler. First line:
--   info     report conn:tls() as a line (tls_line), then echo lines
--   report   report conn:tls(), then conn:close()
--   lines    echo lines
--   bulk     echo whatever arrives
--   bye      "bye", then conn:close() (close_notify)
--   half     "half", then conn:shutdown("send") (close_notify), then read until the peer's EOF
--   end      "end", then return from the handler
--   worker   the number of the worker process (luasock.worker), then echo lines
--   GET ...  an HTTP/1.1 request, answered with the report of conn:tls() as its body
local luasock = require "luasock"
local M = { tls = TLS_SETTINGS }
""" + TLS_LINE_LUA + """
local function echo_lines(conn)
  while true do
    local line = conn:receive("*l")
    if not line then return end
    conn:send(line, "\\n")
  end
end

local function echo_bytes(conn)
  while true do
    local data = conn:receiveany(65536)
    if not data then return end
    conn:send(data)
  end
end

local function http(conn)
  repeat
    local header = conn:receive("*l")
  until header == nil or header == ""
  local body = tls_line(conn)
  conn:send("HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: ", #body,
    "\\r\\nConnection: close\\r\\n\\r\\n", body)
end

function M.handle(conn)
  local command = conn:receive("*l")
  if command == "info" then
    conn:send(tls_line(conn))
    echo_lines(conn)
  elseif command == "report" then
    conn:send(tls_line(conn))
    conn:close()
  elseif command == "lines" then
    echo_lines(conn)
  elseif command == "bulk" then
    echo_bytes(conn)
  elseif command == "bye" then
    conn:send("bye\\n")
    conn:close()
  elseif command == "half" then
    conn:send("half\\n")
    conn:shutdown("send")
    conn:receive("*a")
  elseif command == "end" then
    conn:send("end\\n")
  elseif command == "worker" then
    conn:send(luasock.worker, "\\n")
    echo_lines(conn)
  elseif command and command:find("^GET ") then
    http(conn)
  end
end

return M
"""

CERTS = None      # the module's Certs, made by setUpModule
TEMP = None


def setUpModule():
    global CERTS, TEMP
    TEMP = tempfile.TemporaryDirectory(prefix="luasock-tls-")
    CERTS = Certs(TEMP.name)
    CERTS.issue("a", "a.test", ["a.test"])
    CERTS.issue("b", "*.b.test", ["*.b.test"])
    CERTS.issue("cli", "cli.test", ["localhost"])
    CERTS.issue("stranger", "stranger", client=True, ca=None)


def tearDownModule():
    TEMP.cleanup()


def write_handler(name, tls_settings, directory=None):
    """Writes HANDLER with `tls_settings` (Lua source of the tls table) into `directory` (the
    module's certificate directory by default); returns its path."""
    path = os.path.join(directory or CERTS.dir, name)
    with open(path, "w") as f:
        f.write(HANDLER.replace("TLS_SETTINGS", tls_settings))
    return path


def der(path):
    """The DER bytes of the certificate in a PEM file (to compare with getpeercert)."""
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def check_stopped(case, server, allowed=None):
    """Stops `server` (exit status 0) and checks its log: no sanitizer report, and no [error]
    line but those matching `allowed`."""
    try:
        log = server.stop(timeout=30.0 if ASAN else 15.0)
    finally:
        server.close()
    found = [text for text in SANITIZER_TEXT if text in log]
    case.assertFalse(found, "sanitizer report in the server's log:\n" + log[-4000:])
    errors = [line for line in log.splitlines()
              if "[error]" in line and not (allowed and allowed.search(line))]
    case.assertFalse(errors, "[error] lines in the server's log:\n" + "\n".join(errors))


class ServerCase:
    """A mixin for test classes that share one server: setUpClass starts script()'s server,
    the last test stops it and checks its log."""
    LISTENS = ("tls:127.0.0.1:0",)
    ARGS = ()
    ALLOWED_ERRORS = None

    @classmethod
    def script(cls):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.server = TlsServer(cls.script(), cls.LISTENS, cls.ARGS)
        cls.tls = cls.server.tls
        cls.context = client_context(CERTS.path("ca.pem"))

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_zz_server_stops_cleanly(self):
        """(last) SIGTERM: exit status 0, no sanitizer report, no unexpected [error]."""
        check_stopped(self, self.server, self.ALLOWED_ERRORS)

    def info(self, sock):
        """Asks the handler for its conn:tls() report; the connection then echoes lines."""
        return parse_info(Lines(sock).ask(b"info"))


MAIN_TLS = """{
  certs = {
    { cert = "server.pem", key = "server.key" },
    { cert = "a.pem", key = "a.key" },
    { cert = "b.pem", key = "b.key" },
  },
  alpn = { "h2", "http/1.1" },
}"""


class MainServer(ServerCase):
    """A server with certs = {localhost (default), a.test, *.b.test} and alpn {h2, http/1.1},
    on a TLS and a plaintext listener."""
    LISTENS = ("tls:127.0.0.1:0", "127.0.0.1:0")
    ARGS = ("--log-level", "debug")

    @classmethod
    def script(cls):
        return write_handler("main.lua", MAIN_TLS)


class Echo(MainServer, unittest.TestCase):
    def test_lines(self):
        """Lines of several sizes, two in one write and an empty one come back exactly."""
        with connect(self.tls, self.context) as sock:
            lines = Lines(sock)
            sock.sendall(b"lines\n")
            for line in (b"hello", b"", b"x" * 3000, bytes(range(32, 127))):
                self.assertEqual(line, lines.ask(line))
            sock.sendall(b"one\ntwo\n")
            self.assertEqual((b"one", b"two"), (lines.line(), lines.line()))

    def test_bulk_both_ways(self):
        """1 MiB sent while its echo is read (asyncio streams over TLS): exact bytes."""
        payload = os.urandom(BULK)

        async def exchange():
            host, port = self.tls.target
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self.context, server_hostname="localhost")
            writer.write(b"bulk\n")

            async def send():
                for i in range(0, len(payload), 65536):
                    writer.write(payload[i:i + 65536])
                    await writer.drain()

            sender = asyncio.create_task(send())
            got = await asyncio.wait_for(reader.readexactly(len(payload)), IO_TIMEOUT * 2)
            await sender
            writer.close()
            await writer.wait_closed()
            return got

        got = asyncio.run(exchange())
        self.assertEqual(len(payload), len(got))
        self.assertTrue(got == payload, "the 1 MiB echo differs")

    def test_one_record_many_lines(self):
        """Five 3 KB lines in one write (one TLS record, decrypted at once): every one is
        answered without more input arriving."""
        lines = [b"%d:" % i + b"r" * 3000 for i in range(5)]
        with connect(self.tls, self.context) as sock:
            sock.sendall(b"lines\n" + b"".join(line + b"\n" for line in lines))
            reader = Lines(sock)
            self.assertEqual(lines, [reader.line() for _ in lines])

    def test_many_connections_in_turn(self):
        """50 connections one after another: each handshake completes and is answered."""
        for i in range(50):
            with connect(self.tls, self.context) as sock:
                self.assertEqual(b"n%d" % i, Lines(sock).ask(b"lines\nn%d" % i))


class Fields(MainServer, unittest.TestCase):
    def test_tls13(self):
        """conn:tls() names the version and cipher the client negotiated; no peer cert."""
        with connect(self.tls, self.context) as sock:
            info = self.info(sock)
            self.assertEqual("TLSv1.3", sock.version())
            self.assertEqual(sock.version(), info["version"])
            self.assertEqual(sock.cipher()[0], info["cipher"])
            self.assertEqual("localhost", info["server_name"])
            self.assertIs(False, info["resumed"])
            self.assertIsNone(info["subject"])
            self.assertIsNone(info["verified"])

    def test_tls12(self):
        """A client that stops at TLS 1.2 gets it, with a TLS 1.2 cipher (OpenSSL's name)."""
        context = client_context(CERTS.path("ca.pem"), max_version=ssl.TLSVersion.TLSv1_2)
        with connect(self.tls, context) as sock:
            info = self.info(sock)
            self.assertEqual("TLSv1.2", sock.version())
            self.assertEqual("TLSv1.2", info["version"])
            self.assertEqual(sock.cipher()[0], info["cipher"])

    def test_plaintext_listener(self):
        """On the same server's plaintext listener, conn:tls() is nil."""
        with self.server.listener(tls=False).tcp(IO_TIMEOUT) as sock:
            self.assertEqual(b"plaintext", Lines(sock).ask(b"info"))

    def test_plaintext_on_tls_port(self):
        """A plaintext line on the TLS listener: closed, logged as a failed handshake (debug),
        the handler never runs."""
        mark = len(self.server.log())
        with self.tls.tcp(IO_TIMEOUT) as sock:
            sock.sendall(b"info\n")
            data = b""
            while True:
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
        self.assertNotIn(b"plaintext", data)
        self.assertNotIn(b"version=", data)
        wait_log(self.server, HANDSHAKE_FAILED, mark)


def wait_log(server, pattern, mark=0, timeout=IO_TIMEOUT):
    """Waits until `pattern` matches the log after byte `mark`; returns the match."""
    deadline = time.monotonic() + timeout
    while True:
        match = pattern.search(server.log(), mark)
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(f"log never matched {pattern.pattern!r}; log:\n"
                                 + server.log()[-3000:])
        time.sleep(0.02)


class Sni(MainServer, unittest.TestCase):
    def named(self, name, check_hostname=True):
        context = client_context(CERTS.path("ca.pem"), check_hostname=check_hostname)
        with connect(self.tls, context, server_hostname=name) as sock:
            return peer_cn(sock), self.info(sock)

    def test_exact_name(self):
        """SNI a.test: the a.test certificate (verified for that name by the client)."""
        cn, info = self.named("a.test")
        self.assertEqual("a.test", cn)
        self.assertEqual("a.test", info["server_name"])

    def test_wildcard(self):
        """SNI x.b.test: the *.b.test certificate."""
        cn, info = self.named("x.b.test")
        self.assertEqual("*.b.test", cn)
        self.assertEqual("x.b.test", info["server_name"])

    def test_wildcard_does_not_match_its_base(self):
        """SNI b.test: not covered by *.b.test, so the default certificate."""
        cn, _ = self.named("b.test", check_hostname=False)
        self.assertEqual("localhost", cn)

    def test_unknown_name(self):
        """SNI unknown.test: the default (first) certificate; server_name is what was sent."""
        cn, info = self.named("unknown.test", check_hostname=False)
        self.assertEqual("localhost", cn)
        self.assertEqual("unknown.test", info["server_name"])

    def test_no_name(self):
        """No SNI at all: the default certificate, server_name nil."""
        cn, info = self.named(None, check_hostname=False)
        self.assertEqual("localhost", cn)
        self.assertIsNone(info["server_name"])

    def test_default_name(self):
        """SNI localhost: the default certificate, verified."""
        cn, info = self.named("localhost")
        self.assertEqual("localhost", cn)
        self.assertEqual("localhost", info["server_name"])

    def test_s_client(self):
        """openssl s_client -servername x.b.test verifies the wildcard certificate."""
        host, port = self.tls.target
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "x.b.test",
             "-verify_hostname", "x.b.test", "-CAfile", CERTS.path("ca.pem"),
             "-verify_return_error", "-quiet"],
            input=b"report\n", capture_output=True, timeout=IO_TIMEOUT * 2)
        self.assertEqual(0, done.returncode, done.stderr)
        self.assertEqual("x.b.test", parse_info(done.stdout.rstrip(b"\n"))["server_name"])
        self.assertIn("depth=0 CN = *.b.test", done.stderr.decode())


class Alpn(MainServer, unittest.TestCase):
    def negotiate(self, offer):
        context = client_context(CERTS.path("ca.pem"), alpn=offer)
        with connect(self.tls, context) as sock:
            return sock.selected_alpn_protocol(), self.info(sock)["alpn"]

    def test_http11(self):
        """A client offering http/1.1 only gets http/1.1, and the handler sees it."""
        self.assertEqual(("http/1.1", "http/1.1"), self.negotiate(["http/1.1"]))

    def test_server_order(self):
        """A client offering http/1.1 then h2 gets h2: the server's first choice."""
        self.assertEqual(("h2", "h2"), self.negotiate(["http/1.1", "h2"]))

    def test_none(self):
        """A client offering no ALPN: none, alpn nil."""
        self.assertEqual((None, None), self.negotiate(None))


class Resumption(MainServer, unittest.TestCase):
    def resume(self, max_version=None):
        context = client_context(CERTS.path("ca.pem"), max_version=max_version)
        with connect(self.tls, context) as first:
            info = self.info(first)  # the session ticket has arrived before this answer
            self.assertIs(False, info["resumed"])
            self.assertIs(False, first.session_reused)
            session = first.session
        self.assertIsNotNone(session)
        with connect(self.tls, context, session=session) as second:
            info = self.info(second)
            return second.session_reused, info["resumed"], info["version"]

    def test_tls13(self):
        """TLS 1.3 ticket: the second connection is resumed, on both sides."""
        self.assertEqual((True, True, "TLSv1.3"), self.resume())

    def test_tls12(self):
        """TLS 1.2 session ticket: the same."""
        self.assertEqual((True, True, "TLSv1.2"), self.resume(ssl.TLSVersion.TLSv1_2))


class CloseNotify(MainServer, unittest.TestCase):
    def ends_cleanly(self, command):
        """Sends `command`, reads its one-line answer, then requires a clean TLS end: recv()
        returns b'' (with suppress_ragged_eofs off, a FIN without close_notify raises
        SSLEOFError), and unwrap() completes."""
        with connect(self.tls, self.context, suppress_ragged_eofs=False) as sock:
            lines = Lines(sock)
            self.assertEqual(command, lines.ask(command))
            self.assertEqual(b"", lines.pending)
            self.assertEqual(b"", sock.recv(4096))
            sock.unwrap()

    def test_close(self):
        """conn:close() sends close_notify after the queued answer."""
        self.ends_cleanly(b"bye")

    def test_shutdown_send(self):
        """conn:shutdown("send") sends close_notify after the queued answer."""
        self.ends_cleanly(b"half")

    def test_handler_returns(self):
        """A handler that returns ends its connection with close_notify too."""
        self.ends_cleanly(b"end")

    def test_s_client(self):
        """openssl s_client reads the close_notify alert and exits 0 (it exits 1 on an
        unexpected EOF)."""
        host, port = self.tls.target
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
             "-verify_hostname", "localhost", "-CAfile", CERTS.path("ca.pem"),
             "-verify_return_error", "-state", "-quiet"],
            input=b"bye\n", capture_output=True, timeout=IO_TIMEOUT * 2)
        stderr = done.stderr.decode(errors="replace")
        self.assertEqual(b"bye\n", done.stdout)
        self.assertEqual(0, done.returncode, stderr)
        self.assertIn("SSL3 alert read:warning:close notify", stderr)


class SClient:
    """An interactive `openssl s_client -msg` (it prints every record it sends or reads):
    lines written to it go to the server, except its command letters (K: a TLS 1.3 key update
    that asks for the peer's too; R: a TLS 1.2 renegotiation)."""

    def __init__(self, listener, *options):
        host, port = listener.target
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
             "-CAfile", CERTS.path("ca.pem"), "-verify_return_error", "-no_ign_eof", "-msg",
             *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output, self.pos, self.ended = b"", 0, False

    def send(self, line):
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern, timeout=IO_TIMEOUT):
        """Reads its output until `pattern` (bytes) matches after the last match."""
        pattern = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.output, self.pos)
            if match:
                self.pos = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self.ended:
                raise AssertionError(f"s_client never printed {pattern.pattern!r}; it printed:\n"
                                     + self.output[-3000:].decode(errors="replace"))
            if select.select([self.proc.stdout], [], [], left)[0]:
                data = os.read(self.proc.stdout.fileno(), 65536)
                self.ended = not data
                self.output += data

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class Records(MainServer, unittest.TestCase):
    def test_key_update(self):
        """A TLS 1.3 key update that asks for the server's (s_client's K): the server answers
        with its own before the next echo, and the echo goes on under the new keys."""
        client = SClient(self.tls)
        try:
            client.send(b"lines")
            client.send(b"before")
            client.wait_for(rb"^before$")
            client.send(b"K")
            client.wait_for(rb"^>>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate")
            client.send(b"after")
            client.wait_for(rb"^<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate")
            client.wait_for(rb"^after$")
            client.send(b"k")  # a key update that asks for nothing back
            # (s_client takes a whole read of its input as the command: wait before the next)
            client.wait_for(rb"^>>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate")
            client.send(b"again")
            client.wait_for(rb"^again$")
        finally:
            client.close()

    def test_renegotiation_refused(self):
        """A TLS 1.2 client's renegotiation (s_client's R) is refused with a no_renegotiation
        alert; the server goes on serving."""
        client = SClient(self.tls, "-tls1_2")
        try:
            client.send(b"lines")
            client.send(b"before")
            client.wait_for(rb"^before$")
            client.send(b"R")
            client.wait_for(rb"^<<< TLS 1\.2, Alert \[length 0002\], warning no_renegotiation")
        finally:
            client.close()
        with connect(self.tls, self.context) as sock:
            self.assertEqual(b"still", Lines(sock).ask(b"lines\nstill"))


class Curl(MainServer, unittest.TestCase):
    def curl(self, name, *options):
        host, port = self.tls.target
        return subprocess.run(
            ["curl", "-sS", "--max-time", str(IO_TIMEOUT), "--resolve", f"{name}:{port}:{host}",
             *options, f"https://{name}:{port}/"], capture_output=True, timeout=IO_TIMEOUT * 2)

    def test_page(self):
        """curl --cacert gets the page over TLS 1.3 with ALPN http/1.1."""
        done = self.curl("localhost", "--cacert", CERTS.path("ca.pem"), "--http1.1")
        self.assertEqual(0, done.returncode, done.stderr)
        info = parse_info(done.stdout.rstrip(b"\n"))
        self.assertEqual("TLSv1.3", info["version"])
        self.assertEqual("http/1.1", info["alpn"])
        self.assertEqual("localhost", info["server_name"])

    def test_sni_name(self):
        """curl https://a.test:PORT/ gets the a.test certificate (curl verifies it)."""
        done = self.curl("a.test", "--cacert", CERTS.path("ca.pem"), "--http1.1")
        self.assertEqual(0, done.returncode, done.stderr)
        self.assertEqual("a.test", parse_info(done.stdout.rstrip(b"\n"))["server_name"])

    def test_tls12(self):
        """curl --tls-max 1.2 gets a TLS 1.2 connection."""
        done = self.curl("localhost", "--cacert", CERTS.path("ca.pem"), "--http1.1",
                         "--tls-max", "1.2")
        self.assertEqual(0, done.returncode, done.stderr)
        self.assertEqual("TLSv1.2", parse_info(done.stdout.rstrip(b"\n"))["version"])

    def test_untrusted(self):
        """curl without the CA refuses the certificate (exit 60)."""
        done = self.curl("localhost", "--http1.1", "--capath", "/nonexistent",
                         "--cacert", CERTS.path("a.pem"))
        self.assertEqual(60, done.returncode, done.stderr)


class MutualTls(ServerCase, unittest.TestCase):
    ARGS = ("--log-level", "debug")

    @classmethod
    def script(cls):
        return write_handler("mtls.lua", """{ cert = "server.pem", key = "server.key",
          ca = "ca.pem", verify_client = true }""")

    def with_cert(self):
        return client_context(CERTS.path("ca.pem"), CERTS.path("client.pem"),
                              CERTS.path("client.key"))

    def served(self):
        """A client with the CA's client certificate is served (checked after refusals)."""
        with connect(self.tls, self.with_cert()) as sock:
            return self.info(sock)

    def test_accepted(self):
        """A client certificate from the CA: subject, issuer and verified in conn:tls()."""
        info = self.served()
        self.assertEqual(DEV_CLIENT, info["subject"])
        self.assertEqual(DEV_CA, info["issuer"])
        self.assertIs(True, info["verified"])
        self.assertTrue(info["not_after"] and info["not_after"].endswith("GMT"),
                        info["not_after"])

    def test_s_client_with_cert(self):
        """openssl s_client -cert/-key is served too."""
        host, port = self.tls.target
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
             "-CAfile", CERTS.path("ca.pem"), "-verify_return_error", "-quiet",
             "-cert", CERTS.path("client.pem"), "-key", CERTS.path("client.key")],
            input=b"bye\n", capture_output=True, timeout=IO_TIMEOUT * 2)
        self.assertEqual(b"bye\n", done.stdout, done.stderr)
        self.assertEqual(0, done.returncode, done.stderr)

    def refused(self, context):
        """The connection gets no answer: with TLS 1.3 the client's handshake ends before the
        server has checked its certificate, so the refusal (an alert, or a close) shows on the
        first read; with TLS 1.2 in the handshake itself."""
        mark = len(self.server.log())
        with self.assertRaises((ssl.SSLError, ConnectionError, EOFError)):
            with connect(self.tls, context) as sock:
                Lines(sock).ask(b"info")
        wait_log(self.server, HANDSHAKE_FAILED, mark)
        self.assertEqual(DEV_CLIENT, self.served()["subject"])

    def test_no_cert_refused(self):
        """No client certificate: refused, logged; the others are still served."""
        self.refused(self.context)

    def test_no_cert_refused_tls12(self):
        """The same with TLS 1.2."""
        self.refused(client_context(CERTS.path("ca.pem"), max_version=ssl.TLSVersion.TLSv1_2))

    def test_foreign_cert_refused(self):
        """A self-signed client certificate (not from the CA): refused."""
        self.refused(client_context(CERTS.path("ca.pem"), CERTS.path("stranger.pem"),
                                    CERTS.path("stranger.key")))

    def test_curl_with_cert(self):
        """curl --cert/--key gets the page and the server sees the client's subject."""
        host, port = self.tls.target
        done = subprocess.run(
            ["curl", "-sS", "--max-time", str(IO_TIMEOUT), "--cacert", CERTS.path("ca.pem"),
             "--cert", CERTS.path("client.pem"), "--key", CERTS.path("client.key"), "--http1.1",
             "--resolve", f"localhost:{port}:{host}", f"https://localhost:{port}/"],
            capture_output=True, timeout=IO_TIMEOUT * 2)
        self.assertEqual(0, done.returncode, done.stderr)
        self.assertEqual(DEV_CLIENT, parse_info(done.stdout.rstrip(b"\n"))["subject"])


class Ciphers(ServerCase, unittest.TestCase):
    """ciphers (TLS 1.2) and ciphersuites (TLS 1.3) choose what is negotiated."""

    @classmethod
    def script(cls):
        return write_handler("ciphers.lua", """{ cert = "server.pem", key = "server.key",
          ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256",
          ciphersuites = "TLS_CHACHA20_POLY1305_SHA256" }""")

    def test_tls13_suite(self):
        """TLS 1.3: the one suite allowed."""
        with connect(self.tls, self.context) as sock:
            self.assertEqual("TLS_CHACHA20_POLY1305_SHA256", sock.cipher()[0])
            self.assertEqual("TLS_CHACHA20_POLY1305_SHA256", self.info(sock)["cipher"])

    def test_tls12_cipher(self):
        """TLS 1.2: the one cipher allowed."""
        context = client_context(CERTS.path("ca.pem"), max_version=ssl.TLSVersion.TLSv1_2)
        with connect(self.tls, context) as sock:
            self.assertEqual("ECDHE-ECDSA-AES128-GCM-SHA256", sock.cipher()[0])
            self.assertEqual("ECDHE-ECDSA-AES128-GCM-SHA256", self.info(sock)["cipher"])


class Tls13Only(ServerCase, unittest.TestCase):
    """min_version = "1.3" and session_tickets = false."""
    ARGS = ("--log-level", "debug")

    @classmethod
    def script(cls):
        return write_handler("tls13.lua", """{ cert = "server.pem", key = "server.key",
          min_version = "1.3", session_tickets = false }""")

    def test_tls12_client_refused(self):
        """A client that stops at TLS 1.2 is refused (protocol version); others are served."""
        mark = len(self.server.log())
        context = client_context(CERTS.path("ca.pem"), max_version=ssl.TLSVersion.TLSv1_2)
        with self.assertRaises(ssl.SSLError):
            connect(self.tls, context).close()
        wait_log(self.server, HANDSHAKE_FAILED, mark)
        with connect(self.tls, self.context) as sock:
            self.assertEqual("TLSv1.3", self.info(sock)["version"])

    def test_no_resumption_without_tickets(self):
        """No tickets: a second connection offering the first's session is not resumed."""
        with connect(self.tls, self.context) as first:
            self.info(first)
            session = first.session
        with connect(self.tls, self.context, session=session) as second:
            self.assertIs(False, second.session_reused)
            self.assertIs(False, self.info(second)["resumed"])


class Workers(ServerCase, unittest.TestCase):
    """--workers 2: the workers share what resumes a session."""
    ARGS = ("--workers", "2")

    @classmethod
    def script(cls):
        return write_handler("workers.lua", '{ cert = "server.pem", key = "server.key" }')

    def test_resumption_across_workers(self):
        """Twenty connections, each offering the session of the one before: all but the
        first resumed, whichever worker accepted them; the same after a SIGHUP reload."""
        for when in ("before", "after"):
            if when == "after":
                mark = len(self.server.log())
                self.server.proc.send_signal(signal.SIGHUP)
                for _ in range(2):
                    mark = wait_log(self.server, re.compile(r"worker \d: reloaded "), mark,
                                    RELOAD_TIMEOUT).end()
            session, workers, reused = None, set(), []
            for _ in range(20):
                with connect(self.tls, self.context, session=session) as sock:
                    workers.add(Lines(sock).ask(b"worker"))
                    reused.append(sock.session_reused)
                    session = sock.session
            self.assertEqual([False] + [True] * 19, reused, f"{when} the reload")
            print(f"\n    {when} the reload: workers {sorted(workers)}", file=sys.stderr)


class Load:
    """Clients in threads while certificates are replaced: HANDSHAKERS threads each make new
    TLS connections in a loop (handshake, one echoed line, close), PERSISTENT threads echo
    lines on one connection each. Records the certificates seen and every failure."""
    HANDSHAKERS = 4
    PERSISTENT = 2

    def __init__(self, listener, context):
        self.listener, self.context = listener, context
        self.stopping = threading.Event()
        self.errors, self.seen, self.handshakes, self.rounds = [], set(), 0, 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.handshaker, args=(i,), daemon=True)
                        for i in range(self.HANDSHAKERS)]
        self.persistent = [connect(listener, context) for _ in range(self.PERSISTENT)]
        for sock in self.persistent:
            sock.sendall(b"lines\n")
        self.threads += [threading.Thread(target=self.echoer, args=(sock,), daemon=True)
                         for sock in self.persistent]
        for thread in self.threads:
            thread.start()

    def handshaker(self, i):
        n = 0
        while not self.stopping.is_set():
            try:
                with connect(self.listener, self.context, timeout=IO_TIMEOUT) as sock:
                    line = b"h%d-%d" % (i, n)
                    if Lines(sock).ask(b"lines\n" + line) != line:
                        raise AssertionError(f"wrong echo for {line!r}")
                    cert = sock.getpeercert(binary_form=True)
                with self.lock:
                    self.seen.add(cert)
                    self.handshakes += 1
            except Exception as e:  # noqa: BLE001 -- every failure is one to report
                self.errors.append(f"handshaker {i} round {n}: {type(e).__name__}: {e}")
            n += 1

    def echoer(self, sock):
        lines, n = Lines(sock), 0
        try:
            while not self.stopping.is_set():
                line = b"p%d" % n
                if lines.ask(line) != line:
                    raise AssertionError(f"wrong echo for {line!r}")
                with self.lock:
                    self.rounds += 1
                n += 1
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"persistent connection round {n}: {type(e).__name__}: {e}")

    def go_on(self, handshakes=10):
        """Waits until the handshakers have made `handshakes` more connections."""
        target = self.handshakes + handshakes
        wait_until(lambda: self.errors or self.handshakes >= target,
                   f"{handshakes} more handshakes")

    def finish(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(IO_TIMEOUT * 2)
        for sock in self.persistent:
            sock.close()
        return [thread for thread in self.threads if thread.is_alive()]


class Reload(unittest.TestCase):
    """A server of its own per test, with tls = {cert = "live.pem", key = "live.key"} in a
    directory of its own whose files the test replaces (by rename, as deployment tools do)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="reload-", dir=CERTS.dir)
        self.script = write_handler("reload.lua", '{ cert = "live.pem", key = "live.key" }',
                                    self.dir)
        self.generation = 0
        self.install(self.new_pair())
        self.server = None

    def tearDown(self):
        if self.server:
            self.server.close()

    def new_pair(self):
        """Issues a new localhost pair from the CA; returns its name."""
        self.generation += 1
        name = f"gen{self.generation}"
        CERTS.issue(name, "localhost gen %d" % self.generation, ["localhost"])
        return name

    def install(self, cert_name, key_name=None):
        """Replaces live.key and live.pem by copies of NAME.key/.pem, each with one rename."""
        for source, target in ((key_name or cert_name) + ".key", "live.key"), \
                              (cert_name + ".pem", "live.pem"):
            temp = os.path.join(self.dir, ".new-" + target)
            shutil.copyfile(CERTS.path(source), temp)
            os.replace(temp, os.path.join(self.dir, target))

    def sighup(self, pattern=RELOADED):
        """SIGHUP, then waits for the line it causes."""
        mark = len(self.server.log())
        self.server.proc.send_signal(signal.SIGHUP)
        wait_log(self.server, pattern, mark, RELOAD_TIMEOUT)

    def current(self, context):
        """The certificate a new connection gets now."""
        with connect(self.server.tls, context) as sock:
            self.assertEqual(b"x", Lines(sock).ask(b"lines\nx"))
            return sock.getpeercert(binary_form=True)

    def test_sighup_under_load(self):
        """Three new pairs with two SIGHUPs each, then a broken pair, while clients handshake
        and echo: no failure, each new pair serves new connections at once after its reload,
        the broken pair is refused with "reload failed: tls ..." and the last good one goes
        on serving."""
        self.server = TlsServer(self.script, args=("--log-level", "debug"))
        context = client_context(CERTS.path("ca.pem"))
        self.assertEqual(der(CERTS.path("gen1.pem")), self.current(context))
        load = Load(self.server.tls, context)
        try:
            load.go_on()  # some handshakes with the first pair
            for _ in range(3):
                name = self.new_pair()
                self.install(name)
                for _ in range(2):
                    self.sighup()
                    self.assertEqual(der(CERTS.path(name + ".pem")), self.current(context),
                                     f"a new connection after the reload to {name}")
                load.go_on()
            last_good = der(CERTS.path(name + ".pem"))
            broken = self.new_pair()
            self.install(broken, key_name="gen1")  # gen4.pem with gen1.key: no match
            self.sighup(RELOAD_FAILED)
            self.assertEqual(last_good, self.current(context))
            load.go_on()
        finally:
            hung = load.finish()
        self.assertFalse(hung, "client threads hang")
        self.assertFalse(load.errors, "\n".join(load.errors[:10]))
        self.assertGreater(load.rounds, 0)
        self.assertGreaterEqual(len(load.seen), 4, "handshakes saw every generation")
        self.assertNotIn(der(CERTS.path(broken + ".pem")), load.seen)
        self.assertNotRegex(self.server.log(), HANDSHAKE_FAILED)
        print(f"\n    {load.handshakes} handshakes and {load.rounds} echoes on open "
              f"connections across 7 SIGHUPs, no failure", file=sys.stderr)
        check_stopped(self, self.server, allowed=RELOAD_FAILED)
        self.server = None

    def test_watch(self):
        """With --watch, replacing the certificate files is enough: new connections soon get
        the new certificate (a reload between the two renames may fail on the mismatched
        pair; the old one then serves until the next)."""
        self.server = TlsServer(self.script, args=("--watch",))
        context = client_context(CERTS.path("ca.pem"))
        for _ in range(2):
            name = self.new_pair()
            self.install(name)
            want = der(CERTS.path(name + ".pem"))
            wait_until(lambda: self.current(context) == want, f"the {name} certificate",
                       RELOAD_TIMEOUT)
        check_stopped(self, self.server, allowed=RELOAD_FAILED)
        self.server = None


def wait_until(condition, what, timeout=IO_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def ipv6_loopback():
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class Addresses(unittest.TestCase):
    def test_unix(self):
        """tls:unix:/path: TLS over a unix socket (server_name as the client sent it)."""
        path = os.path.join(CERTS.dir, "tls.sock")
        server = TlsServer(write_handler("unix.lua", MAIN_TLS), (f"tls:unix:{path}",))
        try:
            listener = server.listeners[0]
            self.assertTrue(listener.tls and listener.family == socket.AF_UNIX,
                            listener.address)
            with connect(listener, client_context(CERTS.path("ca.pem"))) as sock:
                info = parse_info(Lines(sock).ask(b"info"))
                self.assertEqual("TLSv1.3", info["version"])
                self.assertEqual("localhost", info["server_name"])
                self.assertEqual(b"over unix", Lines(sock).ask(b"over unix"))
        except BaseException:
            server.close()
            raise
        check_stopped(self, server)

    @unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback here")
    def test_ipv6(self):
        """tls:[::1]:0: TLS over IPv6, next to a plaintext [::1] listener; the client checks
        the certificate's IP address ::1."""
        server = TlsServer(write_handler("ipv6.lua", MAIN_TLS), ("tls:[::1]:0", "[::1]:0"))
        try:
            tls = server.listener(tls=True, family=socket.AF_INET6)
            with connect(tls, client_context(CERTS.path("ca.pem")),
                         server_hostname="::1") as sock:
                info = parse_info(Lines(sock).ask(b"info"))
                self.assertEqual("TLSv1.3", info["version"])
                self.assertIsNone(info["server_name"])  # no SNI for an IP address
            plain = server.listener(tls=False, family=socket.AF_INET6)
            with plain.tcp(IO_TIMEOUT) as sock:
                self.assertEqual(b"plaintext", Lines(sock).ask(b"info"))
        except BaseException:
            server.close()
            raise
        check_stopped(self, server)


class Shutdown(unittest.TestCase):
    def test_sigterm_with_handshakes_in_flight(self):
        """SIGTERM while 5 TLS connections wait in a read and 40 handshakes are unfinished
        (silent, or half a ClientHello): exit status 0 at once, no leak; the open connections
        end with close_notify."""
        server = TlsServer(write_handler("shutdown.lua", MAIN_TLS))
        context = client_context(CERTS.path("ca.pem"))
        hello = client_hello(context)
        socks = []
        try:
            before = open_fds(server.pid)
            for _ in range(5):
                sock = connect(server.tls, context, suppress_ragged_eofs=False)
                socks.append(sock)
                self.assertEqual(b"ready", Lines(sock).ask(b"lines\nready"))
            for i in range(40):
                sock = server.tls.tcp(IO_TIMEOUT)
                socks.append(sock)
                if i % 2:
                    sock.sendall(hello[:len(hello) // 2])
            wait_until(lambda: open_fds(server.pid) >= before + 45, "the 45 accepts")
            started = time.monotonic()
            check_stopped(self, server)
            took = time.monotonic() - started
            self.assertLess(took, 10.0 if ASAN else 3.0)
            for sock in socks[:5]:
                self.assertEqual(b"", sock.recv(4096))
        finally:
            server.close()
            for sock in socks:
                sock.close()


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class CommandLine(unittest.TestCase):
    def test_override_script_pair(self):
        """--tls-cert/--tls-key replace the script's cert/key."""
        script = write_handler("cli.lua", '{ cert = "server.pem", key = "server.key" }')
        server = TlsServer(script, args=("--tls-cert", CERTS.path("cli.pem"),
                                         "--tls-key", CERTS.path("cli.key")))
        try:
            with connect(server.tls, client_context(CERTS.path("ca.pem"))) as sock:
                self.assertEqual(der(CERTS.path("cli.pem")), sock.getpeercert(binary_form=True))
                self.assertEqual("TLSv1.3", parse_info(Lines(sock).ask(b"info"))["version"])
        except BaseException:
            server.close()
            raise
        check_stopped(self, server)

    def test_example_without_tls_table(self):
        """examples/echo.lua (no tls table) served over TLS from the command line alone."""
        server = TlsServer(os.path.join(REPO, "examples", "echo.lua"),
                           args=("--tls-cert", CERTS.path("server.pem"),
                                 "--tls-key", CERTS.path("server.key")))
        try:
            with connect(server.tls, client_context(CERTS.path("ca.pem"))) as sock:
                sock.sendall(b"hello over tls\n")
                self.assertEqual(b"hello over tls", Lines(sock).line())
        except BaseException:
            server.close()
            raise
        check_stopped(self, server)


if __name__ == "__main__":
    unittest.main(verbosity=2)
