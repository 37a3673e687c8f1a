-- claim.lua: find the first pending job, in score order, that a worker slot can take, and claim it.
-- Same matching rules and side effects as the API's findMatchingJob (emp-reference §2.3-2.5), plus:
-- dangling ids are removed, cheap fields are read before the whole hash, and the scan is not
-- limited to the first 100 jobs: it covers `limit` jobs from the head, then a rotating window of
-- the tail, so no job starves behind unclaimable ones.
--
-- To keep a scan cheap when thousands of jobs for other services sit ahead, each pending job's
-- service_required is cached in the hash jobs:pending:service (ours, additive): one HMGET per
-- page of 1000 ids replaces one call per id. A job's service never changes, so the cache is never
-- stale; entries of jobs that left the queue by other paths are pruned by PruneServiceCache.
--
-- ARGV[1] capabilities JSON (never contains null)
-- ARGV[2] scan limit per window
-- ARGV[3] tail cursor (position in jobs:pending where the tail window starts)
-- ARGV[4] lease in ms (0: none). A leased job is re-queued by the reaper if the lease is not
--         renewed, so a job whose machine died runs again elsewhere.
-- ARGV[5] seconds during which a job does not go back to the worker whose attempt just failed
--         (other workers take it first; after that any worker may)
-- Returns {claimed JSON {"jobId","job"} or "", next tail cursor}.

local caps = cjson.decode(ARGV[1])
local limit = tonumber(ARGV[2]) or 10000
local cursor = tonumber(ARGV[3]) or 0
local lease_ms = tonumber(ARGV[4]) or 0
local avoid_s = tonumber(ARGV[5]) or 0
local worker_id = caps.worker_id
local pending = 'jobs:pending'
local svc_cache = 'jobs:pending:service'
local ANY = '\0' -- cached marker of a job without service_required: every worker may take it

local services = {}
if type(caps.job_service_required_map) == 'table' then
  for _, s in ipairs(caps.job_service_required_map) do services[s] = true end
end
local only_workflow = caps.workflow_id
if type(only_workflow) ~= 'string' or only_workflow == '' then only_workflow = nil end

local function is_array(t)
  return type(t) == 'table' and (next(t) == nil or t[1] ~= nil)
end

local function contains(arr, v)
  if type(arr) ~= 'table' then return false end
  for _, x in ipairs(arr) do
    if x == v then return true end
  end
  return false
end

local function dig(obj, path)
  local cur = obj
  for part in string.gmatch(path, '[^%.]+') do
    if type(cur) ~= 'table' then return nil end
    cur = cur[part]
  end
  return cur
end

-- satisfies: array ⊇, membership, number ≥, else equality; objects per sub-key.
local function satisfies(have, want)
  if type(want) == 'table' then
    if type(have) ~= 'table' then return false end
    if is_array(want) then
      for _, w in ipairs(want) do
        if not contains(have, w) then return false end
      end
      return true
    end
    for k, w in pairs(want) do
      if not satisfies(have[k], w) then return false end
    end
    return true
  end
  if type(have) == 'table' then return contains(have, want) end
  if type(want) == 'number' then
    local h = tonumber(have)
    return h ~= nil and h >= want
  end
  return have == want
end

local HARDWARE = { 'gpu_memory_gb', 'cpu_cores', 'ram_gb' }
local SPECIAL = { hardware = true, customer_isolation = true, models = true, service_type = true,
                  positive_requirements = true, negative_requirements = true }

local function hardware_ok(req)
  if type(req) ~= 'table' then return true end
  local hw = type(caps.hardware) == 'table' and caps.hardware or {}
  for _, k in ipairs(HARDWARE) do
    local want = req[k]
    if want ~= nil and want ~= 'all' then
      local w, h = tonumber(want), tonumber(hw[k])
      if w == nil or h == nil or h < w then return false end
    end
  end
  return true
end

local function matches(job, req)
  local pos = req
  if type(req.positive_requirements) == 'table' then pos = req.positive_requirements end

  if not hardware_ok(pos.hardware) then return false end

  if pos.customer_isolation == 'strict' then
    local ca = caps.customer_access
    if type(ca) ~= 'table' or ca.isolation ~= 'strict' then return false end
    local cid = job.customer_id
    if cid ~= nil then
      if type(ca.allowed_customers) == 'table' and not contains(ca.allowed_customers, cid) then return false end
      if type(ca.denied_customers) == 'table' and contains(ca.denied_customers, cid) then return false end
    end
  end

  local models = pos.models
  if models ~= nil and models ~= 'all' then
    local have = type(caps.models) == 'table' and caps.models[job.service_required or ''] or nil
    if type(models) == 'table' then
      for _, m in ipairs(models) do
        if not contains(have, m) then return false end
      end
    elseif not contains(have, models) then
      return false
    end
  end

  for k, want in pairs(pos) do
    if not SPECIAL[k] and not satisfies(dig(caps, k), want) then return false end
  end

  local neg = req.negative_requirements
  if type(neg) == 'table' then
    for k, want in pairs(neg) do
      if k == 'hardware' and type(want) == 'table' then
        local hw = type(caps.hardware) == 'table' and caps.hardware or {}
        for hk, hv in pairs(want) do
          if hw[hk] ~= nil and satisfies(hw[hk], hv) then return false end
        end
      else
        local have = dig(caps, k)
        if have ~= nil and satisfies(have, want) then return false end
      end
    end
  end
  return true
