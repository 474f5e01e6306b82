#!/usr/bin/env bash
# examples_nc_test.sh -- the example servers used as a person would, with nc and socat.
#
# Starts examples/echo.lua, prefix.lua and upper.lua on ephemeral ports and talks to them with
# netcat-openbsd and socat: piped input, and line-by-line typing through a coprocess. Run from
# the repo root with LUASOCK_BIN set; exit 0 = pass.
set -u

BIN=${LUASOCK_BIN:-build/luasock}
WORK=$(mktemp -d /tmp/luasock-nc.XXXXXX)
SERVER_PID=
GREETING="Welcome to the server. Type something and hit enter"

cleanup() {
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# fail, expect, start_server, stop_server
# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

# capture CMD...: runs CMD with a 10 s limit; prints its stdout exactly (trailing newlines too)
# into the variable OUT.
capture() {
    OUT=$(timeout 10 "$@"; printf .)
    OUT=${OUT%.}
}

check_echo() {
    start_server examples/echo.lua
    capture sh -c "printf 'hello\nworld\n' | nc -N 127.0.0.1 $SERVER_PORT"
    expect "echo via nc -N" $'hello\nworld\n' "$OUT"
    capture sh -c "printf 'via socat\n' | socat -t 5 - TCP:127.0.0.1:$SERVER_PORT"
    expect "echo via socat" $'via socat\n' "$OUT"
    capture sh -c "head -c 100000 /dev/zero | tr '\\0' 'z' | nc -N 127.0.0.1 $SERVER_PORT | wc -c"
    expect "echo of 100000 piped bytes via nc" "100000" "$(echo $OUT)"
    stop_server
}

check_prefix() {
    start_server examples/prefix.lua
    capture sh -c "printf 'hello\nworld\n' | nc -N 127.0.0.1 $SERVER_PORT"
    expect "prefix via nc -N" "$GREETING"$'\nOK...hello\nOK...world\n' "$OUT"

    # Typing line by line, reading each answer before typing the next line.
    coproc TYPED { timeout 10 socat - "TCP:127.0.0.1:$SERVER_PORT"; }
    local line
    read -r -t 5 -u "${TYPED[0]}" line || fail "prefix: no greeting"
    expect "prefix greeting while typing" "$GREETING" "$line"
    for typed in "first line" "second line"; do
        echo "$typed" >&"${TYPED[1]}"
        read -r -t 5 -u "${TYPED[0]}" line || fail "prefix: no answer to $typed"
        expect "prefix answer to typed '$typed'" "OK...$typed" "$line"
    done
    exec {TYPED[1]}>&-
    wait "$TYPED_PID" || fail "socat did not end cleanly after the input ended"
    echo "ok: prefix connection ended when the typing ended"
    stop_server
}

check_upper() {
    start_server examples/upper.lua
    capture sh -c "printf 'hello there' | nc -N 127.0.0.1 $SERVER_PORT"
    expect "upper via nc -N" "HELLO THERE" "$OUT"
    capture sh -c "printf 'hello there\n' | socat -t 5 - TCP:127.0.0.1:$SERVER_PORT"
    expect "upper via socat" $'HELLO THERE\n' "$OUT"

    # A person types one line and gets it back upper-cased; the server then hangs up.
    coproc TYPED { timeout 10 socat - "TCP:127.0.0.1:$SERVER_PORT"; }
    local line
    echo "typed by hand" >&"${TYPED[1]}"
    read -r -t 5 -u "${TYPED[0]}" line || fail "upper: no answer"
    expect "upper answer to a typed line" "TYPED BY HAND" "$line"
    if read -r -t 5 -u "${TYPED[0]}" line; then fail "upper sent more: $line"; fi
    wait "$TYPED_PID" || fail "socat did not end cleanly after the server closed"
    echo "ok: upper closed the connection after answering"
    stop_server
}

check_echo
check_prefix
check_upper
echo "examples_nc_test: passed"
