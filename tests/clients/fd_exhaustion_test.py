"""fd_exhaustion_test.py -- examples/echo.lua with a low descriptor limit (prlimit, soft = hard).

The server runs under `prlimit --nofile=48:48`, so it cannot raise its soft limit past 48 (it
raises it to the hard limit at start). The test counts the descriptors the server holds once it
listens, so it knows how many connections it can accept (48 minus those), and opens 20 more than
that, keeping them all open; every client sends a distinct message at once, so a client the
server has accepted gets its echo and one still waiting in the listen backlog does not.

Saturated phase:
1. the log has the line `accept on ADDR: too many open files (EMFILE); pausing accepts for
   0.1 s`, and not a flood of them: at most 10 a second plus slack, over the whole phase and
   over a 2-second window;
2. the server's CPU time (utime + stime from /proc/PID/stat) over that 2-second window is
   below 30 % of one core: it backs off instead of spinning on accept;
3. exactly the connections that fit were served, the ones beyond are still waiting, and the
   accepted ones keep echoing (another round trip on each).
Recovery phase:
4. closing most of the accepted clients frees descriptors, and every client that was waiting
   in the backlog gets its echo; a new client is served at once, with no new EMFILE line;
5. shutdown while saturated: a second server filled the same way exits with status 0 on
   SIGTERM within its grace period.
Each server must stop with exit status 0 (LeakSanitizer on at exit in the ASan build) and log
no [error] line and no sanitizer report. Prints `N passed, M failed`; exit 0 = pass. Run from
the repo root with LUASOCK_BIN set.
"""
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Checks, Server, stop_and_check  # noqa: E402

NOFILE = 48
EXTRA = 20               # clients beyond what the server can accept
WINDOW = 2.0             # seconds of the CPU and log-rate measurement
MAX_CPU_SHARE = 0.30     # of one core, over the window
PAUSES_PER_SECOND = 10   # the listener pauses 0.1 s after each EMFILE
SLACK = 5
TIMEOUT = 10.0           # bound on every wait for an echo or a log line
EMFILE_LINE = re.compile(
    r"accept on \S+: too many open files \(EMFILE\); pausing accepts for 0\.1 s")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class LimitedServer(Server):
    """A Server started under `prlimit --nofile=N:N` (prlimit execs it: same pid)."""

    def __init__(self, script, nofile, start_timeout=10.0):
        self.logfile = tempfile.NamedTemporaryFile(prefix="luasock-log-", suffix=".log")
        self.proc = subprocess.Popen(
            ["prlimit", f"--nofile={nofile}:{nofile}", BIN, "serve", script,
             "--listen", "127.0.0.1:0", "--grace", "5"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.logfile)
        self.pid = self.proc.pid
        self.host, self.port = self._wait_listening(start_timeout)

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile(self):
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3]), int(line.split()[4])
        raise RuntimeError("no 'Max open files' in /proc limits")

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)

    def emfile_lines(self):
        return len(EMFILE_LINE.findall(self.log()))


def message(i, round_=0):
    return f"client {i:03d} round {round_} ".encode() + bytes(range(i % 50, i % 50 + 40))


def connect(server):
    return socket.create_connection((server.host, server.port), timeout=TIMEOUT)


