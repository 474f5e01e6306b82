"""tls_support.py -- certificates, TLS servers and TLS clients for the TLS client tests.

Not a test itself: tls_test.py and tls_hostile_test.py import it.
  - Certs(dir): scripts/devcert's CA, server (localhost, 127.0.0.1, ::1) and client pairs in a
    temp directory, and more pairs signed by the same CA (issue), e.g. for SNI or a reload.
  - TlsServer: luasock_server.Server with any number of --listen addresses (tls: or plain);
    its `listeners` come from the "listening on" lines, so every port is ephemeral.
  - client_context / connect: Python's ssl module as the socket tutorial uses it, wrapped
    around socket.create_connection.
"""
import os
import re
import socket
import ssl
import subprocess
import time

from luasock_server import ASAN, Server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVCERT = os.path.join(REPO, "scripts", "devcert")
LISTENING = re.compile(r"luasock: listening on (\S+) \(")


def run(args):
    """Runs a command that must succeed; returns its stdout."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


class Certs:
    """Certificates in `dir`: ca.pem, server.pem/.key (CN localhost) and client.pem/.key from
    scripts/devcert; issue() adds pairs signed by the same CA."""

    def __init__(self, dir):
        self.dir = dir
        run([DEVCERT, dir, "localhost"])

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, name, cn, dns_names=(), client=False, ca="ca"):
        """Writes NAME.pem and NAME.key: a P-256 certificate for subject /CN=cn with the given
        DNS names, signed by CA.pem (a self-signed one when ca is None)."""
        key, pem, csr = (self.path(name + ext) for ext in (".key", ".pem", ".csr"))
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key])
        extensions = self.path(name + ".ext")
        with open(extensions, "w") as f:
            if dns_names:
                f.write("subjectAltName=" + ",".join("DNS:" + n for n in dns_names) + "\n")
            f.write("extendedKeyUsage=" + ("clientAuth" if client else "serverAuth") + "\n")
        run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr])
        if ca is None:
            signer = ["-signkey", key]
        else:
            signer = ["-CA", self.path(ca + ".pem"), "-CAkey", self.path(ca + ".key"),
                      "-set_serial", str(int.from_bytes(os.urandom(8), "big"))]
        run(["openssl", "x509", "-req", "-in", csr, *signer, "-days", "30", "-sha256",
             "-extfile", extensions, "-out", pem])
        os.remove(csr)
        os.remove(extensions)


def peer_cn(sock):
    """The CN of the certificate the peer presented (parsed by openssl: works unverified)."""
    der = sock.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject",
                          "-nameopt", "RFC2253"], input=der, capture_output=True, timeout=10,
                         check=True).stdout.decode()
    match = re.search(r"CN=([^,\n]+)", out)
    return match.group(1) if match else None


class Listener:
    """One "listening on" address: tls, family and where to connect."""

    def __init__(self, address):
        self.address = address
        self.tls = address.startswith("tls:")
        rest = address[4:] if self.tls else address
        if rest.startswith("unix:"):
            self.family, self.target = socket.AF_UNIX, rest[5:]
        elif rest.startswith("["):
            host, port = rest[1:].rsplit("]:", 1)
            self.family, self.target = socket.AF_INET6, (host, int(port))
        else:
            host, port = rest.rsplit(":", 1)
            self.family, self.target = socket.AF_INET, (host, int(port))

    def tcp(self, timeout):
        """A plain connected socket to this listener."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.target)
        except OSError:
            sock.close()
            raise
        return sock


class TlsServer(Server):
    """`luasock serve SCRIPT --listen A --listen B ...`; self.listeners in the order of the
    "listening on" lines, self.tls the first tls: one."""

    def __init__(self, script, listens=("tls:127.0.0.1:0",), args=(), start_timeout=None):
        self.expected = len(listens)
        more = [word for address in listens[1:] for word in ("--listen", address)]
        super().__init__(script, [*more, *args], start_timeout or (15.0 if ASAN else 5.0),
                         listen=listens[0])

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.findall(self.log())
            if len(found) >= self.expected:
                self.listeners = [Listener(address) for address in found]
                tls = [listener for listener in self.listeners if listener.tls]
                self.tls = tls[0] if tls else None
                first = self.listeners[0]
                if first.family == socket.AF_UNIX:
                    return None, None
                return first.target
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        self.kill()
        raise RuntimeError("server did not start; log:\n" + self.log())

    def listener(self, tls=True, family=socket.AF_INET):
        for listener in self.listeners:
            if listener.tls == tls and listener.family == family:
                return listener
        raise RuntimeError(f"no {'tls' if tls else 'plain'} listener of family {family}")


def client_context(ca, cert=None, key=None, alpn=None, check_hostname=True, max_version=None):
    """An SSLContext that trusts `ca` (a file, or a list of files); optionally a client
    certificate, ALPN protocols, and a highest TLS version."""
    context = ssl.create_default_context()
    for path in [ca] if isinstance(ca, str) else ca:
        context.load_verify_locations(cafile=path)
    if cert:
        context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(alpn)
    if not check_hostname:
        context.check_hostname = False
    if max_version:
        context.maximum_version = max_version
    return context


def connect(listener, context, server_hostname="localhost", timeout=5.0, session=None,
            suppress_ragged_eofs=True):
    """A TLS connection to `listener` after a complete handshake."""
    sock = listener.tcp(timeout)
    try:
        return context.wrap_socket(sock, server_hostname=server_hostname, session=session,
                                   suppress_ragged_eofs=suppress_ragged_eofs)
    except BaseException:
        sock.close()
        raise


def client_hello(context, server_hostname="localhost"):
    """The bytes of a real ClientHello (Python's, from `context`), made in a memory BIO."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    if len(hello) < 100 or hello[0] != 0x16:
        raise RuntimeError(f"not a ClientHello: {hello[:16]!r}")
    return hello


class Lines:
    """Lines from a socket (plain or TLS): a recv may hold several or half of one."""

    def __init__(self, sock):
        self.sock, self.pending = sock, b""

    def line(self):
        while b"\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"EOF; unfinished line {self.pending[:80]!r}")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def ask(self, line):
        self.sock.sendall(line + b"\n")
        return self.line()


def parse_info(line):
    """A handler's report of conn:tls() ("plaintext", or tab-separated key=value pairs, "nil"
    for a missing field) as a dict (None for "plaintext")."""
    text = line.decode() if isinstance(line, bytes) else line
    if text == "plaintext":
        return None
    info = {}
    for pair in text.split("\t"):
        key, value = pair.split("=", 1)
        info[key] = {"nil": None, "true": True, "false": False}.get(value, value)
    return info


# The Lua side of parse_info, for handler scripts: `tls_line(conn)` reports conn:tls().
TLS_LINE_LUA = """
local TLS_FIELDS = { "version", "cipher", "server_name", "alpn", "resumed", "subject", "issuer",
  "not_after", "verified" }

-- conn:tls() as one line: tab-separated key=value pairs, or "plaintext".
local function tls_line(conn)
  local info = conn:tls()
  if info == nil then return "plaintext\\n" end
  local out = {}
  for i, key in ipairs(TLS_FIELDS) do out[i] = key .. "=" .. tostring(info[key]) end
  return table.concat(out, "\\t") .. "\\n"
end
"""
