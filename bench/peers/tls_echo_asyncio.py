#!/usr/bin/env python3
"""tls_echo_asyncio.py -- benchmark peer: a Python asyncio Protocol echo server over TLS (the ssl
module, bench/run's TLS workloads).

Writes every decrypted chunk back. The ssl module's defaults otherwise: TLS 1.2 and 1.3, session
tickets on (two per handshake), so TLS 1.3 clients can resume. Prints "listening on HOST:PORT" on
stderr; SIGTERM or SIGINT stop it.
Usage: python3 bench/peers/tls_echo_asyncio.py --cert FILE --key FILE [--listen HOST:PORT]
"""
import argparse
import asyncio
import signal
import ssl
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


async def serve(host, port, context):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=511, ssl=context)
    print(f"listening on {host}:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()


def main():
    parser = argparse.ArgumentParser(description="asyncio TLS echo server for bench/run")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--cert", required=True, help="certificate (PEM)")
    parser.add_argument("--key", required=True, help="private key (PEM)")
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port), context))


if __name__ == "__main__":
    main()
