"""luasock_server.py -- starts and stops a luasock server for the Python client tests.

Not a test itself: the *_test.py files next to it import it. The binary is $LUASOCK_BIN
(default build/luasock); the server listens on an ephemeral port and its stderr goes to a
temp file, which is polled for the "listening on" line to learn the real port.
`stop_and_check` stops a server and checks its exit status and log, counting into `Checks`.
"""
import atexit
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("LUASOCK_BIN", "build/luasock")
LISTENING = re.compile(r"luasock: listening on (?:tls:)?(\S+):(\d+) \(")
SANITIZER_TEXT = ("LeakSanitizer", "AddressSanitizer", "runtime error")


def is_asan_build():
    """Whether BIN is an AddressSanitizer build (tests allow it more time)."""
    if "asan" in BIN:
        return True
    try:
        with open(BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = is_asan_build()


def require_debian_module(name):
    """Returns the module `name`. The first python3 on PATH may lack it (Debian's python3-*
    packages are for /usr/bin/python3): then the calling script starts again under that one."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
        raise


def require_hypothesis():
    """Returns Debian's hypothesis, its cache (of Unicode tables) in a temp dir removed at exit
    instead of ./.hypothesis in the repository."""
    hypothesis = require_debian_module("hypothesis")
    from hypothesis.configuration import set_hypothesis_home_dir
    home = tempfile.mkdtemp(prefix="luasock-hypothesis-")
    set_hypothesis_home_dir(home)
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return hypothesis


def require_msgpack():
    """Returns the msgpack module (Debian's python3-msgpack)."""
    return require_debian_module("msgpack")


class Server:
    """A running `luasock serve SCRIPT --listen 127.0.0.1:0` (or another `listen` address)."""

    def __init__(self, script, args=(), start_timeout=5.0, listen="127.0.0.1:0"):
        self.logfile = tempfile.NamedTemporaryFile(prefix="luasock-log-", suffix=".log")
        self.proc = subprocess.Popen(
            [BIN, "serve", script, "--listen", listen, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.logfile)
        self.pid = self.proc.pid
        self.host, self.port = self._wait_listening(start_timeout)

    def log(self):
        with open(self.logfile.name, "r", errors="replace") as f:
            return f.read()

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log())
            if match:
                return match.group(1), int(match.group(2))
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        self.kill()
        raise RuntimeError("server did not start; log:\n" + self.log())

    def rss_kib(self):
        """The server's resident set size in KiB, from /proc/PID/status."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self, timeout=15.0):
        """SIGTERM, wait, and require exit status 0 (AddressSanitizer reports leaks as non-zero)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("server did not exit after SIGTERM; log:\n" + self.log())
        if code != 0:
            raise RuntimeError(f"server exited with {code}; log:\n" + self.log())
        return self.log()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        """Kills the server if it is still running and removes the log file."""
        self.kill()
        self.logfile.close()


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


class Checks:
    """Counts passed and failed checks, printing "ok: ..." or "FAIL: ..." for each."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, message):
        if ok:
            self.passed += 1
            print("ok: " + message)
        else:
            self.failed += 1
            print("FAIL: " + message)
        return ok


def echo(sock, data):
    """Sends data and reads as many bytes back (an echo server's answer)."""
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        if not chunk:
            break
        got += chunk
    return got


def stop_and_check(server, checks, timeout=15.0):
    """Stops `server` (SIGTERM, exit status 0 within `timeout` s) and checks that its log has no
    sanitizer report and no [error] line; prints the log's last 40 lines if it has one."""
    try:
        log = server.stop(timeout=timeout)
        checks.check(True, "SIGTERM: the server exited with status 0")
    except RuntimeError as error:
        log = server.log()
        checks.check(False, str(error).splitlines()[0])
    found = [text for text in SANITIZER_TEXT if text in log]
    checks.check(not found, "no sanitizer report in the server's log"
                 + (f" (found {', '.join(found)})" if found else ""))
    errors = [line for line in log.splitlines() if "[error]" in line]
    checks.check(not errors, f"no [error] line in the server's log ({len(errors)})")
    if found or errors:
        print("server log (last 40 lines):\n" + "\n".join(log.splitlines()[-40:]))
