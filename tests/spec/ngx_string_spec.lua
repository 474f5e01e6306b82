-- ngx_string_spec.lua -- issue 15: luasock.ngx_string (OpenResty's md5, md5_bin, sha1_bin,
-- crc32_short/long, encode/decode_base64, escape/unescape_uri, quote_sql_str) and luasock.ffi
-- (the char[?] subset), in `luasock run` scripts. Digests and CRCs are checked against known
-- vectors and against Python's hashlib and zlib on the same files; the ffi buffer runs under
-- Debian's nginx.websocket.protocol (lua-nginx-websocket), loaded through require "luasock.ngx",
-- which builds and parses masked frames with it.
local helper = require "helper"

local PRELUDE = "local ngxs = require 'luasock.ngx_string'; local ffi = require 'luasock.ffi'; "

local function run(source)
  return helper.run_reports(source, { prelude = PRELUDE })
end

-- Files of test inputs: empty, short, every byte value, and 100 kB that varies along its length.
local function write_inputs()
  local all_bytes = {}
  for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
  local long = {}
  for i = 1, 20000 do long[i] = string.format("%04x.", i * 7919 % 65536) end
  local inputs = { "", "abc", "The quick brown fox jumps over the lazy dog",
                   table.concat(all_bytes), table.concat(long) }
  local paths = {}
  for i, data in ipairs(inputs) do
    paths[i] = helper.dir() .. "/input" .. i
    local file = assert(io.open(paths[i], "wb"))
    file:write(data)
    file:close()
  end
  return paths
end

