#!/usr/bin/env python3
"""chat_asyncio.py -- benchmark peer: a minimal Python asyncio chat room (bench/run's chat
workload).

A new member gets "* welcome to the chat, guestN!", everyone else "* guestN joined", and every
non-empty line a member sends is written to everyone else as "<guestN> line"; no commands and no
leave announcements. A member with more than 256 KiB unsent is dropped, like examples/chat.lua's
default max_queue. Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
Usage: python3 bench/peers/chat_asyncio.py [--listen HOST:PORT]
"""
import argparse
import asyncio
import signal
import sys

MAX_QUEUE = 262144


class Member(asyncio.Protocol):
    room = set()
    guests = 0

    def connection_made(self, transport):
        self.transport = transport
        Member.guests += 1
        nick = f"guest{Member.guests}"
        self.prefix = f"<{nick}> ".encode()
        self.pending = b""
        transport.write(f"* welcome to the chat, {nick}!\n".encode())
        self.broadcast(f"* {nick} joined\n".encode())
        Member.room.add(self)

    def connection_lost(self, exc):
        Member.room.discard(self)

    def broadcast(self, data):
        for member in Member.room:
            if member is not self:
                member.transport.write(data)
                if member.transport.get_write_buffer_size() > MAX_QUEUE:
                    member.transport.abort()

    def data_received(self, data):
        if self.pending:
            data = self.pending + data
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            if nl > start:
                self.broadcast(self.prefix + data[start:nl + 1])
            start = nl + 1
        self.pending = data[start:]


async def serve(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Member, host, port, backlog=511)
    print(f"listening on {host}:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()


def main():
    parser = argparse.ArgumentParser(description="asyncio chat server for bench/run")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port)))


if __name__ == "__main__":
    main()
