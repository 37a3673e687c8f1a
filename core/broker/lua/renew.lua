-- renew.lua: extend the leases of jobs a machine is running.
-- ARGV[1] lease in ms, then pairs of (job id, worker id). A lease is renewed only while the job
-- is still that worker's: a job the reaper gave away is not taken back.
-- Returns the number of leases renewed.
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV, 2 do
  local id, worker = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', 'job:' .. id, 'status', 'worker_id')
  if f[2] == worker and (f[1] == 'assigned' or f[1] == 'in_progress') then
    redis.call('ZADD', 'jobs:leases', expiry, id)
    n = n + 1
  end
end
return n