def wait_for(condition, timeout=TIMEOUT):
    """Polls `condition` until it is true or `timeout` seconds have passed; returns it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return bool(condition())
        time.sleep(0.02)
    return True


def collect_echoes(socks, expected, timeout=TIMEOUT):
    """Reads on `socks` (a dict index -> socket) until each index in `expected` (a dict index ->
    bytes) has got its bytes, or the time is up. Returns {index: bytes received} for every
    socket that received anything, including ones not in `expected`."""
    got = {}
    poller = select.poll()
    by_fd = {}
    for i, s in socks.items():
        poller.register(s, select.POLLIN)
        by_fd[s.fileno()] = i
    deadline = time.monotonic() + timeout
    while any(len(got.get(i, b"")) < len(data) for i, data in expected.items()):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            i = by_fd[fd]
            chunk = socks[i].recv(4096)
            if not chunk:
                poller.unregister(fd)
            got[i] = got.get(i, b"") + chunk
    return got


def pending(sock):
    """True if `sock` has bytes to read right now (without consuming them)."""
    return bool(select.select([sock], [], [], 0)[0])


def fill(server, checks):
    """Opens capacity + EXTRA clients that each send one message; returns (socks, capacity)
    once the server has served those it can and logged EMFILE."""
    held = server.fds()
    capacity = NOFILE - held
    print(f"server holds {held} descriptors at start; limit {server.nofile()}; "
          f"it can accept {capacity} connections")
    socks = {}
    for i in range(capacity + EXTRA):
        socks[i] = connect(server)  # the kernel completes the handshake into the backlog
        socks[i].sendall(message(i))
    checks.check(wait_for(lambda: server.emfile_lines() > 0),
                 "the log has the EMFILE line 'pausing accepts for 0.1 s'")
    served_expected = {i: message(i) for i in range(capacity)}
    got = collect_echoes(socks, served_expected)
    served = [i for i in range(capacity) if got.get(i) == message(i)]
    beyond = [i for i in range(capacity, capacity + EXTRA) if i in got]
    checks.check(len(served) == capacity,
                 f"all {capacity} connections that fit were accepted and echoed ({len(served)})")
    checks.check(not beyond, f"the {EXTRA} beyond the limit wait in the backlog unserved"
                 + (f" (but {len(beyond)} were served)" if beyond else ""))
    return socks, capacity


def saturated_and_recovery(checks):
    server = LimitedServer("examples/echo.lua", NOFILE)
    socks = {}
    try:
        exe = os.path.realpath(f"/proc/{server.pid}/exe")
        checks.check(exe == os.path.realpath(BIN), f"pid {server.pid} is the server ({exe})")
        checks.check(server.nofile() == (NOFILE, NOFILE),
                     f"the server runs with RLIMIT_NOFILE {server.nofile()}")
        started = time.monotonic()
        socks, capacity = fill(server, checks)
        first_lines = server.emfile_lines()

        # The measurement window: nothing but the waiting backlog happens in it.
        cpu0, lines0, t0 = server.cpu_seconds(), server.emfile_lines(), time.monotonic()
        time.sleep(WINDOW)
        cpu1, lines1, t1 = server.cpu_seconds(), server.emfile_lines(), time.monotonic()
        share = (cpu1 - cpu0) / (t1 - t0)
        checks.check(share < MAX_CPU_SHARE,
                     f"server CPU while saturated: {share * 100:.1f} % of a core over "
                     f"{t1 - t0:.1f} s (limit {MAX_CPU_SHARE * 100:.0f} %)")
        in_window = lines1 - lines0
        checks.check(in_window <= PAUSES_PER_SECOND * (t1 - t0) + SLACK,
                     f"{in_window} EMFILE lines in the {t1 - t0:.1f} s window "
                     f"(at most {PAUSES_PER_SECOND}/s + {SLACK})")
        elapsed = time.monotonic() - started
        checks.check(lines1 <= PAUSES_PER_SECOND * elapsed + SLACK,
                     f"{lines1} EMFILE lines in {elapsed:.1f} s saturated "
                     f"(first check saw {first_lines}; at most {PAUSES_PER_SECOND}/s + {SLACK})")
        checks.check(server.proc.poll() is None, "the server is still running")

        # The accepted connections keep echoing, while the backlog still waits.
        again = {i: message(i, 1) for i in range(capacity)}
        for i, data in again.items():
            socks[i].sendall(data)
        got = collect_echoes({i: socks[i] for i in again}, again)
        ok = [i for i, data in again.items() if got.get(i) == data]
        checks.check(len(ok) == capacity,
                     f"accepted connections keep echoing while saturated ({len(ok)}/{capacity})")
        waiting = [i for i in range(capacity, capacity + EXTRA) if pending(socks[i])]
        checks.check(not waiting, "the backlog is still unserved while no descriptor is free"
                     + (f" ({len(waiting)} got data)" if waiting else ""))

        # Recovery: close all accepted clients but 5; the waiting ones must be served.
        keep = range(capacity - 5, capacity)
        for i in range(capacity - 5):
            socks.pop(i).close()
        closed_at = time.monotonic()
        backlog = {i: message(i) for i in range(capacity, capacity + EXTRA)}
        got = collect_echoes({i: socks[i] for i in backlog}, backlog)
        ok = [i for i, data in backlog.items() if got.get(i) == data]
        checks.check(len(ok) == EXTRA,
                     f"after clients left, the {EXTRA} clients waiting in the backlog were "
                     f"served ({len(ok)}) in {time.monotonic() - closed_at:.2f} s")
        lines_recovered = server.emfile_lines()
        new = connect(server)
        new.sendall(b"after recovery")
        got = collect_echoes({0: new}, {0: b"after recovery"})
        checks.check(got.get(0) == b"after recovery", "a new client is served after recovery")
        new.close()
        still = {i: message(i, 2) for i in keep}
        for i, data in still.items():
            socks[i].sendall(data)
        got = collect_echoes({i: socks[i] for i in still}, still)
        checks.check(all(got.get(i) == d for i, d in still.items()),
                     "connections accepted before the exhaustion still echo after it")
        checks.check(server.emfile_lines() == lines_recovered,
                     "no new EMFILE line once descriptors are free "
                     f"({server.emfile_lines() - lines_recovered} new)")
        for s in socks.values():
            s.close()
        socks = {}
        stop_and_check(server, checks, timeout=20.0)
    finally:
        for s in socks.values():
            s.close()
        server.close()


def shutdown_while_saturated(checks):
    server = LimitedServer("examples/echo.lua", NOFILE)
    socks = {}
    try:
        socks, _ = fill(server, checks)
        stopped_at = time.monotonic()
        stop_and_check(server, checks, timeout=20.0)
        checks.check(time.monotonic() - stopped_at < 5.0 + 2.0,
                     f"SIGTERM while saturated: stopped in {time.monotonic() - stopped_at:.2f} s")
    finally:
        for s in socks.values():
            s.close()
        server.close()


def main():
    started = time.monotonic()
    checks = Checks()
    for name, test in (("saturate and recover", saturated_and_recovery),
                       ("shut down while saturated", shutdown_while_saturated)):
        print(f"-- {name}")
        try:
            test(checks)
        except Exception as error:  # a broken step counts as a failure, the rest still runs
            checks.check(False, f"{name}: {error!r}")
    print(f"fd_exhaustion_test: {time.monotonic() - started:.1f} s")
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
