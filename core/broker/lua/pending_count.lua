-- pending_count.lua: how many pending jobs ask for one of the given services, looking at no more
-- than ARGV[1] jobs (the console's queue depth). Uses the claim script's service cache.
-- ARGV[1] limit, ARGV[2..] services. Returns {count, looked_at_everything (1/0)}.
local limit = tonumber(ARGV[1])
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local total = redis.call('ZCARD', 'jobs:pending')
local n = math.min(total, limit)
local count, pos = 0, 0
while pos < n do
  local ids = redis.call('ZREVRANGE', 'jobs:pending', pos, math.min(pos + 999, n - 1))
  if #ids == 0 then break end
  local svcs = redis.call('HMGET', 'jobs:pending:service', unpack(ids))
  for i = 1, #ids do
    local s = svcs[i]
    if not s then s = redis.call('HGET', 'job:' .. ids[i], 'service_required') end
    if s and wanted[s] then count = count + 1 end
  end
  pos = pos + #ids
end
if total > limit then return { count, 0 } end
return { count, 1 }
