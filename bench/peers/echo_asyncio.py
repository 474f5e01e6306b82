#!/usr/bin/env python3
"""echo_asyncio.py -- benchmark peer: a Python asyncio Protocol echo server (bench/run).

Writes every chunk back; with --line, splits the input into lines and writes each line back with
its newline. Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
Usage: python3 bench/peers/echo_asyncio.py [--listen HOST:PORT] [--line]
"""
import argparse
import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    # Backpressure: stop reading while the transport's write buffer is over its high-water mark.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


class LineEcho(Echo):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.pending = b""

    def data_received(self, data):
        if self.pending:
            data = self.pending + data
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            self.transport.write(data[start:nl + 1])
            start = nl + 1
        self.pending = data[start:]


async def serve(host, port, protocol):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, port, backlog=511)
    print(f"listening on {host}:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()


def main():
    parser = argparse.ArgumentParser(description="asyncio echo server for bench/run")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--line", action="store_true", help="echo line by line")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port), LineEcho if args.line else Echo))


if __name__ == "__main__":
    main()
