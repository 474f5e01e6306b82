-- pickle_dict.lua: the socket tutorial's pickle server. Each client gets the pickled dict
-- {1: "hi", 2: "there"} and the connection closes; in Python, pickle.loads(s.recv(1024)) prints
-- {1: 'hi', 2: 'there'} (tests/clients/pickle_tutorial_test.py). luasock.map makes {[1], [2]} a
-- dict: unmarked, a table of keys 1..n would go as the list ['hi', 'there'].
local luasock = require "luasock"

local M = { listen = "127.0.0.1:9097", object_codec = "pickle" }

function M.handle(conn)
  conn:send_object(luasock.map({ [1] = "hi", [2] = "there" }))
  conn:close()
end

return M
