#!/usr/bin/env python3
"""api_fuzz.py -- the API-misuse fuzzer: random handler scripts against hostile clients.

Each execution, from one integer seed:
  1. writes a random handler script (api_gen.py: a grammar of luasock API calls on the own
     connection and on others kept in a module-level table, from the handler, spawned tasks,
     string.gsub callbacks, table.sort comparators, metamethods, coroutine.wrap, <close>
     variables, with pcall/error/coroutine.close, under a random max_memory cap just above the
     start-up use and random small limits) and checks that it is valid Lua (luac5.4 -p);
  2. starts `luasock serve` on it ($LUASOCK_BIN, the AddressSanitizer build by default) with a TCP
     listener (the fuzz bodies), a unix listener (plain echo: the script sends connections whose
     local address is "unix:..." to an echo loop) and, when the script has `datagram`, a UDP one;
  3. drives the TCP listener for 1-3 s with 2-6 clients at once that send random lines, bytes,
     complete, partial and hostile MessagePack, trickle, stall, stop reading, half-close
     (shutdown(SHUT_WR)), reset (SO_LINGER 0) and reconnect at random points, and send datagrams;
  4. passes when the server is still running, still echoes a line on the unix listener, exits
     with status 0 within a bound on SIGTERM, and its log has no sanitizer report ("ERROR:
     AddressSanitizer", "runtime error:", "LeakSanitizer"), no "unprotected Lua error" and no
     sign of a lost coroutine (a negative handler count, a handler resumed after its end).
Run-time errors in the handlers are the point; they are logged and ignored.

A failing execution is kept in build/fuzz/crashes/api-SEED/ (script.lua, seed, actions.txt: what
the clients did, server.log, reason), and the way to replay it is printed. Timing is not
reproducible, so a replay runs the execution up to --runs times.

  tests/fuzz/api_fuzz.py [SECONDS]          fuzz for SECONDS (default 60), seeds from the clock
  tests/fuzz/api_fuzz.py 600 --base-seed 7  seeds 7, 8, 9, ...
  tests/fuzz/api_fuzz.py --seed N           one execution (up to --runs times) of seed N
  tests/fuzz/api_fuzz.py --replay DIR       the same with DIR's saved script
  tests/fuzz/api_fuzz.py --keep-going 300   do not stop at the first failure; count the kinds
  --without LIST, --tight-caps              change the grammar (README.md, "API misuse")

Prints one line per failing execution and ends with "api: N executions in T s, F failed"; exits
1 if an execution failed, 2 on a usage error or a bug of the fuzzer itself (an invalid script).
Only the Python standard library is needed.
"""
import argparse
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from api_gen import generate  # noqa: E402

BIN = os.path.abspath(os.environ.get("LUASOCK_BIN", os.path.join(ROOT, "build/asan/luasock")))
BAD_TEXT = ("ERROR: AddressSanitizer", "AddressSanitizer:DEADLYSIGNAL", "runtime error:",
            "LeakSanitizer", "unprotected Lua error")
# Log lines that show the core lost track of a coroutine (issue 12 item 1): a handler count
# below zero at shutdown, or luasock resuming a handler that had already ended (the scripts
# never resume a dead coroutine themselves).
BAD_LINES = re.compile(r"for -\d+ handlers|: -\d+ handlers still running|"
                       r"\[error\] [^\n]*: cannot resume dead coroutine$", re.M)
LISTENING = re.compile(r"luasock: listening on (udp:|unix:)?(\S+?)(?::(\d+))? \(")
GRACE = 1.0           # --grace of the server
START_TIMEOUT = 15.0  # s for the "listening on" lines (ASan, a loaded machine)
STOP_TIMEOUT = GRACE + 15.0
ECHO_TIMEOUT = 5.0


# ---- MessagePack, just enough to write values (no dependency on python3-msgpack) ----------------

