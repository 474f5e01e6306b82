"""chat_flood_test.py -- a flood in examples/chat.lua throttles the flooder, not the readers.

Issue 13, item 10. Each of ROUNDS rounds, with fresh connections for Alice, Bob and Carol:
Alice sends 3,000 lines of 400 bytes to the room in one burst; Bob and Carol read as fast as a
Python client can; members who never read are in the room too (a new one joins every round, with
a 4 KiB receive buffer, and stays until dropped: a fresh connection's kernel buffers on loopback
take about 3 MB, so a silent member is dropped in the third round or so of its life); and Erin,
there for all rounds, reads steadily but slower than Alice talks (ERIN_RATE). Before flood
control, members who were reading were dropped along with the silent ones, "the peer is not
reading and ... max_queue": Erin once her kernel buffers were full, and Bob and Carol too when
more than max_queue of Alice's lines were handed out in one loop step. Required:
  - every round, Bob and Carol receive all 3,000 lines, in order and intact, and are never
    dropped; Erin receives every line of every round, in order, and is never dropped;
  - every silent member is dropped "(overflow)" by the soft limit, and the log says so: "the
    peer is not reading: N bytes queued for more than S s (soft_queue 65536)" (nothing else is
    dropped);
  - finally, Dave reads 500 of Alice's lines and then stops for good while Alice talks on: he is
    dropped no sooner than soft_queue_seconds after he stopped (a drop at max_queue would come at
    once) and within that plus DROP_SLACK; so are the silent members still there.

The server runs examples/chat.lua through a wrapper that only sets soft_queue_seconds to
SOFT_SECONDS (chat.lua's own is 10), so that the test is quick. Run from the repo root with
LUASOCK_BIN set; prints one line per round and exits 1 if anything failed.
"""
import os
import re
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import BIN, Server  # noqa: E402

ASAN = "asan" in BIN.lower()
ROUNDS = 20
LINES = 3000
LINE_BYTES = 400           # with its newline
SOFT_SECONDS = 0.5         # soft_queue_seconds of the wrapped chat.lua
DROP_SLACK = 4.0 if ASAN else 2.0
TIMEOUT = 30.0 if ASAN else 15.0
ERIN_CHUNK, ERIN_PAUSE = 16384, 0.005  # Erin reads at most 16 KiB per 5 ms: about 3 MB/s
WELCOME = re.compile(rb"^\* welcome to the chat, (\S+)! commands: ")
LEFT = re.compile(rb"^\* (\S+) left(?: \((\w+)\))?$")
SOFT_DROP = re.compile(r"conn (\d+): disconnected: the peer is not reading: \d+ bytes queued for "
                       r"more than ([\d.]+) s \(soft_queue 65536\)")
ANY_DROP = re.compile(r"conn (\d+): disconnected: .*")

WRAPPER = """-- examples/chat.lua with soft_queue_seconds = %s, so that the test is quick.
local M = dofile(%r)
M.soft_queue_seconds = %s
return M
"""


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


