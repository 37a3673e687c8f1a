-- complete.lua: in_progress -> completed, in one atomic step (PROTOCOL §3).
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] completed_at (ISO),
-- ARGV[4] jobs:completed value, ARGV[5] complete_job message, ARGV[6] worker_status message,
-- ARGV[7] completion attestation key (worker:completion:…), ARGV[8] its value (no TTL, as emp's)
-- Returns 1 when completed, 0 when the job was no longer this worker's (cancelled or
-- reassigned): then only this worker's own records are cleaned up.
local id, worker = ARGV[1], ARGV[2]
local key = 'job:' .. id
local f = redis.call('HMGET', key, 'status', 'worker_id')
local owned = f[2] == worker and (f[1] == 'in_progress' or f[1] == 'assigned')
if owned then
  redis.call('HSET', key, 'status', 'completed', 'completed_at', ARGV[3])
  redis.call('HSET', 'jobs:completed', id, ARGV[4])
  redis.call('EXPIRE', 'jobs:completed', 86400)
  redis.call('SET', ARGV[7], ARGV[8])
  redis.call('PUBLISH', 'complete_job', ARGV[5])
end
redis.call('HDEL', 'jobs:active:' .. worker, id)
redis.call('ZREM', 'jobs:leases', id)
redis.call('HSET', 'worker:' .. worker, 'status', 'idle', 'current_job_id', '', 'last_status_change', ARGV[3])
redis.call('PUBLISH', 'worker_status', ARGV[6])
if owned then return 1 end
return 0
