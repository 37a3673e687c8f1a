-- complete.lua: in_progress -> completed, in one atomic step (PROTOCOL §3).
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] completed_at (ISO),
-- ARGV[4] jobs:completed value, ARGV[5] complete_job message, ARGV[6] worker_status message,
-- ARGV[7] completion attestation key (worker:completion:…), ARGV[8] its value (no TTL, as emp's)
-- ARGV[9] now, epoch ms; ARGV[10] the job's duration statistics field (broker.StatsKey);
-- ARGV[11] the most fields jobs:stats:duration holds; ARGV[12] its TTL in seconds.
--   jobs:stats:duration (ours, additive): field -> "ewma_ms,count", the duration from
--   assigned_at (set by the claim) to now, EWMA weight 0.2. A new field past the cap replaces a
--   random one; the hash expires ARGV[12] seconds after the last write.
-- Returns 1 when completed, 0 when the job was no longer this worker's (cancelled or
-- reassigned): then only this worker's own records are cleaned up.
local id, worker = ARGV[1], ARGV[2]
local key = 'job:' .. id
local f = redis.call('HMGET', key, 'status', 'worker_id', 'assigned_at')
local owned = f[2] == worker and (f[1] == 'in_progress' or f[1] == 'assigned')
if owned then
  redis.call('HSET', key, 'status', 'completed', 'completed_at', ARGV[3])
  redis.call('HSET', 'jobs:completed', id, ARGV[4])
  redis.call('EXPIRE', 'jobs:completed', 86400)
  redis.call('SET', ARGV[7], ARGV[8])
  redis.call('PUBLISH', 'complete_job', ARGV[5])
  local assigned, now_ms, field = tonumber(f[3]), tonumber(ARGV[9]), ARGV[10]
  if assigned and now_ms and field then
    local stats = 'jobs:stats:duration'
    local ms = math.max(now_ms - math.floor(assigned * 1000), 0)
    local old = redis.call('HGET', stats, field)
    local ewma, count = ms, 1
    if old then
      local e, c = string.match(old, '^([^,]+),(%d+)$')
      if tonumber(e) then ewma, count = 0.8 * tonumber(e) + 0.2 * ms, tonumber(c) + 1 end
    elseif redis.call('HLEN', stats) >= (tonumber(ARGV[11]) or 1024) then
      local victim = redis.call('HRANDFIELD', stats)
      if victim then redis.call('HDEL', stats, victim) end
    end
    redis.call('HSET', stats, field, string.format('%d,%d', math.floor(ewma + 0.5), count))
    redis.call('EXPIRE', stats, tonumber(ARGV[12]) or 604800)
  end
end
redis.call('HDEL', 'jobs:active:' .. worker, id)
redis.call('ZREM', 'jobs:leases', id)
redis.call('HSET', 'worker:' .. worker, 'status', 'idle', 'current_job_id', '', 'last_status_change', ARGV[3])
redis.call('PUBLISH', 'worker_status', ARGV[6])
if owned then return 1 end
return 0
