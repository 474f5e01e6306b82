"""tls_hostile_test.py -- issue 14: hostile peers against a TLS listener while TLS clients are
served.

The pattern of hostile_test.py, whose GoodClients it reuses: every scenario starts a TLS echo
server (HANDLER, certificates from scripts/devcert in a temp directory), connects GOOD_CLIENTS
clients that complete a TLS handshake and then echo random payloads in threads of their own
(every byte checked, every round trip timed), runs an attack, lets the good clients go on, and
checks that they saw no error and no round trip over MAX_LATENCY, that the server logged no
[error] line and exits with status 0 on SIGTERM (no leak under ASan), and that the attacker got
what it deserves.

Scenarios:
  plaintext   plaintext to the TLS port (an HTTP request, a text line): each connection
              closed without an answer, "tls handshake failed" logged (debug), no handler ran
  garbage     64 KiB of random bytes, raw and after a valid TLS record header, on
              GARBAGE_CONNECTIONS connections: each closed
  slow-hello  a real ClientHello trickled one byte per 100 ms by SLOW_HELLOS peers, to a
              server with first_byte_timeout = 1: each closed within SLOW_HELLO_WINDOW of its
              connect, long before its hello was whole (the handshake counts against it)
  half-open   HALF_OPEN connections, a third of them silent, a third stopping in the middle of
              a ClientHello and a third silent after a whole one (never reading the server's
              answer), to a server with first_byte_timeout = 5: the good clients keep their
              latency while the server holds them, and the server closes every one within
              HALF_OPEN_CLOSE seconds (its descriptors go back to what they were)
  stalled     a TLS peer that asks for 64 MiB and stops reading: the handler's send times out
              at send_timeout (1 s) and the connection is closed, what the peer got is an
              exact prefix; a peer that makes the handler post 64 KiB blocks is dropped at
              max_queue

Prints one line per scenario and a final "N passed, N failed"; exits 1 on any failure. Run from
the repo root with LUASOCK_BIN set; names given as arguments run only those scenarios.
"""
import os
import re
import resource
import select
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile_test import (ASAN, IO_TIMEOUT, MAX_LATENCY, EchoProtocol, Failed,  # noqa: E402
                          GoodClients, attempt, check, open_fds, raise_fd_limit, read_to_eof,
                          ready, wait_for)
from tls_support import Certs, TlsServer, client_context, client_hello  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
GARBAGE_CONNECTIONS = 20
SLOW_HELLOS = 5
SLOW_HELLO_STEP = 0.1                              # seconds between two bytes of the hello
SLOW_HELLO_WINDOW = (0.8, 5.0 if ASAN else 2.5)    # seconds after the connect
HALF_OPEN = 5000
HALF_OPEN_FIRST_BYTE = 5                           # first_byte_timeout of that scenario
HALF_OPEN_CLOSE = HALF_OPEN_FIRST_BYTE + (20 if ASAN else 10)
STALL_BLOCKS = 1024                                # 64 KiB blocks the stalled peer asks for

HANDLER = """-- A TLS echo server for the hostile scenarios. A connection whose first chunk is
-- "SEND\\n" is sent STALL_BLOCKS 64 KiB blocks with send, one whose first chunk is "POST\\n"
-- the same with post; how that ended is logged.
local luasock = require "luasock"
local M = {
  tls = { cert = "server.pem", key = "server.key" },
  first_byte_timeout = FIRST_BYTE_TIMEOUT,
  send_timeout = 1,
}

local BLOCK = string.rep("0123456789abcdef", 4096)

local function stream(conn, method)
  for i = 1, STALL_BLOCKS do
    local ok, err = conn[method](conn, BLOCK)
    if not ok then
      luasock.log("info", "stall " .. method .. " ended: " .. err .. " after " .. (i - 1)
        .. " blocks")
      return
    end
    if method == "post" then luasock.sleep(0.01) end
  end
  luasock.log("info", "stall " .. method .. " finished")
end

function M.handle(conn)
  local data = conn:receiveany(65536)
  if data == "SEND\\n" then return stream(conn, "send") end
  if data == "POST\\n" then return stream(conn, "post") end
  while data do
    conn:send(data)
    data = conn:receiveany(65536)
  end
end

return M
"""