def mp_pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2 ** 32:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 2 ** 64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        return b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, list):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return head + b"".join(mp_pack(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(mp_pack(k) + mp_pack(x) for k, x in v.items())
    raise TypeError(type(v))


def random_value(rng, depth=0):
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, 127, 128, -1, -33, 2 ** 32, 2 ** 63, 2 ** 64 - 1, -2 ** 63])
    if kind == 3:
        return rng.choice([0.5, -0.0, float("inf"), 1e300])
    if kind == 4:
        return "".join(rng.choice("abc\u00e9\n") for _ in range(rng.randrange(0, 40)))
    if kind == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
    if kind == 6:
        return "x" * rng.choice([0, 31, 32, 300, 5000])
    if kind in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(["a", "b", "cmd", 1, 2]): random_value(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))}


HOSTILE_MSGPACK = [
    b"\xdd\x00\x10\x00\x00" + b"\x80" * 65536,  # array32 of 1 Mi empty maps, partly sent
    b"\xdd\xff\xff\xff\xff",                    # array32 with a huge count
    b"\xdb\xff\xff\xff\xff",                    # str32 with a huge length
    b"\xc1",                                    # reserved
    b"\xd4\x01\x00",                            # fixext1: a luasock.ext value
    b"\x91" * 150 + b"\xc0",                    # nested deeper than 100
    b"\x81\x90\x01",                            # map with an array key
    b"\xc6\x00\x01\x00\x00" + b"z" * 100,      # bin32 of 64 KiB, partly sent
]


# ---- the clients ----------------------------------------------------------------------------

