-- The server's own ceiling: a Lua net.box client in a tarantool process of
-- its own, one connection, N fibers with a request each in flight.
--
--     tarantool bench/netbox_client.lua '<cell spec as JSON>'
--
-- Same cell protocol as bench/cell.py: warm-up, then a measured window in
-- which every completed request is counted with its latency; one JSON line
-- on stdout.  Replies are checked as in cell.py (call echoes the caller's
-- own arguments, select returns the asked key, replace returns the written
-- tuple).  CPU per request uses clock.proc(): the process CPU time of every
-- thread of this tarantool process.  No box.cfg: net.box needs none.

local net_box = require('net.box')
local fiber = require('fiber')
local clock = require('clock')
local json = require('json')

local SPACE = 'test_int'
local REPLACE_BASE = 1000000
local ERROR_SAMPLES = 5
local ERROR_PAUSE = 0.001
local STOP_GRACE = 15

local function emit(result)
    io.stdout:write(json.encode(result) .. '\n')
    io.stdout:flush()
    os.exit(0)
end

local ok_spec, spec = pcall(json.decode, arg[1] or '')
if not ok_spec or type(spec) ~= 'table' then
    emit({status = 'failed', reason = 'usage: tarantool netbox_client.lua SPEC_JSON'})
end

local workload = spec.workload
local keys = spec.keys
local master = spec.master

local conn = net_box.connect(('%s:%d'):format(master.host, master.port), {
    user = spec.user,
    password = spec.password,
    wait_connected = 10,
})
if not conn:is_connected() then
    emit({status = 'failed', reason = 'net.box could not connect: ' .. tostring(conn.error)})
end
local space = conn.space[SPACE]
if space == nil then
    emit({status = 'failed', reason = 'no space ' .. SPACE .. ' in the schema net.box loaded'})
end

local measuring = false
local stop = false
local running = 0
local tallies = {}

local function worker(number)
    local tally = {latencies = {}, n = 0, errors = 0, mismatches = 0, samples = {}}
    tallies[number + 1] = tally
    math.randomseed(spec.seed * 1000 + number)
    local seq = 0
    local now = clock.monotonic
    while not stop do
        seq = seq + 1
        local started = now()
        local ok, mismatch = pcall(function()
            if workload == 'select' then
                local key = math.random(1, keys)
                local rows = space:select({key})
                return not (#rows == 1 and rows[1][1] == key)
            elseif workload == 'replace' then
                local id = REPLACE_BASE + math.random(0, keys - 1)
                local value = number * 1000000000 + seq
                local row = space:replace({id, 'bench', value})
                return not (row ~= nil and row[1] == id and row[3] == value)
            elseif workload == 'call' then
                local a, b = conn:call('echo', {number, seq})
                return not (a == number and b == seq)
            else
                if not conn:ping() then
                    error('ping returned false')
                end
                return false
            end
        end)
        local finished = now()
        if not ok then
            if measuring then
                tally.errors = tally.errors + 1
                if #tally.samples < ERROR_SAMPLES then
                    table.insert(tally.samples, tostring(mismatch):sub(1, 300))
                end
            end
            fiber.sleep(ERROR_PAUSE)
        elseif measuring then
            tally.n = tally.n + 1
            tally.latencies[tally.n] = finished - started
            if mismatch then
                tally.mismatches = tally.mismatches + 1
            end
        end
    end
    running = running - 1
end

for number = 0, spec.concurrency - 1 do
    running = running + 1
    fiber.create(worker, number)
end

fiber.sleep(spec.warmup)
local cpu_before, started = clock.proc(), clock.monotonic()
measuring = true
fiber.sleep(spec.duration)
measuring = false
local cpu_after, finished = clock.proc(), clock.monotonic()
stop = true
local give_up = clock.monotonic() + STOP_GRACE
while running > 0 and clock.monotonic() < give_up do
    fiber.sleep(0.01)
end

local latencies, errors, mismatches, samples = {}, 0, 0, {}
for _, tally in pairs(tallies) do
    for i = 1, tally.n do
        latencies[#latencies + 1] = tally.latencies[i]
    end
    errors = errors + tally.errors
    mismatches = mismatches + tally.mismatches
    for _, sample in ipairs(tally.samples) do
        if #samples < ERROR_SAMPLES then
            table.insert(samples, sample)
        end
    end
end
if running > 0 then
    errors = errors + running
    table.insert(samples, ('%d fiber(s) still blocked %d s after the window'):format(running, STOP_GRACE))
end
table.sort(latencies)

-- Nearest-rank percentile, seconds in, microseconds out (nil: no samples).
local function percentile(fraction)
    local n = #latencies
    if n == 0 then
        return json.NULL
    end
    local rank = math.max(math.ceil(n * fraction), 1)
    return latencies[math.min(rank, n)] * 1e6
end

local elapsed = finished - started
local requests = #latencies
local cpu = cpu_after - cpu_before
emit({
    status = 'ok',
    requests = requests,
    seconds = elapsed,
    rps = requests / elapsed,
    p50_us = percentile(0.50),
    p99_us = percentile(0.99),
    cpu_us_per_req = requests > 0 and cpu * 1e6 / requests or json.NULL,
    cpu_seconds = cpu,
    errors = errors,
    mismatches = workload ~= 'ping' and mismatches or json.NULL,
    error_samples = samples,
})
