#!/usr/bin/env bash
# objects_nc_test.sh -- examples/objects.lua driven with nc alone: MessagePack request bytes
# piped in with printf, the answer read back as hex.
#
# Run from the repo root with LUASOCK_BIN set; exit 0 = pass.
set -u

BIN=${LUASOCK_BIN:-build/luasock}
WORK=$(mktemp -d /tmp/luasock-objnc.XXXXXX)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# fail, expect, start_server, stop_server
# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

start_server examples/objects.lua
PORT=$SERVER_PORT

# {op = "add", args = {1, 2}} as MessagePack; the answer is the map {ok = true, result = 3},
# its two entries in either order.
reply=$(printf '\x82\xa2op\xa3add\xa4args\x92\x01\x02' | timeout 5 nc -N 127.0.0.1 "$PORT" | od -An -tx1 | tr -d ' \n')
case "$reply" in
    82a26f6bc3a6726573756c7403 | 82a6726573756c7403a26f6bc3) echo "ok: add over nc" ;;
    *) fail "add over nc: got bytes '$reply'" ;;
esac

# Garbage closes that connection only: the nc sees the end of the stream, and a new client works.
garbage=$(printf '\xc1\xc1\xc1' | timeout 5 nc -N 127.0.0.1 "$PORT" | od -An -tx1 | tr -d ' \n')
[ -z "$garbage" ] || fail "garbage got an answer: '$garbage'"
grep -q "bad object from the peer: malformed" "$SERVER_LOG" || fail "no log line for the garbage"
reply=$(printf '\x82\xa2op\xa3add\xa4args\x92\x05\x06' | timeout 5 nc -N 127.0.0.1 "$PORT" | od -An -tx1 | tr -d ' \n')
case "$reply" in
    82a26f6bc3a6726573756c740b | 82a6726573756c740ba26f6bc3) echo "ok: still serving after garbage" ;;
    *) fail "after garbage: got bytes '$reply'" ;;
esac

stop_server
echo "objects_nc_test: passed"