end

-- try returns the pre-claim job table if the job matched and this call removed it from the
-- queue, and whether the id was dangling (and removed).
local job_score = nil -- the claimed job's score, kept so the reaper can put it back in place

local function try(id)
  local key = 'job:' .. id
  local f = redis.call('HMGET', key, 'id', 'service_required', 'workflow_id')
  if not f[1] then
    if redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', pending, id)
      redis.call('HDEL', svc_cache, id)
      return nil, true
    end
    return nil, false
  end
  if f[2] and not services[f[2]] then return nil, false end
  if only_workflow and f[3] ~= only_workflow then return nil, false end

  local raw = redis.call('HGETALL', key)
  local job = {}
  for i = 1, #raw, 2 do job[raw[i]] = raw[i + 1] end
  local req = {}
  if job.requirements and job.requirements ~= '' then
    local ok, decoded = pcall(cjson.decode, job.requirements)
    if ok and type(decoded) == 'table' then req = decoded end
  end
  if not matches(job, req) then return nil, false end
  if job.retry_after_unix or (avoid_s > 0 and job.last_failed_worker == worker_id) then
    local now_s = tonumber(redis.call('TIME')[1])
    if now_s < (tonumber(job.retry_after_unix) or 0) then return nil, false end -- backoff between attempts
    if avoid_s > 0 and job.last_failed_worker == worker_id and now_s - (tonumber(job.failed_at_unix) or 0) < avoid_s then
      return nil, false -- let another worker try first
    end
  end
  local score = redis.call('ZSCORE', pending, id)
  if redis.call('ZREM', pending, id) == 0 then return nil, false end
  job_score = score
  return job, false
end

-- scan looks at up to `count` ids from position `from`, in pages that start small (the head
-- of the queue usually matches) and grow to 1000.
local function scan(from, count)
  local page = 16
  local pos, seen = from, 0
  while seen < count do
    local n = math.min(page, count - seen)
    page = math.min(page * 4, 1000)
    local ids = redis.call('ZREVRANGE', pending, pos, pos + n - 1)
    if #ids == 0 then return nil end
    local svcs = redis.call('HMGET', svc_cache, unpack(ids))
    local learned = {}
    local removed = 0
    local found_id, found_job
    for i = 1, #ids do
      local id, svc = ids[i], svcs[i]
      if not svc then
        local f = redis.call('HMGET', 'job:' .. id, 'id', 'service_required')
        if f[1] then
          svc = f[2] or ANY
          learned[#learned + 1] = id
          learned[#learned + 1] = svc
        elseif redis.call('EXISTS', 'job:' .. id) == 0 then
          redis.call('ZREM', pending, id)
          removed = removed + 1
        end
      end
      if svc and (svc == ANY or services[svc]) then
        local job, dangling = try(id)
        if job then
          found_id, found_job = id, job
          break
        end
        if dangling then removed = removed + 1 end
      end
    end
    if #learned > 0 then redis.call('HSET', svc_cache, unpack(learned)) end
    if found_id then
      redis.call('HDEL', svc_cache, found_id)
      return found_id, found_job
    end
    seen = seen + #ids
    pos = pos + #ids - removed
    if #ids < n then return nil end
  end
  return nil
end

local id, job = scan(0, limit)
local next_cursor = 0
if not id then
  local total = redis.call('ZCARD', pending)
  if total > limit then
    if cursor < limit or cursor >= total then cursor = limit end
    id, job = scan(cursor, limit)
    next_cursor = cursor + limit
    if next_cursor >= total then next_cursor = limit end
  end
end
if not id then return { '', next_cursor } end

local t = redis.call('TIME')
local micros = tonumber(t[2])
local assigned_at = t[1] .. '.' .. string.format('%06d', micros)
local ts = tonumber(t[1]) * 1000 + math.floor(micros / 1000)

redis.call('HSET', 'job:' .. id, 'status', 'assigned', 'worker_id', worker_id, 'assigned_at', assigned_at,
  'queue_score', job_score or '')
if lease_ms > 0 then
  redis.call('ZADD', 'jobs:leases', ts + lease_ms, id)
end
redis.call('HSET', 'jobs:active:' .. worker_id, id, cjson.encode(job))
local old_status = redis.call('HGET', 'worker:' .. worker_id, 'status') or 'idle'
redis.call('HSET', 'worker:' .. worker_id, 'status', 'busy', 'current_job_id', id, 'last_status_change', assigned_at)

redis.call('PUBLISH', 'job_claimed', cjson.encode({
  job_id = id, worker_id = worker_id, status = 'claimed', message = 'Job claimed by worker',
  claimed_at = assigned_at, timestamp = ts, service_required = job.service_required,
  customer_id = job.customer_id, workflow_id = job.workflow_id, step_number = job.step_number,
  current_step = job.current_step, total_steps = job.total_steps,
}))
redis.call('PUBLISH', 'update_job_progress', cjson.encode({
  job_id = id, worker_id = worker_id, progress = 0, timestamp = ts,
}))
redis.call('PUBLISH', 'worker_status', cjson.encode({
  worker_id = worker_id, old_status = old_status, new_status = 'busy', current_job_id = id, timestamp = ts,
}))
return { cjson.encode({ jobId = id, job = job }), next_cursor }
