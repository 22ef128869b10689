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
local balancer = require "ngx.balancer"
local peers = require "kiln_peers"
local stats = require "kiln_stats"

local M = {}

local CANARY_COOKIE = "kiln_canary"
local COOKIE_VAR = "cookie_" .. CANARY_COOKIE
local EMPTY = {}

-- Per worker: app key → state, rebuilt when the app's version in the dict moves.
--   version      the app's "ver:" counter when this state was built
--   policy       { shares = {{release, share}}, canary, preview }
--   pool         every peer with weight > 0 (no shares: one pool by peer weight)
--   by_release   release → its peers with weight > 0
--   shared       the releases with a share > 0 and ready peers, with their round-robin state
--   eligible     the peers of the releases in `shared` (where an unforced retry may go)
--   cookie       the canary cookie's value for the current canary ("ENV.APP.RELEASE")
local cache = {}
local version_keys = {}

-- Copies of the peers, each list with its own round-robin state, carried over from the last
-- state for peers that stay so that a change elsewhere does not skew the ratios.
local function rr_copy(list, previous, key)
    local out = {}
    for _, p in ipairs(list) do
        local old = previous and previous[p.id]
        out[#out + 1] = {
            id = p.id, host = p.host, port = p.port, weight = p.weight, release = p.release,
            current = old and old.current or 0,
            in_flight_key = stats.in_flight_key(key, p.id),
        }
    end
    return out
end

local function by_id(list)
    local map = {}
    for _, p in ipairs(list or EMPTY) do
        map[p.id] = p
    end
    return map
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
    local ready = {}
    for _, p in ipairs(list) do
        if p.weight > 0 then
            ready[#ready + 1] = p
        end
    end
    local releases = {}
    for _, p in ipairs(ready) do
        local group = releases[p.release]
        if group == nil then
            group = {}
            releases[p.release] = group
        end
        group[#group + 1] = p
    end

    local state = { version = version, policy = policy, by_release = {}, shared = {} }
    state.pool = rr_copy(ready, old and by_id(old.pool), key)
    for release, group in pairs(releases) do
        state.by_release[release] = rr_copy(group, old and by_id(old.by_release[release]), key)
    end
    local old_shared = {}
    for _, s in ipairs(old and old.shared or EMPTY) do
        old_shared[s.id] = s
    end
    local eligible = {}
    for _, s in ipairs(policy.shares) do
        if s.share > 0 and releases[s.release] then
            local prev = old_shared[s.release]
            state.shared[#state.shared + 1] = {
                id = s.release, release = s.release, weight = s.share,
                current = prev and prev.current or 0,
            }
            for _, p in ipairs(releases[s.release]) do
                eligible[#eligible + 1] = p
            end
        end
    end
    state.eligible = rr_copy(eligible, old and by_id(old.eligible), key)
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
-- `exclude` is set, peers of that release.
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

local function has_peers(state, release)
    local list = state.by_release[release]
    return list ~= nil and #list > 0
end

-- A release forced by a header or a preview route: that release or a 503, never another.
local function force(key, state, release, role)
    if release == nil then
        return deny(key, 0, key .. " has no " .. role .. " release")
    end
    if not has_peers(state, release) then
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
    elseif canary ~= nil and ngx.var[COOKIE_VAR] == state.cookie then
        -- Sticky, not forced: a canary with no ready instance serves nobody, the others do.
        if has_peers(state, canary) then
            ctx.kiln_release = canary
            return
        end
    end
    if #state.shared == 0 and #policy.shares == 0 then
        -- No shares: one pool by peer weight (a rolling update).
        for _, p in ipairs(state.pool) do
            if p.release ~= exclude then
                ctx.kiln_exclude = exclude
                return
            end
        end
        return deny(key, 0, "no ready instance of " .. key)
    end
    local chosen = pick(state.shared, EMPTY, exclude)
    if chosen == nil then
        if exclude ~= nil and #state.shared > 0 then
            return deny(key, 0, "only the canary release " .. exclude .. " serves " .. key)
        end
        return deny(key, 0, "no ready instance of " .. key)
    end
    ctx.kiln_release = chosen.id
    ctx.kiln_exclude = exclude
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
    local list
    if release == nil then
        list = state.pool
    else
        list = state.by_release[release]
        if list == nil then
            -- The release lost its peers since the access phase: its last known ones may
            -- still be draining, which beats failing a request that was fine a moment ago.
            list = ctx.kiln_state.by_release[release] or EMPTY
        end
    end
    local tried = ctx.kiln_tried
    if tried == nil then
        tried = {}
        ctx.kiln_tried = tried
        ctx.kiln_tries = {}
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
    else
        M.end_try(ctx) -- NGINX calls the balancer again only when the last try failed
    end
    local exclude = ctx.kiln_exclude
    local peer = pick(list, tried, exclude)
    if peer == nil and release ~= nil and not ctx.kiln_forced then
        peer = pick(state.eligible, tried, exclude)
    end
    if peer == nil then
        -- Every peer was tried, or the list shrank during this request: try any ready one.
        peer = pick(list, EMPTY, exclude)
    end
    if peer == nil then
        ngx.log(ngx.ERR, "kiln: no ready instance of ", key)
        return ngx.exit(ngx.ERROR)
    end
    tried[peer.id] = true
    local tries = ctx.kiln_tries
    tries[#tries + 1] = peer.release
    stats.begin_try(peer.in_flight_key)
    ctx.kiln_in_flight = peer.in_flight_key
    ngx.var.kiln_release = peer.release
    ngx.var.kiln_instance = peer.id
    -- A client that got the canary keeps it (see choose); one that already has the cookie
    -- is not sent it again.
    local cookie = ""
    if peer.release == state.policy.canary and ngx.var[COOKIE_VAR] ~= state.cookie then
        cookie = state.set_cookie
    end
    ngx.var.kiln_set_cookie = cookie
    local ok, err = balancer.set_current_peer(peer.host, peer.port)
    if not ok then
        ngx.log(ngx.ERR, "kiln: set_current_peer ", peer.host, ":", peer.port, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

function M.end_try(ctx)
    local name = ctx.kiln_in_flight
    if name ~= nil then
        ctx.kiln_in_flight = nil
        stats.end_try(name)
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

local function account()
    local ctx = ngx.ctx
    M.end_try(ctx)
    local key = ctx.kiln_key
    if key == nil then
        return -- answered before the balancer's account began (a client gone early, say)
    end
    local status = ngx.status
    local seconds = ngx.now() - ngx.req.start_time()
    local tries = ctx.kiln_tries
    if tries == nil or #tries == 0 then
        stats.count(key, ctx.kiln_release or 0, status >= 500, seconds)
        return
    end
    local n = #tries
    if n > 1 then
        -- Every try but the last failed (error or timeout): that is what made NGINX go on.
        local each = try_seconds(n)
        for i = 1, n - 1 do
            stats.count(key, tries[i], true, each[i])
        end
    end
    stats.count(key, tries[n], status >= 500, seconds)
end

-- log_by_lua of an app's routes. Protected: accounting must never break a request's log line.
function M.log()
    local ok, err = pcall(account)
    if not ok then
        ngx.log(ngx.ERR, "kiln: accounting failed: ", err)
    end
end

return M
