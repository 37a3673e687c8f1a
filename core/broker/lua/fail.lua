-- fail.lua: a failed attempt, in one atomic step (PROTOCOL §3). Either back to jobs:pending
-- (retry) or permanently failed.
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] failed_at (ISO), ARGV[4] error,
-- ARGV[5] "retry" or "fail", ARGV[6] new retry_count, ARGV[7] pending score (retry),
-- ARGV[8] jobs:failed value (fail), ARGV[9] job_failed message (fail),
-- ARGV[10] job_requeued message (retry), ARGV[11] worker_status message,
-- ARGV[12] seconds before the retry may be claimed (the backoff between attempts),
-- ARGV[13..] attestation key, value, key, value, … (worker:failure:…, no TTL, as emp's)
-- Returns 1 when written, 0 when the job was no longer this worker's.
local id, worker = ARGV[1], ARGV[2]
local key = 'job:' .. id
local f = redis.call('HMGET', key, 'status', 'worker_id')
local owned = f[2] == worker and (f[1] == 'in_progress' or f[1] == 'assigned')
if owned then
  for i = 13, #ARGV - 1, 2 do
    redis.call('SET', ARGV[i], ARGV[i + 1])
  end
  if ARGV[5] == 'retry' then
    redis.call('HSET', key, 'status', 'pending', 'worker_id', '', 'assigned_at', '',
      'retry_count', ARGV[6], 'last_failed_worker', worker, 'failed_at', ARGV[3], 'error', ARGV[4],
      'failed_at_unix', redis.call('TIME')[1],
      'retry_after_unix', tonumber(redis.call('TIME')[1]) + (tonumber(ARGV[12]) or 0))
    redis.call('ZADD', 'jobs:pending', ARGV[7], id)
    redis.call('PUBLISH', 'job_requeued', ARGV[10])
  else
    redis.call('HSET', key, 'status', 'failed', 'failed_at', ARGV[3], 'retry_count', ARGV[6],
      'last_failed_worker', worker, 'error', ARGV[4])
    redis.call('HSET', 'jobs:failed', id, ARGV[8])
    redis.call('EXPIRE', 'jobs:failed', 604800)
    redis.call('PUBLISH', 'job_failed', ARGV[9])
  end
end
redis.call('HDEL', 'jobs:active:' .. worker, id)
redis.call('ZREM', 'jobs:leases', id)
redis.call('HSET', 'worker:' .. worker, 'status', 'idle', 'current_job_id', '', 'last_status_change', ARGV[3])
redis.call('PUBLISH', 'worker_status', ARGV[11])
if owned then return 1 end
return 0
