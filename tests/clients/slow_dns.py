"""slow_dns.py -- a tiny DNS server on 127.0.0.1 for the resolver tests (a helper, not a test).

The specs point luasock at it with luasock.set_nameservers("127.0.0.1:PORT"), so no lookup of
theirs ever leaves the machine, and use its slow name to show that a lookup waiting for an
answer does not hold up the event loop, and its hostile names to show that no answer can hurt
the server.

Usage: python3 tests/clients/slow_dns.py [DELAY_SECONDS [LIFETIME_SECONDS [SLOW_NAME...]]]
It binds UDP 127.0.0.1:0 (and TCP on the same port, for truncated answers), prints the port on
stdout (one line) when ready, and answers:
  slow.test      A 127.0.0.1 (AAAA: no data)
  two.test       A 127.0.0.2 and A 127.0.0.1 (AAAA: no data)
  hostile names, whatever the type asked (see HOSTILE):
    truncated.test         the TC bit and no answer; over TCP, a length of 65535 and 10 bytes,
                           then the connection is closed
    cname-loop.test        a CNAME to itself
    cname-pair.test        a CNAME to other.cname-pair.test, and that one's back to it
    compression-loop.test  a record whose name is a compression pointer to itself
    garbage.test           the query's id, then 300 random bytes
    bad-rdlength.test      an A record whose data length (65535) runs past the end
    count-lie.test         one A record, the header claiming 65535
  any other name NXDOMAIN (missing.test, nonexistent.invalid, ...)
at once, except slow.test and the SLOW_NAMEs, which are answered after DELAY_SECONDS (default
1.5). (An IP address as SLOW_NAME shows whether a resolver asks about addresses, which it
should not.) Every datagram waiting is read at each wake-up and its receive buffer is large, so
that thousands of queries sent at once are all answered. It exits on SIGTERM, or by itself
after LIFETIME_SECONDS (default 120), so it never outlives a test run. Standard library only.
"""
import heapq
import random
import select
import socket
import struct
import sys
import time

TYPE_A, TYPE_AAAA, TYPE_CNAME = 1, 28, 5
NXDOMAIN = 3
TC = 0x0200
ANSWERS = {"slow.test": ["127.0.0.1"], "two.test": ["127.0.0.2", "127.0.0.1"]}
RECEIVE_BUFFER = 4 << 20  # the kernel caps it at net.core.rmem_max


