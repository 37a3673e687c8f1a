-- reap.lua: return jobs whose lease expired (their machine died or lost Redis) to jobs:pending,
-- at their original place and without using a retry: the machine failed, not the job. A job
-- whose machines died max_expiries times fails for good (it may be what kills them).
-- ARGV[1] max jobs per call, ARGV[2] max expiries, ARGV[3] now ISO,
-- ARGV[4] job_requeued message template prefix (the job id is spliced in), ARGV[5] failure text
-- Returns {requeued, failed}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', 'jobs:leases', '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local requeued, failed = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', 'jobs:leases', id)
  local key = 'job:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker_id', 'queue_score', 'lease_expiries', 'service_required', 'retry_count')
  if f[1] == 'assigned' or f[1] == 'in_progress' then
    local worker = f[2] or ''
    local expiries = (tonumber(f[4]) or 0) + 1
    if worker ~= '' then
      redis.call('HDEL', 'jobs:active:' .. worker, id)
    end
    if expiries >= tonumber(ARGV[2]) then
      redis.call('HSET', key, 'status', 'failed', 'failed_at', ARGV[3], 'lease_expiries', expiries,
        'error', ARGV[5], 'last_failed_worker', worker)
      redis.call('HSET', 'jobs:failed', id, cjson.encode({ error = ARGV[5], failed_at = ARGV[3], retry_count = tonumber(f[6]) or 0 }))
      redis.call('EXPIRE', 'jobs:failed', 604800)
      redis.call('PUBLISH', 'job_failed', cjson.encode({ job_id = id, worker_id = worker, status = 'failed', error = ARGV[5],
        failed_at = ARGV[3], retry_count = tonumber(f[6]) or 0, can_retry = false, timestamp = now_ms }))
      failed = failed + 1
    else
      local score = tonumber(f[3]) or (50 * 1e15 - math.floor(now_ms / 1000))
      redis.call('HSET', key, 'status', 'pending', 'worker_id', '', 'assigned_at', '', 'lease_expiries', expiries,
        'last_lost_worker', worker)
      redis.call('ZADD', 'jobs:pending', score, id)
      redis.call('PUBLISH', 'job_requeued', cjson.encode({ job_id = id, service_required = f[5] or '', reason = 'lease expired',
        lost_worker = worker, timestamp = now_ms }))
      requeued = requeued + 1
    end
  end
end
return { requeued, failed }
