-- devcert.lua -- certificates for the specs that speak TLS, made in a temp directory of the test
-- (removed by helper.cleanup), and a LuaSec client to check a TLS server with.
--
-- `devcert.make(names, dir)` runs scripts/devcert: a test CA and a server certificate it signed
-- (names: the server's DNS names, default localhost; 127.0.0.1 and ::1 are always in it), in
-- `dir` (default a new temp directory).
-- `devcert.self_signed()` makes a server certificate for localhost and 127.0.0.1 signed by
-- itself. Both return { dir, ca, cert, key } (ca: the CA's certificate, or the certificate
-- itself when self-signed).
local ssl = require "ssl"
local helper = require "helper"

local devcert = {}

function devcert.make(names, dir)
  dir = dir or helper.tmpdir()
  local words = { "scripts/devcert", dir }
  for _, name in ipairs(names or {}) do words[#words + 1] = name end
  for i, word in ipairs(words) do words[i] = helper.shell_quote(word) end
  assert(os.execute(table.concat(words, " ") .. " >/dev/null"), "scripts/devcert failed")
  return { dir = dir, ca = dir .. "/ca.pem", cert = dir .. "/server.pem",
    key = dir .. "/server.key" }
end

function devcert.self_signed()
  local dir = helper.tmpdir()
  local cert, key = dir .. "/self.pem", dir .. "/self.key"
  assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    .. "-keyout %s -out %s -days 30 -subj /CN=localhost "
    .. "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null")
    :format(helper.shell_quote(key), helper.shell_quote(cert))), "openssl req failed")
  return { dir = dir, ca = cert, cert = cert, key = key }
end

-- Wraps a connected LuaSocket client in TLS and does the handshake, verifying the server
-- against `ca` (its host name is not checked: LuaSec does not); returns the TLS client, or nil
-- and LuaSec's error.
function devcert.wrap(client, ca)
  local tls, err = ssl.wrap(client, { mode = "client", protocol = "any", cafile = ca,
    verify = "peer", options = "all" })
  if not tls then return nil, err end
  tls:settimeout(helper.IO_TIMEOUT)
  local ok, handshake_err = tls:dohandshake()
  if not ok then return nil, handshake_err end
  return tls
end

return devcert
