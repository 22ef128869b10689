-- Request accounting: in-flight requests per instance (the controller stops an instance that
-- left the peer list once it serves none) and cumulative counters per app and release (canary
-- analysis reads them without waiting for the access log).
--
-- Three shared dicts, so that reading one for the admin endpoint (which walks its keys with the
-- dict locked) never walks the others:
--   kiln_in_flight       "PID|ENV/APP|INSTANCE"  tries worker PID has sent to INSTANCE and not yet
--                        finished. Only worker PID writes it, so +1/-1 need no coordination. It
--                        stays at 0 while the instance is a peer (no store per request); the
--                        worker drops it once the instance left and is idle (drop_idle);
--                        GET /in_flight drops keys of workers that died mid-request
--   kiln_traffic         "ENV/APP|RELEASE|I"     tries of RELEASE that ended in latency bucket I
--                                                (1..#BOUNDS_MS+1, the last one +Inf)
--                        "ENV/APP|RELEASE|e"     tries of RELEASE answered with a 5xx (NGINX's
--                                                own 502/504 too)
--   kiln_traffic_index   "ENV/APP|RELEASE"       every app and release ever counted (the
--                                                counters are read by name from here)
-- Requests of a release = the sum of its buckets (one write per request instead of two).
-- Release 0: requests no release was chosen for (the app had no ready instance).
local M = {}

-- Upper bounds in ms; the last bucket (+Inf) is implicit. bucket_of() spells them out.
M.BOUNDS_MS = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }
local NBUCKETS = #M.BOUNDS_MS + 1

local in_flight = ngx.shared.kiln_in_flight
local traffic = ngx.shared.kiln_traffic
local index = ngx.shared.kiln_traffic_index

local in_flight_prefix = nil -- "PID|", per worker (the master loads this module too)

-- The in-flight key of a peer of an app in this worker (callers cache it on the peer).
function M.in_flight_key(key, instance)
    if in_flight_prefix == nil then
        in_flight_prefix = ngx.worker.pid() .. "|"
    end
    return in_flight_prefix .. key .. "|" .. instance
end

function M.begin_try(name)
    in_flight:incr(name, 1, 0)
end

function M.end_try(name)
    -- Never negative: a key lost to eviction would come back as -1; it is dropped at once.
    local n = in_flight:incr(name, -1, 0)
    if n ~= nil and n < 0 then
        in_flight:delete(name)
    end
end

-- An instance this worker no longer routes to: forget its count once nothing is in flight.
-- (Only this worker writes the key, so nothing can slip in between the read and the delete;
-- a request still on its old peer list brings the key back with its +1.)
function M.drop_idle(name)
    local n = in_flight:get(name)
    if n == nil or n <= 0 then
        in_flight:delete(name)
        return true
    end
    return false
end

-- Worker-local cache of counter names: key → release → { [1..NBUCKETS] = bucket names,
-- errors = error counter name }, so counting a request builds no string.
local names = {}

local function counter_names(key, release)
    local prefix = key .. "|" .. release .. "|"
    local list = { errors = prefix .. "e" }
    for i = 1, NBUCKETS do
        list[i] = prefix .. i
    end
    return list
end

local function names_of(key, release)
    local by_release = names[key]
    if by_release == nil then
        by_release = {}
        names[key] = by_release
    end
    local list = by_release[release]
    if list == nil then
        list = counter_names(key, release)
        by_release[release] = list
        -- Never evicts another entry: the index is small (one key per app and release).
        local ok, err = index:safe_add(key .. "|" .. release, true)
        if not ok and err ~= "exists" then
            ngx.log(ngx.ERR, "kiln: cannot index the counters of ", key, " ", release, ": ", err)
        end
    end
    return list
end

-- The bucket of a latency: BOUNDS_MS written out, because a loop here would keep LuaJIT from
-- compiling the log phase (see kiln_balancer.lua).
local function bucket_of(ms)
    if ms <= 100 then
        if ms <= 5 then
            return 1
        elseif ms <= 10 then
            return 2
        elseif ms <= 25 then
            return 3
        elseif ms <= 50 then
            return 4
        end
        return 5
    elseif ms <= 1000 then
        if ms <= 250 then
            return 6
        elseif ms <= 500 then
            return 7
        end
        return 8
    elseif ms <= 2500 then
        return 9
    elseif ms <= 5000 then
        return 10
    elseif ms <= 10000 then
        return 11
    end
    return 12
end

function M.count(key, release, failed, seconds)
    local list = names_of(key, release)
    traffic:incr(list[bucket_of(seconds * 1000)], 1, 0)
    if failed then
        traffic:incr(list.errors, 1, 0)
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
    for _, name in ipairs(in_flight:get_keys(0)) do
        local pid, key, instance = name:match("^(%d+)|([^|]+)|(.+)$")
        if pid then
            if not worker_alive(pid, alive) then
                in_flight:delete(name) -- a worker that died mid-request never ends its tries
            else
                local n = in_flight:get(name) or 0
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
-- Releases with no counters (an app forgotten since) are left out.
function M.traffic()
    local result = {}
    for _, entry in ipairs(index:get_keys(0)) do
        local key, release = entry:match("^([^|]+)|(%d+)$")
        if key then
            local list = counter_names(key, release)
            local counters = { requests = 0, errors = traffic:get(list.errors) or 0, buckets = {} }
            for i = 1, NBUCKETS do
                local n = traffic:get(list[i]) or 0
                counters.buckets[i] = n
                counters.requests = counters.requests + n
            end
            if counters.requests > 0 then
                local by_release = result[key]
                if by_release == nil then
                    by_release = {}
                    result[key] = by_release
                end
                by_release[release] = counters
            end
        end
    end
    return result
end

-- Drop an app's counters (a destroyed app; a new one of that name starts from 0). The index
-- keeps its entries, so workers that know the names count into fresh counters that show up.
function M.forget(key)
    local prefix = key .. "|"
    for _, entry in ipairs(index:get_keys(0)) do
        if entry:sub(1, #prefix) == prefix then
            local list = counter_names(key, entry:sub(#prefix + 1))
            traffic:delete(list.errors)
            for i = 1, NBUCKETS do
                traffic:delete(list[i])
            end
        end
    end
end

return M
