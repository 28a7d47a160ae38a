-- Instance script of the test replica set (see test-cluster/README.md).
--
-- Every instance of the cluster runs this script; cluster.py passes its
-- identity through environment variables:
--
--   TC_NAME        instance name (inst1, inst2, inst3)
--   TC_HOST        host to listen on (127.0.0.1)
--   TC_PORT        iproto port
--   TC_WORKDIR     directory holding snapshots, xlogs and the log
--   TC_PEERS       comma separated host:port of every instance (self included)
--   TC_READ_ONLY   '1' to start read-only, '0' to start read-write
--   TC_CTL_SOCK    unix socket path of the JSON control channel
--   TC_BOOTSTRAP   'master' (first boot of the bootstrap master),
--                  'join' (first boot of a replica, joins TC_JOIN_URI)
--                  or empty (restart on existing data)
--   TC_JOIN_URI    host:port of the instance a joining replica copies from
--   TC_OWNER_PID   optional: exit when this process is gone (test runner)

local fio = require('fio')
local fiber = require('fiber')
local log = require('log')
local json = require('json')
local socket = require('socket')
local clock = require('clock')

local REPL_USER = 'replicator'
local REPL_PASSWORD = 'replicator-password'

local function env(name, default)
    local value = os.getenv(name)
    if value == nil or value == '' then
        if default == nil then
            error(('environment variable %s is required'):format(name))
        end
        return default
    end
    return value
end

local NAME = env('TC_NAME')
local HOST = env('TC_HOST', '127.0.0.1')
local PORT = tonumber(env('TC_PORT'))
local WORKDIR = env('TC_WORKDIR')
local READ_ONLY = env('TC_READ_ONLY', '0') == '1'
local CTL_SOCK = env('TC_CTL_SOCK')
local BOOTSTRAP = env('TC_BOOTSTRAP', 'none')

local script_path = debug.getinfo(1, 'S').source:gsub('^@', '')
local SCRIPT_DIR = fio.abspath(fio.dirname(script_path))
package.path = SCRIPT_DIR .. '/?.lua;' .. SCRIPT_DIR .. '/?/init.lua;'
    .. package.path

local function repl_uri(addr)
    return ('%s:%s@%s'):format(REPL_USER, REPL_PASSWORD, addr)
end

local PEERS = {}
for addr in env('TC_PEERS'):gmatch('[^,]+') do
    table.insert(PEERS, repl_uri(addr))
end

-- Full mesh: every instance replicates from every other one (its own URI
-- is in the list too; tarantool recognises and skips itself).  Quorum 0
-- lets an instance start while its peers are down, and the short connect
-- timeout bounds how long box.cfg waits for them.
local MESH = {
    replication = PEERS,
    replication_connect_quorum = 0,
    replication_connect_timeout = 0.5,
}
rawset(_G, 'tc_mesh_cfg', MESH)

------------------------------------------------------------------------
-- Global functions used by the tests (called by name over iproto).
------------------------------------------------------------------------

rawset(_G, 'echo', function(...)
    return ...
end)

rawset(_G, 'sleep', function(seconds)
    fiber.sleep(seconds)
    return seconds
end)

rawset(_G, 'push', function(n)
    for i = 1, n do
        box.session.push(i)
    end
    return n
end)

rawset(_G, 'raise', function(msg)
    error(msg)
end)

rawset(_G, 'raise_code', function(code, msg)
    box.error({code = code, reason = msg})
end)

rawset(_G, 'whoami', function()
    return {
        name = NAME,
        port = PORT,
        ro = box.info.ro,
        uuid = box.info.uuid,
        status = box.info.status,
    }
end)

------------------------------------------------------------------------
-- Schema, created once on the bootstrap master and replicated.
------------------------------------------------------------------------

