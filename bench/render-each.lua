-- wrk: every request a different address (an extra query parameter the
-- pages ignore), so each page is rendered rather than served again from the
-- server's page cache: wrk -s bench/render-each.lua …
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  sent = 0
end

function request()
  sent = sent + 1
  local separator = wrk.path:find("?", 1, true) and "&" or "?"
  return wrk.format(nil, wrk.path .. separator .. "render=" .. thread_id .. "-" .. sent)
end
