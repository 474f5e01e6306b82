"""chat_nodes_test.py -- examples/chat.lua as one room across luasock processes through Redis.

Two luasock processes on different ports (`serve examples/chat.lua --pubsub redis://...`) and
one real redis-server on a free port (tests/clients/redis_server.py), with plain Python socket
clients:

- clients on both nodes chat: joins, lines, /me and renames cross nodes, lines arrive in order
  per sender, nobody hears themself, /who on either node lists everyone;
- nicknames are unique across nodes, and a released name can be taken on the other node;
- a node killed with SIGKILL: its members vanish from /who on the other node within the expiry
  (CHAT_MEMBER_TTL=2) plus a margin, and their names become free;
- a node stopped with SIGTERM: the other node hears its members leave and /who drops them;
- redis-server stopped: chat within each node goes on; restarted on the same port: the nodes
  reconnect (log), cross-node chat resumes, nothing said during the outage crosses over, and
  /who lists everyone again;
- --workers 2 --pubsub: two `pubsub: connected` lines (one per worker); clients spread over both
  workers by SO_REUSEPORT (which worker holds each connection is read from /proc) all hear each
  other;
- latency: 2000 timestamped lines from a client on node A, one per millisecond, to a client on
  node B; prints p50/p99 and requires p99 below a generous bound;
- over TLS (issue 14): the two-node chat and the Redis restart again, against a redis-server
  that speaks only TLS (`--pubsub rediss://...?ca=CA`, certificates from scripts/devcert).

Run from the repo root with LUASOCK_BIN set. Prints "N passed, N failed"; exit 0 = all passed.
"""
import os
import re
import socket
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Server  # noqa: E402
from redis_server import RedisServer  # noqa: E402

SCRIPT = "examples/chat.lua"
TTL = 2  # CHAT_MEMBER_TTL for every node: members of a dead node vanish within 2 s
ASAN = "asan" in BIN.lower()
SLOW = 4 if ASAN else 1  # timing bounds are multiplied by this under AddressSanitizer
TIMEOUT = 5.0 * SLOW
WELCOME = re.compile(
    r"^\* welcome to the chat, (\S+)! commands: /nick NAME, /who, /me ACTION, /quit$")