local function create_schema()
    box.schema.user.create(REPL_USER, {password = REPL_PASSWORD})
    box.schema.user.grant(REPL_USER, 'replication')

    box.schema.user.create('test', {password = 'test-password'})
    box.schema.user.grant('test', 'read,write,execute,create,alter,drop',
                          'universe')

    -- Only what every new user gets (the public role: session, usage).
    box.schema.user.create('limited', {password = 'limited-password'})

    local test_int = box.schema.space.create('test_int', {
        engine = 'memtx',
        format = {
            {name = 'id', type = 'unsigned'},
            {name = 'name', type = 'string'},
            {name = 'value', type = 'any', is_nullable = true},
        },
    })
    test_int:create_index('primary', {
        type = 'TREE', unique = true, parts = {'id'},
    })
    test_int:create_index('by_name', {
        type = 'TREE', unique = false, parts = {'name'},
    })

    local test_str = box.schema.space.create('test_str', {engine = 'memtx'})
    test_str:create_index('primary', {
        type = 'TREE', unique = true, parts = {{1, 'string'}},
    })

    local customers = box.schema.space.create('customers', {
        engine = 'memtx',
        format = {
            {name = 'id', type = 'unsigned'},
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'name', type = 'string'},
            {name = 'age', type = 'number', is_nullable = true},
        },
    })
    customers:create_index('primary_index', {
        type = 'TREE', unique = true, parts = {'id'},
    })
    customers:create_index('bucket_id', {
        type = 'TREE', unique = false, parts = {'bucket_id'},
    })
    customers:create_index('age_index', {
        type = 'TREE', unique = false, parts = {'age'},
    })

    local crud_schema = SCRIPT_DIR .. '/crud_schema.lua'
    if fio.path.exists(crud_schema) then
        log.info('running %s', crud_schema)
        dofile(crud_schema)
    end
end

------------------------------------------------------------------------
-- box.cfg
------------------------------------------------------------------------

local base_cfg = {
    listen = ('%s:%d'):format(HOST, PORT),
    work_dir = WORKDIR,
    memtx_dir = WORKDIR,
    wal_dir = WORKDIR,
    log = fio.pathjoin(WORKDIR, 'tarantool.log'),
    read_only = READ_ONLY,
    memtx_memory = 128 * 1024 * 1024,
    custom_proc_title = NAME,
    -- Heartbeats every 0.5 s: a dead peer is noticed after 2 s and
    -- appliers retry connecting every 0.5 s.
    replication_timeout = 0.5,
    replication_sync_timeout = 5,
    -- Fault tests can leave two masters writing the same keys; skip such
    -- conflicts instead of stopping replication for the rest of the run.
    replication_skip_conflict = true,
}

local function with(extra)
    local cfg = table.deepcopy(base_cfg)
    for k, v in pairs(extra) do
        cfg[k] = v
    end
    return cfg
end

log.info('starting %s (bootstrap mode: %s, read_only: %s)',
         NAME, BOOTSTRAP, READ_ONLY)

if BOOTSTRAP == 'master' then
    -- Bootstrap alone (no peers to wait for), create the schema, then
    -- switch on the mesh; with quorum 0 that does not block.
    box.cfg(with({replication = {}}))
    box.once('test-cluster-schema-v1', create_schema)
    box.cfg(MESH)
elseif BOOTSTRAP == 'join' then
    -- A read-only instance cannot bootstrap a replica set; make sure it
    -- joins the existing one by waiting for the given master only.
    box.cfg(with({
        replication = {repl_uri(env('TC_JOIN_URI'))},
        replication_connect_quorum = 1,
        replication_connect_timeout = 30,
    }))
    box.cfg(MESH)
else
    box.cfg(with(MESH))
end

------------------------------------------------------------------------
-- Optional crud module (written separately; may not exist yet).
------------------------------------------------------------------------

if fio.path.exists(SCRIPT_DIR .. '/crud.lua') then
    local ok, result = pcall(require, 'crud')
    if ok then
        rawset(_G, 'crud', result)
        log.info('crud module loaded')
    else
        log.error('failed to load crud module: %s', tostring(result))
    end
end

------------------------------------------------------------------------
-- Control channel: one JSON request line in, one JSON response line out.
--
-- Request:  {"lua": "<chunk>", "deadline": <unix time or null>}
-- Response: {"ok": true, "results": [...]} or {"ok": false, "error": ...}
--
-- The chunk is tried as an expression first ("box.info.ro"), then as a
-- statement block ("box.cfg{...} return 1").  A request that arrives after
-- its deadline (e.g. it sat in the socket while the process was frozen)
-- is not executed.
------------------------------------------------------------------------