-- What Python says for each file: "sha1hex crc32 base64" per line.
local function python_vectors(paths)
  local program = "import sys, hashlib, zlib, base64\n"
    .. "for path in sys.argv[1:]:\n"
    .. "    data = open(path, 'rb').read()\n"
    .. "    print(hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest(),"
    .. " zlib.crc32(data), base64.b64encode(data).decode())\n"
  local quoted = {}
  for i, path in ipairs(paths) do quoted[i] = helper.shell_quote(path) end
  local pipe = assert(io.popen("python3 -c " .. helper.shell_quote(program) .. " "
    .. table.concat(quoted, " ")))
  local vectors = {}
  for line in pipe:lines() do
    local sha1, md5, crc, b64 = line:match("^(%x+) (%x+) (%d+) (%S*)$")
    vectors[#vectors + 1] = { sha1, md5, tonumber(crc), b64 }
  end
  assert(pipe:close())
  return vectors
end

describe("ngx string functions", function()
  after_each(helper.cleanup)

  it("agree with known vectors and with Python's hashlib, zlib and base64", function()
    local paths = write_inputs()
    local want = python_vectors(paths)
    local got = run(helper.fill([=[
      local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
      for path in ("${PATHS}"):gmatch("[^|]+") do
        local file = assert(io.open(path, "rb"))
        local data = file:read("a")
        file:close()
        local b64 = ngxs.encode_base64(data)
        report(stdout, hex(ngxs.sha1_bin(data)), ngxs.md5(data), ngxs.crc32_short(data),
          b64, ngxs.crc32_long(data) == ngxs.crc32_short(data), hex(ngxs.md5_bin(data)) == ngxs.md5(data),
          ngxs.decode_base64(b64) == data, ngxs.decode_base64(ngxs.encode_base64(data, true)) == data)
      end
      report(stdout, ngxs.md5(""), ngxs.md5("abc"), ngxs.md5(nil), ngxs.md5(123) == ngxs.md5("123"))
    ]=], { PATHS = table.concat(paths, "|") }))
    assert.equal(#paths + 1, #got)
    for i = 1, #paths do
      assert.same(table.pack(want[i][1], want[i][2], want[i][3], want[i][4], true, true, true, true),
        got[i], "input " .. i)
    end
    assert.same(table.pack("d41d8cd98f00b204e9800998ecf8427e", "900150983cd24fb0d6963f7d28e17f72",
      "d41d8cd98f00b204e9800998ecf8427e", true), got[#paths + 1])
  end)

  it("decode_base64 follows nginx: optional padding, stops at '=', nil for invalid input",
    function()
    local got = run([=[
      report(stdout, ngxs.encode_base64("hello"), ngxs.encode_base64("hello", true),
        ngxs.encode_base64("hell"), ngxs.encode_base64("hell", true), ngxs.encode_base64(""))
      report(stdout, ngxs.decode_base64("aGVsbG8="), ngxs.decode_base64("aGVsbG8"),
        ngxs.decode_base64("aGVsbA=="), ngxs.decode_base64("aGVsbA"), ngxs.decode_base64(""))
      report(stdout, ngxs.decode_base64("aGVsbG8=garbage"), ngxs.decode_base64("a"),
        ngxs.decode_base64("aGVsb!G8"), ngxs.decode_base64("aGVs bG8"), ngxs.decode_base64("aGVsbG8\n"))
      report(stdout, ngxs.decode_base64("+/+/"), ngxs.decode_base64("-_-_"))
      report(stdout, pcall(ngxs.decode_base64, nil))
      report(stdout, pcall(ngxs.encode_base64, "x", "yes"))
    ]=])
    assert.same(table.pack("aGVsbG8=", "aGVsbG8", "aGVsbA==", "aGVsbA", ""), got[1])
    assert.same(table.pack("hello", "hello", "hell", "hell", ""), got[2])
    assert.same(table.pack("hello", nil, nil, nil, nil), got[3])
    assert.same(table.pack("\251\255\191", nil), got[4])
    assert.same(table.pack(false, "string argument only"), { got[5][1], got[5][2]:match("string argument only"), n = 2 })
    assert.same(table.pack(false, "boolean argument only"), { got[6][1], got[6][2]:match("boolean argument only"), n = 2 })
  end)

  it("escape_uri and unescape_uri as lua-nginx-module's tables", function()
    local got = run([=[
      report(stdout, ngxs.escape_uri("a b/c?d=é&x~!*'()-._"), ngxs.escape_uri("a b/c?d=é#%+", 0),
        ngxs.escape_uri("a b+c", 1), ngxs.escape_uri(nil), ngxs.escape_uri(42))
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      local escaped = ngxs.escape_uri(all)
      report(stdout, (escaped:gsub("%%%x%x", "")), ngxs.unescape_uri(escaped) == all)
      report(stdout, ngxs.unescape_uri("b%20r56+7"), ngxs.unescape_uri("%2B+%2b"),
        ngxs.unescape_uri("100%"), ngxs.unescape_uri("%zz%4"), ngxs.unescape_uri("%e7%be%8e"))
      report(stdout, pcall(ngxs.escape_uri, "x", 3))
    ]=])
    assert.same(table.pack("a%20b%2Fc%3Fd%3D%C3%A9%26x~!*'()-._", "a%20b/c%3Fd=%C3%A9%23%25+",
      "a%20b%2Bc", "", "42"), got[1])
    assert.same(table.pack("!'()*-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~",
      true), got[2])
    assert.same(table.pack("b r56 7", "+ +", "100%", "%zz%4", "美"), got[3])
    assert.is_false(got[4][1])
    assert.matches("not supported", got[4][2])
  end)

  it("quote_sql_str quotes as MySQL's mysql_real_escape_string", function()
    local got = run([=[
      report(stdout, ngxs.quote_sql_str("it's \"a\"\n\r\t\b\0\26\\ é"), ngxs.quote_sql_str(""),
        ngxs.quote_sql_str(12))
      report(stdout, pcall(ngxs.quote_sql_str))
      report(stdout, pcall(ngxs.quote_sql_str, "a", "b"))
    ]=])
    assert.same(table.pack([['it\'s \"a\"\n\r\t\b\0\Z\\ é']], "''", "'12'"), got[1])
    assert.same({ false, "expecting one argument" }, { got[2][1], got[2][2]:match("expecting one argument") })
    assert.same({ false, "expecting one argument" }, { got[3][1], got[3][2]:match("expecting one argument") })
  end)
end)

describe("ffi", function()
  after_each(helper.cleanup)

  it("gives char[?] buffers: zeroed, stored & 0xff, read back as C's char, length-checked",
    function()
    local got = run([=[
      local T = ffi.typeof("char[?]")
      local buf = ffi.new(T, 4)
      report(stdout, buf[0], buf[3], tostring(T))
      buf[0], buf[1], buf[2], buf[3] = 0x81, 65, 300, -1
      report(stdout, buf[0], buf[1], buf[2], buf[3], ffi.string(buf, 2), #ffi.string(buf, 4))
      buf[1] = 0
      report(stdout, ffi.string(buf), ffi.string(buf, 0))
      local u = ffi.new("unsigned char[?]", 2)
      u[0] = -1
      report(stdout, u[0], ffi.new("uint8_t[?]", 1)[0], T(3)[2], ffi.new("char[8]")[7])
      report(stdout, pcall(function() return buf[4] end))
      report(stdout, pcall(function() buf[-1] = 1 end))
      report(stdout, pcall(ffi.string, buf, 5))
      report(stdout, pcall(ffi.new, T))
      report(stdout, ffi.string("abc\0def"), ffi.string("abcdef", 3))
      report(stdout, #ffi.string(ffi.new(T, 3.0), 2.0), pcall(ffi.string, "abc", 4))
    ]=])
    assert.same(table.pack(0, 0, "ctype<char[?]>"), got[1])
    assert.same(table.pack(-127, 65, 44, -1, "\129A", 4), got[2])
    assert.same(table.pack("\129", ""), got[3])
    assert.same(table.pack(255, 0, 0, 0), got[4])
    assert.is_false(got[5][1])
    assert.matches("index 4 out of range for a buffer of 4 bytes", got[5][2])
    assert.matches("index %-1 out of range for a buffer of 4 bytes", got[6][2])
    assert.matches("length 5 out of range for a buffer of 4 bytes", got[7][2])
    assert.matches("char%[%?%] needs a size", got[8][2])
    assert.same(table.pack("abc", "abc"), got[9])
    assert.same({ 2, false }, { got[10][1], got[10][2] })
    assert.matches("length 4 out of range for a string of 3 bytes", got[10][3])
  end)

  it("refuses everything else with the name of what was asked", function()
    local got = run([=[
      report(stdout, pcall(function() return ffi.cdef end))
      report(stdout, pcall(function() return ffi.C end))
      report(stdout, pcall(ffi.typeof, "int"))
      report(stdout, pcall(ffi.new, "int[4]"))
      report(stdout, pcall(ffi.new, "char[?]", 2, 1))
    ]=])
    local function message(i) return got[i][2]:match("ffi is not available in luasock: .*$") end
    assert.equal("ffi is not available in luasock: ffi.cdef", message(1))
    assert.equal("ffi is not available in luasock: ffi.C", message(2))
    assert.equal('ffi is not available in luasock: ffi.typeof("int")', message(3))
    assert.equal('ffi is not available in luasock: ffi.new("int[4]")', message(4))
    assert.equal("ffi is not available in luasock: ffi.new with initial values", message(5))
  end)

  it("runs Debian's nginx.websocket.protocol through require \"luasock.ngx\": masked frames "
    .. "built and parsed", function()
    local got = run([=[
      local ngx = require "luasock.ngx"
      report(stdout, require("ffi") == ffi, ngx.md5 == ngxs.md5, ngx.re == require("luasock.ngx_re"))
      local protocol = require "nginx.websocket.protocol"
      local wire = {}
      local sender = { send = function(_, data) wire[#wire + 1] = data return #data end }
      local payloads = { "", "hi", string.rep("\255\0\128x", 50), string.rep("0123456789", 500),
                         string.rep("z\200", 40000) }
      for _, payload in ipairs(payloads) do
        assert(protocol.send_frame(sender, true, 0x2, payload, 1e6, true))
      end
      local stream, at = table.concat(wire), 1
      local reader = { receive = function(_, n)
        local data = stream:sub(at, at + n - 1)
        at = at + n
        return data
      end }
      for i, payload in ipairs(payloads) do
        local data, kind, err = protocol.recv_frame(reader, 1e6, true)
        report(stdout, i, data == payload, kind, err, #data)
      end
    ]=])
    assert.same(table.pack(true, true, true), got[1])
    assert.same(table.pack(1, true, "binary", nil, 0), got[2])
    assert.same(table.pack(2, true, "binary", nil, 2), got[3])
    assert.same(table.pack(3, true, "binary", nil, 200), got[4])
    assert.same(table.pack(4, true, "binary", nil, 5000), got[5])
    assert.same(table.pack(5, true, "binary", nil, 80000), got[6])
  end)
end)