os.environ["CHAT_MEMBER_TTL"] = str(TTL)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class Member:
    """A chat client over a plain socket: sends lines, reads lines."""

    def __init__(self, server, nodelay=False):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""
        welcome = self.line()
        match = WELCOME.match(welcome)
        check(match, f"unexpected welcome line {welcome!r}")
        self.nick = match.group(1)

    def say(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def line(self, timeout=None):
        """The next line; raises socket.timeout after `timeout` (default TIMEOUT)."""
        self.sock.settimeout(timeout or TIMEOUT)
        while b"\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise Failure(f"the server closed the connection; unfinished {self.pending!r}")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def expect_next(self, want):
        got = self.line()
        check(got == want, f"{self.nick}: expected the next line {want!r}, got {got!r}")

    def read_until(self, accept, what, timeout=None):
        """Reads until accept(line); returns the line and the lines skipped before it."""
        deadline = time.monotonic() + (timeout or TIMEOUT)
        skipped = []
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.line(max(left, 0.001))
            except socket.timeout:
                raise Failure(f"{self.nick}: no {what} within {timeout or TIMEOUT} s; got "
                              f"{skipped[-10:]!r}")
            if accept(line):
                return line, skipped
            skipped.append(line)

    def who(self):
        """Asks /who; returns the sorted names (other lines before the answer are skipped)."""
        self.say("/who")
        line, _ = self.read_until(lambda l: l.startswith("* here: "), "/who answer")
        names = line[len("* here: "):]
        return sorted(n for n in names.split(", ") if n)

    def close(self):
        self.sock.close()


class Resources:
    """What a check opens, closed at its end also when it fails."""

    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return item

    def close(self):
        for item in reversed(self.items):
            try:
                item.close()
            except Exception:  # noqa: BLE001 -- cleanup must go on
                pass


def wait_log(server, pattern, count=1, timeout=10.0, start=0):
    """Waits until `pattern` (a regex) matches `count` times in the log after offset `start`."""
    deadline = time.monotonic() + timeout * SLOW
    regex = re.compile(pattern)
    while True:
        log = server.log()
        found = regex.findall(log[start:])
        if len(found) >= count:
            return found
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise Failure(f"log never matched {pattern!r} {count} times; log:\n{log}")
        time.sleep(0.02)


def start_node(res, redis, args=()):
    node = res.add(Server(SCRIPT, ["--pubsub", redis.url, *args]))
    wait_log(node, r"\[info\] (?:worker \d+: )?pubsub: connected to " + re.escape(redis.url))
    return node


def outage_pattern(redis):
    return (r"\[warn\] (?:worker \d+: )?pubsub: " + re.escape(redis.url) + r": [^\n]*; messages"
            r" to other nodes are dropped until it is back; retrying in 0\.1 s")


def member(res, node, **kw):
    return res.add(Member(node, **kw))


# Checks ------------------------------------------------------------------------------------

def check_two_nodes(res, redis):
    a_node, b_node = start_node(res, redis), start_node(res, redis)
    check(a_node.port != b_node.port, "both nodes on one port")
    a1 = member(res, a_node)
    b1 = member(res, b_node)
    a1.expect_next(f"* {b1.nick} joined")
    a2 = member(res, a_node)
    a1.expect_next(f"* {a2.nick} joined")
    # a1's join reaches node B through Redis: a b1 that connected before it got there hears it.
    late = b1.line()
    if late == f"* {a1.nick} joined":
        late = b1.line()
    check(late == f"* {a2.nick} joined", f"{b1.nick}: expected {a2.nick}'s join, got {late!r}")
    check(len({a1.nick, a2.nick, b1.nick}) == 3, f"same guest names: {a1.nick} {a2.nick} {b1.nick}")

    # 100 lines from a1 and 100 from b1, sent at once: each sender's lines in order everywhere
    for i in range(100):
        a1.say(f"from a1 {i}")
        b1.say(f"from b1 {i}")
    expected = {a1: {b1.nick: "from b1"}, b1: {a1.nick: "from a1"},
                a2: {a1.nick: "from a1", b1.nick: "from b1"}}
    for receiver, senders in expected.items():
        got = {nick: 0 for nick in senders}
        while any(n < 100 for n in got.values()):
            line = receiver.line()
            match = re.match(r"^<(\S+)> (from \S+) (\d+)$", line)
            check(match, f"{receiver.nick}: unexpected line {line!r}")
            nick, text, n = match.group(1), match.group(2), int(match.group(3))
            check(nick in senders and senders[nick] == text,
                  f"{receiver.nick}: a line it should not get: {line!r}")
            check(n == got[nick], f"{receiver.nick}: from {nick} expected {got[nick]}, got {n}")
            got[nick] += 1
    print("ok: 100 lines each from a1 (node A) and b1 (node B), in order per sender, everywhere")

    everyone = sorted([a1.nick, a2.nick, b1.nick])
    check(a1.who() == everyone, f"/who on A: {a1.who()} instead of {everyone}")
    check(b1.who() == everyone, f"/who on B: {b1.who()} instead of {everyone}")
    print(f"ok: /who on both nodes: {everyone}")

    b1.say("/me waves")
    a1.expect_next(f"* {b1.nick} waves")
    a2.expect_next(f"* {b1.nick} waves")
    old = a2.nick
    a2.say("/nick zed")
    a2.expect_next("* you are now zed")
    a1.expect_next(f"* {old} is now zed")
    b1.expect_next(f"* {old} is now zed")
    a2.say("/quit")
    a2.expect_next("* bye")
    b1.expect_next("* zed left")
    a1.expect_next("* zed left")
    check(b1.who() == sorted([a1.nick, b1.nick]), f"/who on B after zed left: {b1.who()}")
    print("ok: /me, /nick and /quit cross nodes")
    a_node.stop()
    b_node.stop()


def check_unique_nicks(res, redis):
    a_node, b_node = start_node(res, redis), start_node(res, redis)
    a1 = member(res, a_node)
    b1 = member(res, b_node)
    a1.expect_next(f"* {b1.nick} joined")
    a1.say("/nick alice")
    a1.expect_next("* you are now alice")
    # a1's own join may still be crossing Redis when b1 joins node B: b1 may hear it first
    _, skipped = b1.read_until(lambda l: l == f"* {a1.nick} is now alice", "a1's rename")
    check(skipped in ([], [f"* {a1.nick} joined"]), f"b1 got other lines first: {skipped}")
    b1.say("/nick alice")
    b1.expect_next("* alice is taken")
    b_old = b1.nick
    b1.say("/nick bob")
    b1.expect_next("* you are now bob")
    a1.expect_next(f"* {b_old} is now bob")
    a1.say("/nick bob")
    a1.expect_next("* bob is taken")
    print("ok: a name taken on one node is taken on the other")
    # a name given up on node A can be taken on node B
    a1.say("/nick carol")
    a1.expect_next("* you are now carol")
    b1.expect_next("* alice is now carol")
    b1.say("/nick alice")
    b1.expect_next("* you are now alice")
    a1.expect_next("* bob is now alice")
    print("ok: a name released on node A is free on node B")
    a_node.stop()
    b_node.stop()


def check_killed_node(res, redis):
    a_node, b_node = start_node(res, redis), start_node(res, redis)
    a1 = member(res, a_node)
    a2 = member(res, a_node)
    b1 = member(res, b_node)
    a1.read_until(lambda l: l == f"* {b1.nick} joined", "b1's join")
    a1.say("/nick anna")
    a1.expect_next("* you are now anna")
    b1.read_until(lambda l: l == f"* {a1.nick} is now anna", "the rename")
    dead = {"anna", a2.nick}
    check(b1.who() == sorted(["anna", a2.nick, b1.nick]), f"/who before the kill: {b1.who()}")
    a_node.kill()
    killed = time.monotonic()
    limit = TTL + 3 * SLOW
    while True:
        names = b1.who()
        if not dead & set(names):
            break
        check(time.monotonic() - killed < limit,
              f"the killed node's members still in /who {limit} s after the kill: {names}")
        time.sleep(0.1)
    gone_after = time.monotonic() - killed
    check(names == [b1.nick], f"/who after the expiry: {names}")
    print(f"ok: the killed node's members left /who {gone_after:.1f} s after SIGKILL "
          f"(CHAT_MEMBER_TTL={TTL})")
    b1.say("/nick anna")
    b1.expect_next("* you are now anna")
    print("ok: the killed node's names are free again")
    b_node.stop()


def check_stopped_node(res, redis):
    a_node, b_node = start_node(res, redis), start_node(res, redis)
    a1 = member(res, a_node)
    b1 = member(res, b_node)
    a1.expect_next(f"* {b1.nick} joined")
    check(b1.who() == sorted([a1.nick, b1.nick]), f"/who before the stop: {b1.who()}")
    a_node.proc.send_signal(15)
    line, _ = b1.read_until(lambda l: l.startswith(f"* {a1.nick} left"),
                            f"'* {a1.nick} left' after SIGTERM to its node", timeout=3 * SLOW)
    print(f"ok: node B heard {line!r}")
    check(b1.who() == [b1.nick], f"/who on B after node A stopped: {b1.who()}")
    code = a_node.proc.wait(15)
    check(code == 0, f"node A exited with {code}")
    b_node.stop()


def check_redis_restart(res, redis):
    a_node, b_node = start_node(res, redis), start_node(res, redis)
    a1, a2 = member(res, a_node), member(res, a_node)
    b1, b2 = member(res, b_node), member(res, b_node)
    everyone = sorted([a1.nick, a2.nick, b1.nick, b2.nick])
    a1.say("before")
    for m in (a2, b1, b2):
        m.read_until(lambda l: l == f"<{a1.nick}> before", "'before'")

    a_mark, b_mark = len(a_node.log()), len(b_node.log())
    redis.stop()
    wait_log(a_node, outage_pattern(redis), start=a_mark)
    wait_log(b_node, outage_pattern(redis), start=b_mark)
    print("ok: both nodes logged the outage")
    a1.say("during on A")
    a2.read_until(lambda l: l == f"<{a1.nick}> during on A", "'during on A' on A")
    b1.say("during on B")
    b2.read_until(lambda l: l == f"<{b1.nick}> during on B", "'during on B' on B")
    print("ok: chat within each node goes on while Redis is down")

    a_mark, b_mark = len(a_node.log()), len(b_node.log())
    redis.restart()
    back = r"\[info\] pubsub: connected to " + re.escape(redis.url) + r" after ([\d.]+) s away"
    away = wait_log(a_node, back, start=a_mark, timeout=15)
    wait_log(b_node, back, start=b_mark, timeout=15)
    print(f"ok: both nodes reconnected (node A after {away[0]} s away)")

    # cross-node chat resumes; nothing said during the outage crosses over
    deadline = time.monotonic() + 10 * SLOW
    probe = 0
    while True:
        probe += 1
        a1.say(f"probe {probe}")
        try:
            line = b1.line(0.2)
            break
        except socket.timeout:
            check(time.monotonic() < deadline, "no line from node A reached node B after restart")
    check(re.match(rf"^<{a1.nick}> probe \d+$", line),
          f"b1's first line after the outage: {line!r}")
    b1.say("back")
    for m in (a1, a2):
        _, skipped = m.read_until(lambda l: l == f"<{b1.nick}> back", "'back' from node B")
        check(all("during" not in l for l in skipped), f"{m.nick} got an outage line: {skipped}")
    _, skipped = b2.read_until(lambda l: l == f"<{b1.nick}> back", "'back' on B")
    check(all("during" not in l for l in skipped), f"b2 got an outage line: {skipped}")
    print("ok: cross-node chat resumed after the restart")

    # the nodes write their members back into the new (empty) Redis
    deadline = time.monotonic() + (TTL + 3) * SLOW
    while True:
        names = b1.who()
        if names == everyone:
            break
        check(time.monotonic() < deadline, f"/who after the restart: {names}, not {everyone}")
        time.sleep(0.1)
    print(f"ok: /who after the restart lists everyone: {names}")
    a_node.stop()
    b_node.stop()


def worker_pids(parent):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry))
    return pids


