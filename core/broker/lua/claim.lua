-- claim.lua: find the first pending job, in score order, that a worker slot can take, and claim it.
-- Same matching rules and side effects as the API's findMatchingJob (emp-reference §2.3-2.5), plus:
--
-- * Bounded work. One call spends at most a work budget (ARGV[2], WORKER_CLAIM_SCAN_LIMIT): an id
--   looked at costs COST_ID, one not yet remembered COST_SERVICE more, reading a job COST_READ,
--   decoding its requirements COST_DECODE more (and 1 per KiB). When the budget runs out the call
--   returns the position it reached and the next call resumes there, so a job deep in the queue
--   is reached within a few calls and no call holds Redis for long, whatever is queued. A claim,
--   or reaching the end of the queue, returns position 0: the next call starts at the head
--   again, in priority order.
-- * Cheap skipping. The jobs a capability set cannot take (another service, another workflow,
--   requirements it does not meet) are remembered in the set jobs:nomatch:{fingerprint} (ours,
--   additive), which expires MEMO_TTL seconds after it was started: a page of ids costs one
--   ZREVRANGE and one SMISMEMBER once they are known. Scores are never read while scanning:
--   formatting them costs Redis more than the rest of the scan. A job that is written to
--   jobs:pending again (the API resubmits it: job_submitted; a worker re-queues it:
--   job_requeued) is forgotten by the next claim of every machine that hears it (ARGV[9..]).
--   The fingerprint (broker.Fingerprint) covers every capability except worker_id and
--   machine_id, so a machine's slots of one kind, and identical machines, share one memory; a job
--   whose requirements name those two is never remembered. Temporary non-matches (a retry's
--   backoff, a job avoiding the worker that just failed it) are never remembered either.
--   Each pending job's service_required is also cached, for every capability set, in the hash
--   jobs:pending:service (ours, additive): one HMGET per page of new ids instead of one call per
--   id. Entries of jobs that left the queue by other paths are pruned by PruneServiceCache.
-- * Bad entries never stop claiming. An id whose job:{id} is not a hash is taken out of
--   jobs:pending and recorded in jobs:quarantine (ours, additive: id -> {reason, quarantined_at,
--   job_failed}). A job hash without its id, or with requirements the claim cannot read (not
--   JSON, not an object, larger than 64 KiB, nested deeper than 32 levels, or failing to
--   evaluate) fails closed: it fails the way the API fails a job (status failed with the reason
--   in `error`, jobs:failed, job_failed with can_retry false) and is recorded in jobs:quarantine.
-- * Dangling ids (hash gone) are removed.
--
-- ARGV[1] capabilities JSON (never contains null)
-- ARGV[2] work budget of this call
-- ARGV[3] position in jobs:pending where this call starts (0: the head)
-- ARGV[4] lease in ms (0: none). A leased job is re-queued by the reaper if the lease is not
--         renewed, so a job whose machine died runs again elsewhere.
-- ARGV[5] seconds during which a job does not go back to the worker whose attempt just failed
--         (other workers take it first; after that any worker may)
-- ARGV[6] capability fingerprint (names the memory of non-matches)
-- ARGV[7] now, ISO (failed_at of a job failed closed); ARGV[8] now, epoch ms
-- ARGV[9] routing JSON ("{}": none; see Routing below and broker.Routing)
-- ARGV[10] "1": forget every non-match of this capability set (messages may have been missed)
-- ARGV[11..] ids written to jobs:pending again (job_submitted, job_requeued): forget their
--         non-matches and cached services
-- Returns {claimed JSON {"jobId","job"} or "", position where the next call starts}.
--
-- Routing (ours; each rule is off unless ARGV[9] sets it, and none changes what may match):
-- * Pool fit. With pool_min_ms/pool_max_ms, a job without requirements.pool whose expected
--   duration (the EWMA in jobs:stats:duration for "service|model", written by complete.lua)
--   lies outside [pool_min_ms, pool_max_ms) does not fit; it is passed over, never remembered.
--   Once it has waited aging_ms since created_at, the call takes it when it finds no job that
--   fits (of such aged jobs the one whose expected duration lies nearest the range, the first
--   of equals, when the scan ends or the budget runs out), so a fast pool lends itself to
--   standard jobs before heavy ones; never when lend is false (the machine keeps its last
--   idle slots for its own pool: MACHINE_POOL_RESERVE); once it has
--   waited starve_ms (10 × aging_ms) it is taken in plain priority order. So a pool serves
--   its own jobs first, lends itself to others' backlog when it has nothing of its own, and no
--   job starves when its pool is missing, empty or busy. A job of unknown duration fits every
--   pool.
-- * Affinity. With k > 1, among the first k eligible jobs the call takes the first whose models
--   are all in cached[service] (on the machine's disk or in VRAM), else the first whose service is
--   in warm, else the first. With leave, a job whose models are not all cached is never taken that
--   way: the call takes the first candidate that needs no model, or none (the job is left to a
--   machine that has its models). The jobs passed over are stamped in their hash the first time
--   (affinity_passed_ms, ours, additive); once a job has been passed over for window_ms it is
--   due: it is taken if it comes first, and otherwise only jobs before it are chosen from (or it,
--   when all of those are left). So a job is delayed by affinity for one window at most, however
--   long it waited before; priority order is bent only within that window. A pool lending itself
--   (above) takes an aged job whose models are cached before one nearer its range.

local caps = cjson.decode(ARGV[1])
local budget = math.max(tonumber(ARGV[2]) or 500, 1)
local start = math.max(math.floor(tonumber(ARGV[3]) or 0), 0)
local lease_ms = tonumber(ARGV[4]) or 0
local avoid_s = tonumber(ARGV[5]) or 0
local memo = 'jobs:nomatch:' .. (ARGV[6] or '')
local memo_index = 'jobs:nomatch:index'
local now_iso, now_ms = ARGV[7] or '', tonumber(ARGV[8]) or 0
local worker_id = caps.worker_id
local pending = 'jobs:pending'
local svc_cache = 'jobs:pending:service'
local quarantine_key = 'jobs:quarantine'
local routing = cjson.decode(ARGV[9] or '{}')
local ANY = '\0' -- cached marker of a job without service_required: every worker may take it

local COST_ID, COST_SERVICE, COST_READ, COST_DECODE = 1, 1, 5, 8
local MEMO_TTL = 60             -- seconds a memory of non-matches lives
local KEEP_FAILED = 604800      -- jobs:failed and jobs:quarantine expire a week after the last write
local MAX_REQUIREMENTS = 65536  -- bytes
local MAX_DEPTH = 32
local PERSONAL = { worker_id = true, machine_id = true } -- what broker.Fingerprint leaves out

local services = {}
if type(caps.job_service_required_map) == 'table' then
  for _, s in ipairs(caps.job_service_required_map) do services[s] = true end
end
local only_workflow = caps.workflow_id
if type(only_workflow) ~= 'string' or only_workflow == '' then only_workflow = nil end

local spent = 0       -- work units used by this call
local personal = false -- the job being matched read worker_id or machine_id
local redis_now = nil

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
  local cur, first = obj, true
  for part in string.gmatch(path, '[^%.]+') do
    if first and PERSONAL[part] then personal = true end
    first = false
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

local function too_deep(v, depth)
  if type(v) ~= 'table' then return false end
  if depth > MAX_DEPTH then return true end
  for _, x in pairs(v) do
    if too_deep(x, depth + 1) then return true end
  end
  return false
end

-- requirements returns the decoded requirements ({} for none), or nil and what is wrong.
local function requirements(raw)
  if not raw or raw == '' or raw == 'null' then return {} end
  if #raw > MAX_REQUIREMENTS then
    return nil, 'its requirements are ' .. #raw .. ' bytes, more than the ' .. MAX_REQUIREMENTS .. ' a job may carry'
  end
  spent = spent + COST_DECODE + math.floor(#raw / 1024)
  local ok, req, err = pcall(cjson.decode, raw) -- Redis's cjson raises; the embedded broker's returns nil, err
  if not ok or (req == nil and err) then
    return nil, 'its requirements are not valid JSON (' .. tostring(ok and err or req) .. ')'
  end
  if req == nil or req == cjson.null then return {} end
  if type(req) ~= 'table' then return nil, 'its requirements are a JSON ' .. type(req) .. ', not an object' end
  if next(req) ~= nil and req[1] ~= nil then return nil, 'its requirements are a JSON array, not an object' end
  if too_deep(req, 1) then return nil, 'its requirements nest deeper than ' .. MAX_DEPTH .. ' levels' end
  return req
end

local function quarantine(id, reason, failed)
  redis.call('ZREM', pending, id)
  redis.call('HDEL', svc_cache, id)
  redis.call('HSET', quarantine_key, id, cjson.encode({ reason = reason, quarantined_at = now_iso, job_failed = failed }))
  redis.call('EXPIRE', quarantine_key, KEEP_FAILED)
end

-- fail_closed fails a job hash the claim cannot read, as the API fails a job, so that its
-- submitter learns why; no worker runs it.
local ADVICE_REQUIREMENTS = 'the machine cannot tell which workers may run it, so submit it again with requirements as a JSON object (or none)'
local ADVICE_HASH = 'the job hash is damaged, so submit the job again'
local function fail_closed(id, what, advice)
  local key = 'job:' .. id
  local reason = 'job ' .. id .. ' was not run: ' .. what .. '; ' .. (advice or ADVICE_REQUIREMENTS)
  local f = redis.call('HMGET', key, 'retry_count', 'workflow_id', 'current_step', 'total_steps')
  local retries = tonumber(f[1]) or 0
  redis.call('HSET', key, 'status', 'failed', 'failed_at', now_iso, 'error', reason)
  redis.call('HSET', 'jobs:failed', id, cjson.encode({ error = reason, failed_at = now_iso, retry_count = retries }))
  redis.call('EXPIRE', 'jobs:failed', KEEP_FAILED)
  local msg = { job_id = id, status = 'failed', error = reason, failed_at = now_iso, retry_count = retries,
                can_retry = false, timestamp = now_ms }
  if f[2] and f[2] ~= '' then msg.workflow_id = f[2] end
  msg.current_step, msg.total_steps = tonumber(f[3]), tonumber(f[4])
  redis.call('PUBLISH', 'job_failed', cjson.encode(msg))
  quarantine(id, reason, true)
end

local function opt(v) -- HMGET gives false for an absent field; the matching rules expect nil
  if v then return v end
  return nil
end

local PASSED = 'affinity_passed_ms' -- ours, additive: when a claim first passed the job over for affinity
-- look reads one job and decides. It returns 'claim', 'other' (another service: cache it),
-- 'nomatch' (remember it), 'wait' (not now: do not remember) or 'gone' (no longer pending).
local FIELDS = { 'id', 'service_required', 'workflow_id', 'requirements', 'customer_id',
                 'retry_after_unix', 'last_failed_worker', 'failed_at_unix', 'created_at', PASSED }
local function look(id)
  spent = spent + COST_READ
  local key = 'job:' .. id
  local f = redis.pcall('HMGET', key, unpack(FIELDS))
  if f.err then
    local t = redis.call('TYPE', key)
    t = type(t) == 'table' and t.ok or t
    quarantine(id, 'job:' .. id .. ' is a ' .. tostring(t) .. ', not a job hash (' .. tostring(f.err) ..
      '); it was taken out of jobs:pending so that other jobs keep flowing', false)
    return 'gone'
  end
  if f[1] ~= id then
    if not f[1] and redis.call('EXISTS', key) == 0 then -- dangling: the job is gone
      redis.call('ZREM', pending, id)
      redis.call('HDEL', svc_cache, id)
      return 'gone'
    end
    if f[1] then
      fail_closed(id, 'its hash names another id (' .. f[1] .. ')', ADVICE_HASH)
    else
      fail_closed(id, 'its hash has no id field', ADVICE_HASH)
    end
    return 'gone'
  end
  local svc = opt(f[2])
  if svc and not services[svc] then return 'other', svc end
  if only_workflow and f[3] ~= only_workflow then return 'nomatch', svc end

  if f[6] or (avoid_s > 0 and f[7] == worker_id) then
    redis_now = redis_now or tonumber(redis.call('TIME')[1])
    if redis_now < (tonumber(f[6]) or 0) then return 'wait', svc end -- backoff between attempts
    if avoid_s > 0 and f[7] == worker_id and redis_now - (tonumber(f[8]) or 0) < avoid_s then
      return 'wait', svc -- let another worker try first
    end
  end

  local req, why = requirements(opt(f[4]))
  if not req then
    fail_closed(id, why)
    return 'gone'
  end
  personal = false
  local ok, matched = pcall(matches, { customer_id = opt(f[5]), service_required = svc }, req)
  if not ok then
    fail_closed(id, 'its requirements could not be evaluated (' .. tostring(matched) .. ')')
    return 'gone'
  end
  if matched then return 'claim', svc, { req = req, created = opt(f[9]), passed = tonumber(f[10]) } end
  if personal then return 'wait', svc end
  return 'nomatch', svc
end

-- What a call learned, written once at the end.
local learned, forgot = {}, {}
local function remember()
  if #learned > 0 then redis.call('HSET', svc_cache, unpack(learned)) end
  if #forgot > 0 then
    redis.call('SADD', memo, unpack(forgot))
    if redis.call('TTL', memo) < 0 then
      redis.call('EXPIRE', memo, MEMO_TTL)
      redis.call('SADD', memo_index, ARGV[6] or '') -- relay.lua forgets re-written jobs in every memory
      redis.call('EXPIRE', memo_index, 3600)
    end
  end
end

-- Routing (see the header). routed() says what to do with a job the slot may take:
-- 'take' (claim it now), 'keep' (a candidate: keep looking) or 'skip' (passed over for now).
local STATS = 'jobs:stats:duration' -- written by complete.lua
local pool_min, pool_max = tonumber(routing.pool_min_ms), tonumber(routing.pool_max_ms)
local pooled = (pool_min or 0) > 0 or (pool_max or 0) > 0
local aging_ms = tonumber(routing.aging_ms) or 30000
local starve_ms = tonumber(routing.starve_ms) or 10 * aging_ms
local fallback, fallback_gap, fallback_hit = nil, nil, false -- the aged job that does not fit the pool,
                                                            -- a model hit first, then nearest its range
local affinity_k = math.floor(tonumber(routing.k) or 1)
local window_ms = tonumber(routing.window_ms) or 0
local leave_misses = routing.leave == true
local cached_models = type(routing.cached) == 'table' and routing.cached or caps.models
local warm = {}
if type(routing.warm) == 'table' then
  for _, w in ipairs(routing.warm) do warm[w] = true end
end
local any_cached, any_warm = type(cached_models) == 'table' and next(cached_models) ~= nil, next(warm) ~= nil
if not any_cached and not any_warm then affinity_k = 1 end -- nothing to prefer: strict order
local routed_any = pooled or affinity_k > 1

-- iso_ms reads created_at (ISO, as the API writes it, or epoch ms) as epoch ms; nil if neither.
local function iso_ms(v)
  local n = tonumber(v)
  if n then return n end
  local y, mo, d, h, mi, sec = string.match(v or '', '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d%.]+)')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end -- days from the civil date (H. Hinnant's algorithm)
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + math.floor((tonumber(sec) or 0) * 1000)
end

-- job_models lists the models a job's requirements name ({} for none).
local function job_models(req)
  local pos = type(req.positive_requirements) == 'table' and req.positive_requirements or req
  local m = pos.models
  if type(m) == 'string' and m ~= 'all' then return { m } end
  if type(m) == 'table' then return m end
  return {}
end

-- stats_key names a job's duration statistics: "service|first model" (the model is "" for none).
local function stats_key(svc, req)
  local m = job_models(req)[1]
  return (svc or '') .. '|' .. (type(m) == 'string' and m or '')
end

local expected = {} -- stats key -> expected ms (false: unknown), read once per call
local function expected_ms(key)
  if expected[key] == nil then
    spent = spent + COST_ID
    local v = redis.call('HGET', STATS, key)
    expected[key] = v and tonumber(string.match(v, '^[^,]+')) or false
  end
  return expected[key]
end

local candidates = {} -- the eligible jobs this call chooses among, in priority order
local hit = nil       -- the index in candidates of the first whose models are all cached
local due = nil       -- the job after the candidates whose window is spent
local function model_hit(c)
  local models = job_models(c.req)
  if #models == 0 then return false end
  local have = type(cached_models) == 'table' and cached_models[c.svc or ''] or nil
  for _, m in ipairs(models) do
    if not contains(have, m) then return false end
  end
  return true
end

local function routed(id, svc, info)
  local age = now_ms - (iso_ms(info.created) or 0) -- unreadable created_at: old, strict order
  if pooled and age < starve_ms then
    local req = info.req
    local target = type(req.positive_requirements) == 'table' and req.positive_requirements or req
    if target.pool == nil then
      local ms = expected_ms(stats_key(svc, req))
      if ms and (ms < (pool_min or 0) or ((pool_max or 0) > 0 and ms >= pool_max)) then
        local gap = ms < (pool_min or 0) and pool_min - ms or ms - pool_max
        if age >= aging_ms and routing.lend ~= false then
          local h = affinity_k > 1 and model_hit({ svc = svc, req = req })
          if not fallback or (h and not fallback_hit) or (h == fallback_hit and gap < fallback_gap) then
            fallback, fallback_gap, fallback_hit = id, gap, h
          end
        end
        return 'skip'
      end
    end
  end
  if affinity_k <= 1 then return 'take' end
  if info.passed and now_ms - info.passed >= window_ms then -- passed over for a whole window: its turn
    if #candidates == 0 then return 'take' end
    due = id
    return 'done'
  end
  local c = { id = id, svc = svc, req = info.req, passed = info.passed }
  candidates[#candidates + 1] = c
  if model_hit(c) then
    hit = #candidates -- the first model hit wins: nothing later beats it
    return 'done'
  end
  if not any_cached and warm[svc or ''] then return 'done' end -- no model can beat a warm service
  if #candidates >= affinity_k then return 'done' end
  return 'keep'
end

-- choose picks among the candidates: the model hit, else the first warm service, else the
-- first; the candidates before the one picked are stamped as passed over (the first time only),
-- which starts their window.
local function choose()
  if #candidates == 0 then return fallback end
  local pick = hit
  local function allowed(c) return not leave_misses or #job_models(c.req) == 0 end
  if not pick then
    for i, c in ipairs(candidates) do
      if allowed(c) and warm[c.svc or ''] then pick = i break end
    end
  end
  if not pick then
    for i, c in ipairs(candidates) do
      if allowed(c) then pick = i break end
    end
  end
  for i = 1, (pick or #candidates + 1) - 1 do
    if not candidates[i].passed then redis.call('HSET', 'job:' .. candidates[i].id, PASSED, ARGV[8]) end
  end
  if pick then return candidates[pick].id end
  -- every candidate needs a model this machine lacks: leave them to a machine that has it
  if due then return due end
  return fallback
end

if ARGV[10] == '1' then
  redis.call('DEL', memo)
end
if #ARGV > 10 then
  local ids = { unpack(ARGV, 11) }
  redis.call('SREM', memo, unpack(ids))
  redis.call('HDEL', svc_cache, unpack(ids))
  spent = spent + math.min(#ids, math.floor(budget / 2)) -- the scan always gets half the budget
end

-- scan looks at ids from position `from` until a job is claimed (its id), the end of the queue
-- (nil, 0) or the budget (nil, position reached). Pages start small (the head of the queue
-- usually matches) and grow to 1000. Scores are never read while scanning: formatting them costs
-- Redis more than the rest of the scan.
local function scan(from)
  local page = 16
  local pos = from
  while spent < budget do
    local n = math.min(page, budget - spent)
    page = math.min(page * 4, 1000)
    local ids = redis.call('ZREVRANGE', pending, pos, pos + n - 1)
    local got = #ids
    if got == 0 then return nil, 0 end
    local skip = redis.call('SMISMEMBER', memo, unpack(ids))
    local ask = {}
    for i = 1, got do
      if skip[i] == 0 then ask[#ask + 1] = ids[i] end
    end
    local cached = {}
    if #ask > 0 then
      local svcs = redis.call('HMGET', svc_cache, unpack(ask))
      for k = 1, #ask do cached[ask[k]] = svcs[k] end
    end
    local removed = 0
    for i = 1, got do
      if spent >= budget then
        if #candidates > 0 or fallback then return choose() end
        return nil, pos + i - 1 - removed
      end
      spent = spent + COST_ID
      if skip[i] == 0 then
        spent = spent + COST_SERVICE
        local id = ids[i]
        local svc = cached[id]
        if svc and svc ~= ANY and not services[svc] then
          forgot[#forgot + 1] = id -- another service's job: this capability set never reads it
        else
          local verdict, found, info = look(id)
          if verdict == 'claim' and routed_any then
            local r = routed(id, found, info)
            if r == 'take' then verdict = 'claim' else verdict = 'wait' end
            if r == 'done' then return choose() end
          end
          if verdict == 'gone' then
            removed = removed + 1
          else
            if not svc then
              learned[#learned + 1] = id
              learned[#learned + 1] = found or ANY
            end
            if verdict == 'claim' then return id end
            if verdict == 'nomatch' or verdict == 'other' then forgot[#forgot + 1] = id end
          end
        end
      end
    end
    pos = pos + got - removed
    if got < n then return nil, 0 end
  end
  return nil, pos
end

local id, next_pos = scan(start)
if not id and (#candidates > 0 or fallback) then id, next_pos = choose(), 0 end
remember()
if not id then return { '', next_pos } end
local score = redis.call('ZSCORE', pending, id) -- kept so the reaper can put the job back in place
redis.call('ZREM', pending, id)
redis.call('HDEL', svc_cache, id)

local raw = redis.call('HGETALL', 'job:' .. id)
local job = {}
for i = 1, #raw, 2 do job[raw[i]] = raw[i + 1] end

local t = redis.call('TIME')
local micros = tonumber(t[2])
local assigned_at = t[1] .. '.' .. string.format('%06d', micros)
local ts = tonumber(t[1]) * 1000 + math.floor(micros / 1000)

redis.call('HSET', 'job:' .. id, 'status', 'assigned', 'worker_id', worker_id, 'assigned_at', assigned_at,
  'queue_score', score or '')
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
return { cjson.encode({ jobId = id, job = job }), 0 }
