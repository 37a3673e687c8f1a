-- relay.lua: turns one job_submitted or job_requeued message into one wake token (ours,
-- additive). Only the machines holding a relay lease (broker.relayLeases) listen to those
-- channels and run this, so that a job wakes one idle slot of the fleet instead of every one.
--
-- ARGV[1] the message as published (identical copies heard by two relays are relayed once)
-- ARGV[2] the job id ('' when the message had none)
-- ARGV[3] the job's service ('' when the message did not say: the token goes to every service)
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

local list = 'jobs:wakeup'
if ARGV[3] ~= '' then list = list .. ':' .. ARGV[3] end
redis.call('RPUSH', list, id)
redis.call('LTRIM', list, -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', list, tonumber(ARGV[5]))
return 1