class Actor:
    """One client: a connection at a time to the TCP listener, and datagrams."""

    def __init__(self, rng, index, fuzz, settings):
        self.rng = rng
        self.index = index
        self.fuzz = fuzz
        self.settings = settings
        self.sock = None
        self.reading = True
        self.wclosed = False
        self.eof = False
        self.trickle = b""
        self.next = 0.0

    def log(self, what):
        self.fuzz.log_action("c%d %s" % (self.index, what))

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", self.fuzz.port))
        except OSError as error:
            s.close()
            self.log("connect failed: %s" % error)
            return
        s.setblocking(False)
        self.sock, self.reading, self.wclosed, self.eof, self.trickle = s, True, False, False, b""
        self.log("connect (local port %d)" % s.getsockname()[1])

    def drop(self, reset):
        if self.sock is None:
            return
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.sock = None
        self.log("reset" if reset else "close")

    def send(self, data, what):
        if self.sock is None or self.wclosed:
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as error:
            self.log("%s: %s" % (what, error))
            self.drop(reset=False)
            return
        self.log("%s: %d of %d bytes %r" % (what, n, len(data), data[:40]))

    def datagram(self):
        if not self.fuzz.udp_port:
            return
        data = self.rng.choice([b"", b"x", b"hello\n", bytes(self.rng.randrange(256)
                                                                for _ in range(100))])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(data, ("127.0.0.1", self.fuzz.udp_port))
            except OSError:
                pass
        self.log("datagram %r" % data[:20])

    def text(self, longest):
        n = self.rng.choice([0, 1, 5, longest - 1, longest, longest + 1, 3 * longest])
        return bytes(self.rng.choice(b"abc xyz:\r\0\xff") for _ in range(max(n, 0)))

    def step(self, now):
        """Does one action and sets the time of the next."""
        rng = self.rng
        delay = min(rng.expovariate(1 / 0.04), 0.3)
        if self.sock is None:
            if rng.random() < 0.85:
                self.connect()
            else:
                self.datagram()
        elif self.trickle:
            self.send(self.trickle[:1], "trickle")
            self.trickle = self.trickle[1:]
            delay = rng.choice([0.005, 0.02, 0.1])
        else:
            max_line = min(self.settings["max_line"], 100000)
            action = pick(rng, [
                (6, "line"), (2, "lines"), (2, "bytes"), (1, "big"), (4, "object"),
                (3, "partial"), (1, "hostile"), (1, "trickle"), (2, "stall"), (1, "toggle"),
                (1, "half-close"), (1, "reset"), (1, "close"), (1, "datagram")])
            if action == "line":
                self.send(self.text(max_line) + rng.choice([b"\n", b"\r\n"]), "line")
            elif action == "lines":
                self.send(b"".join(self.text(max_line) + b"\n" for _ in range(rng.randrange(
                    2, 20))), "lines")
            elif action == "bytes":
                self.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))),
                          "bytes")
            elif action == "big":
                self.send(bytes([rng.choice(b"xy\n")]) * rng.choice([20000, 100000, 400000]),
                          "big")
            elif action == "object":
                self.send(b"".join(mp_pack(random_value(rng)) for _ in range(rng.randrange(
                    1, 4))), "object")
            elif action == "partial":
                data = mp_pack(random_value(rng))
                self.send(data[:rng.randrange(0, max(len(data), 1))], "partial object")
            elif action == "hostile":
                self.send(rng.choice(HOSTILE_MSGPACK), "hostile object")
            elif action == "trickle":
                self.trickle = rng.choice([mp_pack(random_value(rng)), self.text(max_line)
                                           + b"\n", b"\x92\x01"])
                self.log("trickle %r" % self.trickle[:40])
            elif action == "stall":
                delay = rng.uniform(0.1, 0.8)
                self.log("stall %.2f s" % delay)
            elif action == "toggle":
                self.reading = not self.reading
                self.log("reading" if self.reading else "not reading")
            elif action == "half-close":
                if not self.wclosed:
                    try:
                        self.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    self.wclosed = True
                    self.log("half-close")
            elif action == "reset":
                self.drop(reset=True)
            elif action == "close":
                self.drop(reset=False)
            else:
                self.datagram()
        self.next = now + delay

    def drain(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.eof = True
                    self.log("eof")
                    if self.wclosed or self.rng.random() < 0.5:
                        self.drop(reset=False)
                    return
        except BlockingIOError:
            return
        except OSError as error:
            self.log("recv: %s" % error)
            self.drop(reset=False)


def pick(rng, weighted):
    total = sum(w for w, _ in weighted)
    x = rng.uniform(0, total)
    for w, v in weighted:
        x -= w
        if x <= 0:
            return v
    return weighted[-1][1]


# ---- one execution ----------------------------------------------------------------------------

class Failure(Exception):
    pass


class Execution:
    def __init__(self, seed, script_text=None, without=(), tight_caps=False):
        self.seed = seed
        self.without = without
        self.tight_caps = tight_caps
        self.rng = random.Random("api-clients-%d" % seed)
        script = generate(random.Random(seed), without, tight_caps)
        if script_text is not None:  # a replay: the kept script decides
            script.text = script_text
            script.has_datagram = "\nM.datagram = " in script_text
        self.script = script
        self.actions = []
        self.t0 = time.monotonic()
        self.port = self.udp_port = None
        self.proc = None

    def log_action(self, what):
        self.actions.append("%7.3f %s" % (time.monotonic() - self.t0, what))

    def run(self, work):
        """Returns None on a pass, else the reason."""
        self.work = work
        self.script_path = os.path.join(work, "script.lua")
        with open(self.script_path, "w") as f:
            f.write(self.script.text)
        check_syntax(self.script_path)
        self.echo_path = os.path.join(work, "echo.sock")
        self.log_path = os.path.join(work, "server.log")
        args = [BIN, "serve", self.script_path, "--listen", "127.0.0.1:0",
                "--listen", "unix:" + self.echo_path, "--grace", str(GRACE)]
        if self.script.has_datagram:
            args += ["--listen", "udp:127.0.0.1:0"]
        self.args = args
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=work, env=env)
        try:
            return self._run()
        except Failure as failure:
            return str(failure)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def server_log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def _run(self):
        self.wait_listening()
        duration = self.rng.uniform(1.0, 3.0)
        self.log_action("clients for %.2f s" % duration)
        self.drive(duration)
        if self.proc.poll() is not None:
            raise Failure("the server died during the clients' run (%s)" %
                          status_text(self.proc.returncode))
        try:
            self.echo_check()
        except Failure as failure:
            # Let the server say, in its shutdown line, what was still running: every wait of
            # the fuzz code is bounded, so handlers still running now had their wake-up lost.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            m = re.search(r"waiting up to \S+ s for ([1-9]\d*) handlers", self.server_log())
            if m:
                raise Failure("%s; %s handlers were still running after that" % (failure,
                                                                              m.group(1)))
            raise
        self.log_action("SIGTERM")
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failure("the server did not exit within %.0f s of SIGTERM" % STOP_TIMEOUT)
        if code != 0:
            raise Failure("the server exited with %s after SIGTERM" % status_text(code))
        log = self.server_log()
        found = [text for text in BAD_TEXT if text in log]
        found += ["'%s'" % m.group(0) for m in BAD_LINES.finditer(log)][:1]
        if found:
            raise Failure("the log has " + ", ".join(found))
        return None

    def wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        wanted = 3 if self.script.has_datagram else 2
        while time.monotonic() < deadline:
            found = LISTENING.findall(self.server_log())
            if len(found) >= wanted:
                for kind, host, port in found:
                    if kind == "udp:":
                        self.udp_port = int(port)
                    elif kind == "":
                        self.port = int(port)
                self.log_action("listening on %d (udp %s)" % (self.port, self.udp_port))
                return
            if self.proc.poll() is not None:
                raise Failure("the server did not start (%s)" % status_text(self.proc.returncode))
            time.sleep(0.01)
        raise Failure("the server did not start within %.0f s" % START_TIMEOUT)

    def drive(self, duration):
        rng = self.rng
        actors = [Actor(random.Random(rng.random()), i, self, self.script.settings)
                  for i in range(rng.randrange(2, 7))]
        end = time.monotonic() + duration
        while True:
            now = time.monotonic()
            if now >= end or self.proc.poll() is not None:
                break
            for actor in actors:
                if actor.next <= now:
                    actor.step(now)
            readers = {a.sock: a for a in actors if a.sock is not None and a.reading
                       and not a.eof}
            wait = max(0.0, min(min(a.next for a in actors) - time.monotonic(), 0.02))
            ready = select.select(list(readers), [], [], wait)[0] if readers else []
            if not readers:
                time.sleep(wait)
            for sock in ready:
                readers[sock].drain()
        for actor in actors:
            actor.drop(reset=rng.random() < 0.5)

    def echo_check(self):
        """The server must echo a line on the unix listener. Coroutines of the fuzz code may
        still hold memory near the cap for a while (every wait they make has a timeout of at
        most a second, but they make several): try again for about 15 s before failing."""
        problem = None
        for attempt, pause in enumerate([0.3, 0.5, 1, 1.5, 2, 3, 3, 4, 0]):
            payload = b"echo %d %d\n" % (self.seed, attempt)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(ECHO_TIMEOUT)
                    s.connect(self.echo_path)
                    s.sendall(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                if got == payload:
                    self.log_action("echo ok")
                    return
                problem = "echoed %r for %r" % (got, payload)
            except OSError as error:
                problem = str(error)
            self.log_action("echo failed: %s" % problem)
            if self.proc.poll() is not None:
                raise Failure("the server died (%s)" % status_text(self.proc.returncode))
            time.sleep(pause)
        if re.search(r"handler error in conn \d+ from unix: not enough memory", self.server_log()):
            problem += ("; the echo handler failed with 'not enough memory': the Lua heap stayed"
                        " at max_memory after the fuzz clients had gone")
        raise Failure("the server does not answer a plain echo: " + problem)


def status_text(code):
    if code is None:
        return "running"
    if code < 0:
        try:
            return "signal " + signal.Signals(-code).name
        except ValueError:
            return "signal %d" % -code
    return "exit status %d" % code


_syntax_checker = None


def check_syntax(path):
    global _syntax_checker
    if _syntax_checker is None:
        luac = shutil.which("luac5.4") or shutil.which("luac")
        _syntax_checker = [luac, "-p"] if luac else [BIN, "check"]
    result = subprocess.run(_syntax_checker + [path], capture_output=True, text=True)
    if result.returncode != 0:
        print("api: BUG in the fuzzer: the generated script is not valid Lua:\n"
              + result.stdout + result.stderr, file=sys.stderr)
        sys.exit(2)


def signature(log, reason):
    """A one-line summary of what went wrong, from the sanitizer report if there is one."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"ERROR: (AddressSanitizer|LeakSanitizer): ([\w-]+)", line)
        if m and m.group(1) == "LeakSanitizer":
            leaks = [j for j in range(i, len(lines)) if re.match(r"(Direct|Indirect) leak",
                                                                 lines[j])]
            frame = first_frame(lines[leaks[0] + 1:]) if leaks else ""
            return "LeakSanitizer: leak%s" % (" from " + frame if frame else "")
        if m:
            frame = first_frame(lines[i + 1:])
            return "%s: %s%s" % (m.group(1), m.group(2), " in " + frame if frame else "")
        if "runtime error:" in line:
            return "UBSan: " + line[line.index("runtime error:"):].strip()[:120] + \
                   (" at " + line.split(": runtime error")[0].split("/")[-1])
        if "unprotected Lua error" in line:
            return line[line.index("unprotected Lua error"):].strip()[:120]
    m = BAD_LINES.search(log)
    if m:  # even when another check failed first: this says more about the cause
        return "lost coroutine: " + ("negative handler count" if "handlers" in m.group(0)
                                     else "a dead handler resumed")
    return reason


def first_frame(lines):
    """The first stack frame in luasock's own code (not libc, ASan or Lua)."""
    frames = []
    for line in lines[:80]:
        m = re.match(r"\s+#\d+ 0x[0-9a-f]+\s+(?:in (\S+) )?\(?([^()\s]+)\)?", line)
        if m:
            frames.append((m.group(1) or "?", m.group(2)))
        elif frames and not line.strip():
            break
    frames = [(f, w) for f, w in frames if not f.startswith(("__interceptor", "__asan",
                                                                "malloc", "realloc", "calloc",
                                                                "free", "guard_alloc"))]
    for func, where in frames:
        if "/src/" in where and "libsanitizer" not in where:
            return "%s (%s)" % (func, where.split("/")[-1])
    return "%s (%s)" % (frames[0][0], frames[0][1].split("/")[-1]) if frames else ""


def keep_crash(execution, work, reason, crash_root):
    os.makedirs(crash_root, exist_ok=True)
    base = os.path.join(crash_root, "api-%d" % execution.seed)
    target, n = base, 1
    while os.path.exists(target):
        n += 1
        target = "%s-%d" % (base, n)
    os.makedirs(target)
    for name in ("script.lua", "server.log"):
        if os.path.exists(os.path.join(work, name)):
            shutil.copy(os.path.join(work, name), target)
    with open(os.path.join(target, "seed"), "w") as f:
        f.write("%d\n" % execution.seed)
    if execution.without:
        with open(os.path.join(target, "without"), "w") as f:
            f.write(",".join(execution.without) + "\n")
    if execution.tight_caps:
        open(os.path.join(target, "tight-caps"), "w").close()
    with open(os.path.join(target, "actions.txt"), "w") as f:
        f.write("# what the clients did (seed %d); times in s from the start\n" % execution.seed)
        f.write("\n".join(execution.actions) + "\n")
    with open(os.path.join(target, "reason"), "w") as f:
        f.write(reason + "\n" + "server: " + " ".join(getattr(execution, "args", [])) + "\n")
    return target


def execute(seed, script_text, crash_root, flags):
    """Runs one execution; returns None or (reason, signature, crash dir)."""
    work = tempfile.mkdtemp(prefix="api-fuzz-")
    try:
        execution = Execution(seed, script_text, flags.without, flags.tight_caps)
        reason = execution.run(work)
        if reason is None:
            return None
        log = execution.server_log()
        sig = signature(log, reason)
        kept = keep_crash(execution, work, reason, crash_root)
        return reason, sig, kept
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Flags:
    """What changes the script of a seed: --without and --tight-caps."""

    def __init__(self, without=(), tight_caps=False):
        self.without = list(without)
        self.tight_caps = tight_caps

    def __str__(self):
        return ((" --without " + ",".join(self.without) if self.without else "")
                + (" --tight-caps" if self.tight_caps else ""))


def report(seed, result, started, flags):
    reason, sig, kept = result
    rel = os.path.relpath(kept) if kept.startswith(os.getcwd() + os.sep) else kept
    print("api: FAILED seed %d after %.0f s: %s" % (seed, time.monotonic() - started, reason))
    print("api:   %s" % sig)
    print("api:   kept in %s; replay: tests/fuzz/api_fuzz.py --replay %s  (or --seed %d%s)"
          % (rel, rel, seed, flags))
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description="luasock API-misuse fuzzer (see the top of "
                                     "this file and tests/fuzz/README.md)")
    parser.add_argument("seconds", nargs="?", type=float, default=60.0,
                        help="time budget in seconds (default 60)")
    parser.add_argument("--seed", type=int, help="run this one seed (see --runs)")
    parser.add_argument("--replay", metavar="DIR", help="rerun a kept failure (see --runs)")
    parser.add_argument("--runs", type=int, default=5,
                        help="with --seed or --replay: tries until one fails (default 5)")
    parser.add_argument("--base-seed", type=int,
                        help="first seed of a run (default: from the clock); then +1 each")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on after a failure (until the time budget is used up)")
    parser.add_argument("--crash-dir", default=os.path.join(ROOT, "build/fuzz/crashes"),
                        help="where failures are kept (default build/fuzz/crashes)")
    parser.add_argument("--without", metavar="LIST", default="",
                        help="contexts to leave out of the scripts, comma-separated names "
                        "from api_gen.CONTEXTS, or c-boundary for all where a call cannot wait")
    parser.add_argument("--tight-caps", action="store_true",
                        help="also run scripts with max_memory only 96 KiB above the start-up "
                        "use, below the fuzz load's own working set (see README.md)")
    parser.add_argument("--print-script", type=int, metavar="SEED",
                        help="print the script of SEED and exit")
    opts = parser.parse_args()
    flags = Flags([name for name in opts.without.split(",") if name], opts.tight_caps)
    try:
        generate(random.Random(0), flags.without)
    except ValueError as error:
        parser.error(str(error))

    if opts.print_script is not None:
        print(generate(random.Random(opts.print_script), flags.without, flags.tight_caps).text)
        return 0
    if not os.access(BIN, os.X_OK):
        print("api: no luasock binary at %s (set LUASOCK_BIN, or build it with "
              "scripts/setup --sanitize)" % BIN, file=sys.stderr)
        return 2

    started = time.monotonic()
    executions = failed = 0
    kinds = {}
    if opts.seed is not None or opts.replay:
        seed, text = opts.seed, None
        if opts.replay:
            with open(os.path.join(opts.replay, "seed")) as f:
                seed = int(f.read().split()[0])
            with open(os.path.join(opts.replay, "script.lua")) as f:
                text = f.read()
            if os.path.exists(os.path.join(opts.replay, "without")):
                with open(os.path.join(opts.replay, "without")) as f:
                    flags.without = [name for name in f.read().strip().split(",") if name]
            flags.tight_caps = os.path.exists(os.path.join(opts.replay, "tight-caps"))
        print("api: seed %d, up to %d runs, %s" % (seed, opts.runs, BIN))
        for _ in range(opts.runs):
            executions += 1
            result = execute(seed, text, opts.crash_dir, flags)
            if result:
                failed += 1
                report(seed, result, started, flags)
                break
    else:
        seed = opts.base_seed if opts.base_seed is not None else int(time.time()) % 1000000000
        print("api: seeds from %d, %.0f s, %s%s" % (seed, opts.seconds, BIN, flags))
        sys.stdout.flush()
        while time.monotonic() - started < opts.seconds or executions == 0:
            executions += 1
            result = execute(seed, None, opts.crash_dir, flags)
            if result:
                failed += 1
                kinds.setdefault(result[1], []).append((seed, time.monotonic() - started))
                report(seed, result, started, flags)
                if not opts.keep_going:
                    break
            seed += 1
    elapsed = time.monotonic() - started
    if len(kinds) > 1 or (kinds and opts.keep_going):
        print("api: failures by kind (seed, seconds into the run of the first):")
        for sig, hits in sorted(kinds.items(), key=lambda kv: kv[1][0][1]):
            print("api:   %3d x %s  (first: seed %d at %.0f s)" % (len(hits), sig, hits[0][0],
                                                                   hits[0][1]))
    print("api: %d executions in %.0f s, %d failed" % (executions, elapsed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