def parse_question(packet):
    """Returns (id, flags, name, qtype, question bytes) of a query, or None if malformed."""
    if len(packet) < 12:
        return None
    query_id, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        return None
    labels, at = [], 12
    while at < len(packet) and packet[at] != 0:
        length = packet[at]
        labels.append(packet[at + 1:at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    if at + 5 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[at + 1:at + 3])[0]
    return query_id, flags, ".".join(labels).lower(), qtype, packet[12:at + 5]


def record(name, rtype, data):
    """One resource record of class IN; `name` is already encoded (labels or a pointer)."""
    return name + struct.pack("!HHIH", rtype, 1, 60, len(data)) + data


QUESTION_NAME = struct.pack("!H", 0xC00C)  # a compression pointer to the question's name


def answer_record(qtype, address):
    """One answer record (name as a pointer to the question) for an IPv4 address."""
    return record(QUESTION_NAME, qtype, socket.inet_pton(socket.AF_INET, address))


def encode_name(name):
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def header(query, flags, ancount, rcode=0):
    query_id, query_flags = query[0], query[1]
    reply_flags = 0x8000 | (query_flags & 0x7900) | 0x0080 | flags | rcode  # QR, RD, RA
    return struct.pack("!HHHHHH", query_id, reply_flags, 1, ancount, 0, 0)


def truncated(query):
    return header(query, TC, 0) + query[4]


def cname_loop(query):
    return header(query, 0, 1) + query[4] + record(QUESTION_NAME, TYPE_CNAME, QUESTION_NAME)


def cname_pair(query):
    # The first record's data (other.cname-pair.test) starts 12 bytes after the record's start
    # (2 of name, 10 of type, class, ttl and length); the second record is named by a pointer
    # to it and points back to the question's name.
    first_at = 12 + len(query[4])
    other = struct.pack("!H", 0xC000 | (first_at + 12))
    first = record(QUESTION_NAME, TYPE_CNAME, encode_name("other.cname-pair.test"))
    return header(query, 0, 2) + query[4] + first + record(other, TYPE_CNAME, QUESTION_NAME)


def compression_loop(query):
    itself = struct.pack("!H", 0xC000 | (12 + len(query[4])))
    return header(query, 0, 1) + query[4] + record(itself, TYPE_A, b"\x7f\0\0\x01")


def garbage(query):
    return struct.pack("!H", query[0]) + random.Random(query[0]).randbytes(300)


def bad_rdlength(query):
    bad = QUESTION_NAME + struct.pack("!HHIH", TYPE_A, 1, 60, 0xFFFF) + b"\x7f\0\0\x01"
    return header(query, 0, 1) + query[4] + bad


def count_lie(query):
    return header(query, 0, 0xFFFF) + query[4] + answer_record(TYPE_A, "127.0.0.1")


HOSTILE = {
    "truncated.test": truncated, "cname-loop.test": cname_loop, "cname-pair.test": cname_pair,
    "compression-loop.test": compression_loop, "garbage.test": garbage,
    "bad-rdlength.test": bad_rdlength, "count-lie.test": count_lie,
}


def build_reply(query, slow_names, slow_delay):
    """Returns (delay in seconds, reply bytes) for a parsed query."""
    name, qtype = query[2], query[3]
    hostile = HOSTILE.get(name)
    if hostile:
        return 0.0, hostile(query)
    addresses = ANSWERS.get(name)
    rcode = 0 if addresses is not None else NXDOMAIN
    answers = [answer_record(qtype, a) for a in addresses or []] if qtype == TYPE_A else []
    delay = slow_delay if name in slow_names else 0.0
    return delay, header(query, 0, len(answers), rcode) + query[4] + b"".join(answers)


def answer_tcp(listener):
    """A query over TCP (only truncated.test sends one there): a length prefix promising 65535
    bytes, 10 of them, and the connection closed."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(1.0)
        try:
            conn.recv(4096)
            conn.sendall(struct.pack("!H", 0xFFFF) + b"\0" * 10)
        except OSError:
            pass  # the asker has gone: nothing to do


def answer_datagrams(sock, slow_names, slow_delay, pending, sequence):
    """Reads every datagram waiting; sends the immediate replies, queues the delayed ones.
    Returns the next sequence number."""
    while True:
        try:
            packet, address = sock.recvfrom(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return sequence
        query = parse_question(packet)
        if query is None:
            continue
        delay, reply = build_reply(query, slow_names, slow_delay)
        if delay > 0:
            sequence += 1
            heapq.heappush(pending, (time.monotonic() + delay, sequence, reply, address))
            continue
        try:
            sock.sendto(reply, address)
        except OSError:
            pass  # the asker has gone: nothing to do


def serve(sock, listener, slow_names, slow_delay, lifetime):
    """Answers queries, the slow names after `slow_delay`, until `lifetime` seconds have passed."""
    end = time.monotonic() + lifetime
    pending = []  # heap of (due time, sequence number, reply, address)
    sequence = 0
    while time.monotonic() < end:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, reply, address = heapq.heappop(pending)
            try:
                sock.sendto(reply, address)
            except OSError:
                pass  # the asker has gone: nothing to do
        wait = min(end, pending[0][0]) - now if pending else end - now
        readable, _, _ = select.select([sock, listener], [], [], max(wait, 0))
        if listener in readable:
            answer_tcp(listener)
        if sock in readable:
            sequence = answer_datagrams(sock, slow_names, slow_delay, pending, sequence)


def bind_pair():
    """A UDP socket on a free port of 127.0.0.1 and a TCP listener on the same port."""
    for _ in range(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(("127.0.0.1", 0))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(sock.getsockname())
        except OSError:  # that port is free for UDP but taken for TCP: try another
            sock.close()
            listener.close()
            continue
        listener.listen(16)
        return sock, listener
    sys.exit("slow_dns.py: no port free for both UDP and TCP")


def main():
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
    slow_names = {"slow.test"} | {name.lower() for name in sys.argv[3:]}
    sock, listener = bind_pair()
    print(sock.getsockname()[1], flush=True)
    serve(sock, listener, slow_names, delay, lifetime)


if __name__ == "__main__":
    main()
