-- start.lua: assigned -> in_progress, only if this worker still holds the job (a cancelled or
-- reassigned job is never resurrected).
-- ARGV[1] job id, ARGV[2] worker id, ARGV[3] started_at (ISO)
-- Returns 1 when started, 0 when the job is no longer this worker's.
local key = 'job:' .. ARGV[1]
local f = redis.call('HMGET', key, 'status', 'worker_id')
if f[1] ~= 'assigned' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', key, 'status', 'in_progress', 'started_at', ARGV[3])
return 1
