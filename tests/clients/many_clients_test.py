"""many_clients_test.py -- 1000 simultaneous asyncio clients against examples/echo.lua.

Opens 1000 connections at once, then has every client send a distinct payload and checks that
each gets exactly its own bytes back. With the 1000 connections open and idle, it prints the
server's resident memory (VmRSS). Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
"""
import asyncio
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, fail  # noqa: E402

CLIENTS = 1000
TIMEOUT = 60.0


def raise_fd_limit():
    """Client and server (which inherits the limit) each need CLIENTS descriptors and some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CLIENTS + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        fail(f"RLIMIT_NOFILE hard limit {hard} is below the {need} this test needs")
    if soft == resource.RLIM_INFINITY or soft < need:
        wanted = need * 2 if hard == resource.RLIM_INFINITY else min(hard, need * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def payload(i):
    """Distinct bytes for client i, of a length that depends on i, including binary bytes."""
    body = bytes((i * 7 + k) % 256 for k in range(16 + i % 200))
    return f"client {i:04d} ".encode() + body


async def open_all(host, port):
    opened = await asyncio.gather(
        *(asyncio.open_connection(host, port) for _ in range(CLIENTS)))
    return list(opened)


async def round_trip(i, reader, writer):
    data = payload(i)
    writer.write(data)
    await writer.drain()
    echoed = await reader.readexactly(len(data))
    return echoed == data


async def run(server):
    connections = await asyncio.wait_for(open_all(server.host, server.port), TIMEOUT)
    print(f"opened {len(connections)} connections at once")
    results = await asyncio.wait_for(asyncio.gather(
        *(round_trip(i, r, w) for i, (r, w) in enumerate(connections))), TIMEOUT)
    wrong = [i for i, ok in enumerate(results) if not ok]
    if wrong:
        fail(f"{len(wrong)} clients got a wrong echo, e.g. client {wrong[0]}")
    print(f"all {CLIENTS} clients got exactly their own echo")
    rss = server.rss_kib()
    print(f"server VmRSS with {CLIENTS} idle connections: {rss} KiB"
          f" ({rss / CLIENTS:.1f} KiB per connection, upper bound)")
    still_open = await asyncio.wait_for(asyncio.gather(
        *(round_trip(i, r, w) for i, (r, w) in enumerate(connections))), TIMEOUT)
    if not all(still_open):
        fail("a second round on the idle connections failed")
    print(f"all {CLIENTS} connections still echo after idling")
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in connections), return_exceptions=True)


def main():
    raise_fd_limit()
    server = Server("examples/echo.lua")
    try:
        asyncio.run(run(server))
        log = server.stop()
        if "[error]" in log:
            fail("the server logged errors:\n" + log)
        print("server stopped cleanly with exit status 0 and logged no errors")
    finally:
        server.close()
    print("many_clients_test: passed")


if __name__ == "__main__":
    main()
