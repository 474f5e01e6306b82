"""soak_test.py -- 15 s of mixed connect/echo/disconnect churn against examples/echo.lua.

A few client threads each loop until the time is up: connect, do 1 to 20 echo round trips of
random sizes (1 B to 64 KiB, log-uniform, pseudo-random bytes) and check every byte, then leave
in one of four ways: a plain close (FIN), an abrupt close (RST, SO_LINGER 0), a half-close (the
last message, then shutdown(SHUT_WR): the echo of everything sent must still arrive, then EOF),
or leaving mid-message (part of a message sent, then close or RST without reading the echo).
The server's resident set size (VmRSS) is sampled every second. Checks:

- no error in any round trip that should succeed (connect, echo, half-close), bytes exact;
- RSS at the end (mean of the last 3 samples) is not above the post-warm-up level (mean of the
  3 samples around the end of the 5 s warm-up) by more than max(2 MiB, 20 %);
- once the clients are gone, the server's open file descriptors go back to what they were
  before the churn (no descriptor leaked by any way of leaving);
- SIGTERM stops the server with exit status 0, and its log has no [error] line and no
  'LeakSanitizer', 'AddressSanitizer' or 'runtime error' text: under the ASan+UBSan build
  (LeakSanitizer on at exit) that proves zero leaks and no undefined behaviour.

AddressSanitizer keeps freed memory in a 256 MiB quarantine, which would count as RSS growth;
for a sanitizer build of LUASOCK_BIN the quarantine is cut to 16 MiB, as in proxy_test.py.

This file is also the churn library of bench/soak (the 10-minute version), which imports it:
`Stats`, `churn`, `RssSampler` and `server_is_sanitized` are shared, so there is one copy of
the churn logic. Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import os
import random
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# SANITIZER_TEXT stays importable from here: bench/soak reads soak_test.SANITIZER_TEXT.
from luasock_server import BIN, SANITIZER_TEXT, Checks, Server, stop_and_check  # noqa: E402,F401

KiB = 1024
MiB = 1024 * KiB
MAX_SIZE = 64 * KiB
# Payloads are slices of this pool of pseudo-random bytes (making fresh ones would cost more
# client CPU than the server spends echoing them).
POOL = random.Random(20261129).randbytes(4 * MAX_SIZE)
ENDINGS = ("close", "reset", "half_close", "mid_message")
ENDING_WEIGHTS = (40, 20, 20, 20)
IO_TIMEOUT = 10.0  # seconds one connection's exchange may take before it counts as an error

DURATION = 15.0    # seconds of churn in the CI test
WARMUP = 5.0       # seconds after which RSS must stop growing
THREADS = 4
GROWTH_KIB = 2 * KiB   # allowed RSS growth: the larger of this ...
GROWTH_RATIO = 0.20    # ... and this fraction of the post-warm-up level


class Stats:
    """Counts of what the churn did, shared by the threads of one process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.round_trips = 0
        self.bytes = 0
        self.endings = dict.fromkeys(ENDINGS, 0)
        self.errors = 0
        self.error_samples = []  # the first few, for the report

    def add(self, round_trips, nbytes, ending):
        with self.lock:
            self.connections += 1
            self.round_trips += round_trips
            self.bytes += nbytes
            self.endings[ending] += 1

    def error(self, what):
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(what)

    def merge(self, other):
        """Adds another Stats' counts (bench/soak gathers one per client process)."""
        with self.lock:
            self.connections += other.connections
            self.round_trips += other.round_trips
            self.bytes += other.bytes
            for key, count in other.endings.items():
                self.endings[key] += count
            self.errors += other.errors
            self.error_samples += other.error_samples[:10 - len(self.error_samples)]

    def __getstate__(self):  # picklable (bench/soak sends one back from each process)
        state = dict(self.__dict__)
        state["lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def summary(self):
        endings = ", ".join(f"{k} {v}" for k, v in self.endings.items())
        return (f"{self.connections} connections, {self.round_trips} round trips, "
                f"{self.bytes / MiB:.1f} MiB echoed ({endings}); {self.errors} errors")


def random_size(rng):
    """1 B to 64 KiB, log-uniform: as many messages under 256 B as between 256 B and 64 KiB."""
    return min(MAX_SIZE, max(1, int(2 ** rng.uniform(0, 16))))


def random_payload(rng, size):
    offset = rng.randrange(len(POOL) - size + 1)
    return memoryview(POOL)[offset:offset + size]


def exchange(sock, data, deadline, half_close=False):
    """Sends `data` while reading its echo (so no size can deadlock on full buffers) and
    returns what came back, len(data) bytes. With half_close, shuts down the sending side
    after the last byte and reads on to EOF, which must follow the echo."""
    poller = select.poll()
    sent, got = 0, bytearray()
    if half_close and not data:
        sock.shutdown(socket.SHUT_WR)
    while True:
        if len(got) >= len(data) and not half_close:
            return bytes(got)
        writing = sent < len(data)
        poller.register(sock, select.POLLIN | (select.POLLOUT if writing else 0))
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"echo stalled: sent {sent} of {len(data)} B, got {len(got)} B")
        events = poller.poll(left * 1000)
        for _, event in events:
            if event & select.POLLOUT and writing:
                sent += sock.send(data[sent:sent + MAX_SIZE])
                if sent == len(data) and half_close:
                    sock.shutdown(socket.SHUT_WR)
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                chunk = sock.recv(MAX_SIZE)
                if not chunk:
                    if half_close and len(got) == len(data) and sent == len(data):
                        return bytes(got)
                    raise ConnectionError(f"EOF after {len(got)} of {len(data)} B echoed")
                got += chunk
                if len(got) > len(data):
                    raise ConnectionError(f"{len(got)} B echoed for {len(data)} B sent")


