-- Request accounting in the lua_shared_dict "kiln_stats": in-flight requests per instance (the
-- controller stops an instance that left the peer list once it serves none) and cumulative
-- counters per app and release (canary analysis reads them without waiting for the access log).
--
-- Keys in the dict:
--   "if|PID|ENV/APP|INSTANCE"   tries worker PID has sent to INSTANCE and not yet finished. Only
--                               worker PID writes it (so +1/-1 need no coordination); 0 deletes
--                               it; GET /in_flight drops keys of workers that died mid-request
--   "t|ENV/APP|RELEASE|b|I"     tries of RELEASE that ended in latency bucket I (1..#BOUNDS+1)
--   "t|ENV/APP|RELEASE|e"       tries of RELEASE answered with a 5xx (NGINX's own 502/504 too)
-- Requests of a release = the sum of its buckets (one write per request instead of two).
-- Release 0: requests no release was chosen for (the app had no ready instance).
local M = {}

-- Upper bounds in ms; the last bucket (+Inf) is implicit.
M.BOUNDS_MS = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }
local BOUNDS = M.BOUNDS_MS
local NBUCKETS = #BOUNDS + 1

local stats = ngx.shared.kiln_stats

local in_flight_prefix = nil -- "if|PID|", per worker (the master loads this module too)

-- The in-flight key of a peer of an app in this worker (callers cache it on the peer).
function M.in_flight_key(key, instance)
    if in_flight_prefix == nil then
        in_flight_prefix = "if|" .. ngx.worker.pid() .. "|"
    end
    return in_flight_prefix .. key .. "|" .. instance
end

function M.begin_try(name)
    stats:incr(name, 1, 0)
end

function M.end_try(name)
    -- Never negative: a key lost to eviction comes back as -1 and is dropped at once.
    local n = stats:incr(name, -1, 0)
    if n ~= nil and n <= 0 then
        stats:delete(name)
    end
end

-- Worker-local cache of counter name prefixes: key → release → "t|KEY|RELEASE|".
local prefixes = {}

local function bucket_of(ms)
    for i = 1, #BOUNDS do
        if ms <= BOUNDS[i] then
            return i
        end
    end
    return NBUCKETS
end

function M.count(key, release, failed, seconds)
    local by_release = prefixes[key]
    if by_release == nil then
        by_release = {}
        prefixes[key] = by_release
    end
    local prefix = by_release[release]
    if prefix == nil then
        prefix = "t|" .. key .. "|" .. release .. "|"
        by_release[release] = prefix
    end
    stats:incr(prefix .. "b|" .. bucket_of(seconds * 1000), 1, 0)
    if failed then
        stats:incr(prefix .. "e", 1, 0)
    end
end

-- -- readers for the admin endpoint ------------------------------------------------------

local function worker_alive(pid, cache)
    local alive = cache[pid]
    if alive == nil then
        -- Workers of a reload that still finish requests say "worker process is shutting down".
        local f = io.open("/proc/" .. pid .. "/cmdline", "r")
        local cmdline = f and f:read("*a") or ""
        if f then
            f:close()
        end
        alive = cmdline:sub(1, 21) == "nginx: worker process"
        cache[pid] = alive
    end
    return alive
end

-- key → instance → requests in flight (only instances with some).
function M.in_flight()
    local result, alive = {}, {}
    for _, name in ipairs(stats:get_keys(0)) do
        local pid, key, instance = name:match("^if|(%d+)|([^|]+)|(.+)$")
        if pid then
            if not worker_alive(pid, alive) then
                stats:delete(name) -- a worker that died mid-request never ends its tries
            else
                local n = stats:get(name) or 0
                if n > 0 then
                    local by_instance = result[key]
                    if by_instance == nil then
                        by_instance = {}
                        result[key] = by_instance
                    end
                    by_instance[instance] = (by_instance[instance] or 0) + n
                end
            end
        end
    end
    return result
end

-- key → release (string) → {requests, errors, buckets = {n per bucket, not cumulative}}.
function M.traffic()
    local result = {}
    for _, name in ipairs(stats:get_keys(0)) do
        local key, release, kind, index = name:match("^t|([^|]+)|(%d+)|(%l)|?(%d*)$")
        if key then
            local by_release = result[key]
            if by_release == nil then
                by_release = {}
                result[key] = by_release
            end
            local counters = by_release[release]
            if counters == nil then
                counters = { requests = 0, errors = 0, buckets = {} }
                for i = 1, NBUCKETS do
                    counters.buckets[i] = 0
                end
                by_release[release] = counters
            end
            local n = stats:get(name) or 0
            if kind == "e" then
                counters.errors = n
            elseif kind == "b" then
                local i = tonumber(index)
                if i and i >= 1 and i <= NBUCKETS then
                    counters.buckets[i] = n
                    counters.requests = counters.requests + n
                end
            end
        end
    end
    return result
end

-- Drop an app's counters (a destroyed app; a new one of that name starts from 0).
function M.forget(key)
    local prefix = "t|" .. key .. "|"
    for _, name in ipairs(stats:get_keys(0)) do
        if name:sub(1, #prefix) == prefix then
            stats:delete(name)
        end
    end
    prefixes[key] = nil
end

return M
