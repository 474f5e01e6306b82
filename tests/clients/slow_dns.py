"""slow_dns.py -- a tiny DNS server on 127.0.0.1 for the resolver tests (a helper, not a test).

The specs point luasock at it with luasock.set_nameservers("127.0.0.1:PORT"), so no lookup of
theirs ever leaves the machine, and use its slow name to show that a lookup waiting for an
answer does not hold up the event loop.

Usage: python3 tests/clients/slow_dns.py [DELAY_SECONDS [LIFETIME_SECONDS [SLOW_NAME...]]]
It binds UDP 127.0.0.1:0, prints the port on stdout (one line) when ready, and answers:
  slow.test      A 127.0.0.1 (AAAA: no data)
  two.test       A 127.0.0.2 and A 127.0.0.1 (AAAA: no data)
  any other name NXDOMAIN (missing.test, nonexistent.invalid, ...)
at once, except slow.test and the SLOW_NAMEs, which are answered after DELAY_SECONDS (default
1.5). (An IP address as SLOW_NAME shows whether a resolver asks about addresses, which it
should not.) It exits on SIGTERM, or by itself after LIFETIME_SECONDS (default 120), so it never
outlives a test run. Standard library only.
"""
import heapq
import select
import socket
import struct
import sys
import time

TYPE_A, TYPE_AAAA = 1, 28
NXDOMAIN = 3
ANSWERS = {"slow.test": ["127.0.0.1"], "two.test": ["127.0.0.2", "127.0.0.1"]}


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


def answer_record(qtype, address):
    """One answer record (name as a pointer to the question) for an IPv4 address."""
    data = socket.inet_pton(socket.AF_INET, address)
    return struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(data)) + data


def build_reply(query, slow_names, slow_delay):
    """Returns (delay in seconds, reply bytes) for a parsed query."""
    query_id, flags, name, qtype, question = query
    addresses = ANSWERS.get(name)
    rcode = 0 if addresses is not None else NXDOMAIN
    answers = [answer_record(qtype, a) for a in addresses or []] if qtype == TYPE_A else []
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode  # QR, opcode and RD copied, RA
    header = struct.pack("!HHHHHH", query_id, reply_flags, 1, len(answers), 0, 0)
    delay = slow_delay if name in slow_names else 0.0
    return delay, header + question + b"".join(answers)


def serve(sock, slow_names, slow_delay, lifetime):
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
        readable, _, _ = select.select([sock], [], [], max(wait, 0))
        if not readable:
            continue
        packet, address = sock.recvfrom(4096)
        query = parse_question(packet)
        if query is None:
            continue
        delay, reply = build_reply(query, slow_names, slow_delay)
        sequence += 1
        heapq.heappush(pending, (time.monotonic() + delay, sequence, reply, address))


def main():
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
    slow_names = {"slow.test"} | {name.lower() for name in sys.argv[3:]}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    serve(sock, slow_names, delay, lifetime)


if __name__ == "__main__":
    main()
