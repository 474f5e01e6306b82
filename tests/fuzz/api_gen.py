"""api_gen.py -- writes random luasock handler scripts for api_fuzz.py.

`generate(rng)` returns a `Script`: the Lua text and what the driver needs to know about it (does
it define `datagram`, what limits it set). Everything is drawn from `rng`, so a seed gives the
same script every time.

The script is made of a few "bodies" (lists of statements). The TCP handler runs one per
connection (the N-th connection runs body N mod K), and spawned tasks, `on_close` and `datagram`
run others. A statement is an API call on a connection (the handler's own, one stored in the
module-level table S.conns, or an outgoing one made with luasock.connect), on a queue, a task, a
UDP socket or the resolver; or a context wrapped around a nested list of statements: pcall, a
spawned task, a string.gsub callback, a table.sort comparator, a metamethod called from Lua or
from C (__tostring via tostring, __index via table.concat, __len via # and via conn:send, __lt via
table.sort), coroutine.wrap, a `<close>` variable closed normally or by an error, a coroutine with
a pending `<close>` closed by coroutine.close, a __gc finalizer, a bounded loop, and a block run
"at the cap" (the Lua heap filled up to max_memory first). error() calls are sprinkled in.

Rules that keep the scripts valid and the server checkable (see README.md, "API misuse"):
- every statement is a complete Lua statement that never starts with "(" (so two of them can
  never be parsed as one call);
- connections that are not the echo listener's ("unix:" local address) run fuzz bodies; the
  echo path is plain echo, so the driver can always check the server still serves;
- every wait ends within a bounded time: connection, UDP, queue, resolve and connect timeouts
  are at most 1 s (never "none"), and a task is joined only by the coroutine that spawned it
  (no join cycles). So every fuzz coroutine ends a few seconds after the clients have gone;
- what the script keeps is bounded (8 connections and 8 tasks, held weakly so that a dead
  coroutine's stack is never kept by the script, 24 spawns, 12 outgoing connections, 6 UDP
  sockets, 8 small queued values). Together: once the fuzz coroutines have ended, the heap is
  back under the cap, so a correct server must answer the echo.
"""

import random

# Pieces of data the statements use.
LINES = ["", "a", "hello", "x y z", "\r", "line\n", "a\nb\n", "\0\1\2", "\xff\xfe",
         "first:", "ok"]
DELIMS = ["\n", "\r\n", "--", "ab", "x", "\0", "END"]
SETOPTIONS = ["max_line", "max_all", "high_water", "max_queue", "max_object", "max_object_items",
              "max_receive", "soft_queue", "bogus"]
RESOLVE_HOSTS = ["localhost", "127.0.0.1", "::1", "nonexistent.invalid", "", "a..b"]
MSGPACK_BYTES = ["\x92\x01\x02", "\x81\xa1a\x01", "\xdd\xff\xff\xff\xff", "\xc1", "\x91",
                 "\xc0", "\xa3ab", "\x93\x01\x02\x03\x04", ""]



