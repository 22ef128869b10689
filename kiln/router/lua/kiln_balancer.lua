-- Picks a peer of the request's app ($kiln_upstream) for every request and every retry, and
-- accounts for each try (in-flight counts, per-release counters, the access log's fields).
--
-- Three phases of one request:
--   access  (choose / choose_preview): picks the release, following the app's traffic policy;
--           answers 503 itself when nothing can serve (ngx.exit in the balancer becomes a 500)
--   balance (balancer_by_lua, once per try): picks a peer of that release, skipping peers this
--           request already tried; counts the try as in flight
--   log     (log_by_lua): ends the last try; counts every try against its release
--
-- Releases are picked by smooth weighted round robin over their shares, peers by smooth weighted
-- round robin over their weights (NGINX's own algorithm), per worker: over N requests a worker
-- gives each release and each peer exactly its share, give or take one.
--
-- The common path has no loops: a loop with one or two turns stops LuaJIT from compiling the
-- function around it ("inner loop in root trace"), and interpreted, the access phase cost 7,000
-- instructions a request more. So the round robin is unrolled once per change into a cycle
-- (e.g. shares 75/25 → releases 1,1,2,1) that a cursor walks; the loop of `pick` is left to
-- retries and to weights too large to unroll.
local balancer = require "ngx.balancer"
local peers = require "kiln_peers"
local stats = require "kiln_stats"

local M = {}

local CANARY_COOKIE = "kiln_canary"
local COOKIE_VAR = "cookie_" .. CANARY_COOKIE
local EMPTY = {}
local MAX_CYCLE = 1000 -- longer weight cycles are walked by `pick` instead

-- Per worker: app key → state, rebuilt when the app's version in the dict moves.
--   version      the app's "ver:" counter when this state was built
--   policy       { shares = {{release, share}}, canary, preview }
--   pool         every peer with weight > 0, as a rotation (no shares: one pool by weight)
--   by_release   release → a rotation of its peers with weight > 0
--   ready        release → how many of its peers have weight > 0
--   shares       a cycle of releases by share (those with ready peers), with `never` the
--                same without the canary; nil without shares
--   eligible     the peers of the releases with a share (where an unforced retry may go)
--   cookie       the canary cookie's value for the current canary ("ENV.APP.RELEASE")
--   known        this worker's in-flight keys of the app
-- A rotation is { list = peers with round-robin state, cycle = indexes, cursor = position }.
local cache = {}
local version_keys = {}

local function gcd(a, b)
    while b > 0 do
        a, b = b, a % b
    end
    return a
end

-- The smooth weighted round robin over `items` ({weight = n}), unrolled into one full cycle of
-- indexes, or nil when the cycle would be longer than MAX_CYCLE.
local function unroll(items)
    local divisor, total = 0, 0
    for _, item in ipairs(items) do
        divisor = gcd(item.weight, divisor)
    end
    if divisor == 0 then
        return {}
    end
    for _, item in ipairs(items) do
        total = total + item.weight / divisor
    end
    if total > MAX_CYCLE then
        return nil
    end
    local current, cycle = {}, {}
    for i = 1, #items do
        current[i] = 0
    end
    for n = 1, total do
        local best = nil
        for i, item in ipairs(items) do
            current[i] = current[i] + item.weight / divisor
            if best == nil or current[i] > current[best] then
                best = i
            end
        end
        current[best] = current[best] - total
        cycle[n] = best
    end
    return cycle
end

local function signature(items, field)
    local parts = {}
    for i, item in ipairs(items) do
        parts[i] = tostring(item[field]) .. "=" .. item.weight
    end
    return table.concat(parts, ",")
end

-- A cycle over `items`, its cursor carried over from `old` when nothing about it changed, so
-- that a push of the same list does not send the next requests to the first entries again.
local function cycle_of(items, field, old)
    local sig = signature(items, field)
    if old and old.signature == sig then
        return { cycle = old.cycle, cursor = old.cursor, signature = sig }
    end
    return { cycle = unroll(items), cursor = 1, signature = sig }
end

local function advance(rotation)
    local cycle = rotation.cycle
    local i = rotation.cursor
    rotation.cursor = i % #cycle + 1
    return cycle[i]
end

-- Copies of the peers, each list with its own round-robin state, carried over from the last
-- state for peers that stay so that a change elsewhere does not skew the ratios.
local function rotation(list, old, key)
    local previous = {}
    for _, p in ipairs(old and old.list or EMPTY) do
        previous[p.id] = p
    end
    local out = {}
    for _, p in ipairs(list) do
        local was = previous[p.id]
        out[#out + 1] = {
            id = p.id, host = p.host, port = p.port, weight = p.weight, release = p.release,
            current = was and was.current or 0,
            in_flight_key = stats.in_flight_key(key, p.id),
        }
    end
    local r = cycle_of(out, "id", old)
    r.list = out
    return r
end

local function build(key, version, old)
    local raw = peers.get(key)
    local list, policy = peers.decode_entry(raw)
    if list == nil then
        if raw ~= nil then
            ngx.log(ngx.ERR, "kiln: unreadable peers of ", key, "; serving none")
        end
        list, policy = EMPTY, { shares = EMPTY }
    end
    local state = { version = version, policy = policy, by_release = {}, ready = {} }
    local ready, groups = {}, {}
    for _, p in ipairs(list) do
        if p.weight > 0 then
            ready[#ready + 1] = p
            local group = groups[p.release]
            if group == nil then
                group = {}
                groups[p.release] = group
            end
            group[#group + 1] = p
            state.ready[p.release] = #group
        end
    end
    state.pool = rotation(ready, old and old.pool, key)
    for release, group in pairs(groups) do
        state.by_release[release] = rotation(group, old and old.by_release[release], key)
    end

    if #policy.shares > 0 then
        local shared, never, eligible = {}, {}, {}
        for _, s in ipairs(policy.shares) do
            if s.share > 0 and groups[s.release] then
                local item = { release = s.release, weight = s.share }
                shared[#shared + 1] = item
                if s.release ~= policy.canary then
                    never[#never + 1] = item
                end
                for _, p in ipairs(groups[s.release]) do
                    eligible[#eligible + 1] = p
                end
            end
        end
        local old_shares = old and old.shares
        state.shares = cycle_of(shared, "release", old_shares)
        state.shares.items = shared
        state.shares.never = cycle_of(never, "release", old_shares and old_shares.never)
        state.shares.never.items = never
        state.eligible = rotation(eligible, old and { list = old.eligible }, key).list
    else
        state.eligible = EMPTY
    end

    -- This worker's in-flight keys of the app: those of instances that left are dropped once
    -- idle (checked again at each change while they are not).
    local known = {}
    for _, p in ipairs(state.pool.list) do
        known[p.in_flight_key] = true
    end
    for name in pairs(old and old.known or EMPTY) do
        if not known[name] and not stats.drop_idle(name) then
            known[name] = true
        end
    end
    state.known = known
    if policy.canary then
        state.cookie = key:gsub("/", ".") .. "." .. policy.canary
        state.set_cookie = CANARY_COOKIE .. "=" .. state.cookie .. "; Path=/; HttpOnly; SameSite=Lax"
    end
    return state
end

local function state_of(key)
    local version_key = version_keys[key]
    if version_key == nil then
        version_key = peers.version_key(key)
        version_keys[key] = version_key
    end
    local version = peers.app_version(version_key)
    local state = cache[key]
    if state == nil or state.version ~= version then
        state = build(key, version, state)
        cache[key] = state
    end
    return state
end

-- Smooth weighted round robin over `list`, skipping entries whose id is in `skip` and, when
-- `exclude` is set, peers of that release. (Retries and long cycles only: it loops.)
local function pick(list, skip, exclude)
    local total, best = 0, nil
    for _, p in ipairs(list) do
        if not skip[p.id] and (exclude == nil or p.release ~= exclude) then
            p.current = p.current + p.weight
            total = total + p.weight
            if best == nil or p.current > best.current then
                best = p
            end
        end
    end
    if best then
        best.current = best.current - total
    end
    return best
end

-- The next peer of a rotation for a first try (nothing skipped), without a loop when it can.
local function first_pick(r, exclude)
    if exclude == nil and r.cycle ~= nil and #r.cycle > 0 then
        return r.list[advance(r)]
    end
    return pick(r.list, EMPTY, exclude)
end

local function deny(key, release, message)
    -- Counted like any answer, so a forced release that cannot serve shows up in its counters.
    local ctx = ngx.ctx
    ctx.kiln_key = key
    ctx.kiln_release = release
    ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
    ngx.header["Content-Type"] = "text/plain"
    ngx.header["Retry-After"] = "1"
    ngx.say(message)
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
end

-- A release forced by a header or a preview route: that release or a 503, never another.
local function force(key, state, release, role)
    if release == nil then
        return deny(key, 0, key .. " has no " .. role .. " release")
    end
    if state.ready[release] == nil then
        return deny(key, release, "release " .. release .. " of " .. key .. " (the " .. role
            .. ") has no ready instance")
    end
    local ctx = ngx.ctx
    ctx.kiln_key = key
    ctx.kiln_state = state
    ctx.kiln_release = release
    ctx.kiln_forced = true
end

-- access_by_lua of an app's routes.
function M.choose()
    local key = ngx.var.kiln_upstream
    local state = state_of(key)
    local policy = state.policy
    if ngx.var.http_x_kiln_preview == "1" then
        return force(key, state, policy.preview, "preview")
    end
    local canary = policy.canary
    local asked = ngx.var.http_x_kiln_canary
    if asked == "always" then
        return force(key, state, canary, "canary")
    end
    local ctx = ngx.ctx
    ctx.kiln_key = key
    ctx.kiln_state = state
    local exclude = nil
    if asked == "never" then
        exclude = canary
    elseif canary ~= nil and state.ready[canary] ~= nil and ngx.var[COOKIE_VAR] == state.cookie then
        -- Sticky, not forced: a canary with no ready instance serves nobody, the others do.
        ctx.kiln_release = canary
        return
    end
    local shares = state.shares
    if shares == nil then
        -- No shares: one pool by peer weight (a rolling update).
        local count = #state.pool.list
        if exclude ~= nil then
            count = count - (state.ready[exclude] or 0)
        end
        if count == 0 then
            return deny(key, 0, "no ready instance of " .. key)
        end
        ctx.kiln_exclude = exclude
        return
    end
    if exclude ~= nil then
        shares = shares.never
        if #shares.cycle == 0 then
            if #state.shares.cycle > 0 then
                return deny(key, 0, "only the canary release " .. exclude .. " serves " .. key)
            end
            return deny(key, 0, "no ready instance of " .. key)
        end
        ctx.kiln_exclude = exclude
    elseif #shares.cycle == 0 then
        return deny(key, 0, "no ready instance of " .. key)
    end
    ctx.kiln_release = shares.items[advance(shares)].release
end

-- access_by_lua of a preview route: the app's preview release only.
function M.choose_preview()
    local key = ngx.var.kiln_upstream
    local state = state_of(key)
    return force(key, state, state.policy.preview, "preview")
end

-- balancer_by_lua: runs for the first try and again for each proxy_next_upstream retry.
function M.balance()
    local ctx = ngx.ctx
    local key = ctx.kiln_key
    -- The peers may have changed since the access phase (a request body takes a while).
    local state = state_of(key)
    local release = ctx.kiln_release
    local r
    if release == nil then
        r = state.pool
    else
        r = state.by_release[release]
        if r == nil then
            -- The release lost its peers since the access phase: its last known ones may
            -- still be draining, which beats failing a request that was fine a moment ago.
            r = ctx.kiln_state.by_release[release] or { list = EMPTY }
        end
    end
    local list = r.list
    local exclude = ctx.kiln_exclude
    -- The request's tries: ctx.kiln_peer is the current one; retries (rare) keep the peers
    -- already tried in ctx.kiln_tried and the releases of failed tries in ctx.kiln_failed.
    local previous = ctx.kiln_peer
    local peer
    if previous == nil then
        -- An unforced request may go on to the other releases with a share once its own
        -- release's peers all failed; a forced one stays in its release.
        local candidates = #list
        if release ~= nil and not ctx.kiln_forced then
            candidates = candidates + #state.eligible -- at most; proxy_next_upstream_tries caps
        end
        if candidates > 1 then
            -- The upstream has one placeholder server, so NGINX allows no retry unless asked.
            local ok, err = balancer.set_more_tries(candidates - 1)
            if not ok then
                ngx.log(ngx.WARN, "kiln: set_more_tries: ", err)
            end
        end
        -- Within one release nothing is excluded: `exclude` only keeps a pool off the canary.
        peer = first_pick(r, release == nil and exclude or nil)
    else
        -- NGINX calls the balancer again only when the last try failed.
        M.end_try(ctx)
        local tried = ctx.kiln_tried
        local failed = ctx.kiln_failed
        if tried == nil then
            tried, failed = {}, {}
            ctx.kiln_tried, ctx.kiln_failed = tried, failed
        end
        tried[previous.id] = true
        failed[#failed + 1] = previous.release
        peer = pick(list, tried, exclude)
        if peer == nil and release ~= nil and not ctx.kiln_forced then
            peer = pick(state.eligible, tried, exclude)
        end
        if peer == nil then
            -- Every peer was tried, or the list shrank during this request: try any ready one.
            peer = pick(list, EMPTY, exclude)
        end
    end
    if peer == nil then
        ngx.log(ngx.ERR, "kiln: no ready instance of ", key)
        return ngx.exit(ngx.ERROR)
    end
    ctx.kiln_peer = peer
    stats.begin_try(peer.in_flight_key)
    ctx.kiln_in_flight = true
    ngx.var.kiln_release = peer.release
    ngx.var.kiln_instance = peer.id
    -- A client that got the canary keeps it (see choose); one that already has the cookie
    -- is not sent it again. (Most requests never touch the variable: it starts out empty.)
    if peer.release == state.policy.canary and ngx.var[COOKIE_VAR] ~= state.cookie then
        ngx.var.kiln_set_cookie = state.set_cookie
        ctx.kiln_cookie_set = true
    elseif ctx.kiln_cookie_set then
        ngx.var.kiln_set_cookie = "" -- a retry that left the canary
        ctx.kiln_cookie_set = nil
    end
    local ok, err = balancer.set_current_peer(peer.host, peer.port)
    if not ok then
        ngx.log(ngx.ERR, "kiln: set_current_peer ", peer.host, ":", peer.port, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

-- The current try is over: it leaves the in-flight count (once, whoever calls first).
function M.end_try(ctx)
    if ctx.kiln_in_flight then
        ctx.kiln_in_flight = nil
        stats.end_try(ctx.kiln_peer.in_flight_key)
    end
end

-- The seconds each try took, from "$upstream_response_time" ("0.001, 0.002 : 0.003").
local function try_seconds(count)
    local seconds = {}
    local text = ngx.var.upstream_response_time or ""
    for number in text:gmatch("[%d%.]+") do
        seconds[#seconds + 1] = tonumber(number) or 0
    end
    for i = #seconds + 1, count do
        seconds[i] = 0
    end
    return seconds
end

-- log_by_lua of an app's routes: ends the last try and counts every try against its release.
-- (A Lua error here is logged by NGINX and the access log line is written all the same.)
function M.log()
    local ctx = ngx.ctx
    M.end_try(ctx)
    local key = ctx.kiln_key
    if key == nil then
        return -- answered before a release was chosen
    end
    local failed = ctx.kiln_failed
    if failed ~= nil then
        -- Every try but the last failed (error or timeout): that is what made NGINX go on.
        local each = try_seconds(#failed)
        for i = 1, #failed do
            stats.count(key, failed[i], true, each[i])
        end
    end
    local peer = ctx.kiln_peer
    local release = peer and peer.release or ctx.kiln_release or 0
    stats.count(key, release, ngx.status >= 500, ngx.now() - ngx.req.start_time())
end

return M
