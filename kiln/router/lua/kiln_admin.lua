-- kiln's admin endpoint, served on a unix socket only (see the admin server in nginx.conf).
--
--   GET    /status          {"generation", "worker_generation", "worker_pid", "peers_version"}
--   GET    /peers           {"ENV/APP": {"peers": [peer, ...], "policy": policy}, ...}
--   GET    /peers/ENV/APP   {"peers": [peer, ...], "policy": policy}
--   PUT    /peers/ENV/APP   body {"peers": [peer, ...], "policy": policy} (or a bare list of
--                           peers: no policy): replaces both (400 with a message if bad)
--   DELETE /peers/ENV/APP   forgets the app's peers and its traffic counters
--   GET    /in_flight       {"ENV/APP": {"INSTANCE": requests}, ...} (instances with some)
--   GET    /traffic         {"bounds_ms": [...], "apps": {"ENV/APP": {"RELEASE": {"requests",
--                           "errors", "buckets": [requests per latency bucket, last +Inf]}}}}
-- peer: {"id", "host", "port", "weight", "release"}; policy: {"shares": [[release, percent],
-- ...], "canary": release or null, "preview": release or null}
local cjson = require "cjson.safe"
local peers = require "kiln_peers"
local stats = require "kiln_stats"

local M = {}

-- The config generation this worker was started with. A worker answering with the newest
-- generation proves a reload is live.
local worker_generation = 0

function M.init_worker()
    worker_generation = peers.generation()
end

local function reply(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.say(body)
end

local function fail(status, message)
    reply(status, cjson.encode({ error = message }))
end

function M.status()
    reply(200, cjson.encode({
        generation = peers.generation(),
        worker_generation = worker_generation,
        worker_pid = ngx.worker.pid(),
        peers_version = peers.version(),
    }))
end

local function all_peers()
    local parts = {}
    for key, raw in pairs(peers.all()) do
        parts[#parts + 1] = cjson.encode(key) .. ":" .. raw
    end
    table.sort(parts)
    reply(200, "{" .. table.concat(parts, ",") .. "}")
end

local function put_peers(key)
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then
        return fail(400, "the body must be a JSON object {\"peers\": [...], \"policy\": {...}}")
    end
    local decoded, err = cjson.decode(body)
    if decoded == nil then
        return fail(400, "the body is not JSON: " .. tostring(err))
    end
    local list, policy, problem = peers.validate_entry(decoded)
    if list == nil then
        return fail(400, problem)
    end
    local ok, serr = peers.set(key, list, policy)
    if not ok then
        return fail(500, "could not store the peers of " .. key .. ": " .. tostring(serr))
    end
    reply(200, peers.get(key))
end

function M.peers()
    local method = ngx.req.get_method()
    local uri = ngx.var.uri
    if uri == "/peers" or uri == "/peers/" then
        if method ~= "GET" then
            return fail(405, "use GET /peers, or PUT or DELETE /peers/ENV/APP")
        end
        return all_peers()
    end
    local key = uri:match("^/peers/(.+)$")
    if not peers.valid_key(key) then
        return fail(404, "peers live at /peers/ENV/APP with lowercase names, got " .. uri)
    end
    if method == "GET" then
        local raw = peers.get(key)
        if raw == nil then
            return fail(404, "no peers set for " .. key)
        end
        return reply(200, raw)
    elseif method == "PUT" then
        return put_peers(key)
    elseif method == "DELETE" then
        peers.delete(key)
        stats.forget(key)
        return reply(200, cjson.encode({ deleted = key }))
    end
    return fail(405, "use GET, PUT or DELETE on /peers/ENV/APP")
end

function M.in_flight()
    if ngx.req.get_method() ~= "GET" then
        return fail(405, "use GET /in_flight")
    end
    local parts = {}
    for key, by_instance in pairs(stats.in_flight()) do
        parts[#parts + 1] = cjson.encode(key) .. ":" .. cjson.encode(by_instance)
    end
    reply(200, "{" .. table.concat(parts, ",") .. "}")
end

function M.traffic()
    if ngx.req.get_method() ~= "GET" then
        return fail(405, "use GET /traffic")
    end
    local parts = {}
    for key, by_release in pairs(stats.traffic()) do
        parts[#parts + 1] = cjson.encode(key) .. ":" .. cjson.encode(by_release)
    end
    reply(200, '{"bounds_ms":' .. cjson.encode(stats.BOUNDS_MS) .. ',"apps":{'
        .. table.concat(parts, ",") .. "}}")
end

return M
