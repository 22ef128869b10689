-- kiln's peer lists, kept in the lua_shared_dict "kiln_peers" so they change without a reload.
--
-- Keys in the dict:
--   "list:ENV/APP"  the app's peers as a canonical JSON list
--                   [{"id": "r3-ab12cd", "host": "127.0.0.1", "port": 32768, "weight": 1}, ...]
--   "version"       bumped on every change, so each worker re-decodes a list only when it changed
--   "generation"    bumped each time the master loads a config (start or reload); kiln polls it
--                   to know when a reload is live
--   "loaded"        set once peers.json was read; the dict survives a reload, not a restart
local cjson = require "cjson.safe"

local M = {}

local LIST_PREFIX = "list:"
local MAX_WEIGHT = 1000000

local function dict()
    return ngx.shared.kiln_peers
end

function M.valid_key(key)
    return type(key) == "string" and #key <= 100
        and key:match("^[%l%d][%l%d%-]*/[%l%d][%l%d%-]*$") ~= nil
end

local function is_ipv4(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return false
    end
    for _, octet in ipairs({ a, b, c, d }) do
        if #octet > 3 or tonumber(octet) > 255 then
            return false
        end
    end
    return true
end

local function is_ipv6(s)
    return #s <= 45 and s:find(":", 1, true) ~= nil and s:match("^[%x:%.]+$") ~= nil
end

local function is_int(v, low, high)
    return type(v) == "number" and v == math.floor(v) and v >= low and v <= high
end

-- A decoded JSON value → a clean list of peers, or nil and a message for the caller.
function M.validate(list)
    if type(list) ~= "table" then
        return nil, "the body must be a JSON list of peers"
    end
    local count = 0
    for _ in pairs(list) do
        count = count + 1
    end
    if count ~= #list then
        return nil, "the body must be a JSON list of peers, not an object"
    end
    local clean, seen = {}, {}
    for i, p in ipairs(list) do
        local where = "peer " .. i .. ": "
        if type(p) ~= "table" then
            return nil, where .. "must be an object with id, host, port, weight"
        end
        if type(p.id) ~= "string" or p.id == "" or #p.id > 200 then
            return nil, where .. "id must be a non-empty string"
        end
        if seen[p.id] then
            return nil, where .. "id " .. p.id .. " appears twice"
        end
        seen[p.id] = true
        -- NGINX's balancer.set_current_peer takes IP literals only: it cannot resolve names.
        if type(p.host) ~= "string" or not (is_ipv4(p.host) or is_ipv6(p.host)) then
            return nil, where .. "host must be an IP address like 127.0.0.1, not a name"
        end
        if not is_int(p.port, 1, 65535) then
            return nil, where .. "port must be an integer 1..65535"
        end
        local weight = p.weight
        if weight == nil then
            weight = 1
        end
        if not is_int(weight, 0, MAX_WEIGHT) then
            return nil, where .. "weight must be an integer 0.." .. MAX_WEIGHT .. " (0: no new requests)"
        end
        clean[i] = { id = p.id, host = p.host, port = p.port, weight = weight }
    end
    return clean
end

-- Encoded by hand: Debian's lua-cjson turns an empty table into {} where we want [].
function M.encode_list(peers)
    local parts = {}
    for i, p in ipairs(peers) do
        parts[i] = cjson.encode({ id = p.id, host = p.host, port = p.port, weight = p.weight })
    end
    return "[" .. table.concat(parts, ",") .. "]"
end

function M.set(key, peers)
    local ok, err = dict():set(LIST_PREFIX .. key, M.encode_list(peers))
    if not ok then
        return nil, err
    end
    -- The list is written before the version moves, so a worker that sees the new version
    -- always reads the new list.
    dict():incr("version", 1, 0)
    return true
end

function M.delete(key)
    dict():delete(LIST_PREFIX .. key)
    dict():incr("version", 1, 0)
end

function M.get(key)
    return dict():get(LIST_PREFIX .. key)
end

-- Every list: key → JSON text.
function M.all()
    local lists = {}
    local d = dict()
    for _, name in ipairs(d:get_keys(0)) do
        if name:sub(1, #LIST_PREFIX) == LIST_PREFIX then
            local raw = d:get(name)
            if raw then
                lists[name:sub(#LIST_PREFIX + 1)] = raw
            end
        end
    end
    return lists
end

function M.version()
    return dict():get("version") or 0
end

function M.generation()
    return dict():get("generation") or 0
end

local function load_file(peers_file)
    local f = io.open(peers_file, "r")
    if not f then
        return -- no peers.json yet: kiln has not set any peers
    end
    local text = f:read("*a")
    f:close()
    local data = cjson.decode(text)
    if type(data) ~= "table" then
        ngx.log(ngx.ERR, "kiln: ", peers_file, " is not a JSON object; starting with no peers")
        return
    end
    for key, list in pairs(data) do
        local peers, err = nil, "the key is not ENV/APP"
        if M.valid_key(key) then
            peers, err = M.validate(list)
        end
        if peers then
            M.set(key, peers)
        else
            ngx.log(ngx.ERR, "kiln: ignoring peers of ", tostring(key), " in ", peers_file, ": ", err)
        end
    end
end

-- Runs in the master at every config load (init_by_lua).
function M.init(peers_file)
    local d = dict()
    d:incr("generation", 1, 0)
    if d:get("loaded") then
        return -- a reload: the dict survived and holds the live lists, newer than any file
    end
    load_file(peers_file)
    d:set("loaded", true)
end

return M
