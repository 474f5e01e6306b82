#!/usr/bin/env bash
# chat_nc_test.sh -- examples/chat.lua used as a person would, with netcat-openbsd.
#
# Two people chat through `nc -N`, each typing into a fifo and reading nc's output from a file;
# one says hello and the other sees "<guestN> hello"; then /nick, /who, a third person whose
# whole session is piped into nc, /quit, and leaving with end of input (Ctrl-D). Finally each
# person's whole transcript is compared. Run from the repo root with LUASOCK_BIN set;
# exit 0 = pass.
set -u

BIN=${LUASOCK_BIN:-build/luasock}
WORK=$(mktemp -d /tmp/luasock-chat-nc.XXXXXX)
SERVER_PID=
A_PID=
B_PID=

cleanup() {
    # A_PID and B_PID are `timeout` processes, which pass SIGTERM on to their nc.
    for pid in "$A_PID" "$B_PID"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    done
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# fail, expect, start_server, stop_server
# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

# wait_line FILE LINE: waits at most 5 s until FILE has the exact line LINE.
wait_line() {
    for _ in $(seq 250); do
        if grep -qxF -- "$2" "$1" 2>/dev/null; then
            echo "ok: $(basename "$1" .out) saw '$2'"
            return 0
        fi
        sleep 0.02
    done
    fail "$(basename "$1" .out) never saw $(printf '%q' "$2"); it got: $(cat "$1")"
}

# wait_exit PID WHAT: waits at most 5 s for a child to end; requires exit status 0.
wait_exit() {
    timeout 5 tail -s 0.02 --pid="$1" -f /dev/null || fail "$2: nc still running after 5 s"
    local rc=0
    wait "$1" || rc=$?
    [ "$rc" = 0 ] || fail "$2: nc exited with status $rc"
    echo "ok: $2: nc ended with status 0"
}

# transcript FILE: prints FILE exactly, followed by "." (so that trailing newlines count).
transcript() {
    cat "$1"
    printf .
}

# welcome_nick FILE: waits for the welcome line in FILE and prints the nick in it.
welcome_nick() {
    local nick
    for _ in $(seq 250); do
        nick=$(sed -n 's/^\* welcome to the chat, \([^!]*\)! .*/\1/p' "$1")
        [ -n "$nick" ] && { echo "$nick"; return 0; }
        sleep 0.02
    done
    return 1
}

WELCOME_TAIL="! commands: /nick NAME, /who, /me ACTION, /quit"

start_server examples/chat.lua
mkfifo "$WORK/a.in" "$WORK/b.in"

# Person A: nc reads what A types from a fifo; the fifo is held open on descriptor A_IN.
timeout 20 nc -N 127.0.0.1 "$SERVER_PORT" <"$WORK/a.in" >"$WORK/a.out" &
A_PID=$!
exec {A_IN}>"$WORK/a.in"
NICK_A=$(welcome_nick "$WORK/a.out") || fail "A got no welcome: $(cat "$WORK/a.out")"
echo "ok: A joined as $NICK_A"

timeout 20 nc -N 127.0.0.1 "$SERVER_PORT" <"$WORK/b.in" >"$WORK/b.out" &
B_PID=$!
exec {B_IN}>"$WORK/b.in"
NICK_B=$(welcome_nick "$WORK/b.out") || fail "B got no welcome: $(cat "$WORK/b.out")"
echo "ok: B joined as $NICK_B"
[ "$NICK_A" != "$NICK_B" ] || fail "A and B got the same nick $NICK_A"
wait_line "$WORK/a.out" "* $NICK_B joined"

echo "hello" >&"$A_IN"
wait_line "$WORK/b.out" "<$NICK_A> hello"

echo "/nick bob" >&"$B_IN"
wait_line "$WORK/b.out" "* you are now bob"
wait_line "$WORK/a.out" "* $NICK_B is now bob"

echo "/who" >&"$A_IN"
HERE="* here: $(printf '%s\n' bob "$NICK_A" | LC_ALL=C sort | paste -sd, | sed 's/,/, /g')"
wait_line "$WORK/a.out" "$HERE"

# Person C pipes a whole session into nc -N and reads everything the server says.
C_OUT=$(printf 'hi from a pipe\n/quit\n' | timeout 10 nc -N 127.0.0.1 "$SERVER_PORT"; printf .)
C_OUT=${C_OUT%.}
NICK_C=$(printf '%s' "$C_OUT" | sed -n '1s/^\* welcome to the chat, \([^!]*\)! .*/\1/p')
[ -n "$NICK_C" ] || fail "C got no welcome: $(printf '%q' "$C_OUT")"
expect "C's whole session" "* welcome to the chat, $NICK_C$WELCOME_TAIL"$'\n* bye\n' "$C_OUT"
wait_line "$WORK/a.out" "* $NICK_C left"
wait_line "$WORK/b.out" "* $NICK_C left"

# B leaves with /quit: the server says bye and ends the session (A hears it at once). nc keeps
# waiting for B's typing after the server hangs up, as it does for a person, until Ctrl-D.
echo "/quit" >&"$B_IN"
wait_line "$WORK/b.out" "* bye"
wait_line "$WORK/a.out" "* bob left"
exec {B_IN}>&-
wait_exit "$B_PID" "B after /quit and Ctrl-D"
B_PID=

# A leaves with end of input (Ctrl-D): nc -N shuts down its sending side, the server closes.
exec {A_IN}>&-
wait_exit "$A_PID" "A after end of input"
A_PID=

expect "A's transcript" "* welcome to the chat, $NICK_A$WELCOME_TAIL
* $NICK_B joined
* $NICK_B is now bob
$HERE
* $NICK_C joined
<$NICK_C> hi from a pipe
* $NICK_C left
* bob left
." "$(transcript "$WORK/a.out")"
expect "B's transcript" "* welcome to the chat, $NICK_B$WELCOME_TAIL
<$NICK_A> hello
* you are now bob
* $NICK_C joined
<$NICK_C> hi from a pipe
* $NICK_C left
* bye
." "$(transcript "$WORK/b.out")"

stop_server
echo "chat_nc_test: passed"