class Member:
    """A chat member on a plain socket; rcvbuf shrinks its kernel receive buffer."""

    def __init__(self, server, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((server.host, server.port))
        self.pending = b""
        match = WELCOME.match(self.line())
        check(match, "no welcome line")
        self.nick = match.group(1)

    def line(self):
        while b"\n" not in self.pending:
            data = self.sock.recv(65536)
            check(data, f"EOF while waiting for a line; unfinished {self.pending[:80]!r}")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def wait_for(self, want):
        while self.line() != want:
            pass

    def close(self):
        self.sock.close()


class Reader(threading.Thread):
    """Reads as fast as it can until `until` has arrived, or EOF; or, with stop_after, until
    that many lines have arrived, and then never again."""

    def __init__(self, member, until=None, stop_after=None):
        super().__init__(daemon=True)
        self.member, self.until, self.stop_after = member, until, stop_after
        self.data = bytearray(member.pending)
        self.stopped_at = None  # when it stopped reading (stop_after)
        self.eof = None
        self.error = None

    def done(self, searched):
        if self.stop_after is not None:
            return self.data.count(b"\n") >= self.stop_after
        return self.data.find(self.until, max(0, searched - len(self.until))) >= 0

    def run(self):
        sock = self.member.sock
        try:
            searched = 0
            while not self.done(searched):
                searched = len(self.data)
                chunk = sock.recv(262144)
                if not chunk:
                    self.eof = "EOF"
                    return
                self.data += chunk
            self.stopped_at = time.monotonic()
        except ConnectionResetError:
            self.eof = "reset"
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"

    def lines(self):
        return bytes(self.data).split(b"\n")


class SlowReader(threading.Thread):
    """Erin: reads ERIN_CHUNK bytes at a time with a pause in between, until `until` is set and
    has arrived, or EOF."""

    def __init__(self, member):
        super().__init__(daemon=True)
        self.member = member
        self.data = bytearray(member.pending)
        self.until = None
        self.eof = None
        self.error = None
        self.start()

    def run(self):
        try:
            searched = 0
            while self.until is None or self.data.find(self.until, searched) < 0:
                searched = max(0, len(self.data) - LINE_BYTES * 2)
                chunk = self.member.sock.recv(ERIN_CHUNK)
                if not chunk:
                    self.eof = "EOF"
                    return
                self.data += chunk
                time.sleep(ERIN_PAUSE)
        except ConnectionResetError:
            self.eof = "reset"
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"


def flood_lines(count, tag):
    """count lines of exactly LINE_BYTES bytes with their newline, numbered after tag."""
    out = []
    for i in range(count):
        head = b"%s-%05d " % (tag, i)
        out.append(head + b"m" * (LINE_BYTES - 1 - len(head)) + b"\n")
    return out


def check_reader(name, reader, nick, sent):
    """reader got every line of sent, from nick, in order, among announcements; returns the
    nicks it saw leave, with the reason."""
    check(reader.error is None, f"{name}: {reader.error}")
    check(reader.eof is None, f"{name} was disconnected ({reader.eof}) after "
                              f"{len(reader.data)} bytes")
    prefix = b"<" + nick + b"> "
    got, left = [], {}
    for line in reader.lines():
        if line.startswith(prefix):
            got.append(line[len(prefix):])
        elif LEFT.match(line):
            match = LEFT.match(line)
            left[match.group(1)] = match.group(2)
    want = [line[:-1] for line in sent]
    check(len(got) >= len(want), f"{name} got {len(got)} of Alice's {len(want)} lines")
    for i, (g, w) in enumerate(zip(got, want)):
        check(g == w, f"{name}: Alice's line {i} came as {g[:40]!r}..., not {w[:40]!r}...")
    return left


def joined(member, *others):
    for other in others:
        member.wait_for(b"* " + other.nick + b" joined")


def check_left(left, silent):
    """The silent members that left are gone for overflow; returns who is still there."""
    for nick, reason in left.items():
        if nick in silent:
            check(reason == b"overflow", f"silent member {nick!r} left ({reason})")
    return {nick: m for nick, m in silent.items() if nick not in left}


def one_round(server, n, silent, said):
    """One burst; silent (nick -> Member) are the members who never read. Appends Alice's lines
    to said, as the others see them. Returns who of the silent is still in the room."""
    newcomer = Member(server, rcvbuf=4096)
    silent[newcomer.nick] = newcomer
    alice, bob, carol = Member(server), Member(server), Member(server)
    joined(alice, bob, carol)
    joined(bob, carol)
    sent = flood_lines(LINES, b"r%02d" % n)
    said += [b"<" + alice.nick + b"> " + line[:-1] for line in sent]
    last = b"<" + alice.nick + b"> " + sent[-1]
    readers = {"Bob": Reader(bob, last), "Carol": Reader(carol, last)}
    for reader in readers.values():
        reader.start()
    started = time.monotonic()
    alice.sock.sendall(b"".join(sent))
    for reader in readers.values():
        reader.join(TIMEOUT)
        check(not reader.is_alive(), "a reader hangs")
    took = time.monotonic() - started
    left = {}
    for name, reader in readers.items():
        left.update(check_reader(name, reader, alice.nick, sent))
    still = check_left(left, silent)
    for member in (alice, bob, carol):
        member.close()
    dropped = sorted(set(silent) - set(still))
    for nick in dropped:
        silent[nick].close()
    return still, (f"round {n}: Bob and Carol got all {LINES} lines in {took:.2f} s; "
                   f"{len(dropped)} silent dropped, {len(still)} silent in the room")


def talk_until_gone(alice, watcher):
    """Alice talks, 100 lines at a time, until the watcher has seen everyone it waits for
    leave."""
    deadline = time.monotonic() + TIMEOUT
    batch = 0
    while watcher.is_alive() and time.monotonic() < deadline:
        alice.sock.sendall(b"".join(flood_lines(100, b"d%04d" % batch)))
        batch += 1
    watcher.join(TIMEOUT)
    check(watcher.error is None, f"Bob: {watcher.error}")
    check(watcher.gone <= set(watcher.left),
          f"not dropped: {sorted(watcher.gone - set(watcher.left))}")
    check_left({nick: reason for nick, (reason, _) in watcher.left.items()},
               {nick: None for nick in watcher.gone})


def stops_for_good(server, silent):
    """Alice talks on until the silent members still there are gone; then Dave reads 500 of her
    lines and stops reading for good, and she talks on until he is gone too."""
    alice, bob = Member(server), Member(server)
    joined(alice, bob)
    talk_until_gone(alice, LeaveWatcher(bob, set(silent)))
    dave = Member(server, rcvbuf=4096)
    joined(alice, dave)
    joined(bob, dave)
    quitter = Reader(dave, stop_after=500)
    quitter.start()
    watcher = LeaveWatcher(bob, {dave.nick})
    talk_until_gone(alice, watcher)
    quitter.join(TIMEOUT)
    check(quitter.stopped_at is not None, f"Dave never got 500 lines ({quitter.eof})")
    after = watcher.left[dave.nick][1] - quitter.stopped_at
    check(SOFT_SECONDS <= after <= SOFT_SECONDS + DROP_SLACK,
          f"Dave was dropped {after:.2f} s after he stopped reading, not within "
          f"{SOFT_SECONDS}..{SOFT_SECONDS + DROP_SLACK} s")
    for member in (alice, bob, dave, *silent.values()):
        member.close()
    return (f"the {len(silent)} silent members left were dropped; Dave stopped reading after "
            f"500 lines and was dropped {after:.2f} s later (soft_queue_seconds "
            f"{SOFT_SECONDS}); Bob read on")


class LeaveWatcher(threading.Thread):
    """Reads everything (from its start), noting when each member left, until all of `gone`
    have."""

    def __init__(self, member, gone):
        super().__init__(daemon=True)
        self.member, self.gone = member, gone
        self.left = {}  # nick -> (reason, when)
        self.error = None
        self.start()

    def run(self):
        pending, self.member.pending = self.member.pending, b""
        try:
            while not self.gone <= set(self.left):
                data = self.member.sock.recv(262144)
                if not data:
                    self.error = "disconnected"
                    return
                now = time.monotonic()
                *lines, pending = (pending + data).split(b"\n")
                self.member.pending = pending
                for line in lines:
                    match = LEFT.match(line)
                    if match:
                        self.left[match.group(1)] = (match.group(2), now)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"


def check_erin(erin, said):
    """Erin got every line Alice said in all rounds, in order; then she leaves."""
    erin.until = said[-1] + b"\n"
    erin.join(TIMEOUT)
    check(not erin.is_alive(), f"Erin hangs after {len(erin.data)} bytes")
    check(erin.error is None, f"Erin: {erin.error}")
    check(erin.eof is None, f"Erin, who was reading, was disconnected ({erin.eof}) after "
                            f"{len(erin.data)} bytes")
    got = [line for line in bytes(erin.data).split(b"\n") if line.startswith(b"<")]
    check(len(got) == len(said), f"Erin got {len(got)} of Alice's {len(said)} lines")
    for i, (g, w) in enumerate(zip(got, said)):
        check(g == w, f"Erin: line {i} came as {g[:40]!r}..., not {w[:40]!r}...")
    erin.member.close()
    return f"Erin, reading at about {ERIN_CHUNK / ERIN_PAUSE / 1e6:.0f} MB/s, got all " \
           f"{len(said)} lines in order"


def main():
    tmp = tempfile.TemporaryDirectory(prefix="luasock-chat-flood-")
    wrapper = os.path.join(tmp.name, "chat_flood.lua")
    with open(wrapper, "w") as f:
        f.write(WRAPPER % (SOFT_SECONDS, os.path.abspath("examples/chat.lua"), SOFT_SECONDS))
    server = Server(wrapper)
    failed, silent, said = 0, {}, []
    try:
        erin = SlowReader(Member(server))
        for n in range(1, ROUNDS + 1):
            t0 = time.monotonic()
            try:
                silent, note = one_round(server, n, silent, said)
                print(f"ok {note} ({time.monotonic() - t0:.1f} s)")
            except (Failed, OSError) as e:
                failed += 1
                print(f"FAIL round {n}: {e}")
        try:
            print(f"ok {check_erin(erin, said)}")
        except (Failed, OSError) as e:
            failed += 1
            print(f"FAIL Erin: {e}")
        try:
            print(f"ok {stops_for_good(server, silent)}")
        except (Failed, OSError) as e:
            failed += 1
            print(f"FAIL stops for good: {e}")
        log = server.log()
        drops = [m.group(0) for m in ANY_DROP.finditer(log)]
        soft = SOFT_DROP.findall(log)
        print(f"{len(drops)} drops logged, {len(soft)} of them 'not reading ... for more than "
              f"{SOFT_SECONDS} s (soft_queue 65536)'")
        errors = [line for line in log.splitlines() if "[error]" in line]
        if errors:
            failed += 1
            print(f"FAIL: {len(errors)} [error] lines in the log:\n" + "\n".join(errors[:5]))
        elif failed == 0 and len(drops) != ROUNDS + 1:
            failed += 1
            print(f"FAIL: {len(drops)} drops logged for {ROUNDS} silent members and Dave:\n"
                  + "\n".join(drops[:10]))
        elif failed == 0 and len(soft) < ROUNDS:
            failed += 1
            print(f"FAIL: {len(soft)} soft-limit 'not reading' lines for {ROUNDS} silent "
                  "members:\n" + "\n".join(drops[:10]))
        server.stop()
    finally:
        server.close()
        tmp.cleanup()
    print(f"chat_flood_test: {'failed' if failed else 'passed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
