#!/usr/bin/env bash
# build_options_test.sh -- how CMake configures luasock for packagers (configure only, in
# temporary build trees): -Werror only with LUASOCK_WERROR=ON (-Wall -Wextra always);
# BUILD_TESTING=OFF neither looks for busted nor registers tests; Lua and msgpack-c found under
# other distributions' pkg-config names (lua54, msgpack-c), and a plain "lua" used only at 5.4. Run from the repo root; exit 0 = pass.
set -u

WORK=$(mktemp -d /tmp/luasock-options.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

# configure NAME [CMAKE OPTIONS...]: configures build tree $WORK/NAME without tests; its output
# goes to $WORK/NAME.log. Returns cmake's status.
configure() {
    local name=$1
    shift
    cmake -S . -B "$WORK/$name" -DBUILD_TESTING=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "$@" \
        >"$WORK/$name.log" 2>&1
}

# server_c_flags NAME: the command line that compiles src/server.c in build tree NAME.
server_c_flags() {
    python3 -c 'import json, sys
print(next(c["command"] for c in json.load(open(sys.argv[1])) if c["file"].endswith("/src/server.c")))' \
        "$WORK/$1/compile_commands.json"
}

configure default || fail "configure with the defaults: $(cat "$WORK/default.log")"
flags=$(server_c_flags default)
for flag in -Wall -Wextra; do
    grep -qw -- "$flag" <<<"$flags" || fail "no $flag by default: $flags"
done
grep -qw -- -Werror <<<"$flags" && fail "-Werror by default: $flags"
echo "ok: -Wall -Wextra without -Werror by default"
grep -q '^BUSTED' "$WORK/default/CMakeCache.txt" && fail "BUILD_TESTING=OFF still looks for busted"
[ -e "$WORK/default/CTestTestfile.cmake" ] && fail "BUILD_TESTING=OFF still registers tests"
echo "ok: BUILD_TESTING=OFF does not need busted"

configure werror -DLUASOCK_WERROR=ON || fail "configure with -Werror: $(cat "$WORK/werror.log")"
grep -qw -- -Werror <<<"$(server_c_flags werror)" || fail "LUASOCK_WERROR=ON without -Werror"
echo "ok: LUASOCK_WERROR=ON adds -Werror"

# A pkg-config directory as another distribution has it: Lua as lua54, msgpack as msgpack-c.
mkdir "$WORK/pc"
pc_file() { echo "$(pkg-config --variable=pcfiledir "$1")/$1.pc"; }
for module in libcares openssl libssl libcrypto libpcre2-8 zlib; do
    cp "$(pc_file "$module")" "$WORK/pc/" || fail "no pkg-config file for $module here"
done
cp "$(pc_file lua5.4)" "$WORK/pc/lua54.pc"
cp "$(pc_file msgpack)" "$WORK/pc/msgpack-c.pc"
PKG_CONFIG_LIBDIR=$WORK/pc configure renamed ||
    fail "configure with lua54.pc and msgpack-c.pc: $(cat "$WORK/renamed.log")"
cache=$WORK/renamed/CMakeCache.txt
grep -qx 'LUA_MODULE_NAME:INTERNAL=lua54' "$cache" || fail "lua54 not used: $(grep LUA_ "$cache")"
grep -qx 'MSGPACK_MODULE_NAME:INTERNAL=msgpack-c' "$cache" ||
    fail "msgpack-c not used: $(grep MSGPACK_ "$cache")"
echo "ok: Lua found as lua54, msgpack as msgpack-c"

# Only a plain "lua", and it is Lua 5.3: refused with the version found.
rm "$WORK/pc/lua54.pc"
sed 's/^Version:.*/Version: 5.3.6/' "$(pc_file lua5.4)" >"$WORK/pc/lua.pc"
PKG_CONFIG_LIBDIR=$WORK/pc configure lua53 && fail "configured against a Lua 5.3 lua.pc"
grep -q 'Lua 5\.4 not found' "$WORK/lua53.log" ||
    fail "no reason given for refusing lua.pc at 5.3: $(cat "$WORK/lua53.log")"
sed 's/^Version:.*/Version: 5.5.0/' "$(pc_file lua5.4)" >"$WORK/pc/lua.pc"
PKG_CONFIG_LIBDIR=$WORK/pc configure lua55 && fail "configured against a Lua 5.5 lua.pc"
grep -q 'needs Lua 5\.4; pkg-config.s lua is 5\.5\.0' "$WORK/lua55.log" ||
    fail "no reason given for refusing lua.pc at 5.5: $(cat "$WORK/lua55.log")"
sed 's/^Version:.*/Version: 5.4.6/' "$(pc_file lua5.4)" >"$WORK/pc/lua.pc"
PKG_CONFIG_LIBDIR=$WORK/pc configure lua54plain ||
    fail "configure with lua.pc at 5.4: $(cat "$WORK/lua54plain.log")"
grep -qx 'LUA_MODULE_NAME:INTERNAL=lua' "$WORK/lua54plain/CMakeCache.txt" || fail "lua.pc not used"
echo "ok: a plain lua.pc is used at 5.4 and refused at 5.3 and 5.5"