def socket_owner(server_port, client_port, pids):
    """Which of `pids` holds the server side of the connection from client_port, or None."""
    inode = None
    with open("/proc/net/tcp") as f:
        next(f)
        for row in f:
            fields = row.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None


def check_workers(res, redis):
    node = res.add(Server(SCRIPT, ["--workers", "2", "--pubsub", redis.url]))
    found = wait_log(node, r"\[info\] worker (\d+): pubsub: connected to " + re.escape(redis.url),
                     count=2)
    check(sorted(found) == ["1", "2"], f"pubsub: connected lines from workers {found}")
    print("ok: two 'pubsub: connected' lines, from worker 1 and worker 2")
    pids = worker_pids(node.pid)
    check(len(pids) == 2, f"worker processes {pids}")
    members, on = [], {pid: [] for pid in pids}
    while len(members) < 8 or not all(on.values()):
        check(len(members) < 40, f"40 clients all on one worker? {on}")
        m = member(res, node)
        members.append(m)
        owner = socket_owner(node.port, m.sock.getsockname()[1], pids)
        check(owner in on, f"cannot tell which worker holds {m.nick}'s connection")
        on[owner].append(m.nick)
    print(f"ok: {len(members)} clients, by worker pid: {on}")
    for m in members:
        m.say(f"hello from {m.nick}")
    for m in members:
        want = {f"<{o.nick}> hello from {o.nick}" for o in members if o is not m}
        while want:
            line = m.line()
            if line.startswith("* "):
                continue  # join announcements
            check(line in want, f"{m.nick}: unexpected or repeated line {line!r}")
            want.discard(line)
    print(f"ok: each of the {len(members)} clients heard the other {len(members) - 1} "
          "across both workers, and not itself")
    who = members[0].who()
    check(who == sorted(m.nick for m in members), f"/who with workers: {who}")
    print("ok: /who lists the members of both workers")
    node.stop()


