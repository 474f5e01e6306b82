# server.sh -- sourced by the shell client tests: fail/expect, and starting and stopping a
# luasock server on an ephemeral port. The sourcing script sets BIN and WORK, and its own cleanup
# kills SERVER_PID if it is still set.

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect WHAT WANT GOT: compares two strings exactly.
expect() {
    if [ "$2" != "$3" ]; then
        fail "$1: expected $(printf '%q' "$2"), got $(printf '%q' "$3")"
    fi
    echo "ok: $1"
}

# start_server SCRIPT: sets SERVER_PID, SERVER_PORT and SERVER_LOG once it listens.
start_server() {
    SERVER_LOG="$WORK/$(basename "$1").log"
    "$BIN" serve "$1" --listen 127.0.0.1:0 </dev/null >/dev/null 2>"$SERVER_LOG" &
    SERVER_PID=$!
    for _ in $(seq 500); do
        SERVER_PORT=$(sed -n 's/^luasock: listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' \
            "$SERVER_LOG")
        [ -n "$SERVER_PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.01
    done
    fail "$1 did not start: $(cat "$SERVER_LOG")"
}

# stop_server: SIGTERM, wait at most 15 s (then SIGKILL), require exit status 0.
stop_server() {
    kill -TERM "$SERVER_PID"
    timeout 15 tail -s 0.02 --pid="$SERVER_PID" -f /dev/null || kill -KILL "$SERVER_PID"
    local rc=0
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    [ "$rc" = 0 ] ||
        fail "server exited with status $rc (137: killed 15 s after SIGTERM): $(cat "$SERVER_LOG")"
    echo "ok: server stopped with exit status 0"
}

