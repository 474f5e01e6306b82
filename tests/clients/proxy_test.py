"""proxy_test.py -- examples/proxy.lua relays 100 MiB both ways in bounded memory, then closes.

A Python client sends 100 MiB of pseudo-random data through the proxy to an examples/echo.lua
upstream while it reads the echo back in the same time (a sender thread and the main thread),
and checks every byte by SHA-256. The proxy's resident set size (VmRSS) is sampled during the
transfer and must stay under 64 MiB: backpressure, not buffering. After the client has gone,
the proxy's connections to the client and to the upstream must both be closed (its and the
echo server's open file descriptors go back to what they were before), and a second client
must still be served. Run from the repo root with LUASOCK_BIN set; exit 0 = pass.

AddressSanitizer keeps freed memory in a quarantine of 256 MiB by default, which would count in
VmRSS; for a sanitizer build the quarantine is cut to 16 MiB, which still catches a use after a
recent free.
"""
import hashlib
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Server, fail  # noqa: E402

MiB = 1024 * 1024
TOTAL = 100 * MiB
CHUNK = MiB
RSS_LIMIT_KIB = 64 * 1024
TRANSFER_TIMEOUT = 60  # seconds; a stall fails the test instead of hanging it
SAMPLE_EVERY = 0.05    # seconds between VmRSS samples


def limit_asan_quarantine():
    """For an AddressSanitizer build of BIN, a 16 MiB quarantine (see the docstring)."""
    with open(BIN, "rb") as f:
        if b"__asan_init" not in f.read():
            return
    options = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = (options + ":" if options else "") + "quarantine_size_mb=16"
    print("AddressSanitizer build: quarantine limited to 16 MiB")


def open_fds(pid):
    """How many file descriptors process `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(condition, timeout, what):
    """Polls `condition` until it is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def send_all(sock, digest, errors):
    """The sender thread: TOTAL pseudo-random bytes, hashed as they go, then end of stream."""
    try:
        rng = random.Random(20261129)
        for _ in range(TOTAL // CHUNK):
            data = rng.randbytes(CHUNK)
            digest.update(data)
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError as error:
        errors.append(error)


def receive_all(sock, proxy, digest):
    """Reads the echo until the proxy closes; returns (bytes, VmRSS samples in KiB)."""
    received, samples = 0, []
    deadline = time.monotonic() + TRANSFER_TIMEOUT
    next_sample = time.monotonic()
    while True:
        data = sock.recv(MiB)
        if not data:
            return received, samples
        digest.update(data)
        received += len(data)
        now = time.monotonic()
        if now >= next_sample:
            samples.append(proxy.rss_kib())
            next_sample = now + SAMPLE_EVERY
        if now > deadline:
            fail(f"the transfer took over {TRANSFER_TIMEOUT} s ({received} bytes back)")


def relay(proxy):
    """Sends TOTAL bytes through the proxy while reading the echo; checks bytes and memory."""
    sent, back, errors = hashlib.sha256(), hashlib.sha256(), []
    started = time.monotonic()
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sender = threading.Thread(target=send_all, args=(sock, sent, errors))
        sender.start()
        received, samples = receive_all(sock, proxy, back)
        sender.join(TRANSFER_TIMEOUT)
    took = time.monotonic() - started
    if errors or sender.is_alive():
        fail(f"the sender failed: {errors or 'still running'}")
    if received != TOTAL:
        fail(f"got {received} bytes back instead of {TOTAL}")
    if back.hexdigest() != sent.hexdigest():
        fail("the bytes that came back differ from those sent (SHA-256)")
    print(f"ok: {TOTAL // MiB} MiB through the proxy and back intact in {took:.1f} s")
    if len(samples) < 5:
        fail(f"only {len(samples)} VmRSS samples during the transfer")
    if max(samples) >= RSS_LIMIT_KIB:
        fail(f"proxy VmRSS reached {max(samples)} KiB (limit {RSS_LIMIT_KIB} KiB)")
    print(f"ok: proxy VmRSS at most {max(samples)} KiB over {len(samples)} samples")


def second_client(proxy):
    """A new connection through the proxy is still echoed."""
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(b"still there?\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    if data != b"still there?\n":
        fail(f"second client got {data!r}")
    print("ok: a second client is relayed")


def check(echo, proxy):
    proxy_fds, echo_fds = open_fds(proxy.pid), open_fds(echo.pid)
    relay(proxy)
    wait_for(lambda: open_fds(proxy.pid) == proxy_fds, 5,
             f"the proxy to close both connections ({open_fds(proxy.pid)} fds, {proxy_fds} before)")
    wait_for(lambda: open_fds(echo.pid) == echo_fds, 5,
             f"the echo server's connection to close ({open_fds(echo.pid)} fds, {echo_fds} before)")
    print("ok: the proxy closed its client and upstream connections")
    second_client(proxy)


def main():
    limit_asan_quarantine()
    echo = Server("examples/echo.lua")
    proxy = None
    try:
        # "localhost" is answered by /etc/hosts, so the proxy's connect asks no name server.
        os.environ["UPSTREAM"] = f"localhost:{echo.port}"
        proxy = Server("examples/proxy.lua")
        check(echo, proxy)
        proxy.stop()
        echo.stop()
        print("ok: proxy and echo server stopped with exit status 0")
    finally:
        if proxy is not None:
            proxy.close()
        echo.close()
    print("proxy_test: passed")


if __name__ == "__main__":
    main()