BLOCK = b"0123456789abcdef" * 4096
HANDSHAKE_FAILED = re.compile(r"tls handshake failed: \S")
STALL_SEND = re.compile(r"stall send ended: timeout after (\d+) blocks")
STALL_POST = re.compile(r"stall post ended: (\S+) after (\d+) blocks")
DROPPED = re.compile(r"\[warn\] conn \d+: disconnected: .*max_queue")

CONTEXT = None    # the good clients' SSLContext (trusts the test CA), set by main


class TlsEchoProtocol(EchoProtocol):
    """hostile_test's echo client over TLS: the handshake completes in the constructor."""

    def __init__(self, sock, index):
        super().__init__(CONTEXT.wrap_socket(sock, server_hostname="localhost"), index)


def closed_without_answer(sock, what):
    """Reads until the server closes; fails if it answered with more than a TLS alert."""
    try:
        data, how = read_to_eof(sock, limit=64 * KiB)
    except socket.timeout:
        raise Failed(f"{what}: still open {IO_TIMEOUT} s later")
    # A TLS alert record (type 21) is all the server may send before it closes.
    check(data == b"" or (data[0] == 21 and len(data) <= 7 * 2),
          f"{what}: got {data[:40]!r} before the close")
    return how


def scenario_plaintext(server, good):
    """plaintext: an HTTP request and a text line to the TLS port."""
    mark = len(server.log())
    hows = []
    for payload in (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"hello\n", b"SEND\n"):
        sock = socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
        sock.sendall(payload)
        hows.append(closed_without_answer(sock, f"plaintext {payload[:10]!r}"))
        sock.close()
    failed = wait_for(lambda: len(HANDSHAKE_FAILED.findall(server.log(), mark)) >= 3 and
                      HANDSHAKE_FAILED.findall(server.log(), mark), IO_TIMEOUT,
                      "three 'tls handshake failed' lines")
    check("stall" not in server.log()[mark:], "a handler ran for a plaintext peer")
    lines = [line for line in server.log()[mark:].splitlines() if "tls handshake failed" in line]
    return [f"3 plaintext peers closed ({', '.join(hows)}); {len(failed)} lines like "
            f"{lines[0]!r}"]


def scenario_garbage(server, good):
    """garbage: random bytes, raw and after a TLS handshake record header."""
    hows = {}
    for i in range(GARBAGE_CONNECTIONS):
        sock = socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
        payload = os.urandom(64 * KiB)
        if i % 2:
            payload = b"\x16\x03\x01\x02\x00" + payload  # a handshake record of 512 bytes
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: fine
        try:
            data, how = read_to_eof(sock, limit=64 * KiB)
        except socket.timeout:
            raise Failed(f"garbage connection {i}: still open {IO_TIMEOUT} s later")
        check(b"0123456789abcdef" not in data, f"garbage connection {i} was answered")
        hows[how] = hows.get(how, 0) + 1
        sock.close()
    return [f"{GARBAGE_CONNECTIONS} connections of 64 KiB random bytes all closed ({hows})"]


