-- release.lua: give a job back to jobs:pending without using up a retry, because the machine
-- (not the job) stopped it: a drain that ran out of time, a shutdown.
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] now (ISO), ARGV[4] pending score,
-- ARGV[5] job_requeued message, ARGV[6] worker_status message
-- Returns 1 when released, 0 when the job was no longer this worker's.
local id, worker = ARGV[1], ARGV[2]
local key = 'job:' .. id
local f = redis.call('HMGET', key, 'status', 'worker_id')
local owned = f[2] == worker and (f[1] == 'in_progress' or f[1] == 'assigned')
if owned then
  redis.call('HSET', key, 'status', 'pending', 'worker_id', '', 'assigned_at', '')
  redis.call('ZADD', 'jobs:pending', ARGV[4], id)
  redis.call('PUBLISH', 'job_requeued', ARGV[5])
end
redis.call('HDEL', 'jobs:active:' .. worker, id)
redis.call('ZREM', 'jobs:leases', id)
redis.call('HSET', 'worker:' .. worker, 'status', 'idle', 'current_job_id', '', 'last_status_change', ARGV[3])
redis.call('PUBLISH', 'worker_status', ARGV[6])
if owned then return 1 end
return 0
