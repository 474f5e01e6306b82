#!/usr/bin/env bash
# c_module_test.sh -- a C module loaded into the server with require calls the API that
# include/luasock.h declares (tests/unit/cmodule.c): its luasock_log line appears in luasock's
# log, and luaopen_luasock builds the luasock module. The binary exports those two symbols and
# not its internals. Run from the repo root with LUASOCK_BIN and LUASOCK_CMODULE set (ctest
# does); exit 0 = pass.
set -u

BIN=${LUASOCK_BIN:-build/luasock}
CMODULE=${LUASOCK_CMODULE:-build/tests/cmodule.so}
WORK=$(mktemp -d /tmp/luasock-cmodule.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=tests/clients/server.sh
. "$(dirname "$0")/server.sh"

[ -f "$CMODULE" ] || fail "no C module at $CMODULE"
cat >"$WORK/uses_cmodule.lua" <<'LUA'
package.cpath = os.getenv("CMODULE_DIR") .. "/?.so;" .. package.cpath
local cmodule = require "cmodule"
cmodule.log("hello from C")
assert(cmodule.open_luasock().version == require("luasock").version)
LUA
CMODULE_DIR=$(dirname "$CMODULE") timeout 10 "$BIN" run "$WORK/uses_cmodule.lua" \
    >"$WORK/out" 2>"$WORK/err" || fail "the script using the C module failed: $(cat "$WORK/err")"
grep -q '\[info\] cmodule: hello from C$' "$WORK/err" ||
    fail "no log line from the C module: $(cat "$WORK/err")"
echo "ok: a C module logs through luasock_log and opens luaopen_luasock"

exported=$(nm -D --defined-only "$BIN" | awk '{print $3}')
for symbol in luasock_log luaopen_luasock; do
    grep -qx "$symbol" <<<"$exported" || fail "$BIN does not export $symbol"
done
for symbol in conn_close_all task_protected script_init log_set_level; do
    grep -qx "$symbol" <<<"$exported" && fail "$BIN exports its internal $symbol"
done
echo "ok: the binary exports luasock_log and luaopen_luasock, not its internals"