def reset_close(sock):
    """Closes with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def one_connection(host, port, rng, stats):
    """One client's life: connect, 1-20 checked round trips, then one of ENDINGS."""
    ending = rng.choices(ENDINGS, ENDING_WEIGHTS)[0]
    trips = rng.randint(1, 20)
    step = "connect"
    nbytes = 0
    deadline = time.monotonic() + IO_TIMEOUT
    try:
        sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    except OSError as error:
        stats.error(f"connect: {error!r}")
        return
    try:
        sock.setblocking(False)
        full = trips - 1 if ending == "mid_message" else trips
        for i in range(full):
            step = f"round trip {i + 1} of {trips} ({ending})"
            data = random_payload(rng, random_size(rng))
            last_half_close = ending == "half_close" and i == full - 1
            if exchange(sock, data, deadline, half_close=last_half_close) != data:
                stats.error(f"{step}: echo of {len(data)} B differs")
                sock.close()
                return
            nbytes += len(data)
        if ending == "mid_message":
            step = "mid-message send"
            # Part of a message (up to 64 KiB) goes out; the echo is never read.
            data = random_payload(rng, random_size(rng))
            part = data[:max(1, len(data) * rng.randint(1, 4) // 4)]
            sent, poller = 0, select.poll()
            poller.register(sock, select.POLLOUT)
            while sent < len(part) and time.monotonic() < deadline:
                if poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    sent += sock.send(part[sent:])
            if rng.random() < 0.5:
                reset_close(sock)
            else:
                sock.close()
        elif ending == "reset":
            reset_close(sock)
        else:
            sock.close()
        stats.add(full, nbytes, ending)
    except (OSError, ValueError) as error:
        stats.error(f"{step}: {error!r}")
        sock.close()


def churn(host, port, seconds, threads, seed, stats, stop=None):
    """Runs `threads` client threads looping one_connection for `seconds` (or until `stop`,
    a threading.Event, is set); returns when all have finished."""
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()

    def loop(rng):
        while not stop.is_set() and time.monotonic() < deadline:
            one_connection(host, port, rng, stats)

    workers = [threading.Thread(target=loop, args=(random.Random(seed * 1000 + i),), daemon=True)
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 2 * IO_TIMEOUT)
    if any(w.is_alive() for w in workers):
        stop.set()
        stats.error("a client thread did not finish in time")


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


class RssSampler(threading.Thread):
    """Samples process `pid`'s VmRSS every `interval` seconds: `samples` is a list of
    (seconds since start, KiB); `on_sample(t, kib)` is called with each, if given."""

    def __init__(self, pid, interval=1.0, on_sample=None):
        super().__init__(daemon=True)
        self.pid, self.interval, self.on_sample = pid, interval, on_sample
        self.samples = []
        self.gone = False
        self.halt = threading.Event()
        self.start_time = time.monotonic()

    def run(self):
        tick = 0
        while not self.halt.is_set():
            try:
                kib = vm_rss_kib(self.pid)
            except (OSError, RuntimeError):
                self.gone = True
                return
            t = time.monotonic() - self.start_time
            self.samples.append((t, kib))
            if self.on_sample:
                self.on_sample(t, kib)
            tick += 1
            self.halt.wait(max(0.0, self.start_time + tick * self.interval - time.monotonic()))

    def stop(self):
        self.halt.set()
        self.join()


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def server_is_sanitized(binary=BIN):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def limit_asan_quarantine():
    """For a sanitizer build, a 16 MiB ASan quarantine (inherited by the server)."""
    options = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = (options + ":" if options else "") + "quarantine_size_mb=16"


def wait_for(condition, timeout):
    """Polls `condition` until it is true or `timeout` seconds have passed; returns it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.02)
    return True


def main():
    started = time.monotonic()
    if server_is_sanitized():
        limit_asan_quarantine()
        print("AddressSanitizer build: quarantine limited to 16 MiB")
    checks = Checks()
    server = Server("examples/echo.lua")
    try:
        fds_before = len(os.listdir(f"/proc/{server.pid}/fd"))
        sampler = RssSampler(server.pid)
        sampler.start()
        stats = Stats()
        churn(server.host, server.port, DURATION, THREADS, 1, stats)
        sampler.stop()
        print(f"churn: {stats.summary()} in {DURATION:.0f} s with {THREADS} threads")
        for sample in stats.error_samples:
            print("  error: " + sample)
        checks.check(stats.errors == 0, f"no error in good round trips ({stats.errors} errors)")
        checks.check(stats.connections > 0 and all(stats.endings.values()),
                     "every way of leaving was exercised")
        checks.check(not sampler.gone, "the server stayed up during the churn")

        samples = sampler.samples
        print("RSS samples (KiB): " + " ".join(str(kib) for _, kib in samples))
        warm = [kib for t, kib in samples if WARMUP - 1.5 <= t <= WARMUP + 1.5]
        if checks.check(len(warm) >= 2 and len(samples) >= 10,
                        f"{len(samples)} RSS samples, {len(warm)} around the warm-up's end"):
            base, end = mean(warm), mean(kib for _, kib in samples[-3:])
            peak = max(kib for _, kib in samples)
            allowed = max(GROWTH_KIB, GROWTH_RATIO * base)
            print(f"RSS start {samples[0][1]} KiB, post-warm-up {base:.0f} KiB, "
                  f"peak {peak} KiB, end {end:.0f} KiB")
            checks.check(end <= base + allowed,
                         f"RSS end {end:.0f} KiB is within {allowed:.0f} KiB of the post-warm-up "
                         f"{base:.0f} KiB (growth {end - base:+.0f} KiB)")

        back = wait_for(lambda: len(os.listdir(f"/proc/{server.pid}/fd")) == fds_before, 10.0)
        fds_after = len(os.listdir(f"/proc/{server.pid}/fd"))
        checks.check(back, f"the server's open descriptors went back to {fds_before} after the "
                           f"churn (now {fds_after})")

        stop_and_check(server, checks, timeout=30.0)
    finally:
        server.close()
    print(f"soak_test: {time.monotonic() - started:.1f} s")
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
