#!/usr/bin/env bash
# install_test.sh -- `cmake --install` into a temporary prefix gives a luasock that runs from
# there: the echo example served from PREFIX/share/luasock/examples and answered over nc, the
# runtime modules required from PREFIX/share/luasock/lua (not from the build tree), the systemd
# unit naming PREFIX/bin/luasock, the public header. The installed tree still runs once moved.
# Run from the repo root with LUASOCK_BUILD_DIR set (ctest does); exit 0 = pass.
set -u

BUILD=${LUASOCK_BUILD_DIR:-build}
WORK=$(mktemp -d /tmp/luasock-install.XXXXXX)
SERVER_PID=

cleanup() {
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# fail, expect, start_server, stop_server
# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

# check_runs PREFIX: the installed binary serves the installed echo example and finds the
# runtime modules under PREFIX.
check_runs() {
    local prefix=$1
    BIN=$prefix/bin/luasock
    start_server "$prefix/share/luasock/examples/echo.lua"
    local out
    out=$(printf 'hello\nworld\n' | timeout 10 nc -N 127.0.0.1 "$SERVER_PORT")
    expect "installed echo example answers ($prefix)" $'hello\nworld' "$out"
    stop_server

    cat >"$WORK/requires.lua" <<'LUA'
-- Requires runtime modules that need nothing beyond luasock itself and says where each came from.
local out = assert(io.open(os.getenv("REQUIRES_OUT"), "w"))
for _, name in ipairs { "luasock", "luasock.socket", "luasock.ngx", "luasock.redis",
                        "luasock.pubsub", "luasock.pool" } do
  require(name)
  out:write(name, " ", package.searchpath(name, package.path), "\n")
end
out:close()
LUA
    env -u LUA_PATH -u LUA_PATH_5_4 REQUIRES_OUT="$WORK/requires.out" \
        timeout 10 "$BIN" run "$WORK/requires.lua" 2>"$WORK/run.log" ||
        fail "luasock run of a script requiring the runtime: $(cat "$WORK/run.log")"
    local runtime
    runtime=$(realpath "$prefix/share/luasock/lua")
    while read -r name path; do
        case $(realpath "$path") in
        "$runtime"/*) ;;
        *) fail "require \"$name\" loaded $path, not a file under $runtime" ;;
        esac
    done <"$WORK/requires.out"
    expect "runtime modules required from the install ($prefix)" 6 "$(wc -l <"$WORK/requires.out")"
}

PREFIX=$WORK/prefix
cmake --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" 2>&1 ||
    fail "cmake --install: $(cat "$WORK/install.log")"
for file in bin/luasock share/luasock/lua/luasock/loader.lua share/luasock/lua/luasock/init.lua \
    share/luasock/examples/echo.lua share/luasock/examples/chat.lua \
    lib/systemd/system/luasock.service include/luasock.h; do
    [ -f "$PREFIX/$file" ] || fail "cmake --install did not install $file"
done
echo "ok: binary, runtime, examples, systemd unit and header installed"
cmp -s include/luasock.h "$PREFIX/include/luasock.h" || fail "the installed header differs"
expect "the installed unit runs the installed binary" \
    "ExecStart=$PREFIX/bin/luasock serve --workers auto --grace 10 /etc/luasock/handler.lua" \
    "$(grep '^ExecStart=' "$PREFIX/lib/systemd/system/luasock.service")"

check_runs "$PREFIX"
mv "$PREFIX" "$WORK/moved"
check_runs "$WORK/moved"
echo "ok: install_test"
