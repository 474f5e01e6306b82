#!/usr/bin/env bash
# deb_test.sh -- the .deb that scripts/package makes (CPack, from this build tree's install
# rules) installs with dpkg -i, names its run-time libraries in Depends, serves the echo example
# from the installed files, and goes away with dpkg -r. Needs root: as CI runs on a fresh
# machine. Exit 77 (skipped) when not root, when dpkg is busy, or when a luasock package is
# installed already (it is not ours to replace). Never leaves the package installed.
set -u

BUILD=${LUASOCK_BUILD_DIR:-build}
WORK=$(mktemp -d /tmp/luasock-deb.XXXXXX)
SERVER_PID=
INSTALLED=

cleanup() {
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null
    [ -n "$INSTALLED" ] && dpkg -r luasock >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

# fail, expect, start_server, stop_server
# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

skip() {
    echo "SKIP: $*"
    exit 77
}

[ "$(id -u)" = 0 ] || skip "dpkg -i needs root"
if dpkg-query -W -f='${Status}' luasock 2>/dev/null | grep -q 'ok installed'; then
    skip "a luasock package is installed already"
fi
command -v dpkg-shlibdeps >/dev/null ||
    fail "dpkg-shlibdeps is missing: install dpkg-dev (scripts/setup does)"

cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$WORK/package" >"$WORK/cpack.log" 2>&1 ||
    fail "cpack: $(cat "$WORK/cpack.log")"
DEB=$(ls "$WORK"/package/luasock_*.deb) || fail "cpack made no .deb: $(cat "$WORK/cpack.log")"

depends=$(dpkg-deb -f "$DEB" Depends)
for library in liblua5.4-0 libev4 libc-ares2 'libssl3(t64)?' libpcre2-8-0 zlib1g; do
    grep -qE "(^|, )$library( |,|$)" <<<"$depends" || fail "Depends lacks $library: $depends"
done
echo "ok: Depends names the run-time libraries: $depends"
expect "Recommends" lua-cjson "$(dpkg-deb -f "$DEB" Recommends)"

if ! dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1; then
    grep -qi 'lock' "$WORK/dpkg.log" && skip "dpkg is busy: $(cat "$WORK/dpkg.log")"
    INSTALLED=yes
    fail "dpkg -i: $(cat "$WORK/dpkg.log")"
fi
INSTALLED=yes
echo "ok: dpkg -i $(basename "$DEB")"

expect "the unit runs /usr/bin/luasock" \
    "ExecStart=/usr/bin/luasock serve --workers auto --grace 10 /etc/luasock/handler.lua" \
    "$(grep '^ExecStart=' /usr/lib/systemd/system/luasock.service)"
BIN=/usr/bin/luasock
start_server /usr/share/luasock/examples/echo.lua
out=$(printf 'hello\nworld\n' | timeout 10 nc -N 127.0.0.1 "$SERVER_PORT")
expect "the installed echo example answers" $'hello\nworld' "$out"
stop_server

dpkg -r luasock >"$WORK/dpkg.log" 2>&1 || fail "dpkg -r: $(cat "$WORK/dpkg.log")"
INSTALLED=
dpkg-query -W -f='${Status}' luasock 2>/dev/null | grep -q 'ok installed' &&
    fail "luasock is still installed after dpkg -r"
[ -e /usr/bin/luasock ] && fail "/usr/bin/luasock is still there after dpkg -r"
[ -e /usr/share/luasock ] && fail "/usr/share/luasock is still there after dpkg -r"
echo "ok: dpkg -r removed it"
echo "ok: deb_test"