def scenario_slow_hello(server, good):
    """slow-hello: a ClientHello trickled one byte per 100 ms, first_byte_timeout 1 s."""
    hello = client_hello(CONTEXT)
    results = [None] * SLOW_HELLOS

    def slow(i):
        try:
            sock = socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.monotonic()
            for sent in range(len(hello)):
                if ready([sock], select.POLLIN, SLOW_HELLO_STEP):
                    data, _ = read_to_eof(sock, limit=KiB)
                    results[i] = (time.monotonic() - start, sent, data)
                    sock.close()
                    return
                try:
                    sock.send(hello[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    results[i] = (time.monotonic() - start, sent, b"")
                    sock.close()
                    return
            results[i] = f"never closed: all {len(hello)} bytes sent"
            sock.close()
        except Exception as e:  # noqa: BLE001 -- reported below
            results[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(SLOW_HELLOS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(len(hello) * SLOW_HELLO_STEP + 30)
    low, high = SLOW_HELLO_WINDOW
    for i, result in enumerate(results):
        check(isinstance(result, tuple), f"slow hello {i}: {result}")
        after, sent, data = result
        check(low <= after <= high, f"slow hello {i} closed after {after:.2f} s, not within "
                                    f"{low}..{high} s")
        check(sent < len(hello), f"slow hello {i}: the whole hello went out")
        check(data == b"" or data[0] == 21, f"slow hello {i} got {data[:20]!r}")
    closes = ", ".join(f"{r[0]:.2f} s ({r[1]} bytes)" for r in results)
    return [f"{SLOW_HELLOS} hellos of {len(hello)} bytes trickled, closed after {closes}"]


def scenario_half_open(server, good):
    """half-open: HALF_OPEN connections, silent, stopped inside a ClientHello, or silent after
    a whole one."""
    hello = client_hello(CONTEXT)
    # What each third of them sends before it falls silent.
    sends = [b"", hello[:len(hello) // 2], hello]
    before = open_fds(server.pid)
    socks, opened_at, kinds = [], {}, {}
    started = time.monotonic()
    try:
        for i in range(HALF_OPEN):
            sock = socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
            if sends[i % 3]:
                sock.sendall(sends[i % 3])
            socks.append(sock)
            opened_at[sock.fileno()], kinds[sock.fileno()] = time.monotonic(), i % 3
        opened = time.monotonic() - started
        good.go_on(what=f"with {HALF_OPEN} half-open handshakes")
        peak = open_fds(server.pid) - before
        # Every one is closed by the server (EOF or reset); those that sent no whole hello
        # get nothing but an alert (record type 21) before.
        pending = {sock.fileno(): sock for sock in socks}
        closed_after = []
        deadline = time.monotonic() + HALF_OPEN_CLOSE
        while pending and time.monotonic() < deadline:
            for sock in ready(list(pending.values()), select.POLLIN, 0.5):
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    data = b""
                check(data == b"" or data[0] == 21 or kinds[sock.fileno()] == 2,
                      f"a half-open connection got {data[:20]!r}")
                if not data:
                    closed_after.append(time.monotonic() - opened_at[sock.fileno()])
                    del pending[sock.fileno()]
        check(not pending, f"{len(pending)} of {HALF_OPEN} half-open connections still open "
                           f"{HALF_OPEN_CLOSE} s later")
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: open_fds(server.pid) <= before + 2, IO_TIMEOUT * 2,
             "the server to close the half-open connections")
    closed_after.sort()
    return [f"{HALF_OPEN} connections (a third silent, a third with {len(sends[1])} of "
            f"{len(hello)} hello bytes, a third with the whole hello) opened in {opened:.2f} s; "
            f"up to {peak} server descriptors for them; closed by the server "
            f"{closed_after[0]:.1f} to {closed_after[-1]:.1f} s after their connect"]


def stalled_peer(server, command):
    """A TLS connection with a small receive buffer that sends `command` and reads nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(IO_TIMEOUT)
    sock.connect((server.host, server.port))
    tls = CONTEXT.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(command)
    return tls


def scenario_stalled(server, good):
    """stalled: a peer that stops reading in the middle of a large TLS send, and one that
    lets posted blocks pile up."""
    mark = len(server.log())
    attacker = stalled_peer(server, b"SEND\n")
    started = time.monotonic()
    ended = wait_for(lambda: STALL_SEND.search(server.log(), mark), IO_TIMEOUT * 2,
                     "the stalled send to time out")
    took = time.monotonic() - started
    good.go_on(what="after the stalled send")
    # What the peer can still read is an exact prefix of the stream, then the end.
    data, how = read_to_eof(attacker, limit=STALL_BLOCKS * len(BLOCK))
    attacker.close()
    check(len(data) < STALL_BLOCKS * len(BLOCK), "the whole stream arrived")
    check(data == (BLOCK * (len(data) // len(BLOCK) + 1))[:len(data)],
          "the stalled peer's data is not a prefix of the stream")
    poster = stalled_peer(server, b"POST\n")
    posted = wait_for(lambda: STALL_POST.search(server.log(), mark), IO_TIMEOUT * 2,
                      "the posts to end")
    dropped = wait_for(lambda: DROPPED.search(server.log(), mark), IO_TIMEOUT,
                       "the 'disconnected: ... max_queue' line")
    poster.close()
    check(posted.group(1) in ("overflow", "closed"), f"post ended with {posted.group(0)!r}")
    return [f"send ended {took:.1f} s after the request ({ended.group(0)!r}); the peer then "
            f"read {len(data) / KiB:.0f} KiB, an exact prefix, then {how}",
            f"post: {posted.group(0)!r}; {dropped.group(0)!r}"]


SCENARIOS = [
    ("plaintext", 10, scenario_plaintext),
    ("garbage", 10, scenario_garbage),
    ("slow-hello", 1, scenario_slow_hello),
    ("half-open", HALF_OPEN_FIRST_BYTE, scenario_half_open),
    ("stalled", 10, scenario_stalled),
]


def write_script(directory, first_byte_timeout):
    path = os.path.join(directory, f"tls_hostile_{first_byte_timeout}.lua")
    with open(path, "w") as f:
        f.write(HANDLER.replace("FIRST_BYTE_TIMEOUT", str(first_byte_timeout))
                .replace("STALL_BLOCKS", str(STALL_BLOCKS)))
    return path


def run_scenario(name, script, attack):
    server = TlsServer(script, args=("--log-level", "debug"))
    good = None
    try:
        good = GoodClients(server, TlsEchoProtocol)
        good.go_on(5, what="before the attack")
        notes = attack(server, good)
        check(server.proc.poll() is None, "the server died")
        good.go_on()
        summary = good.finish()
        good = None
        check(server.proc.poll() is None, "the server died")
        errors = [line for line in server.log().splitlines() if "[error]" in line]
        check(not errors, "the server logged errors:\n" + "\n".join(errors))
        server.stop(timeout=30.0 if ASAN else 15.0)
        return notes + [summary, "server stopped with exit status 0"]
    except Exception:
        if good is not None:
            good.stopping.set()
        raise
    finally:
        if good is not None:
            for client in good.clients:
                client.sock.close()
        server.close()


def main():
    global CONTEXT
    sys.setswitchinterval(0.001)  # the good clients' threads take turns quickly
    fd_ok = raise_fd_limit(HALF_OPEN + 300)
    only = sys.argv[1:]
    unknown = set(only) - {name for name, _, _ in SCENARIOS}
    if unknown:
        sys.exit(f"no such scenario: {', '.join(sorted(unknown))}")
    tmp = tempfile.TemporaryDirectory(prefix="luasock-tls-hostile-")
    certs = Certs(tmp.name)
    CONTEXT = client_context(certs.path("ca.pem"))
    print(f"MAX_LATENCY {MAX_LATENCY * 1000:.0f} ms ({'AddressSanitizer' if ASAN else 'normal'} "
          f"build)")
    passed = failed = 0
    started = time.monotonic()
    for name, first_byte_timeout, attack in SCENARIOS:
        if only and name not in only:
            continue
        if name == "half-open" and not fd_ok:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            print(f"SKIP {name}: RLIMIT_NOFILE hard limit {hard} is below {HALF_OPEN + 300}")
            continue
        script = write_script(tmp.name, first_byte_timeout)
        if attempt(name, attack, lambda: run_scenario(name, script, attack)):
            passed += 1
        else:
            failed += 1
    tmp.cleanup()
    print(f"total {time.monotonic() - started:.1f} s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