def check_latency(res, redis):
    a_node, b_node = start_node(res, redis), start_node(res, redis)
    sender = member(res, a_node, nodelay=True)
    receiver = member(res, b_node)
    sender.read_until(lambda l: l == f"* {receiver.nick} joined", "the receiver's join")
    count, pace = 2000, 0.001
    arrivals = [None] * count
    errors = []

    def receive():
        try:
            got = 0
            while got < count:
                line = receiver.line(10 * SLOW)
                now = time.monotonic_ns()
                if line == f"* {sender.nick} joined":
                    # The sender joined on node A before the receiver connected to node B: the
                    # announcement can still be crossing Redis then.
                    continue
                match = re.match(rf"^<{sender.nick}> lat (\d+) (\d+)$", line)
                if not match:
                    errors.append(f"unexpected line {line!r}")
                    return
                i, sent = int(match.group(1)), int(match.group(2))
                if i != got:
                    errors.append(f"line {i} arrived as number {got}")
                    return
                arrivals[i] = (now - sent) / 1e6
                got += 1
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            errors.append(repr(e))

    thread = threading.Thread(target=receive)
    thread.start()
    start = time.monotonic()
    for i in range(count):
        delay = start + i * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.say(f"lat {i} {time.monotonic_ns()}")
    sending = time.monotonic() - start
    thread.join(30 * SLOW)
    check(not thread.is_alive(), "the receiver thread did not finish")
    check(not errors, f"receiver: {errors}")
    latencies = sorted(arrivals)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    bound = 100 * (10 if ASAN else 1)
    print(f"latency A -> Redis -> B over {count} lines sent in {sending:.2f} s: p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms")
    check(p99 < bound, f"p99 latency {p99:.2f} ms is above {bound} ms")
    a_node.stop()
    b_node.stop()


CHECKS = [check_two_nodes, check_unique_nicks, check_killed_node, check_stopped_node,
          check_redis_restart, check_workers, check_latency]
# Run again against a Redis that speaks only TLS.
TLS_CHECKS = [check_two_nodes, check_redis_restart]


def main():
    passed, failed = 0, 0
    for check_fn, tls in [(fn, False) for fn in CHECKS] + [(fn, True) for fn in TLS_CHECKS]:
        res = Resources()
        started = time.monotonic()
        name = check_fn.__name__ + (" over TLS" if tls else "")
        try:
            redis = res.add(RedisServer(tls=tls))
            check_fn(res, redis)
            passed += 1
            print(f"PASS {name} ({time.monotonic() - started:.1f} s)")
        except Exception as e:  # noqa: BLE001 -- count it and go on with the next check
            failed += 1
            print(f"FAIL {name}: {e}")
            if not isinstance(e, Failure):
                traceback.print_exc()
        finally:
            res.close()
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
