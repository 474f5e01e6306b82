"""metrics_test.py -- issue 17 "Metrics": the --metrics endpoint, read with Prometheus's own parser
(Debian's python3-prometheus-client), shows what the test did.

1. A script with metrics = "127.0.0.1:0": connections closed by reason (closed, reset, overflow,
   timeout through send_timeout), accepted and open, bytes received and sent, a handler error,
   a handler's counter, gauge and histogram (luasock.metrics), reloads ok and failed (SIGHUP
   with a good then a broken script; the handler's counter survives the reload), HELP and TYPE
   lines, the process_* figures, /healthz, 404, a request too large, one too slow. The
   endpoint's own connections are not counted.
2. --metrics with --max-connections 2: a third connection is refused and counted.
3. --workers 2: one endpoint, with a worker label and totals that are the workers' sums; a
   worker killed with SIGKILL is restarted and the totals do not go backwards: they go on from
   where they were. Reloads: the parent's without a label, each worker's with one.
4. luasock.metrics refuses bad names, the server's prefixes and a falling counter with an error
   at the caller's line.
5. `check` validates the metrics setting (type, misspelling); a bad --metrics is a usage error.
Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
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
from luasock_server import (ASAN, BIN, SANITIZER_TEXT, Checks, Server, echo,  # noqa: E402
                            require_debian_module)

require_debian_module("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TIMEOUT = 15.0 if ASAN else 5.0
METRICS_ON = re.compile(r"luasock: metrics on (\S+):(\d+) \(")

SCRIPT = """\
local luasock = require "luasock"
local lines = luasock.metrics.counter("app_lines_total", "Lines echoed", {"kind"})
local depth = luasock.metrics.gauge("app_last_line_bytes", "The last line's size")
local sizes = luasock.metrics.histogram("app_line_bytes", "Line sizes", {1, 10, 100})
return {
  %s
  max_queue = 1024,
  send_timeout = 0.5,
  handle = function(conn)
    while true do
      local line = conn:receive("*l")
      if not line then return end
      if line == "boom" then
        error("boom")
      elseif line == "flood" then
        conn:post(string.rep("x", 100000))
      elseif line == "big" then
        conn:send(string.rep("y", 64 * 1024 * 1024))
      else
        lines:inc(1, { kind = %s })
        depth:set(#line)
        sizes:observe(#line)
        conn:send(line, "\\n")
      end
    end
  end,
}
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def http_get(address, path, request=None):
    """Returns (status, body) of one request to the metrics endpoint."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(request or f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def scrape(address):
    """The samples as {(name, ((label, value), ...)): value}, and the families' types."""
    status, body = http_get(address, "/metrics")
    samples, types = {}, {}
    for family in text_string_to_metric_families(body):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types, body


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_until(address, predicate, what):
    """Scrapes until predicate(samples) holds; returns the samples (checked by the caller)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        samples = scrape(address)[0]
        if predicate(samples) or time.monotonic() > deadline:
            if not predicate(samples):
                print(f"(no {what} within {TIMEOUT} s)")
            return samples
        time.sleep(0.02)


def metrics_address(server):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        m = METRICS_ON.search(server.log())
        if m:
            return m.group(1), int(m.group(2))
        time.sleep(0.01)
    raise RuntimeError("no 'metrics on' line; log:\n" + server.log())


def stop(server, checks):
    """SIGTERM; the server exits 0 with no sanitizer report ([error] lines are expected here:
    the handler error and the failed reload)."""
    try:
        log = server.stop(timeout=TIMEOUT * 3)
        checks.check(True, "SIGTERM: the server exited with status 0")
    except RuntimeError as error:
        log = server.log()
        checks.check(False, str(error).splitlines()[0])
    found = [t for t in SANITIZER_TEXT if t in log]
    checks.check(not found, f"no sanitizer report in the log ({found})")


def closed(reason, n):
    return lambda s: value(s, "luasock_connections_closed_total", reason=reason) == n


def connections_and_bytes(checks, server, address):
    addr = (server.host, server.port)
    listener = f"{server.host}:{server.port}"
    sock = socket.create_connection(addr, timeout=TIMEOUT)
    echo(sock, b"abc\n")
    s = scrape(address)[0]
    checks.check(value(s, "luasock_connections_open", listener=listener) == 1,
                 "luasock_connections_open{listener} is 1 with one connection open")
    sock.close()
    s = wait_until(address, closed("closed", 1), "closed")
    checks.check(value(s, "luasock_connections_closed_total", reason="closed") == 1,
                 "a clean close counts as reason=closed")

    sock = socket.create_connection(addr, timeout=TIMEOUT)
    echo(sock, b"hello\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    s = wait_until(address, closed("reset", 1), "reset")
    checks.check(value(s, "luasock_connections_closed_total", reason="reset") == 1,
                 "a peer's RST counts as reason=reset")

    sock = socket.create_connection(addr, timeout=TIMEOUT)
    echo(sock, b"hi\n")
    sock.sendall(b"flood\n")
    s = wait_until(address, closed("overflow", 1), "overflow")
    checks.check(value(s, "luasock_connections_closed_total", reason="overflow") == 1,
                 "posted output piling up counts as reason=overflow")
    sock.close()

    sock = socket.create_connection(addr, timeout=TIMEOUT)
    sock.sendall(b"boom\n")
    s = wait_until(address, lambda s: value(s, "luasock_handler_errors_total") == 1, "error")
    checks.check(value(s, "luasock_handler_errors_total") == 1,
                 "a handler's error counts in luasock_handler_errors_total")
    sock.close()
    s = wait_until(address, closed("closed", 2), "second closed")

    # In: abc\n hello\n hi\n flood\n boom\n; out: the three echoes.
    checks.check(value(s, "luasock_bytes_received_total") == 4 + 6 + 3 + 6 + 5,
                 f"bytes received: 24 ({value(s, 'luasock_bytes_received_total')})")
    checks.check(value(s, "luasock_bytes_sent_total") == 4 + 6 + 3,
                 f"bytes sent: 13 ({value(s, 'luasock_bytes_sent_total')})")

    sock = socket.create_connection(addr, timeout=TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"big\n")
    s = wait_until(address, closed("timeout", 1), "timeout")
    checks.check(value(s, "luasock_connections_closed_total", reason="timeout") == 1,
                 "a send to a peer that does not read counts as reason=timeout (send_timeout)")
    sock.close()
    checks.check(value(s, "luasock_connections_accepted_total") == 5
                 and value(s, "luasock_connections_open", listener=listener) == 0,
                 "5 accepted, 0 open: the endpoint's own connections are not counted")


def handler_metrics(checks, address):
    s = scrape(address)[0]
    checks.check(value(s, "app_lines_total", kind="echo") == 3,
                 "luasock.metrics counter: app_lines_total{kind=\"echo\"} 3")
    checks.check(value(s, "app_last_line_bytes") == 2, "gauge: the last line was 2 bytes")
    checks.check(value(s, "app_line_bytes_bucket", le="1") == 0
                 and value(s, "app_line_bytes_bucket", le="10") == 3
                 and value(s, "app_line_bytes_count") == 3
                 and value(s, "app_line_bytes_sum") == 3 + 5 + 2,
                 "histogram: buckets, count and sum")


def format_checks(checks, address):
    samples, types, body = scrape(address)
    expected = {"luasock_connections_open": "gauge", "luasock_connections_accepted": "counter",
                "luasock_connections_closed": "counter", "luasock_connections_refused": "counter",
                "luasock_bytes_received": "counter", "luasock_bytes_sent": "counter",
                "luasock_handler_errors": "counter", "luasock_reloads": "counter",
                "luasock_tasks": "gauge", "luasock_lua_memory_bytes": "gauge",
                "luasock_loop_lag_seconds": "histogram", "luasock_udp_datagrams": "counter",
                "luasock_dns_queries": "counter", "process_cpu_seconds": "counter",
                "process_resident_memory_bytes": "gauge", "process_open_fds": "gauge",
                "process_start_time_seconds": "gauge", "app_lines": "counter",
                "app_line_bytes": "histogram"}
    wrong = {n: types.get(n) for n, t in expected.items() if types.get(n) != t}
    checks.check(not wrong, f"every metric is there with its TYPE ({wrong})")
    names = set(re.findall(r"^# TYPE (\S+)", body, re.M))
    helps = set(re.findall(r"^# HELP (\S+)", body, re.M))
    checks.check(names == helps, "a HELP line for every TYPE line")
    checks.check(value(samples, "luasock_lua_memory_bytes") > 10000
                 and value(samples, "process_resident_memory_bytes") > 1e6
                 and value(samples, "process_open_fds") >= 3
                 and abs(value(samples, "process_start_time_seconds") - time.time()) < 600,
                 "Lua memory, RSS, open fds and start time are plausible")
    lag = value(samples, "luasock_loop_lag_seconds_count")
    checks.check(lag is not None, f"luasock_loop_lag_seconds has observations ({lag})")

    checks.check(http_get(address, "/healthz") == (200, "ok\n"), "GET /healthz: 200 ok")
    checks.check(http_get(address, "/nowhere")[0] == 404, "GET /nowhere: 404")
    checks.check(http_get(address, None, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 8000)[0] == 431,
                 "a request over 4 KiB: 431 and closed")
    with socket.create_connection(address, timeout=TIMEOUT + 10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        got = sock.recv(100)
        took = time.monotonic() - started
    checks.check(got == b"" and 4.5 < took < 5 + TIMEOUT,
                 f"a request left incomplete is dropped after 5 s ({took:.1f} s)")


def reloads(checks, server, address, path):
    write(path, SCRIPT % ('metrics = "127.0.0.1:0",', '"reloaded"'))
    server.proc.send_signal(signal.SIGHUP)
    s = wait_until(address, lambda s: value(s, "luasock_reloads_total", result="ok") == 1,
                   "reload ok")
    checks.check(value(s, "luasock_reloads_total", result="ok") == 1, "SIGHUP: reloads ok 1")
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    echo(sock, b"again\n")
    sock.close()
    s = scrape(address)[0]
    checks.check(value(s, "app_lines_total", kind="echo") == 3
                 and value(s, "app_lines_total", kind="reloaded") == 1,
                 "the handler's counter survives the reload")
    write(path, "return {\n")
    server.proc.send_signal(signal.SIGHUP)
    s = wait_until(address, lambda s: value(s, "luasock_reloads_total", result="failed") == 1,
                   "reload failed")
    checks.check(value(s, "luasock_reloads_total", result="failed") == 1
                 and value(s, "luasock_reloads_total", result="ok") == 1,
                 "a broken script: reloads failed 1, ok still 1")


def refused(checks, script):
    server = Server(script, ["--metrics", "127.0.0.1:0", "--max-connections", "2"])
    try:
        address = metrics_address(server)
        socks = [socket.create_connection((server.host, server.port), timeout=TIMEOUT)
                 for _ in range(2)]
        for sock in socks:
            echo(sock, b"x\n")
        third = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        checks.check(third.recv(10) == b"", "a third connection is closed at once")
        s = wait_until(address, lambda s: value(s, "luasock_connections_refused_total",
                                                cause="max_connections") == 1, "refusal")
        checks.check(value(s, "luasock_connections_refused_total", cause="max_connections") == 1
                     and value(s, "luasock_connections_accepted_total") == 2,
                     "--max-connections: refused{cause=max_connections} 1, accepted 2")
        for sock in socks + [third]:
            sock.close()
    finally:
        stop(server, checks)
        server.close()


def worker_rows(samples, name):
    return {dict(labels).get("worker"): v for (n, labels), v in samples.items() if n == name}


def accepted_total(n):
    return lambda s: value(s, "luasock_connections_accepted_total") == n


def one_line_each(server, count):
    for _ in range(count):
        with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
            echo(sock, b"x\n")


def workers(checks, script):
    server = Server(script, ["--metrics", "127.0.0.1:0", "--workers", "2"])
    try:
        address = metrics_address(server)
        one_line_each(server, 20)
        s = wait_until(address, accepted_total(20), "20 accepted")
        rows = worker_rows(s, "luasock_connections_accepted_total")
        checks.check(rows.get(None) == 20 and set(rows) == {None, "1", "2"}
                     and rows["1"] + rows["2"] == 20,
                     f"--workers 2: accepted total 20, the sum of worker 1 and 2 ({rows})")
        lines = worker_rows(s, "app_lines_total")
        checks.check(lines.get(None) == 20, f"the handlers' counter is totalled too ({lines})")
        before = {k: v for k, v in s.items() if k[0].endswith("_total") and "process" not in k[0]}

        pid = int(re.search(r"worker 1 started \(pid (\d+)\)", server.log()).group(1))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT
        while len(re.findall(r"worker 1 started", server.log())) < 2 \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        s = wait_until(address, lambda s: worker_rows(s, "luasock_tasks").get("1") is not None
                       and len(re.findall(r"worker 1 started", server.log())) >= 2,
                       "restarted worker 1")
        behind = [k for k, v in before.items() if s.get(k, 0) < v]
        checks.check(not behind, f"after SIGKILL of worker 1, no counter went backwards ({behind})")
        one_line_each(server, 5)
        s = wait_until(address, accepted_total(25), "25 accepted")
        rows = worker_rows(s, "luasock_connections_accepted_total")
        checks.check(rows.get(None) == 25 and rows["1"] + rows["2"] == 25,
                     f"5 more connections: total 25, still the workers' sum ({rows})")
        checks.check(http_get(address, "/healthz") == (200, "ok\n"), "/healthz with workers")
        own = value(s, "process_start_time_seconds")
        checks.check(own is not None and worker_rows(s, "process_start_time_seconds").keys()
                     >= {None, "1", "2"}, "process_*: the parent's own, and each worker's")

        with open(script) as f:
            good = f.read()
        write(script, good.replace('"echo"', '"reloaded"'))
        server.proc.send_signal(signal.SIGHUP)
        s = wait_until(address, lambda s: value(s, "luasock_reloads_total", result="ok") == 1
                       and value(s, "luasock_reloads_total", result="ok", worker="1") == 1
                       and value(s, "luasock_reloads_total", result="ok", worker="2") == 1,
                       "reloads with workers")
        checks.check(value(s, "luasock_reloads_total", result="ok") == 1
                     and value(s, "luasock_reloads_total", result="ok", worker="2") == 1,
                     "--workers: SIGHUP: the parent's reload ok 1, and each worker's")
        write(script, "return {\n")
        server.proc.send_signal(signal.SIGHUP)
        s = wait_until(address, lambda s: value(s, "luasock_reloads_total", result="failed") == 1,
                       "failed reload with workers")
        checks.check(value(s, "luasock_reloads_total", result="failed") == 1,
                     "--workers: a broken script: the parent's reloads failed 1")
        write(script, good)
    finally:
        stop(server, checks)
        server.close()


def bad_names(checks, directory):
    path = os.path.join(directory, "bad.lua")
    cases = [('luasock.metrics.counter("1abc", "h")', "bad metric name '1abc'"),
             ('luasock.metrics.gauge("luasock_x", "h")', "the prefixes luasock_ and process_"),
             ('luasock.metrics.counter("c", "h", {"a b"})', "bad label name 'a b'"),
             ('luasock.metrics.counter("c", "h"):inc(-1)', "a counter only goes up"),
             ('luasock.metrics.counter("c", "h", {"k"}):inc(1, {})', "c: missing label 'k'"),
             ('luasock.metrics.counter("c", "h"); luasock.metrics.gauge("c", "h")',
              "already defined")]
    for code, message in cases:
        write(path, f'local luasock = require "luasock"\n\n{code}\n')
        run = subprocess.run([BIN, "run", path], capture_output=True, text=True, timeout=30)
        checks.check(run.returncode != 0 and f"bad.lua:3: " in run.stderr and message in run.stderr,
                     f"{code}: refused at the caller's line ({run.stderr.splitlines()[:1]})")


def settings(checks, directory):
    path = os.path.join(directory, "setting.lua")
    for setting, ok, message in [('metrics = "127.0.0.1:9100"', True, "ok"),
                                 ("metrics = 9100", False, "'metrics' must be an address"),
                                 ('metric = "127.0.0.1:9100"', False, "did you mean 'metrics'")]:
        write(path, "return { handle = function() end, %s }\n" % setting)
        run = subprocess.run([BIN, "check", path], capture_output=True, text=True, timeout=30)
        checks.check((run.returncode == 0) == ok and message in run.stdout + run.stderr,
                     f"check: {setting}: {message}")
    run = subprocess.run([BIN, "serve", path, "--metrics", "127.0.0.1:99999"],
                         capture_output=True, text=True, timeout=30)
    checks.check(run.returncode == 2 and "--metrics: bad listen address" in run.stderr,
                 "--metrics 127.0.0.1:99999: a usage error")


def main():
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="luasock-metrics-") as directory:
        path = os.path.join(directory, "echo.lua")
        write(path, SCRIPT % ('metrics = "127.0.0.1:0",', '"echo"'))
        server = Server(path)
        try:
            address = metrics_address(server)
            connections_and_bytes(checks, server, address)
            handler_metrics(checks, address)
            format_checks(checks, address)
            reloads(checks, server, address, path)
        finally:
            stop(server, checks)
            server.close()
        plain = os.path.join(directory, "plain.lua")
        write(plain, SCRIPT % ("", '"echo"'))
        refused(checks, plain)
        workers(checks, plain)
        bad_names(checks, directory)
        settings(checks, directory)
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
