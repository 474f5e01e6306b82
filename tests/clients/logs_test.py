"""logs_test.py -- issue 17 "Logs": the access log, JSON lines, --log-file and SIGUSR1, syslog
level names and print.

1. access_log = true: one info line per closed connection with its reason as on_close gets it
   and its bytes: a clean close (closed), a peer's RST (reset), a peer that lets posted output
   pile up (overflow), a send to a peer that does not read (timeout).
2. Without the access log, reset/overflow closes still carry their reason at debug (and
   nothing at info); --access-log turns it on for a script that does not.
3. --log-format json --workers 2: every line of the log is one JSON object (python's json), with
   ts, level, msg; the connection's line has conn, peer, worker and script; control characters,
   quotes and invalid UTF-8 survive the trip.
4. --log-file with --workers 2: lines go to the file; after it is renamed, SIGUSR1 to the parent
   makes every process open a new file, where the later lines go.
5. luasock.log takes syslog names in any case and refuses others with the list; print in a
   server is a log line at info (tabs between arguments), in `luasock run` it writes to stdout.
6. access_log must be a boolean (`luasock check`).
Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import ASAN, BIN, Checks, Server, echo, stop_and_check  # noqa: E402

TIMEOUT = 15.0 if ASAN else 5.0

SCRIPT = """\
return {
  %s
  max_queue = 1024,
  send_timeout = 0.5,
  idle_timeout = 1,
  handle = function(conn)
    print("print:", 1, nil, "tab\\there", "\\255\\"q\\\\")
    while true do
      local line = conn:receive("*l")
      if not line then return end
      if line == "flood" then
        conn:post(string.rep("x", 100000))
      elseif line == "big" then
        conn:send(string.rep("y", 64 * 1024 * 1024))
      else
        conn:send(line, "\\n")
      end
    end
  end,
}
"""


def write_script(directory, name, access_log):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(SCRIPT % ("access_log = true," if access_log else ""))
    return path


def wait_for(read, pattern, what):
    """Polls read() until pattern matches it; returns the match, or None after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(pattern, read())
        if match:
            return match
        time.sleep(0.01)
    print(f"(no {what} within {TIMEOUT} s; log:\n{read()})")
    return None


def connect(server):
    return socket.create_connection((server.host, server.port), timeout=TIMEOUT)


def closed_line(port, reason):
    return (rf"conn (\d+) 127\.0\.0\.1:{port} closed \({reason}\) after (\d+\.\d) s, "
            r"in (\d+) B, out (\d+) B")


def access_log_cases(checks, script):
    server = Server(script)
    try:
        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"abc\n")
        sock.close()
        m = wait_for(server.log, closed_line(port, "closed"), "closed line")
        checks.check(m and m.group(3, 4) == ("4", "4"), "closed: in 4 B, out 4 B")
        checks.check(m and "[info] conn" in server.log(), "the access line is at info")

        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"hello\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        m = wait_for(server.log, closed_line(port, "reset"), "reset line")
        checks.check(m and m.group(3, 4) == ("6", "6"), "reset: in 6 B, out 6 B")

        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"hi\n")
        sock.sendall(b"flood\n")
        m = wait_for(server.log, closed_line(port, "overflow"), "overflow line")
        checks.check(m and m.group(3, 4) == ("9", "3"), "overflow: in 9 B, out 3 B")
        sock.close()

        sock = connect(server)
        port = sock.getsockname()[1]
        sock.sendall(b"big\n")
        m = wait_for(server.log, closed_line(port, "timeout"), "timeout line")
        checks.check(m and m.group(3) == "4" and int(m.group(4)) > 0
                     and float(m.group(2)) >= 0.5,
                     "send timeout: in 4 B, some bytes out, after at least 0.5 s")
        sock.close()

        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"idle\n")
        m = wait_for(server.log, closed_line(port, "timeout"), "idle timeout line")
        checks.check(m and m.group(3, 4) == ("5", "5") and float(m.group(2)) >= 1.0,
                     "idle timeout: the handler gave up on a silent peer: timeout, in 5 B, out 5 B")
        sock.close()
    finally:
        stop_and_check(server, checks)
        server.close()


def debug_reasons(checks, script):
    server = Server(script, ["--log-level", "debug"])
    try:
        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"x\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        m = wait_for(server.log, r"\[debug\] " + closed_line(port, "reset"), "debug reset")
        checks.check(m is not None, "without access_log a reset close is logged at debug")
        sock = connect(server)
        port = sock.getsockname()[1]
        sock.sendall(b"flood\n")
        m = wait_for(server.log, r"\[debug\] " + closed_line(port, "overflow"), "debug overflow")
        checks.check(m is not None, "... and an overflow close")
        sock.close()
    finally:
        stop_and_check(server, checks)
        server.close()

    server = Server(script)
    try:
        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"x\n")
        sock.close()
    finally:
        stop_and_check(server, checks)
        log = server.log()
        server.close()
    # The server has shut down: the connection's close is behind us.
    checks.check("print:" in log and re.search(closed_line(port, "closed"), log) is None,
                 "at info, without access_log, no access line")

    server = Server(script, ["--access-log"])
    try:
        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"x\n")
        sock.close()
        m = wait_for(server.log, r"\[info\] " + closed_line(port, "closed"), "--access-log line")
        checks.check(m is not None, "--access-log logs closes of a script without access_log")
    finally:
        stop_and_check(server, checks)
        server.close()


