-- relay.lua: turns one job_submitted or job_requeued message into one wake token (ours,
-- additive). Only the machines holding a relay lease (broker.relayLeases) listen to those
-- channels and run this, so that a job wakes one idle slot of the fleet instead of every one.
--
-- ARGV[1] the message as published (identical copies heard by two relays are relayed once)
-- ARGV[2] the job id ('' when the message had none)
-- ARGV[3] the job's service ('' when the message did not say: the token goes to every service);
--         the job's requirements.pool, read from its hash, narrows the token to that pool
-- ARGV[4] tokens kept per list at most; ARGV[5] seconds a list lives after its last token
-- Returns 1 when a token was pushed, 0 when another relay already relayed this message.
local seen = 'jobs:relayed:' .. redis.sha1hex(ARGV[1])
if not redis.call('SET', seen, '1', 'NX', 'EX', 60) then return 0 end

-- The job was written again: every capability set forgets what it knew about it (claim.lua's
-- memory of non-matches and the service cache), so no machine needs to hear the message.
local id = ARGV[2]
if id ~= '' then
  for _, fp in ipairs(redis.call('SMEMBERS', 'jobs:nomatch:index')) do
    local memo = 'jobs:nomatch:' .. fp
    if redis.call('SREM', memo, id) == 0 and redis.call('EXISTS', memo) == 0 then
      redis.call('SREM', 'jobs:nomatch:index', fp)
    end
  end
  redis.call('HDEL', 'jobs:pending:service', id)
end

-- A job whose requirements name a pool (a hard match) wakes only a machine of that pool: its
-- token goes to jobs:wakeup:{service}@{pool}.
local pool = ''
if id ~= '' then
  local raw = redis.pcall('HGET', 'job:' .. id, 'requirements')
  if type(raw) == 'string' and #raw <= 65536 and string.find(raw, '"pool"', 1, true) then
    local ok, req = pcall(cjson.decode, raw)
    if ok and type(req) == 'table' then
      local pos = type(req.positive_requirements) == 'table' and req.positive_requirements or req
      if type(pos.pool) == 'string' then pool = pos.pool end
    end
  end
end

local list = 'jobs:wakeup'
if ARGV[3] ~= '' then list = list .. ':' .. ARGV[3] end
if pool ~= '' then list = list .. '@' .. pool end
redis.call('RPUSH', list, id)
redis.call('LTRIM', list, -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', list, tonumber(ARGV[5]))
return 1
