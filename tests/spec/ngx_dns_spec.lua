-- ngx_dns_spec.lua -- issue 15 acceptance: Debian's lua-nginx-dns (the resolver), unmodified,
-- inside a luasock handler through `require "luasock.ngx"` (UDP cosockets, and a TCP one for
-- truncated answers), against tests/clients/slow_dns.py on a free loopback port. Loaded as
-- `resty.dns.resolver` and as `nginx.dns.resolver`: A records (one, two, none for AAAA),
-- NXDOMAIN as errcode 3, a slow answer that holds up only its own handler (another client is
-- answered meanwhile, and 20 slow queries at once take about one delay), and a truncated
-- answer whose TCP retry meets a peer that closes mid-reply: a clean error, twice on the same
-- resolver, and the resolver still answers afterwards; the address helpers on ngx.re.sub
-- (arpa_str, compress_ipv6_addr, expand_ipv6_addr) and reverse_query.
local socket = require "socket"
local helper = require "helper"

local DELAY = 0.5 -- seconds slow_dns.py waits before answering slow.test
local PARALLEL = 20

-- The handler runs one command per line: "query NAME [aaaa]", "tcp_query NAME", "truncated"
-- (twice, then a plain query, on one resolver), "parallel" (PARALLEL slow queries at once),
-- "arpa" (the library's address helpers, which use ngx.re.sub, and a PTR query), "ping".
local SERVER = [[
local ngx = require "luasock.ngx"
local resolver = require "${MODULE}"
local function new()
  return assert(resolver:new { nameservers = { { "127.0.0.1", ${PORT} } }, retrans = 2,
    timeout = 3000 })
end
local function summary(answers, err)
  if not answers then return nil, err end
  local addresses = {}
  for i, answer in ipairs(answers) do
    addresses[i] = answer.name .. " " .. answer.type .. " " .. answer.address
  end
  return table.concat(addresses, ", "), answers.errcode, answers.errstr
end
local commands = {}
function commands.query(conn, name, kind)
  local r = new()
  report(conn, summary(r:query(name, { qtype = kind == "aaaa" and r.TYPE_AAAA or r.TYPE_A })))
end
function commands.tcp_query(conn, name)
  report(conn, summary(new():tcp_query(name)))
end
function commands.truncated(conn)
  local r = new()
  local first, err1 = r:query("truncated.test")
  local second, err2 = r:query("truncated.test")
  report(conn, first, err1, second, err2, summary(r:query("slow.test")))
end
function commands.parallel(conn)
  local started = ngx.now()
  local threads = {}
  for i = 1, ${PARALLEL} do
    threads[i] = ngx.thread.spawn(function() return summary(new():query("slow.test")) end)
  end
  local good = 0
  for _, thread in ipairs(threads) do
    local ok, answer = ngx.thread.wait(thread)
    if ok and answer == "slow.test 1 127.0.0.1" then good = good + 1 end
  end
  ngx.update_time()
  report(conn, good, ngx.now() - started)
end
function commands.arpa(conn)
  local answers = new():reverse_query("127.0.0.1")
  report(conn, resolver.arpa_str("127.0.0.1"), resolver.compress_ipv6_addr("1:0:0:0:0:0:0:1"),
    resolver.compress_ipv6_addr("0:0:0:0:0:0:0:1"), resolver.expand_ipv6_addr("::1"),
    answers and answers.errcode)
end
function commands.ping(conn) report(conn, "pong") end
return { handle = function(conn)
  for line in function() return conn:receive() end do
    local words = {}
    for word in line:gmatch("%S+") do words[#words + 1] = word end
    local name = table.remove(words, 1)
    commands[name](conn, table.unpack(words))
  end
end }
]]

-- Starts slow_dns.py (helper.cleanup stops it); returns its port.
local function start_dns()
  local process = helper.spawn(string.format("timeout 120 python3 tests/clients/slow_dns.py %s 120 </dev/null",
    DELAY))
  return assert(tonumber(process.pipe:read("l")), "slow_dns.py did not print its port")
end

for _, module in ipairs { "resty.dns.resolver", "nginx.dns.resolver" } do
  describe("lua-nginx-dns as " .. module, function()
    local server, dns_port

    before_each(function()
      dns_port = start_dns()
      server = helper.start(helper.handler(helper.fill(SERVER, { MODULE = module, PORT = dns_port,
        PARALLEL = PARALLEL })))
    end)
    after_each(helper.cleanup)

    local function ask(command)
      return helper.request_report(server, command)
    end

    it("answers A queries: one address, two, none for AAAA, NXDOMAIN", function()
      assert.same({ "slow.test 1 127.0.0.1" }, { table.unpack(ask("query slow.test"), 1, 3) })
      assert.same({ "two.test 1 127.0.0.2, two.test 1 127.0.0.1" },
        { table.unpack(ask("query two.test"), 1, 3) })
      assert.same({ "" }, { table.unpack(ask("query slow.test aaaa"), 1, 3) })
      assert.same({ "", 3, "name error" }, { table.unpack(ask("query missing.test"), 1, 3) })
    end)

    it("holds up only the handler waiting for a slow answer", function()
      local slow = server:connect()
      local started = socket.gettime()
      assert(slow:send("query slow.test\n"))
      assert.same({ "pong" }, { table.unpack(ask("ping"), 1, 1) })
      local ping_time = socket.gettime() - started
      assert.equal("slow.test 1 127.0.0.1", helper.read_report(slow)[1])
      local slow_time = socket.gettime() - started
      slow:close()
      assert.is_true(ping_time < DELAY / 2, "ping answered after " .. ping_time .. " s")
      assert.is_true(slow_time >= DELAY * 0.9, "slow answer after " .. slow_time .. " s")
      local got = ask("parallel")
      assert.equal(PARALLEL, got[1])
      assert.is_true(got[2] < DELAY * 3, PARALLEL .. " slow queries at once took " .. got[2] .. " s")
    end)

    it("retries a truncated answer over TCP and fails cleanly when the peer closes", function()
      local got = ask("truncated")
      local want = "^failed to receive the reply message body from TCP server 127%.0%.0%.1:"
        .. dns_port .. ": "
      assert.is_nil(got[1])
      assert.matches(want, got[2])
      assert.is_nil(got[3])
      assert.matches(want, got[4])
      assert.equal("slow.test 1 127.0.0.1", got[5])
      local tcp = ask("tcp_query slow.test")
      assert.is_nil(tcp[1])
      assert.matches(want, tcp[2])
    end)

    it("builds reverse names with ngx.re.sub and sends a PTR query", function()
      assert.same({ "1.0.0.127.in-addr.arpa", "1::1", "::1", "0:0:0:0:0:0:0:1", 3 },
        { table.unpack(ask("arpa"), 1, 5) })
    end)
  end)
end
