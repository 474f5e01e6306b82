-- ngx_re_spec.lua -- issue 15: luasock.ngx_re, OpenResty's ngx.re on PCRE2, in `luasock run`
-- scripts: match (captures, false for groups that did not take part, named groups, "D" lists,
-- ctx.pos in and out, res_table), find (nth), gmatch, sub and gsub (templates, functions, empty
-- matches), the options, and errors returned as nil and a message (bad regex, bad template,
-- "d") or raised (unknown option). A served script shows that a catastrophic pattern fails with
-- "match limit exceeded" within a second while the server goes on serving, and that a pattern
-- too big for max_memory gets an error, not an abort; a match needing more than 64 MiB of
-- backtracking frames fails with "heap limit exceeded".
local helper = require "helper"

local PRELUDE = "local re = require 'luasock.ngx_re'; "

local function run(source)
  return helper.run_reports(source, { prelude = PRELUDE })
end

describe("ngx.re", function()
  after_each(helper.cleanup)

  it("match returns captures, false for unmatched groups, and named groups", function()
    local got = run([=[
      local m = re.match("hello, 1234", "([0-9])(?<remaining>[0-9]+)")
      report(stdout, m[0], m[1], m[2], m.remaining, m[3])
      m = re.match("hello, world", "(world)|(hello)|(?<named>howdy)")
      report(stdout, m[0], m[1], m[2], m[3], m.named)
      m = re.match("hello, world", [[(?<named>\w+), (?<named>\w+)]], "D")
      report(stdout, #m.named, m.named[1], m.named[2])
      m = re.match("ab", "(?<x>a)|(?<x>b)", "D")
      report(stdout, #m.x, m.x[1])
      report(stdout, re.match("hello", "[0-9]+"))
      local res = {}
      m = re.match("key=value", "(\\w+)=(\\w+)", "", nil, res)
      report(stdout, m == res, res[1], res[2])
    ]=])
    assert.same(table.pack("1234", "1", "234", "234", nil), got[1])
    assert.same(table.pack("hello", false, "hello", false, false), got[2])
    assert.same(table.pack(2, "hello", "world"), got[3])
    assert.same(table.pack(1, "a"), got[4])
    assert.same(table.pack(nil), got[5])
    assert.same(table.pack(true, "key", "value"), got[6])
  end)

  it("match starts at ctx.pos and moves it past the match; a failed match leaves it", function()
    local got = run([=[
      local ctx = {}
      local m = re.match("1234, hello", "[0-9]+", "", ctx)
      report(stdout, m[0], ctx.pos)
      ctx = { pos = 2 }
      m = re.match("1234, hello", "[0-9]+", "", ctx)
      report(stdout, m[0], ctx.pos)
      m = re.match("1234, hello", "[0-9]+", "", ctx)
      report(stdout, m, ctx.pos)
      -- a lexer: "a" anchors each match at ctx.pos
      ctx = { pos = 1 }
      local tokens = {}
      while true do
        m = re.match("x = 10 + y", [[\s*(\w+|[=+])]], "a", ctx)
        if not m then break end
        tokens[#tokens + 1] = m[1]
      end
      report(stdout, table.concat(tokens, ","), ctx.pos)
    ]=])
    assert.same(table.pack("1234", 5), got[1])
    assert.same(table.pack("234", 5), got[2])
    assert.same(table.pack(nil, 5), got[3])
    assert.same(table.pack("x,=,10,+,y", 11), got[4])
  end)

  it("takes the options i, x, s, m, u, U, a, j, o, J", function()
    local got = run([=[
      report(stdout, re.match("hello, world", "HEL LO", "ix")[0])
      report(stdout, re.match("a\nb", "a.b", "s")[0], re.match("a\nb", "a.b"))
      report(stdout, re.match("one\ntwo", "^two$", "m")[0], re.match("one\ntwo", "^two$"))
      local m = re.match("hello, 美好生活", "HELLO, (.{2})", "iu")
      report(stdout, m[0], m[1])
      report(stdout, re.match("\255美", "(.)$", "U")[1])
      report(stdout, re.match("xab", "ab", "a"), re.match("abx", "ab", "a")[0])
      report(stdout, re.match("hello, 1234", "[0-9]+", "jo")[0])
      report(stdout, re.match("ab", "\\u0062", "J")[0])
    ]=])
    assert.same(table.pack("hello"), got[1])
    assert.same(table.pack("a\nb", nil), got[2])
    assert.same(table.pack("two", nil), got[3])
    assert.same(table.pack("hello, 美好", "美好"), got[4])
    assert.same(table.pack("美"), got[5])
    assert.same(table.pack(nil, "ab"), got[6])
    assert.same(table.pack("1234"), got[7])
    assert.same(table.pack("b"), got[8])
  end)

  it("find returns 1-based offsets of the match or of group nth", function()
    local got = run([=[
      report(stdout, re.find("hello, 1234", "([0-9]+)", "jo"))
      report(stdout, re.find("hello, 1234", "([0-9])([0-9]+)", "jo", nil, 2))
      report(stdout, re.find("hello", "(x)?h", "", nil, 1))
      report(stdout, re.find("hello", "(h)", "", nil, 2))
      report(stdout, re.find("hello", "x"))
      report(stdout, re.find("hello", "l*", "", { pos = 2 }))
      local ctx = { pos = 4 }
      local from, to = re.find("a1b2c3", "[0-9]", "", ctx)
      report(stdout, from, to, ctx.pos)
    ]=])
    assert.same(table.pack(8, 11), got[1])
    assert.same(table.pack(9, 11), got[2])
    assert.same(table.pack(nil, nil), got[3])
    assert.same(table.pack(nil, nil, "nth out of bound"), got[4])
    assert.same(table.pack(nil), got[5])
    assert.same(table.pack(2, 1), got[6])
    assert.same(table.pack(4, 4, 5), got[7])
  end)

  it("gmatch iterates over every match, moving on by one character after an empty one",
    function()
    local got = run([=[
      local words = {}
      for m in re.gmatch("hello, world!", "([a-z]+)", "i") do words[#words + 1] = m[0] .. "/" .. m[1] end
      report(stdout, table.concat(words, " "))
      local it = re.gmatch("ab", "x*")
      local a, b, c, d = it(), it(), it(), it()
      report(stdout, a[0], b[0], c[0], d)
      local pieces = {}
      for m in re.gmatch("baa", "a*") do pieces[#pieces + 1] = "<" .. m[0] .. ">" end
      report(stdout, table.concat(pieces))
      local n = 0
      for _ in re.gmatch("美好", "", "u") do n = n + 1 end
      report(stdout, n)
      for m in re.gmatch("k1=v1;k2=v2", [[(?<k>\w+)=(?<v>\w+)]]) do report(stdout, m.k, m.v) end
      report(stdout, re.gmatch("x", "("))
    ]=])
    assert.same(table.pack("hello/hello world/world"), got[1])
    assert.same(table.pack("", "", "", nil), got[2])
    assert.same(table.pack("<><aa><>"), got[3])
    assert.same(table.pack(3), got[4])
    assert.same(table.pack("k1", "v1"), got[5])
    assert.same(table.pack("k2", "v2"), got[6])
    assert.is_nil(got[7][1])
    assert.matches('failed to compile regex "%(": missing closing parenthesis', got[7][2])
  end)

  it("sub and gsub replace with templates or a function", function()
    local got = run([=[
      report(stdout, re.sub("hello, 1234", "([0-9])[0-9]", "[$0][$1]"))
      report(stdout, re.sub("hello, 1234", "[0-9]", "${0}00"))
      report(stdout, re.sub("hello, 1234", "[0-9]", "$$"))
      report(stdout, re.sub("hello, 1234", "( [0-9] ) [0-9]",
        function(m) return "[" .. m[0] .. "][" .. m[1] .. "]" end, "x"))
      report(stdout, re.gsub("hello, world", "([a-z])[a-z]+", "[$0,$1]", "i"))
      report(stdout, re.gsub("hello, world", "([a-z])[a-z]+",
        function(m) return "[" .. m[0] .. "," .. m[1] .. "]" end, "i"))
      report(stdout, re.gsub("2024-05-06", [[(?<y>\d+)-(?<m>\d+)-(?<d>\d+)]], "${d}/$m/$y"))
      report(stdout, re.gsub("a1", "(x)?([0-9])", "[$1|$2|$9]"))
      report(stdout, re.gsub("hello", "x", "y"))
      report(stdout, re.gsub("abc", "", "-"))
      report(stdout, re.gsub("hello", "x*", "-"))
      report(stdout, re.gsub("héllo", "", "-", "u"))
      report(stdout, re.gsub("a.b", "[.]", "$$1"))
      report(stdout, re.gsub("ab", "b", function() return 7 end))
    ]=])
    assert.same(table.pack("hello, [12][1]34", 1), got[1])
    assert.same(table.pack("hello, 100234", 1), got[2])
    assert.same(table.pack("hello, $234", 1), got[3])
    assert.same(table.pack("hello, [12][1]34", 1), got[4])
    assert.same(table.pack("[hello,h], [world,w]", 2), got[5])
    assert.same(table.pack("[hello,h], [world,w]", 2), got[6])
    assert.same(table.pack("06/05/2024", 1), got[7])
    assert.same(table.pack("a[|1|]", 1), got[8])
    assert.same(table.pack("hello", 0), got[9])
    assert.same(table.pack("-a-b-c-", 4), got[10])
    assert.same(table.pack("-h-e-l-l-o-", 6), got[11])
    assert.same(table.pack("-h-é-l-l-o-", 6), got[12])
    assert.same(table.pack("a$1b", 1), got[13])
    assert.same(table.pack("a7", 1), got[14])
  end)

  it("returns nil and a message for a bad regex, template or DFA, and raises for an unknown option",
    function()
    local got = run([=[
      report(stdout, re.match("x", "("))
      report(stdout, re.find("x", "a{2,1}"))
      report(stdout, re.sub("x", "(", "y"))
      report(stdout, re.gsub("abc", "b", "$"))
      report(stdout, re.gsub("abc", "b", "${1"))
      report(stdout, re.gsub("abc", "b", "$nope"))
      report(stdout, re.match("x", "x", "d"))
      report(stdout, pcall(re.match, "x", "x", "q"))
      report(stdout, pcall(re.match, "x", nil))
      report(stdout, re.match("x", "x", "", { pos = 10 }))
      report(stdout, re.match(string.rep("a", 2000000), "^(a|b)*c"))
    ]=])
    assert.same(table.pack(nil, 'failed to compile regex "(": missing closing parenthesis at offset 1'),
      got[1])
    assert.same({ nil, nil }, { got[2][1], got[2][2] })
    assert.matches('^failed to compile regex "a{2,1}": ', got[2][3])
    assert.matches('^failed to compile regex "%(": ', got[3][3])
    assert.same(table.pack(nil, nil, 'failed to compile the replacement template "$": invalid '
      .. "capturing variable name found"), got[4])
    assert.same(table.pack(nil, nil, 'failed to compile the replacement template "${1": the '
      .. "closing bracket is missing"), got[5])
    assert.same(table.pack(nil, nil, 'failed to compile the replacement template "$nope": no '
      .. 'group named "nope"'), got[6])
    assert.same(table.pack(nil, 'regex option "d" (DFA mode) is not supported in luasock'), got[7])
    assert.same(table.pack(false, 'unknown flag "q" (flags "q")'), got[8])
    assert.is_false(got[9][1])
    assert.matches("string expected, got nil", got[9][2])
    assert.is_nil(got[10][1])
    assert.matches("^pcre_exec%(%) failed: %-33 %(bad offset", got[10][2])
    -- 2 million nested alternatives need more than the 64 MiB of backtracking frames allowed
    assert.same(table.pack(nil, "pcre_exec() failed: -63 (heap limit exceeded)"), got[11])
  end)

  it("keeps a bounded cache of compiled patterns", function()
    local got = run([=[
      local function compile_many(from, to)
        for i = from, to do assert(re.find("x" .. i, "x" .. i .. "$")) end
        collectgarbage() collectgarbage()
        return collectgarbage("count")
      end
      local after_2k = compile_many(1, 2000)
      local after_20k = compile_many(2001, 20000)
      report(stdout, after_20k < after_2k * 1.5, after_2k, after_20k)
    ]=])
    assert.is_true(got[1][1], "Lua heap grew from " .. got[1][2] .. " KiB to " .. got[1][3] .. " KiB")
  end)

  it("fails a catastrophic pattern within a second and goes on serving", function()
    local server = helper.start(helper.handler([=[
      local re = require "luasock.ngx_re"
      local BIG = "(?:" .. string.rep("abcdefgh", 500000) .. ")"
      return { max_memory = 16 * 1024 * 1024, handle = function(conn)
        while true do
          local line = conn:receive("*l")
          if not line then return end
          local started = luasock.now()
          if line == "catastrophic" then
            local m, err = re.match(string.rep("a", 40) .. "!", [[^(\w+\s?)*$]])
            report(conn, m, err, luasock.now() - started)
          elseif line == "big" then
            report(conn, re.match("x", BIG))
          else
            report(conn, re.match(line, "^p(.)ng$")[1])
          end
        end
      end }
    ]=]))
    local slow, other = server:connect(), server:connect()
    assert(slow:send("catastrophic\n"))
    local got = helper.read_report(slow)
    assert.is_nil(got[1])
    assert.equal("pcre_exec() failed: -47 (match limit exceeded)", got[2])
    assert.is_true(got[3] < 1, "the match ran for " .. got[3] .. " s")
    assert(other:send("ping\n"))
    assert.same(table.pack("i"), helper.read_report(other))
    assert(slow:send("big\n"))
    got = helper.read_report(slow)
    assert.is_nil(got[1])
    assert.matches("^failed to compile regex \"%(%?:abcdefgh.-%.%.%.\": failed to allocate heap memory",
      got[2])
    assert(slow:send("pong\n"))
    assert.same(table.pack("o"), helper.read_report(slow))
    slow:close()
    other:close()
    server:stop()
  end)
end)