def lua_str(s):
    """A Lua string literal for the (byte) string s."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 32 <= code < 127:
            out.append(ch)
        else:
            out.append("\\%d" % (code & 0xff))
    out.append('"')
    return "".join(out)


# The contexts a nested statement list can run in, with their weights (see context()).
CONTEXTS = [
    (5, "pcall"), (4, "spawn"), (4, "gsub"), (3, "sort"), (2, "sort_lt"), (3, "tostring"),
    (2, "index_lua"), (2, "index_c"), (2, "len_lua"), (2, "len_c"), (3, "wrap"), (2, "close_ok"),
    (3, "close_err"), (3, "coclose"), (1, "gc"), (2, "loop"), (3, "cap"), (1, "do"),
]
# Those where a luasock call cannot wait (issue 12 item 1); "--without c-boundary" leaves them out.
C_BOUNDARY = ["gsub", "sort", "sort_lt", "tostring", "index_c", "len_c", "close_err", "coclose",
              "gc"]


class Script:
    def __init__(self, text, has_datagram, settings, margin):
        self.text = text
        self.has_datagram = has_datagram
        self.settings = settings  # the script table's limits, for the client's sizes
        self.margin = margin      # max_memory above start-up use, None when uncapped


class Gen:
    def __init__(self, rng, without=(), tight_caps=False):
        self.r = rng
        self.nvar = 0
        self.without = set(without)
        self.tight_caps = tight_caps

    def var(self, prefix="v"):
        self.nvar += 1
        return "%s%d" % (prefix, self.nvar)

    def pick(self, weighted):
        """weighted: list of (weight, value)."""
        total = sum(w for w, _ in weighted)
        x = self.r.uniform(0, total)
        for w, v in weighted:
            x -= w
            if x <= 0:
                return v
        return weighted[-1][1]

    # ---- expressions -------------------------------------------------------------------

    def timeout(self):
        """A bounded timeout (never "none": see the rules above)."""
        return self.pick([(3, "0"), (4, "0.01"), (4, "0.05"), (3, "0.2"), (2, "0.5"),
                          (1, "1")])

    def conn_expr(self):
        r = self.r
        return self.pick([(5, "conn"), (3, "other(%d, conn)" % r.randrange(8)),
                          (1, "S.conns[%d]" % (r.randrange(8) + 1))])

    def data_expr(self, depth):
        r = self.r
        hw = self.settings["high_water"]
        return self.pick([
            (4, lua_str(r.choice(LINES))),
            (2, lua_str(r.choice(LINES) + "\n")),
            (2, "string.rep(%s, %d)" % (lua_str(r.choice("xyz\n")), r.choice(
                [1, 100, hw // 2, hw, hw + 1, 3 * hw, 70000]))),
            (1, str(r.choice([0, 1, -1, 3.5, 2 ** 53, "1e308", "0/0"]))),
            (2, "{%s, %d, %s}" % (lua_str(r.choice(LINES)), r.randrange(100),
                                  lua_str(r.choice(LINES)))),
            (1, "{}"),
            (1, r.choice(["true", "nil", "print", "{{}}", "{1, {2}}", "conn"])),
        ])

    def value_expr(self):
        """A value for send_object, encode, push."""
        r = self.r
        return self.pick([
            (2, str(r.choice([0, 1, -1, 2 ** 31, -2 ** 63, "1.5", "0/0", "math.huge"]))),
            (2, lua_str(r.choice(LINES))),
            (1, "nil"), (1, "true"),
            (2, "{1, 2, %s}" % lua_str(r.choice(LINES))),
            (2, "{a = 1, b = {c = %s}}" % lua_str(r.choice(LINES))),
            (1, "{}"),
            (1, "string.rep(\"b\", %d)" % r.choice([10, 5000, 70000, 2000000])),
            (2, "cyclic()"),
            (1, "deep(%d)" % r.choice([50, 99, 100, 101, 150])),
            (1, "wide(%d)" % r.choice([10, 1000, 100000])),
            (1, r.choice(["print", "conn", "coroutine.running()", "S.q", "{f = print}",
                          "{[{}] = 1}", "{[1.5] = 2}", "{1, nil, 3}"])),
        ])

    def prefix(self):
        """A receive prefix; mostly made at run time, so that it can be freed while a read
        still refers to it (a literal lives as long as the function)."""
        r = self.r
        return self.pick([(1, lua_str(r.choice(LINES))),
                          (2, "\"first:\" .. n"),
                          (1, "string.rep(\"p\", %d)" % r.choice([1, 40, 1000]))])

    def small_value(self):
        """A value small enough to stay in the shared queue. Not a connection: a connection
        keeps its handler's coroutine, dead or not, and so what its stack held (a filled heap),
        which would be the script's doing, not the server's."""
        r = self.r
        return r.choice(["1", "\"s\"", "true", "{1, 2}", "{a = {}}", "cyclic()", "print",
                         "0/0", "false", "S.q"])

    # ---- statements ---------------------------------------------------------------------

    def read_stmt(self, c):
        r = self.r
        call = self.pick([
            (3, "%s:receive()" % c),
            (2, "%s:receive(\"*l\")" % c),
            (2, "%s:receive(\"l\", %s)" % (c, self.prefix())),
            (2, "%s:receive(%d)" % (c, r.choice([0, 1, 5, 100, 5000]))),
            (1, "%s:receive(%d, %s)" % (c, r.choice([1, 3]), self.prefix())),
            (1, "%s:receive(\"*a\")" % c),
            (1, "%s:receive(\"a\", %s)" % (c, self.prefix())),
            (1, "%s:receive(%s)" % (c, r.choice(["\"x\"", "-1", "{}", "1.5"]))),
            (3, "%s:receiveany(%s)" % (c, r.choice(["", "1", "10", "65536", "0"]))),
            (2, "%s:receiveuntil(%s)" % (c, lua_str(r.choice(DELIMS + [""])))),
            (3, "%s:receive_object()" % c),
        ])
        d, e, p = self.var("d"), self.var("e"), self.var("p")
        s = "local %s, %s, %s = %s" % (d, e, p, call)
        if r.random() < 0.3:
            s += "\nif %s then %s:post(%s) end" % (d, c, d)
        return s

    def write_stmt(self, c, depth):
        r = self.r
        nargs = r.choice([1, 1, 1, 2, 3])
        args = ", ".join(self.data_expr(depth) for _ in range(nargs))
        if depth < 3 and r.random() < 0.15 and "len_c" not in self.without:
            # __len called from C, inside send, often closing that connection.
            body = self.inline(depth + 1)
            if r.random() < 0.5:
                body = "%s:close()\n%s" % (c, body)
            args = "setmetatable({\"late\"}, {__len = function()\n%s\nreturn 1 end})" % body
        return self.pick([
            (4, "%s:send(%s)" % (c, args)),
            (3, "%s:post(%s)" % (c, args)),
            (3, "%s:send_object(%s)" % (c, self.value_expr())),
        ])

    def control_stmt(self, c):
        r = self.r
        return self.pick([
            (3, "%s:close()" % c),
            (2, "%s:shutdown(%s)" % (c, r.choice(["", "\"send\"", "\"receive\"", "\"both\"",
                                                   "\"bogus\""]))),
            (3, "%s:settimeout(%s)" % (c, self.timeout())),
            (1, "%s:settimeout(%s)" % (c, r.choice(["0/0", "-math.huge", "1e300"]))),
            (2, "%s:drain(%s, %s)" % (c, r.choice(["nil", "0", "16", "4096"]), self.timeout())),
            (2, "%s:settimeouts(%s, %s, %s)" % (c, r.choice(["nil", "-1", "false", "0.1"]),
                                                r.choice(["nil", self.timeout()]),
                                                r.choice(["nil", self.timeout()]))),
            (2, "%s:setoption(%s, %s)" % (c, lua_str(r.choice(SETOPTIONS)),
                                          r.choice(["0", "1", "16", "100", "4096", "-1",
                                                    "\"x\""]))),
            (2, "%s:setoption(%s, %s)" % (c, r.choice(["\"object_codec\"", "\"exact_objects\"",
                                                         "\"json_errors\""]),
                                          r.choice(["\"json\"", "\"pickle\"", "\"msgpack\"",
                                                    "true", "false", "\"return\""]))),
            (1, "local %s = %s:peer()" % (self.var(), c)),
            (1, "local %s = %s:local_address()" % (self.var(), c)),
            (1, "local %s = %s:id()" % (self.var(), c)),
            (1, "local %s = tostring(%s)" % (self.var(), c)),
            (1, "keep(%s)" % c),
            (1, "local %s = %s:setkeepalive(%s, %s)" % (self.var(), c,
                                                        r.choice(["nil", "0.05", "false", "1"]),
                                                        r.choice(["nil", "1", "2"]))),
            (1, "local %s = %s:reused()" % (self.var(), c)),
            (1, "local %s = %s:tls()" % (self.var(), c)),
            (1, "local %s = %s:tls_session()" % (self.var(), c)),
            (1, "local %s, %s = %s:starttls(%s, %s)" % (
                self.var(), self.var("e"), c,
                r.choice(["nil", "{}", "{verify = false}", "{alpn = {\"x\"}}",
                          "{cert = \"missing.pem\", key = \"missing.key\"}", "{ca = 1}"]),
                self.timeout())),
        ])

    def misc_stmt(self, depth):
        r = self.r
        k = r.randrange(8) + 1
        t = self.var("t")
        return self.pick([
            (3, "luasock.sleep(%s)" % r.choice(["0", "0", "0.01", "0.05", "0.2"])),
            (2, "push(%s)" % self.small_value()),
            (2, "local %s = S.q:pop(%s)" % (self.var(), self.timeout())),
            (1, "local %s = S.q:len()" % self.var()),
            (1, "local %s = S.tasks[%d]\nif %s then local _ = tostring(%s) end" % (t, k, t, t)),
            (1, "local %s = S.tasks[%d]\nif %s then local _ = %s:cancel() end" % (t, k, t, t)),
            (2, "connect_to(%s, %s)" % (r.choice(["OWN_PORT", "CLOSED_PORT", "OWN_PORT"]),
                                       self.timeout())),
            (1, "connect_to(%s, %s, %s)" % (r.choice(["OWN_PORT", "CLOSED_PORT"]),
                                           self.timeout(),
                                           lua_str(r.choice(["localhost", "nonexistent.invalid",
                                                             "::1", "127.0.0.1"])))),
            (2, self.resolve_stmt()),
            (2, self.udp_stmt()),
            (1, "local %s = luasock.encode(%s)" % (self.var(), self.value_expr())),
            (1, "local %s = luasock.decode(%s)" % (self.var(), lua_str(r.choice(MSGPACK_BYTES)))),
            (1, "collectgarbage()"),
            (1, "luasock.log(\"info\", \"fuzz\", %s)" % self.value_expr()),
        ])

    def resolve_stmt(self):
        r = self.r
        host = r.choice(RESOLVE_HOSTS)
        families = ["", ", family = \"inet\""]
        if host != "localhost":
            # c-ares 1.18 (Debian 12) leaks the name (10 bytes) of every "localhost" lookup
            # with AF_INET6 when /etc/hosts has no "::1 localhost": not luasock's bug.
            families.append(", family = \"inet6\"")
        return "local %s = luasock.resolve(%s, {timeout = %s%s})" % (
            self.var(), lua_str(host), r.choice(["0.05", "0.3", "1"]), r.choice(families))

    def udp_stmt(self):
        r = self.r
        u = self.var("u")
        lines = ["local %s = new_udp()" % u, "if %s then" % u]
        lines.append("%s:settimeout(%s)" % (u, r.choice(["0", "0.05", "0.2", "0.5"])))
        for _ in range(r.randrange(1, 4)):
            lines.append(self.pick([
                (3, "%s:sendto(%s, \"127.0.0.1\", select(2, %s:getsockname()) or 9)" % (
                    u, lua_str(r.choice(LINES)), u)),
                (1, "%s:sendto(\"x\", \"127.0.0.1\", CLOSED_PORT)" % u),
                (3, "local %s = %s:receivefrom(%s)" % (self.var(), u, r.choice(["", "10"]))),
                (1, "%s:setpeername(\"127.0.0.1\", select(2, %s:getsockname()) or 9)" % (u, u)),
                (1, "%s:send(\"y\")" % u),
                (1, "local %s = %s:receive()" % (self.var(), u)),
                (1, "%s:close()" % u),
            ]))
        lines.append("end")
        return "\n".join(lines)

    def atom(self, depth):
        c = self.conn_expr()
        return self.pick([
            (6, lambda: self.read_stmt(c)),
            (5, lambda: self.write_stmt(c, depth)),
            (4, lambda: self.control_stmt(c)),
            (5, lambda: self.misc_stmt(depth)),
            (1, lambda: "error(%s)" % self.r.choice(["\"fuzz\"", "{}", "", "nil, 0"])),
        ])()

    def inline(self, depth):
        """A short statement list for a callback (may be empty)."""
        n = self.r.choice([1, 1, 1, 2])
        return "\n".join(self.stmt(depth) for _ in range(n))

    def block(self, depth, n=None):
        if n is None:
            n = self.r.randrange(1, 4)
        return "\n".join(self.stmt(depth) for _ in range(n))

    def context(self, depth):
        """A nested statement list inside one of the contexts a luasock call can meet."""
        r = self.r
        d = depth + 1
        pick = self.pick([(w, name) for w, name in CONTEXTS if name not in self.without])
        if pick == "pcall":
            return "pcall(function()\n%s\nend)" % self.block(d)
        if pick == "spawn":
            # Only the spawner joins its task (maybe after more statements), so joins never
            # make a cycle and every wait stays bounded.
            t = self.var("t")
            join = self.pick([(2, ""), (2, "%s:join()" % t),
                              (1, "%s\n%s:join()" % (self.block(d, 1), t)),
                              (1, "local ok, a, b = %s:join()" % t)])
            return ("local %s = spawn(%d, function(conn, n)\n%s\nend, conn, %d)\n"
                    "if %s then\n%s\nend"
                    % (t, r.randrange(8) + 1, self.block(d), r.randrange(100), t, join))
        if pick == "gsub":
            return "local %s = string.gsub(%s, \"%%w+\", function(w)\n%s\nend)" % (
                self.var(), lua_str(r.choice(["a", "one two", "a b c d"])), self.block(d))
        if pick == "sort":
            return "table.sort({3, 1, 2}, function(a, b)\n%s\nreturn a < b\nend)" % \
                self.block(d)
        if pick == "sort_lt":
            mt = self.var("mt")
            return ("local %s = {__lt = function(a, b)\n%s\nreturn false\nend}\n"
                    "table.sort({setmetatable({}, %s), setmetatable({}, %s)})"
                    % (mt, self.block(d), mt, mt))
        if pick == "tostring":
            return ("local %s = tostring(setmetatable({}, {__tostring = function()\n%s\n"
                    "return \"x\"\nend}))" % (self.var(), self.block(d)))
        if pick == "index_lua":
            return ("local %s = setmetatable({}, {__index = function(t, k)\n%s\nreturn 1\nend})"
                    ".x" % (self.var(), self.block(d)))
        if pick == "index_c":
            return ("local %s = table.concat(setmetatable({}, {__len = function() return 2 end,"
                    " __index = function(t, k)\n%s\nreturn \"i\"\nend}))"
                    % (self.var(), self.block(d)))
        if pick == "len_lua":
            return ("local %s = #setmetatable({}, {__len = function()\n%s\nreturn 1\nend})"
                    % (self.var(), self.block(d)))
        if pick == "len_c":
            target = r.choice(["table.concat", "table.unpack", "conn:send", "conn:post"])
            return ("local %s = %s(setmetatable({\"a\"}, {__len = function()\n%s\nreturn 1\n"
                    "end}))" % (self.var(), target, self.block(d)))
        if pick == "wrap":
            return "coroutine.wrap(function()\n%s\nend)()" % self.block(d)
        if pick == "close_ok":
            return ("do\nlocal %s <close> = setmetatable({}, {__close = function()\n%s\nend})\n"
                    "%s\nend" % (self.var("x"), self.block(d), self.block(d, 1)))
        if pick == "close_err":
            return ("pcall(function()\nlocal %s <close> = setmetatable({}, {__close = function()"
                    "\n%s\nend})\n%s\nerror(\"unwind\")\nend)"
                    % (self.var("x"), self.block(d), self.block(d, 1)))
        if pick == "coclose":
            co = self.var("co")
            return ("local %s = coroutine.create(function()\nlocal x <close> = setmetatable({},"
                    " {__close = function()\n%s\nend})\ncoroutine.yield()\nend)\n"
                    "coroutine.resume(%s)\ncoroutine.close(%s)"
                    % (co, self.block(d), co, co))
        if pick == "gc":
            return ("setmetatable({}, {__gc = function()\n%s\nend})"
                    % self.block(d, 1))
        if pick == "loop":
            return "for i = 1, %d do\n%s\nend" % (r.randrange(1, 4),
                                                  self.block(d))
        if pick == "cap":
            # Fill the heap up to max_memory, then call the API there.
            h = self.var("hog")
            return ("do\nlocal %s = fill()\n%s\n%s = nil\nend"
                    % (h, self.block(d, r.randrange(1, 4)), h))
        return "do\n%s\nend" % self.block(d)

    def stmt(self, depth):
        if depth < 3 and self.r.random() < 0.35:
            s = self.context(depth)
        else:
            s = self.atom(depth)
        if self.r.random() < 0.5:
            # Many calls raise on misuse: catch some so the body goes on.
            s = "pcall(function()\n%s\nend)" % s
        return s

    def body(self, name, params, preamble=""):
        n = self.r.randrange(3, 10)
        return "%s = function(%s)\n%s%s\nend" % (name, params, preamble, self.block(0, n))

    # ---- the whole script -----------------------------------------------------------------

    def script(self):
        r = self.r
        self.settings = {
            "high_water": r.choice([1, 16, 512, 4096, 65536]),
            "max_line": r.choice([1, 8, 64, 1024, 65536]),
            "max_queue": r.choice([64, 4096, 65536, 262144]),
            "max_all": r.choice([16, 4096, 1048576]),
            "max_object": r.choice([16, 1024, 65536, 1048576]),
            "idle_timeout": r.choice([0.05, 0.2, 0.5, 1]),
            "first_byte_timeout": r.choice([0.1, 0.5, 1]),
            "send_timeout": r.choice([0.05, 0.2, 0.5, 1]),
            "cpu_budget": r.choice([0.5, 1, 2]),
            "max_object_items": r.choice([1, 4, 100000]),
            "max_datagram_tasks": r.choice([1, 4, 1000]),
            "max_receive": r.choice([1, 16, 16 * 1024 * 1024]),
            "soft_queue": r.choice([0, 64, 65536]),
            "soft_queue_seconds": r.choice([0.05, 0.5, 10]),
            "max_buffers": r.choice([0, 65536, 256 * 1024 * 1024]),
        }
        # max_memory above the use at start-up (None: luasock's default, 0: no cap). 256 KiB
        # leaves room for the working set of the fuzz load itself (about 100-150 KiB at its
        # peak); fill() puts handlers at the cap whatever the margin. --tight-caps adds 96 KiB,
        # where the whole server lives at the cap (see README.md).
        margins = [(2, None), (1, 0), (3, 256 * 1024), (2, 512 * 1024), (2, 1024 * 1024),
                   (1, 4 * 1024 * 1024)]
        if self.tight_caps:
            margins.append((4, 96 * 1024))
        margin = self.pick(margins)
        out = ["-- generated by tests/fuzz/api_fuzz.py (api_gen.py)",
               "local luasock = require \"luasock\"",
               "local M = {"]
        for key in sorted(self.settings):
            out.append("  %s = %s," % (key, self.settings[key]))
        out.append("}")
        out.append(PRELUDE)
        if margin is not None:
            out.append("function M.start()")
            if margin == 0:
                out.append("  M.max_memory = 0")
            else:
                out.append("  M.max_memory = math.floor(collectgarbage(\"count\") * 1024) + %d"
                           % margin)
            out.append("end")
        nbodies = r.randrange(2, 6)
        out.append("local bodies = {}")
        for i in range(nbodies):
            out.append(self.body("bodies[%d]" % (i + 1), "conn, n"))
        out.append(HANDLE.replace("NBODIES", str(nbodies)))
        if r.random() < 0.6:
            out.append(self.body("M.on_close", "conn, reason", "local n = 0\n"))
        has_datagram = r.random() < 0.4
        if has_datagram:
            out.append("M.datagram = function(data, peer)\n"
                       "local n = #data\n"
                       "local conn = other(n, nil)\n"
                       "if not conn then peer:reply(\"none\") return end\n"
                       "%s\nend" % self.block(0, r.randrange(1, 5)))
        out.append("return M\n")
        return Script("\n".join(out), has_datagram, self.settings, margin)


PRELUDE = r'''
-- Shared, module-level state: connections, tasks and UDP sockets any coroutine may use.
-- Connections and tasks are held weakly: luasock keeps them while they are open or running,
-- and a dead coroutine's stack (which may hold a filled heap) must not stay reachable through
-- the script's own tables, or the heap would stay at max_memory for a reason of the script's.
local S = { conns = setmetatable({}, {__mode = "v"}), tasks = setmetatable({}, {__mode = "v"}),
            udps = {}, q = luasock.queue(), n = 0, spawns = 0, connects = 0, nudp = 0 }
local CLOSED_PORT = 1       -- nothing listens there
local OWN_PORT = nil        -- the TCP listener's port, learned from the first connection

local function keep(c)      -- stores a connection in the shared table (8 slots)
  if c ~= nil then
    S.n = S.n + 1
    S.conns[S.n % 8 + 1] = c
  end
  return c
end

local function other(i, default)   -- a stored connection, or default
  return S.conns[i % 8 + 1] or default
end

local function connect_to(port, timeout, host)
  if S.connects >= 12 then return nil end
  S.connects = S.connects + 1
  -- Sometimes over TLS, to a server that speaks none: the handshake fails or times out.
  local tls = S.connects % 3 == 0 and {verify = false} or nil
  return keep(luasock.connect(host or "127.0.0.1", port or CLOSED_PORT,
    {timeout = timeout, tls = tls}))
end

local function spawn(slot, fn, ...)  -- at most 24 spawns; the task is kept in S.tasks[slot]
  if S.spawns >= 24 then return nil end
  S.spawns = S.spawns + 1
  local t = luasock.spawn(fn, ...)
  S.tasks[slot] = t
  return t
end

local function push(v)      -- the shared queue holds at most 8 values
  if S.q:len() < 8 then S.q:push(v) end
end

local function new_udp()
  if S.nudp >= 6 then return S.udps[1] end
  S.nudp = S.nudp + 1
  local u = luasock.udp()
  u:setsockname("127.0.0.1", 0)
  S.udps[S.nudp] = u
  return u
end

local function cyclic()
  local t = {1}
  t[2] = {t}
  return t
end

local function deep(n)
  local t = {}
  for i = 1, n do t = {t} end
  return t
end

local function wide(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- Allocates until the memory cap refuses (or 200000 tables without a cap) and returns what it
-- got, so that the caller runs at the cap while it holds the result.
local function fill()
  local hog = {}
  pcall(function()
    for i = 1, 200000 do hog[i] = {} end
  end)
  return hog
end
'''

HANDLE = r'''
function M.handle(conn)
  local host, port = conn:local_address()
  if type(host) == "string" and host:sub(1, 5) == "unix:" then
    -- The echo listener: api_fuzz.py checks that the server still answers here.
    conn:settimeout(10)
    while true do
      local data = conn:receiveany()
      if not data then return end
      conn:send(data)
    end
  end
  if OWN_PORT == nil and host ~= nil then OWN_PORT = port end
  local n = conn:id()
  if n % 3 == 0 then keep(conn) end
  return bodies[n % NBODIES + 1](conn, n)
end
'''


def generate(rng, without=(), tight_caps=False):
    """without: names of CONTEXTS to leave out ("c-boundary" for all of C_BOUNDARY);
    tight_caps: also draw max_memory margins of 96 KiB."""
    names = set()
    for name in without:
        names.update(C_BOUNDARY if name == "c-boundary" else [name])
    unknown = names - {name for _, name in CONTEXTS}
    if unknown:
        raise ValueError("unknown context(s): " + ", ".join(sorted(unknown)))
    return Gen(rng, names, tight_caps).script()


if __name__ == "__main__":
    import sys
    print(generate(random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)).text)