local encoder = json.new()
encoder.cfg({
    encode_use_tostring = true,
    encode_invalid_numbers = false,
    encode_max_depth = 64,
})

local function pack_results(...)
    local n = select('#', ...)
    local results = {}
    for i = 1, n do
        local value = select(i, ...)
        if value == nil then
            value = json.NULL
        end
        results[i] = value
    end
    return results
end

local function describe_error(err)
    if type(err) == 'cdata' or type(err) == 'table' then
        local ok, unpacked = pcall(function() return err:unpack() end)
        if ok and type(unpacked) == 'table' then
            return {
                message = tostring(unpacked.message),
                code = unpacked.code,
                type = unpacked.type,
            }
        end
    end
    return {message = tostring(err)}
end

local function run_chunk(code)
    local fn, err = loadstring('return ' .. code, '=admin')
    if fn == nil then
        fn, err = loadstring(code, '=admin')
    end
    if fn == nil then
        return {ok = false, error = {message = tostring(err)}}
    end
    local res = pack_results(pcall(fn))
    local ok = table.remove(res, 1)
    if not ok then
        return {ok = false, error = describe_error(res[1])}
    end
    return {ok = true, results = res}
end

local function handle_request(line)
    local ok, request = pcall(json.decode, line)
    if not ok or type(request) ~= 'table' or type(request.lua) ~= 'string' then
        return {ok = false, error = {message = 'bad request'}}
    end
    local deadline = tonumber(request.deadline)
    if deadline ~= nil and clock.time() > deadline then
        log.warn('control: dropping expired request')
        return {ok = false, error = {message = 'request expired'}}
    end
    return run_chunk(request.lua)
end

local function serve(sock)
    while true do
        local line = sock:read('\n')
        if line == nil or line == '' then
            break
        end
        local response = handle_request(line)
        local ok, encoded = pcall(encoder.encode, response)
        if not ok then
            encoded = encoder.encode({
                ok = false,
                error = {message = 'cannot encode result as JSON: '
                                   .. tostring(encoded)},
            })
        end
        if not sock:write(encoded .. '\n') then
            break
        end
    end
    -- tcp_server closes the socket when the handler returns.
end

if fio.path.lexists(CTL_SOCK) then
    fio.unlink(CTL_SOCK)
end
local server, server_err = socket.tcp_server('unix/', CTL_SOCK, {
    name = 'tc_control',
    handler = serve,
})
if server == nil then
    error(('cannot listen on %s: %s'):format(CTL_SOCK, tostring(server_err)))
end
rawset(_G, 'tc_control_server', server)

------------------------------------------------------------------------
-- Exit when the test runner that started us is gone, so a killed test
-- session does not leave instances behind.
------------------------------------------------------------------------

local function proc_start_time(pid)
    local f = io.open(('/proc/%d/stat'):format(pid), 'r')
    if f == nil then
        return nil
    end
    local stat = f:read('*a')
    f:close()
    -- Fields after the command name (which may contain spaces).
    local rest = stat:match('%) (.*)$')
    if rest == nil then
        return nil
    end
    local fields = {}
    for field in rest:gmatch('%S+') do
        table.insert(fields, field)
    end
    -- fields[1] is the state (field 3), fields[20] is starttime (field 22).
    if fields[1] == 'Z' or fields[1] == 'X' then
        return nil
    end
    return fields[20]
end

local owner = tonumber(os.getenv('TC_OWNER_PID') or '')
if owner ~= nil then
    local owner_start = proc_start_time(owner)
    fiber.create(function()
        fiber.name('tc_owner_watch')
        while true do
            fiber.sleep(1)
            local now = proc_start_time(owner)
            if now == nil or now ~= owner_start then
                log.warn('owner process %d is gone, exiting', owner)
                os.exit(0)
            end
        end
    end)
end

log.info('%s ready (ro: %s, status: %s)', NAME, tostring(box.info.ro),
         box.info.status)
