-- progress.lua: record and publish one progress report of a running job.
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] progress (0-100), ARGV[4] message,
-- ARGV[5] updated_at (ISO), ARGV[6] update_job_progress message (JSON)
-- Returns 1 when written, 0 when the job is no longer this worker's.
local f = redis.call('HMGET', 'job:' .. ARGV[1], 'status', 'worker_id')
if f[1] ~= 'in_progress' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', 'job:' .. ARGV[1] .. ':progress',
  'progress', ARGV[3], 'status', 'in_progress', 'message', ARGV[4], 'updated_at', ARGV[5])
redis.call('PUBLISH', 'update_job_progress', ARGV[6])
return 1
