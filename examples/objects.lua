-- objects.lua: a server that exchanges objects instead of bytes. Each request is one
-- MessagePack value like {op = "add", args = {1, 2}}; each answer is {ok = true, result = 3} or
-- {ok = false, error = "unknown op"}; {op = "echo", args = {v}} answers {ok = true, result = v}.
-- Any MessagePack client can talk to it (see tests/clients/objects_test.py for Python's
-- msgpack.Unpacker on a socket).
-- Environment: OBJECTS_CODEC=pickle or json makes it speak pickle (Python's pickle.dumps and
-- pickle.loads) or JSON lines instead (the script's object_codec); OBJECTS_EXACT=1 decodes
-- exactly (exact_objects), so that what is echoed comes back as it was sent: an empty list stays
-- a list, {1: "a"} a map, bytes stay bytes, integers up to 2^64-1 and ext values (timestamps
-- too) come back as they went (docs/api.md, "MessagePack types").
local M = { listen = "127.0.0.1:9094" }

function M.start()
  M.object_codec = os.getenv("OBJECTS_CODEC") or M.object_codec
  M.exact_objects = os.getenv("OBJECTS_EXACT") == "1"
end

local function sum(args)
  local total = 0
  for _, n in ipairs(args) do
    if type(n) ~= "number" then
      return nil, "args must be numbers"
    end
    total = total + n
  end
  return total
end

local ops = {
  add = sum,
  mul = function(args)
    local product = 1
    for _, n in ipairs(args) do
      if type(n) ~= "number" then
        return nil, "args must be numbers"
      end
      product = product * n
    end
    return product
  end,
  echo = function(args)
    return args[1]
  end,
}

local function answer(request)
  if type(request) ~= "table" then
    return { ok = false, error = "request must be a map" }
  end
  local op = ops[request.op]
  if not op then
    return { ok = false, error = "unknown op" }
  end
  if type(request.args) ~= "table" then
    return { ok = false, error = "args must be an array" }
  end
  local result, err = op(request.args)
  if err then
    return { ok = false, error = err }
  end
  return { ok = true, result = result }
end

function M.handle(conn)
  while true do
    local request, err = conn:receive_object()
    if err then
      return
    end
    conn:send_object(answer(request))
  end
end

return M