def json_lines(checks, script):
    server = Server(script, ["--log-format", "json", "--workers", "2", "--access-log"])
    try:
        sock = connect(server)
        port = sock.getsockname()[1]
        echo(sock, b"abc\n")
        sock.close()
        wait_for(server.log, rf'"peer":"127\.0\.0\.1:{port}"', "JSON access line")
    finally:
        stop_and_check(server, checks)
        log = server.log()
        server.close()
    objects, bad = [], []
    for line in log.splitlines():
        try:
            objects.append(json.loads(line))
        except ValueError:
            bad.append(line)
    checks.check(objects and not bad, f"{len(objects)} lines, each a JSON object ({bad[:2]})")
    checks.check(all({"ts", "level", "msg"} <= o.keys() for o in objects),
                 "each has ts, level and msg")
    access = [o for o in objects if o.get("peer") == f"127.0.0.1:{port}"]
    checks.check(len(access) == 1 and isinstance(access[0].get("conn"), int)
                 and access[0].get("worker") in (1, 2) and access[0]["level"] == "info"
                 and access[0].get("script", "").endswith("logs.lua")
                 and "closed (closed)" in access[0]["msg"],
                 f"the access line has conn, peer, worker, script ({access})")
    printed = [o["msg"] for o in objects if o["msg"].startswith("print:")]
    checks.check(printed == ['print:\t1\tnil\ttab\there\t\ufffd"q\\'],
                 f"print's tabs, quote, backslash and invalid UTF-8 survive ({printed})")


def log_file(checks, script, directory):
    path = os.path.join(directory, "server.log")
    server = Server(script, ["--log-file", path, "--workers", "2", "--access-log"])
    read = lambda: open(path, errors="replace").read() if os.path.exists(path) else ""
    try:
        checks.check("listening on" in server.log() and "worker 1 started" not in server.log(),
                     "stderr keeps the announcement; the log lines go to the file")
        sock = connect(server)
        first = sock.getsockname()[1]
        echo(sock, b"1\n")
        sock.close()
        checks.check(wait_for(read, closed_line(first, "closed"), "first line") is not None,
                     "--log-file: the access line is in the file")
        os.rename(path, path + ".1")
        server.proc.send_signal(signal.SIGUSR1)
        m = wait_for(read, r"(?s)(reopened the log file.*){3}", "three reopen lines")
        checks.check(m is not None, "SIGUSR1: the parent and both workers opened a new file")
        sock = connect(server)
        second = sock.getsockname()[1]
        echo(sock, b"2\n")
        sock.close()
        checks.check(wait_for(read, closed_line(second, "closed"), "later line") is not None,
                     "a later line goes to the new file")
        old = open(path + ".1", errors="replace").read()
        checks.check(re.search(closed_line(second, "closed"), old) is None
                     and re.search(closed_line(first, "closed"), read()) is None,
                     "the old file keeps the earlier lines only")
    finally:
        stop_and_check(server, checks)
        server.close()


LEVELS = """\
local luasock = require("luasock")
for _, name in ipairs({ "notice", "WARNING", "Info", "critical", "crit", "alert", "emerg",
                        "err", "Debug", "warn", "error" }) do
  luasock.log(name, "level", name)
end
local ok, err = pcall(luasock.log, "loud", "x")
print("refused:", ok, err)
"""


def levels_and_print(checks, directory):
    path = os.path.join(directory, "levels.lua")
    with open(path, "w") as f:
        f.write(LEVELS)
    run = subprocess.run([BIN, "run", path], capture_output=True, text=True, timeout=TIMEOUT)
    found = {name: level for level, name in re.findall(r"\[(\w+)\] level (\w+)", run.stderr)}
    expected = {"notice": "info", "WARNING": "warn", "Info": "info", "critical": "error",
                "crit": "error", "alert": "error", "emerg": "error", "err": "error",
                "warn": "warn", "error": "error"}
    checks.check(run.returncode == 0 and found == expected,
                 f"syslog names map to levels ({found}; {run.stderr[-300:]})")
    checks.check("refused:\tfalse\t" in run.stdout
                 and re.search(r"bad argument #1 to '[\w.]*log'", run.stdout)
                 and "got 'loud'" in run.stdout and "notice, warn, warning" in run.stdout,
                 f"`luasock run`: print writes to stdout; 'loud' is refused with the list "
                 f"({run.stdout.strip()})")


def bad_setting(checks, directory):
    path = os.path.join(directory, "bad.lua")
    with open(path, "w") as f:
        f.write('return { access_log = "yes", handle = function() end }\n')
    run = subprocess.run([BIN, "check", path], capture_output=True, text=True, timeout=TIMEOUT)
    checks.check(run.returncode == 1 and "'access_log' must be true or false" in run.stderr
                 + run.stdout, f"access_log = \"yes\" is refused ({run.stderr.strip()})")


def main():
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="luasock-logs-") as directory:
        access_log_cases(checks, write_script(directory, "access.lua", True))
        without = write_script(directory, "logs.lua", False)
        debug_reasons(checks, without)
        json_lines(checks, without)
        log_file(checks, without, directory)
        levels_and_print(checks, directory)
        bad_setting(checks, directory)
        server = Server(without)
        try:
            sock = connect(server)
            echo(sock, b"x\n")
            m = wait_for(server.log, r"\[info\] print:\t1\tnil\ttab\there", "print line")
            checks.check(m is not None, "`luasock serve`: print is a log line at info")
            sock.close()
        finally:
            stop_and_check(server, checks)
            server.close()
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
