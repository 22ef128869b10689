-- kiln's peer lists and traffic policies, kept in the lua_shared_dict "kiln_peers" so they
-- change without a reload.
--
-- Keys in the dict:
--   "list:ENV/APP"  the app's peers and traffic policy as canonical JSON:
--                   {"peers": [{"id": "r3-ab12cd", "host": "127.0.0.1", "port": 32768,
--                               "weight": 1, "release": 3}, ...],
--                    "policy": {"shares": [[2, 75], [3, 25]], "canary": 3, "preview": null}}
--                   (a dict that survived a reload from an older kiln may still hold a bare
--                   peer list here; every reader accepts both)
--   "ver:ENV/APP"   bumped on every change of that app, so a worker re-decodes only that app
--   "version"       bumped on every change of any app (GET /status shows it)
--   "generation"    bumped each time the master loads a config (start or reload); kiln polls it
--                   to know when a reload is live
--   "loaded"        set once peers.json was read; the dict survives a reload, not a restart
local cjson = require "cjson.safe"

local M = {}

local LIST_PREFIX = "list:"
local VERSION_PREFIX = "ver:"
local MAX_WEIGHT = 1000000
local MAX_RELEASE = 2147483647

local DICT = ngx.shared.kiln_peers

local function dict()
    return DICT
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

-- cjson decodes [] and {} alike; a list has exactly the keys 1..n.
local function is_list(v)
    if type(v) ~= "table" then
        return false
    end
    local count = 0
    for _ in pairs(v) do
        count = count + 1
    end
    return count == #v
end

-- A decoded JSON value → a clean list of peers, or nil and a message for the caller.
function M.validate(list)
    if not is_list(list) then
        return nil, "peers must be a JSON list of peers, not an object"
    end
    local clean, seen = {}, {}
    for i, p in ipairs(list) do
        local where = "peer " .. i .. ": "
        if type(p) ~= "table" then
            return nil, where .. "must be an object with id, host, port, weight, release"
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
        local release = p.release
        if release == nil then
            release = 0 -- written before peers carried their release
        end
        if not is_int(release, 0, MAX_RELEASE) then
            return nil, where .. "release must be an integer ≥ 0 (0: not known)"
        end
        clean[i] = { id = p.id, host = p.host, port = p.port, weight = weight, release = release }
    end
    return clean
end

local function optional_release(value, name)
    if value == nil or value == cjson.null then
        return nil
    end
    if not is_int(value, 1, MAX_RELEASE) then
        return false, "policy." .. name .. " must be a release number ≥ 1 or null"
    end
    return value
end

-- A decoded policy (or nil / null: none) → a clean policy, or nil and a message.
function M.validate_policy(policy)
    if policy == nil or policy == cjson.null then
        return { shares = {} }
    end
    if type(policy) ~= "table" then
        return nil, "policy must be an object with shares, canary, preview"
    end
    local shares, total, seen = {}, 0, {}
    local raw = policy.shares
    if raw ~= nil and raw ~= cjson.null then
        if not is_list(raw) then
            return nil, "policy.shares must be a list of [release, percent] pairs"
        end
        for i, pair in ipairs(raw) do
            if not is_list(pair) or #pair ~= 2 or not is_int(pair[1], 0, MAX_RELEASE)
                or not is_int(pair[2], 0, 100) then
                return nil, "policy.shares[" .. i .. "] must be [release, percent 0..100]"
            end
            if seen[pair[1]] then
                return nil, "policy.shares names release " .. pair[1] .. " twice"
            end
            seen[pair[1]] = true
            shares[i] = { release = pair[1], share = pair[2] }
            total = total + pair[2]
        end
        if #shares > 0 and total ~= 100 then
            return nil, "policy.shares must add up to 100, got " .. total
        end
    end
    local canary, cerr = optional_release(policy.canary, "canary")
    if canary == false then
        return nil, cerr
    end
    local preview, perr = optional_release(policy.preview, "preview")
    if preview == false then
        return nil, perr
    end
    return { shares = shares, canary = canary, preview = preview }
end

-- A decoded entry (a bare peer list, or {"peers": [...], "policy": {...}}) → peers, policy.
function M.validate_entry(entry)
    if is_list(entry) then
        local peers, err = M.validate(entry)
        if peers == nil then
            return nil, nil, err
        end
        return peers, { shares = {} }
    end
    if type(entry) ~= "table" then
        return nil, nil, "the body must be a JSON object {\"peers\": [...], \"policy\": {...}}"
    end
    local peers, err = M.validate(entry.peers)
    if peers == nil then
        return nil, nil, err
    end
    local policy, perr = M.validate_policy(entry.policy)
    if policy == nil then
        return nil, nil, perr
    end
    return peers, policy
end

local function encode_or_null(v)
    if v == nil then
        return "null"
    end
    return tostring(v)
end

-- Encoded by hand: Debian's lua-cjson turns an empty table into {} where we want [].
function M.encode_entry(peers, policy)
    local parts = {}
    for i, p in ipairs(peers) do
        parts[i] = cjson.encode({
            id = p.id, host = p.host, port = p.port, weight = p.weight, release = p.release,
        })
    end
    local shares = {}
    for i, s in ipairs(policy.shares) do
        shares[i] = "[" .. s.release .. "," .. s.share .. "]"
    end
    return '{"peers":[' .. table.concat(parts, ",") .. '],"policy":{"shares":['
        .. table.concat(shares, ",") .. '],"canary":' .. encode_or_null(policy.canary)
        .. ',"preview":' .. encode_or_null(policy.preview) .. "}}"
end

-- Raw JSON from the dict → peers, policy (both formats), or nil when there is none or it is bad.
function M.decode_entry(raw)
    if raw == nil then
        return nil
    end
    local peers, policy = M.validate_entry(cjson.decode(raw))
    return peers, policy
end

local function bump(key)
    local d = dict()
    -- The entry is written before the versions move, so a worker that sees the new version
    -- always reads the new entry.
    d:incr(VERSION_PREFIX .. key, 1, 0)
    d:incr("version", 1, 0)
end

function M.set(key, peers, policy)
    local entry = M.encode_entry(peers, policy)
    if dict():get(LIST_PREFIX .. key) == entry then
        return true -- the same again (kiln converges every round): workers keep their state
    end
    local ok, err = dict():set(LIST_PREFIX .. key, entry)
    if not ok then
        return nil, err
    end
    bump(key)
    return true
end

function M.delete(key)
    dict():delete(LIST_PREFIX .. key)
    bump(key)
end

function M.get(key)
    return dict():get(LIST_PREFIX .. key)
end

-- The name of an app's version counter (callers keep it, to spare a string per request).
function M.version_key(key)
    return VERSION_PREFIX .. key
end

function M.app_version(version_key)
    return DICT:get(version_key) or 0
end

-- Every entry: key → JSON text.
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
    for key, entry in pairs(data) do
        local peers, policy, err = nil, nil, "the key is not ENV/APP"
        if M.valid_key(key) then
            peers, policy, err = M.validate_entry(entry)
        end
        if peers then
            M.set(key, peers, policy)
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
