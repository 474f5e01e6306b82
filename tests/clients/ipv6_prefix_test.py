"""ipv6_prefix_test.py -- issue 13 item 11: --max-connections-per-ip counts an IPv6 client per
network (/64 by default, --ipv6-prefix BITS), so a host holding a /64 cannot open N connections
from each of its addresses; IPv4 clients still count per address.

The loopback interface has one IPv6 address, ::1. So the test runs itself again in namespaces
of its own (`unshare -rn`: a user namespace and a network namespace, which needs no privilege
where user namespaces are allowed), where it brings lo up and adds fd00:0:0:1::a and
fd00:0:0:1::b (one /64) and fd00:0:0:2::a (another /64 of the same /48). Nothing outside the
namespace changes. The server listens on [::1]:0 with --max-connections-per-ip 2, and each
client binds one of those addresses before it connects.

1. Default (/64): two connections from 1::a are served; a third, from 1::b, is refused at once
   and the log names the /64 network; 2::a is served.
2. --ipv6-prefix 128: 1::b is served beside the two from 1::a (one count per address).
3. --ipv6-prefix 48: 2::a is refused too.
4. IPv4 still counts per address: 127.0.0.1 and 127.0.0.2 (lo routes all of 127/8) each get
   their 2 connections.
5. --ipv6-prefix 0 and 129 are usage errors (exit 2).
Every server must exit 0 on SIGTERM with no [error] line. Run from the repo root with
LUASOCK_BIN set; exit 0 = pass, 77 = skipped (no namespaces here).
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Checks, Server, stop_and_check  # noqa: E402

SKIPPED = 77
INSIDE = "LUASOCK_IPV6_PREFIX_TEST_NAMESPACE"
NET_A1, NET_A2, NET_B = "fd00:0:0:1::a", "fd00:0:0:1::b", "fd00:0:0:2::a"
TIMEOUT = 5.0

ECHO = """\
return { handle = function(conn)
  for line in function() return conn:receive() end do conn:send(line, "\\n") end
end }
"""


def run_in_namespace():
    """Runs this script again in new user and network namespaces; returns its exit status."""
    try:
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
        why = probe.stderr.strip() if probe.returncode != 0 else None
    except OSError as error:
        why = str(error)
    if why is not None:
        print(f"SKIP: cannot make a network namespace here (unshare -rn: {why})")
        return SKIPPED
    env = dict(os.environ, **{INSIDE: "1"})
    return subprocess.run(["unshare", "-rn", sys.executable, os.path.abspath(__file__)],
                          env=env).returncode


def set_up_addresses():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in (NET_A1, NET_A2, NET_B):
        subprocess.run(["ip", "-6", "addr", "add", address + "/128", "dev", "lo", "nodad"],
                       check=True)


def connect(server, source):
    """A client bound to `source`, connected to the server."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(TIMEOUT)
    client.bind((source, 0))
    client.connect((server.host.strip("[]"), server.port))
    return client


def served(client, text):
    """Whether the server echoes `text` on this client."""
    try:
        client.sendall(text.encode() + b"\n")
        return client.recv(100) == text.encode() + b"\n"
    except OSError:
        return False


def refused(server, source):
    """Whether a connection from `source` is closed at once without a byte."""
    client = connect(server, source)
    started = time.monotonic()
    try:
        data = client.recv(100)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        data = None
    client.close()
    return data == b"" and time.monotonic() - started < 2


def wait_log(server, text, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return True
        time.sleep(0.01)
    return False


def serve(script, listen, *args):
    return Server(script, args=("--max-connections-per-ip", "2", *args), listen=listen)


def test_default_64(checks, script):
    server = serve(script, "[::1]:0")
    try:
        first = [connect(server, NET_A1) for _ in range(2)]
        checks.check(all(served(c, f"a1 {i}") for i, c in enumerate(first)),
                     "/64: two connections from fd00:0:0:1::a are served")
        checks.check(refused(server, NET_A2),
                     "/64: a third, from fd00:0:0:1::b in the same /64, is refused at once")
        checks.check(wait_log(server, "refused connection from [fd00:0:0:1::b]:")
                     and "too many connections from its /64 network "
                         "(--max-connections-per-ip, --ipv6-prefix)" in server.log(),
                     "/64: the refusal is logged, naming the /64 network")
        other = connect(server, NET_B)
        checks.check(served(other, "b"), "/64: fd00:0:0:2::a (another /64) is served")
        first[0].close()
        again = None
        deadline = time.monotonic() + TIMEOUT
        while again is None and time.monotonic() < deadline:
            client = connect(server, NET_A2)
            if served(client, "a2"):
                again = client
            else:
                client.close()
                time.sleep(0.05)
        checks.check(again is not None,
                     "/64: once one of 1::a's closes, 1::b gets the network's free slot")
        for client in first[1:] + [other] + ([again] if again else []):
            client.close()
    finally:
        stop_and_check(server, checks)
        server.close()


def test_prefix_128(checks, script):
    server = serve(script, "[::1]:0", "--ipv6-prefix", "128")
    try:
        clients = [connect(server, NET_A1) for _ in range(2)] + [connect(server, NET_A2)]
        checks.check(all(served(c, f"n{i}") for i, c in enumerate(clients)),
                     "/128: 1::b is served beside two connections from 1::a")
        checks.check(refused(server, NET_A1), "/128: a third from 1::a is refused")
        for client in clients:
            client.close()
    finally:
        stop_and_check(server, checks)
        server.close()


def test_prefix_48(checks, script):
    server = serve(script, "[::1]:0", "--ipv6-prefix", "48")
    try:
        clients = [connect(server, NET_A1), connect(server, NET_A2)]
        checks.check(all(served(c, f"n{i}") for i, c in enumerate(clients)),
                     "/48: one connection each from 1::a and 1::b are served")
        checks.check(refused(server, NET_B), "/48: 2::a, in the same /48, is refused")
        for client in clients:
            client.close()
    finally:
        stop_and_check(server, checks)
        server.close()


def test_ipv4_per_address(checks, script):
    server = serve(script, "127.0.0.1:0")
    try:
        clients = [connect(server, "127.0.0.1") for _ in range(2)]
        clients += [connect(server, "127.0.0.2") for _ in range(2)]
        checks.check(all(served(c, f"n{i}") for i, c in enumerate(clients)),
                     "IPv4: 127.0.0.1 and 127.0.0.2 each get their two connections")
        checks.check(refused(server, "127.0.0.2") and refused(server, "127.0.0.1"),
                     "IPv4: a third from either address is refused")
        for client in clients:
            client.close()
    finally:
        stop_and_check(server, checks)
        server.close()


def test_usage_errors(checks, script):
    for bad in ("0", "129", "64x"):
        done = subprocess.run([BIN, "serve", script, "--listen", "[::1]:0", "--ipv6-prefix", bad],
                              capture_output=True, text=True, timeout=10)
        checks.check(done.returncode == 2 and
                     f"--ipv6-prefix: expected bits from 1 to 128, got '{bad}'" in done.stderr,
                     f"--ipv6-prefix {bad} is a usage error (exit {done.returncode})")


def main():
    if os.environ.get(INSIDE) != "1":
        return run_in_namespace()
    set_up_addresses()
    checks = Checks()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "echo.lua")
        with open(script, "w") as f:
            f.write(ECHO)
        test_default_64(checks, script)
        test_prefix_128(checks, script)
        test_prefix_48(checks, script)
        test_ipv4_per_address(checks, script)
        test_usage_errors(checks, script)
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
