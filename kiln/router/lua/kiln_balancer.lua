-- Picks a peer of the request's app ($kiln_upstream) for every request and every retry.
--
-- Smooth weighted round robin per worker (NGINX's own algorithm): over N requests a worker
-- sends each peer exactly its share, give or take one. Peers with weight 0 get no requests.
local balancer = require "ngx.balancer"
local cjson = require "cjson.safe"
local peers = require "kiln_peers"

local M = {}

-- Per worker: app key → { version = dict version, list = ready peers with SWRR state }.
local cache = {}

local function ready_peers(key)
    local version = peers.version()
    local entry = cache[key]
    if entry and entry.version == version then
        return entry.list
    end
    -- Carry the round-robin state of peers that stay, so a change elsewhere does not skew ratios.
    local previous = {}
    if entry then
        for _, p in ipairs(entry.list) do
            previous[p.id] = p.current
        end
    end
    local list = {}
    local raw = peers.get(key)
    local decoded = raw and cjson.decode(raw) or {}
    for _, p in ipairs(decoded) do
        if p.weight > 0 then
            list[#list + 1] = {
                id = p.id, host = p.host, port = p.port, weight = p.weight,
                current = previous[p.id] or 0,
            }
        end
    end
    cache[key] = { version = version, list = list }
    return list
end

local function pick(list, tried)
    local total, best = 0, nil
    for _, p in ipairs(list) do
        if not tried[p.id] then
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

-- access_by_lua: answer 503 here, because ngx.exit(503) inside the balancer becomes a 500.
function M.check_ready()
    local key = ngx.var.kiln_upstream
    if #ready_peers(key) == 0 then
        ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
        ngx.header["Content-Type"] = "text/plain"
        ngx.header["Retry-After"] = "1"
        ngx.say("no ready instance of ", key)
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
end

-- balancer_by_lua: runs for the first try and again for each proxy_next_upstream retry.
function M.balance()
    local key = ngx.var.kiln_upstream
    local list = ready_peers(key)
    local ctx = ngx.ctx
    local tried = ctx.kiln_tried
    if tried == nil then
        tried = {}
        ctx.kiln_tried = tried
        if #list > 1 then
            -- The upstream has one placeholder server, so NGINX allows no retry unless asked.
            local ok, err = balancer.set_more_tries(#list - 1)
            if not ok then
                ngx.log(ngx.WARN, "kiln: set_more_tries: ", err)
            end
        end
    end
    local peer = pick(list, tried)
    if peer == nil then
        -- Every peer was tried, or the list shrank during this request: try any ready one.
        peer = pick(list, {})
    end
    if peer == nil then
        ngx.log(ngx.ERR, "kiln: no ready instance of ", key)
        return ngx.exit(ngx.ERROR)
    end
    tried[peer.id] = true
    local ok, err = balancer.set_current_peer(peer.host, peer.port)
    if not ok then
        ngx.log(ngx.ERR, "kiln: set_current_peer ", peer.host, ":", peer.port, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

return M
