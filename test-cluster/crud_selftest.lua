#!/usr/bin/env tarantool
-- crud_selftest.lua: self-test of the crud stand-in (crud.lua).
--
--     tarantool test-cluster/crud_selftest.lua
--
-- Starts a throwaway instance in a temporary directory (listening only on a
-- unix socket inside it), creates `customers` exactly as the test cluster
-- does, runs crud_schema.lua, loads crud.lua as the global `crud`, and checks
-- every function's success and error paths, both in Lua and over IPROTO
-- (net.box to the unix socket), including the exact number of returned values.
-- Prints one line per failure and a closing "N passed, N failed" line; exits 0
-- only when everything passed. The temporary directory is removed at the end.

local fio = require('fio')
local msgpack = require('msgpack')
local digest = require('digest')
local net_box = require('net.box')

local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:gsub('^@', '')))
package.path = here .. '/?.lua;' .. package.path

local workdir = fio.tempdir()
local socket_path = workdir .. '/crud.sock'
box.cfg{
    listen = 'unix/:' .. socket_path,
    memtx_dir = workdir,
    wal_dir = workdir,
    -- No WAL: nothing is written after the directory is removed at exit.
    wal_mode = 'none',
    vinyl_dir = workdir,
    log = workdir .. '/tarantool.log',
}

-- The same `customers` space the cluster creates.
local customers = box.schema.space.create('customers', {
    format = {
        {name = 'id', type = 'unsigned'},
        {name = 'bucket_id', type = 'unsigned'},
        {name = 'name', type = 'string'},
        {name = 'age', type = 'number', is_nullable = true},
    },
})
customers:create_index('primary_index', {parts = {'id'}})
customers:create_index('bucket_id', {parts = {'bucket_id'}, unique = false})
customers:create_index('age_index', {parts = {'age'}, unique = false})
dofile(here .. '/crud_schema.lua')
dofile(here .. '/crud_schema.lua') -- must be idempotent
box.schema.user.grant('guest', 'read,write,execute', 'universe', nil, {if_not_exists = true})

local crud = require('crud')
rawset(_G, 'crud', crud)
-- The expectations below use vshard's default, whatever CRUD_BUCKET_COUNT says.
crud._set_bucket_count(3000)

local conn = net_box.connect('unix/:' .. socket_path)
assert(conn:ping(), 'cannot connect to the test instance')

---------------------------------------------------------------------------
-- A tiny test harness
---------------------------------------------------------------------------

local passed, failed = 0, 0

local function test(name, fn)
    local ok, err = pcall(fn)
    if ok then
        passed = passed + 1
    else
        failed = failed + 1
        print(string.format('FAIL %s: %s', name, tostring(err)))
    end
end

local function show(value)
    local ok, text = pcall(require('json').encode, value)
    return ok and text or tostring(value)
end

-- Deep equality where box.NULL and nil are the same.
local function same(a, b)
    if a == nil or b == nil then
        return a == nil and b == nil
    end
    if type(a) ~= 'table' or type(b) ~= 'table' then
        return a == b
    end
    for k, v in pairs(a) do
        if not same(v, b[k]) then
            return false
        end
    end
    for k, v in pairs(b) do
        if not same(v, a[k]) then
            return false
        end
    end
    return true
end

local function eq(got, expected, what)
    if not same(got, expected) then
        error(string.format('%s: expected %s, got %s', what or 'value', show(expected), show(got)), 2)
    end
end

local function ok(cond, what)
    if not cond then
        error(what or 'condition is false', 2)
    end
end

local function contains(text, part, what)
    if type(text) ~= 'string' or not text:find(part, 1, true) then
        error(string.format('%s: %s does not contain %s', what or 'text', show(text), show(part)), 2)
    end
end

-- All return values with their count.
local function pack(...)
    return {n = select('#', ...), ...}
end

-- Checks an error object shape; `part` is a substring of err.
local function is_error(err, class_name, part)
    ok(type(err) == 'table', 'error object expected, got ' .. show(err))
    eq(err.class_name, class_name, 'class_name of ' .. show(err.err))
    ok(type(err.err) == 'string', 'err must be a string')
    eq(err.str, class_name .. ': ' .. err.err, 'str')
    ok(type(err.file) == 'string', 'file must be a string')
    ok(type(err.line) == 'number', 'line must be a number')
    if part ~= nil then
        contains(err.err, part, 'err')
    end
end

local function raises(part, fn, ...)
    local ok_call, err = pcall(fn, ...)
    if ok_call then
        error('expected an error containing ' .. show(part), 2)
    end
    contains(tostring(err), part, 'raised error')
end

local function is_array_encoded(t)
    local first = msgpack.encode(t):byte(1)
    return (first >= 0x90 and first <= 0x9f) or first == 0xdc or first == 0xdd
end

local function decoded_as_array(t)
    local mt = getmetatable(t)
    return mt ~= nil and (mt.__serialize == 'seq' or mt.__serialize == 'array' or
                          mt.__serialize == 'sequence')
end

local function names(metadata)
    local res = {}
    for i, field in ipairs(metadata) do
        res[i] = field.name
    end
    return res
end

local function column(rows, fieldno)
    local res = {}
    for i, row in ipairs(rows) do
        res[i] = row[fieldno]
    end
    return res
end

local function reset()
    for _, name in ipairs({'customers', 'developers', 'no_bucket', 'accounts'}) do
        box.space[name]:truncate()
    end
end

local CUSTOMERS_FORMAT = {
    {name = 'id', type = 'unsigned'},
    {name = 'bucket_id', type = 'unsigned'},
    {name = 'name', type = 'string'},
    {name = 'age', type = 'number', is_nullable = true},
}

local function bucket(...)
    local parts = {}
    for _, v in ipairs({...}) do
        table.insert(parts, tostring(v))
    end
    return digest.crc32(table.concat(parts)) % 3000 + 1
end

local cluster_uuid = box.info.cluster.uuid

---------------------------------------------------------------------------
-- Module surface
---------------------------------------------------------------------------

test('exports every function', function()
    for _, name in ipairs({
        'insert', 'insert_object', 'insert_many', 'insert_object_many', 'get', 'update',
        'delete', 'replace', 'replace_object', 'replace_many', 'replace_object_many',
        'upsert', 'upsert_object', 'upsert_many', 'upsert_object_many', 'select', 'pairs',
        'min', 'max', 'count', 'len', 'truncate', 'storage_info', 'stats', 'unflatten_rows',
        'cut_rows', 'cut_objects', 'reset_stats', 'schema',
    }) do
        ok(type(crud[name]) == 'function', 'crud.' .. name .. ' is missing')
    end
    ok(type(crud.cfg) == 'table' and getmetatable(crud.cfg).__call ~= nil, 'crud.cfg must be callable')
end)

---------------------------------------------------------------------------
-- bucket_id
---------------------------------------------------------------------------

test('bucket_id: CRC-32C of the primary key', function()
    reset()
    eq(digest.crc32('1'), 1862952476, 'crc32("1")')
    local expected = {[1] = 477, [2] = 401, [3] = 2804, [10] = 569}
    for id, bucket_id in pairs(expected) do
        local res, err = crud.insert('customers', {id, box.NULL, 'N' .. id})
        eq(err, nil, 'insert error')
        eq(res.rows[1][2], bucket_id, 'bucket_id of ' .. id)
        eq(box.space.customers:get(id).bucket_id, bucket_id, 'stored bucket_id of ' .. id)
    end
    -- Composite key: parts concatenated.
    local res = crud.insert('accounts', {7, 'main', box.NULL, 10})
    eq(res.rows[1][3], bucket(7, 'main'), 'composite bucket_id')
end)

test('bucket_id: configurable bucket_count', function()
    reset()
    crud._set_bucket_count(300)
    local res = crud.insert('customers', {1, box.NULL, 'A'})
    crud._set_bucket_count(3000)
    eq(res.rows[1][2], 1862952476 % 300 + 1, 'bucket_id with 300 buckets')
end)

test('bucket_id: opts.bucket_id, mismatch and invalid values', function()
    reset()
    local res, err = crud.insert('customers', {1, box.NULL, 'A'}, {bucket_id = 7})
    eq(err, nil, 'error')
    eq(res.rows[1][2], 7, 'opts.bucket_id used')
    res, err = crud.insert('customers', {2, 5, 'B'}, {bucket_id = 5})
    eq(res.rows[1][2], 5, 'equal ids accepted')
    res, err = crud.insert('customers', {3, 5, 'C'}, {bucket_id = 6})
    eq(res, nil, 'res')
    is_error(err, 'InsertError')
    eq(err.err, 'Failed to get bucket ID: BucketIDError: Tuple and opts.bucket_id contain ' ..
                'different bucket_id values: 5 and 6', 'mismatch text')
    res, err = crud.insert('customers', {3, box.NULL, 'C'}, {bucket_id = 0})
    is_error(err, 'InsertError', 'Failed to get bucket ID: ')
    contains(err.err, 'Invalid bucket_id in opts: expected unsigned, got number')
    res, err = crud.insert('customers', {3, 'x', 'C'})
    is_error(err, 'InsertError', 'Invalid bucket_id in data: expected unsigned, got string')
    res, err = crud.get('customers', 1, {bucket_id = 1.5})
    is_error(err, 'GetError', 'Invalid bucket_id in opts')
    eq(box.space.customers:get(3), nil, 'nothing written on errors')
end)

test('bucket_id: space without bucket_id index', function()
    reset()
    local res, err = crud.insert('no_bucket', {1, 'x'})
    eq(res, nil, 'res')
    is_error(err, 'InsertError', 'Failed to get bucket ID: ')
    contains(err.err, '"bucket_id" index is not found')
    res, err = crud.insert_many('no_bucket', {{1, 'x'}})
    eq(res, nil, 'many res')
    is_error(err[1], 'SplitTuplesError', '"bucket_id" index is not found')
    box.space.no_bucket:insert{1, 'x'}
    res, err = crud.get('no_bucket', 1)
    eq(res.rows, {{1, 'x'}}, 'reads still work')
    res, err = crud.select('no_bucket')
    eq(#res.rows, 1, 'select works')
end)

---------------------------------------------------------------------------
-- insert / insert_object
---------------------------------------------------------------------------

test('insert: success shape and arity', function()
    reset()
    local r = pack(crud.insert('customers', {1, box.NULL, 'Elizabeth', 23}))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'err')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    eq(r[1].rows, {{1, 477, 'Elizabeth', 23}}, 'rows')
    ok(is_array_encoded(r[1].rows) and is_array_encoded(r[1].rows[1]), 'rows encode as arrays')
    -- A box tuple is accepted too.
    local res = crud.insert('customers', box.tuple.new{2, box.NULL, 'Mary'})
    eq(res.rows, {{2, 401, 'Mary'}}, 'tuple input')
end)

test('insert: errors returned', function()
    reset()
    crud.insert('customers', {1, box.NULL, 'Elizabeth', 23})
    local r = pack(crud.insert('customers', {1, box.NULL, 'Again', 24}))
    eq(r.n, 2, 'arity')
    eq(r[1], nil, 'res')
    is_error(r[2], 'InsertError')
    eq(r[2].err, "Failed to insert: Duplicate key exists in unique index 'primary_index' " ..
                 "in space 'customers'", 'duplicate text')
    eq(r[2].stack, nil, 'InsertError has no stack')
    local res, err = crud.insert('nope', {1})
    eq(res, nil, 'res')
    is_error(err, 'InsertError')
    eq(err.err, 'Space "nope" doesn\'t exist', 'missing space text')
    res, err = crud.insert('customers', {5, box.NULL, 42})
    is_error(err, 'InsertError', 'Failed to insert: Tuple field 3 ')
end)

test('insert: fields and noreturn', function()
    reset()
    local res, err = crud.insert('customers', {1, box.NULL, 'Elizabeth', 23}, {fields = {'name', 'id'}})
    eq(err, nil, 'err')
    eq(names(res.metadata), {'name', 'id'}, 'metadata names')
    eq(res.rows, {{'Elizabeth', 1}}, 'rows')
    local r = pack(crud.insert('customers', {2, box.NULL, 'Mary'}, {noreturn = true}))
    eq(r.n, 2, 'arity')
    eq(r[1], nil, 'noreturn res')
    eq(r[2], nil, 'noreturn err')
    ok(box.space.customers:get(2) ~= nil, 'noreturn still writes')
    res, err = crud.insert('customers', {3, box.NULL, 'X'}, {fields = {'id', 'nope'}})
    eq(res, nil, 'res')
    is_error(err, 'FilterFieldsError')
    eq(err.err, 'Space format doesn\'t contain field named "nope"', 'text')
end)

test('insert: argument checks raise', function()
    raises('bad argument #2 to crud.insert (table|tuple expected, got string)',
           crud.insert, 'customers', 'x')
    raises('bad argument #1 to crud.insert (string expected, got number)', crud.insert, 1, {})
    raises('unexpected argument opts.foo to crud.insert', crud.insert, 'customers', {1}, {foo = 1})
    raises('bad argument opts.timeout to crud.insert (?number expected, got string)',
           crud.insert, 'customers', {1}, {timeout = 'x'})
    raises('bad argument #3 to crud.insert (?table expected, got string)',
           crud.insert, 'customers', {1}, 'opts')
    -- Empty array and box.NULL opts are fine, as are all documented options.
    reset()
    local res = crud.insert('customers', {1, box.NULL, 'A'}, {})
    ok(res ~= nil, 'empty opts')
    res = crud.insert('customers', {2, box.NULL, 'B'}, box.NULL)
    ok(res ~= nil, 'box.NULL opts')
    res = crud.insert('customers', {3, box.NULL, 'C'}, {
        timeout = 1, bucket_id = box.NULL, fields = box.NULL, noreturn = false,
        fetch_latest_metadata = true, vshard_router = 'default',
    })
    ok(res ~= nil, 'all options')
end)

test('insert_object: flatten and errors', function()
    reset()
    local r = pack(crud.insert_object('developers', {id = 1, name = 'Alexey'}))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'err')
    eq(r[1].rows, {{1, 477, 'Alexey', box.NULL, box.NULL}}, 'rows')
    eq(#r[1].rows[1], 5, 'missing nullable fields are NULL')
    local res, err = crud.insert_object('developers', {id = 2, name = 'X', bucket_id = 10})
    eq(res.rows[1][2], 10, 'bucket_id from object')
    res, err = crud.insert_object('developers', {id = 3, name = 'X', nope = 1})
    eq(res, nil, 'res')
    is_error(err, 'InsertError')
    eq(err.err, 'Failed to flatten object: FlattenError: Object is specified in bad format: ' ..
                'FlattenError: Unknown field "nope" is specified', 'unknown field text')
    res, err = crud.insert_object('developers', {id = 3})
    is_error(err, 'InsertError', 'Field "name" isn\'t nullable (set skip_nullability_check_on_flatten ' ..
                                 'option to true to skip check)')
    res, err = crud.insert_object('developers', {id = 3}, {skip_nullability_check_on_flatten = true})
    is_error(err, 'InsertError', 'Failed to insert: ')
    res, err = crud.insert_object('nope', {id = 1})
    is_error(err, 'InsertError', 'Space "nope" doesn\'t exist')
    raises('unexpected argument opts.stop_on_error to crud.insert_object',
           crud.insert_object, 'developers', {id = 1}, {stop_on_error = true})
    raises('bad argument #2 to crud.insert_object (table expected, got nil)',
           crud.insert_object, 'developers')
end)

---------------------------------------------------------------------------
-- get / update / delete
---------------------------------------------------------------------------

test('get', function()
    reset()
    crud.insert('customers', {1, box.NULL, 'Elizabeth', 23})
    local r = pack(crud.get('customers', 1))
    eq(r.n, 2, 'arity')
    eq(r[1].rows, {{1, 477, 'Elizabeth', 23}}, 'rows')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    local res, err = crud.get('customers', {1}, {fields = {'name'}, mode = 'write',
                                                  prefer_replica = true, balance = false})
    eq(res.rows, {{'Elizabeth'}}, 'fields')
    res = crud.get('customers', 100)
    eq(res.rows, {}, 'absent key')
    ok(is_array_encoded(res.rows), 'empty rows encode as an array')
    res, err = crud.get('customers', 'x')
    is_error(err, 'GetError', 'Failed to get: Supplied key type of part 0 does not match')
    res, err = crud.get('nope', 1)
    is_error(err, 'GetError', 'Space "nope" doesn\'t exist')
    crud.insert('accounts', {1, 'a', box.NULL, 5})
    res = crud.get('accounts', {1, 'a'})
    eq(res.rows[1][4], 5, 'composite key')
    raises('bad argument opts.mode to crud.get (?vshard_call_mode expected, got string)',
           crud.get, 'customers', 1, {mode = 'fast'})
    raises('unexpected argument opts.noreturn to crud.get', crud.get, 'customers', 1, {noreturn = true})
end)

test('update', function()
    reset()
    crud.insert('customers', {1, box.NULL, 'Elizabeth', 23})
    local r = pack(crud.update('customers', 1, {{'+', 'age', 1}, {'=', 3, 'Liz'}}))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'err')
    eq(r[1].rows, {{1, 477, 'Liz', 24}}, 'rows')
    local res, err = crud.update('customers', 100, {{'+', 'age', 1}})
    eq(err, nil, 'absent key err')
    eq(res.rows, {}, 'absent key rows')
    res = crud.update('customers', 1, {{'=', 'age', 30}}, {fields = {'id', 'age'}})
    eq(res.rows, {{1, 30}}, 'fields')
    r = pack(crud.update('customers', 1, {{'=', 'age', 31}}, {noreturn = true}))
    eq({r.n, r[1], r[2]}, {2, nil, nil}, 'noreturn')
    eq(box.space.customers:get(1).age, 31, 'noreturn updated')
    res, err = crud.update('customers', 1, {{'=', 'nope', 1}})
    is_error(err, 'UpdateError', 'Failed to update: ')
    res, err = crud.update('nope', 1, {})
    is_error(err, 'UpdateError', 'Space "nope" doesn\'t exist')
    -- A short tuple: crud pads the skipped nullable field before `age`.
    crud.insert('developers', {5, box.NULL, 'Short'})
    res, err = crud.update('developers', 5, {{'=', 'age', 40}})
    eq(err, nil, 'padding err')
    eq(res.rows, {{5, bucket(5), 'Short', box.NULL, 40}}, 'padded update')
    raises('bad argument #3 to crud.update (table expected, got nil)', crud.update, 'customers', 1)
end)

test('delete', function()
    reset()
    crud.insert('customers', {1, box.NULL, 'Elizabeth', 23})
    crud.insert('customers', {2, box.NULL, 'Mary', 46})
    local r = pack(crud.delete('customers', 1))
    eq(r.n, 2, 'arity')
    eq(r[1].rows, {{1, 477, 'Elizabeth', 23}}, 'deleted row')
    local res, err = crud.delete('customers', 1)
    eq(res.rows, {}, 'absent')
    r = pack(crud.delete('customers', 2, {noreturn = true}))
    eq({r.n, r[1], r[2]}, {2, nil, nil}, 'noreturn')
    eq(box.space.customers:get(2), nil, 'deleted')
    res, err = crud.delete('nope', 1)
    is_error(err, 'DeleteError', 'Space "nope" doesn\'t exist')
    res, err = crud.delete('customers', 'x')
    is_error(err, 'DeleteError', 'Failed to delete: ')
end)

---------------------------------------------------------------------------
-- replace / upsert
---------------------------------------------------------------------------

test('replace and replace_object', function()
    reset()
    local r = pack(crud.replace('customers', {1, box.NULL, 'Elizabeth', 23}))
    eq(r.n, 2, 'arity')
    eq(r[1].rows, {{1, 477, 'Elizabeth', 23}}, 'new row')
    local res = crud.replace('customers', {1, box.NULL, 'Liz'})
    eq(res.rows, {{1, 477, 'Liz'}}, 'replaced row')
    res = crud.replace_object('customers', {id = 2, name = 'Mary', age = 46}, {fields = {'name'}})
    eq(res.rows, {{'Mary'}}, 'replace_object with fields')
    local err
    res, err = crud.replace('nope', {1})
    is_error(err, 'ReplaceError', 'Space "nope" doesn\'t exist')
    res, err = crud.replace('customers', {3, box.NULL, 3})
    is_error(err, 'ReplaceError', 'Failed to replace: ')
    res, err = crud.replace_object('customers', {id = 3})
    is_error(err, 'ReplaceError', 'Failed to flatten object: ')
    r = pack(crud.replace('customers', {4, box.NULL, 'D'}, {noreturn = true}))
    eq({r.n, r[1], r[2]}, {2, nil, nil}, 'noreturn')
end)

test('upsert and upsert_object', function()
    reset()
    local r = pack(crud.upsert('customers', {1, box.NULL, 'Elizabeth', 23}, {{'+', 'age', 1}}))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'err')
    eq(r[1].rows, {}, 'rows are always empty')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    ok(is_array_encoded(r[1].rows), 'rows encode as an array')
    eq(box.space.customers:get(1):totable(), {1, 477, 'Elizabeth', 23}, 'inserted')
    crud.upsert('customers', {1, box.NULL, 'Elizabeth', 23}, {{'+', 'age', 1}})
    eq(box.space.customers:get(1).age, 24, 'updated')
    local res, err = crud.upsert_object('customers', {id = 2, name = 'Mary', age = 46},
                                        {{'=', 'name', 'M'}}, {fields = {'id'}})
    eq(err, nil, 'upsert_object err')
    eq(names(res.metadata), {'id'}, 'fields metadata')
    eq(res.rows, {}, 'upsert_object rows')
    eq(box.space.customers:get(2).bucket_id, 401, 'bucket_id filled')
    r = pack(crud.upsert('customers', {3, box.NULL, 'C'}, {}, {noreturn = true}))
    eq({r.n, r[1], r[2]}, {2, nil, nil}, 'noreturn')
    res, err = crud.upsert('nope', {1}, {})
    is_error(err, 'UpsertError', 'Space "nope" doesn\'t exist')
    res, err = crud.upsert('customers', {4, box.NULL, 4}, {})
    is_error(err, 'UpsertError', 'Failed to upsert: ')
    res, err = crud.upsert_object('customers', {id = 5, nope = 1}, {})
    is_error(err, 'UpsertError', 'Unknown field "nope" is specified')
    raises('unexpected argument opts.skip_nullability_check_on_flatten to crud.upsert_object',
           crud.upsert_object, 'customers', {id = 5}, {}, {skip_nullability_check_on_flatten = true})
end)

---------------------------------------------------------------------------
-- *_many
---------------------------------------------------------------------------

local function customer_ids()
    local ids = {}
    for _, t in box.space.customers:pairs() do
        table.insert(ids, t.id)
    end
    return ids
end

test('insert_many: success', function()
    reset()
    local r = pack(crud.insert_many('customers', {
        {1, box.NULL, 'Elizabeth', 23}, {2, box.NULL, 'Mary', 46}, {3, box.NULL, 'David', 33},
    }))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'errs')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    eq(r[1].rows, {{1, 477, 'Elizabeth', 23}, {2, 401, 'Mary', 46}, {3, 2804, 'David', 33}}, 'rows')
    local res = crud.insert_many('customers', {{4, box.NULL, 'W'}}, {fields = {'id', 'bucket_id'}})
    eq(res.rows, {{4, bucket(4)}}, 'fields')
    r = pack(crud.insert_many('customers', {{5, box.NULL, 'E'}}, {noreturn = true}))
    eq({r.n, r[1], r[2]}, {2, nil, nil}, 'noreturn')
    eq(customer_ids(), {1, 2, 3, 4, 5}, 'stored')
end)

test('insert_many: per-tuple errors', function()
    reset()
    crud.insert('customers', {2, box.NULL, 'Mary', 46})
    local res, errs = crud.insert_many('customers', {
        {1, box.NULL, 'Elizabeth', 23}, {2, box.NULL, 'Dup', 1}, {3, box.NULL, 'Anastasia', 22},
    })
    eq(res.rows, {{1, 477, 'Elizabeth', 23}, {3, 2804, 'Anastasia', 22}}, 'successful rows')
    eq(#errs, 1, 'one error')
    is_error(errs[1], 'CallError', 'Duplicate key exists')
    contains(errs[1].err, 'Failed for ' .. cluster_uuid .. ': Function returned an error: ')
    eq(errs[1].operation_data, {2, 401, 'Dup', 1}, 'operation_data has bucket_id filled')
    ok(type(errs[1].stack) == 'string', 'CallError has a stack')
    eq(customer_ids(), {1, 2, 3}, 'stored')
end)

test('insert_many: stop_on_error', function()
    reset()
    crud.insert('customers', {2, box.NULL, 'Mary', 46})
    local res, errs = crud.insert_many('customers', {
        {1, box.NULL, 'A'}, {2, box.NULL, 'Dup'}, {3, box.NULL, 'C'}, {4, box.NULL, 'D'},
    }, {stop_on_error = true})
    eq(res.rows, {{1, 477, 'A'}}, 'rows before the failure')
    eq(#errs, 3, 'errors')
    contains(errs[1].err, 'Duplicate key exists')
    contains(errs[2].err, 'Operation with tuple was not performed')
    eq(errs[2].operation_data, {3, 2804, 'C'}, 'not performed data')
    contains(errs[3].err, 'Operation with tuple was not performed')
    eq(errs[3].operation_data[1], 4, 'order')
    eq(customer_ids(), {1, 2}, 'stored')
end)

test('insert_many: rollback_on_error', function()
    reset()
    crud.insert('customers', {2, box.NULL, 'Mary', 46})
    local r = pack(crud.insert_many('customers', {
        {1, box.NULL, 'A'}, {2, box.NULL, 'Dup'}, {3, box.NULL, 'C'},
    }, {rollback_on_error = true}))
    eq(r.n, 2, 'arity')
    eq(r[1], nil, 'res')
    local errs = r[2]
    eq(#errs, 3, 'errors')
    contains(errs[1].err, 'Duplicate key exists')
    contains(errs[2].err, 'Operation with tuple was rollback')
    eq(errs[2].operation_data, {1, 477, 'A'}, 'rollback data')
    contains(errs[3].err, 'Operation with tuple was rollback')
    eq(customer_ids(), {2}, 'rolled back')
    -- Both options: failure, then not-performed, then rollback.
    local res
    res, errs = crud.insert_many('customers', {
        {1, box.NULL, 'A'}, {2, box.NULL, 'Dup'}, {3, box.NULL, 'C'},
    }, {stop_on_error = true, rollback_on_error = true})
    eq(res, nil, 'res')
    eq(#errs, 3, 'errors')
    contains(errs[1].err, 'Duplicate key exists')
    contains(errs[2].err, 'was not performed')
    eq(errs[2].operation_data[1], 3, 'not performed id')
    contains(errs[3].err, 'was rollback')
    eq(errs[3].operation_data[1], 1, 'rollback id')
    eq(customer_ids(), {2}, 'rolled back')
end)

test('insert_many: call-level errors', function()
    local r = pack(crud.insert_many('customers', {}))
    eq(r.n, 2, 'arity')
    eq(r[1], nil, 'res')
    is_error(r[2][1], 'InsertManyError')
    eq(r[2][1].err, 'At least one tuple expected', 'empty text')
    local res, errs = crud.insert_many('nope', {{1}})
    is_error(errs[1], 'InsertManyError', 'Space "nope" doesn\'t exist')
    res, errs = crud.insert_many('customers', {{1, box.NULL, 'A'}}, {fields = {'nope'}})
    is_error(errs[1], 'FilterFieldsError', 'Space format doesn\'t contain field named "nope"')
    raises('unexpected argument opts.bucket_id to crud.insert_many',
           crud.insert_many, 'customers', {{1}}, {bucket_id = 1})
end)

test('insert_object_many', function()
    reset()
    local res, errs = crud.insert_object_many('developers', {
        {id = 1, name = 'A'}, {id = 2, nope = 1}, {id = 3, name = 'C', age = 30},
    })
    eq(res.rows, {{1, 477, 'A', box.NULL, box.NULL}, {3, 2804, 'C', box.NULL, 30}}, 'rows')
    eq(#errs, 1, 'errors')
    is_error(errs[1], 'InsertManyError', 'Failed to flatten object: ')
    contains(errs[1].err, 'Unknown field "nope" is specified')
    eq(errs[1].operation_data, {id = 2, nope = 1}, 'operation_data is the object')
    -- Flatten errors come after storage errors.
    res, errs = crud.insert_object_many('developers', {{id = 1, name = 'Dup'}, {id = 9}})
    eq(res, nil, 'res')
    eq(#errs, 2, 'errors')
    is_error(errs[1], 'CallError', 'Duplicate key exists')
    is_error(errs[2], 'InsertManyError', 'isn\'t nullable')
    -- stop_on_error with a bad object: nothing is written at all.
    res, errs = crud.insert_object_many('developers', {{id = 4, name = 'D'}, {id = 5}},
                                        {stop_on_error = true})
    eq(res, nil, 'res')
    eq(#errs, 1, 'one error')
    eq(box.space.developers:get(4), nil, 'nothing written')
    res, errs = crud.insert_object_many('developers', {})
    eq(errs[1].err, 'At least one object expected', 'empty text')
    res, errs = crud.insert_object_many('developers', {{id = 6}}, {skip_nullability_check_on_flatten = true})
    is_error(errs[1], 'CallError', 'Function returned an error: ')
end)

test('replace_many and replace_object_many', function()
    reset()
    crud.insert('customers', {1, box.NULL, 'Old'})
    local r = pack(crud.replace_many('customers', {{1, box.NULL, 'New'}, {2, box.NULL, 'B'}}))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'errs')
    eq(r[1].rows, {{1, 477, 'New'}, {2, 401, 'B'}}, 'rows')
    local res, errs = crud.replace_many('customers', {{3, box.NULL, 3}, {4, box.NULL, 'D'}})
    eq(res.rows, {{4, bucket(4), 'D'}}, 'partial success')
    is_error(errs[1], 'CallError', 'Function returned an error: ')
    eq(errs[1].operation_data, {3, 2804, 3}, 'operation_data')
    res, errs = crud.replace_many('customers', {})
    is_error(errs[1], 'ReplaceManyError', 'At least one tuple expected')
    res, errs = crud.replace_object_many('customers', {{id = 5, name = 'E'}, {id = 6}})
    eq(res.rows, {{5, bucket(5), 'E', box.NULL}}, 'object rows')
    is_error(errs[1], 'ReplaceManyError', 'isn\'t nullable')
    res, errs = crud.replace_object_many('nope', {{id = 1}})
    is_error(errs[1], 'ReplaceManyError', 'Space "nope" doesn\'t exist')
end)

test('upsert_many and upsert_object_many', function()
    reset()
    crud.insert('customers', {1, box.NULL, 'A', 10})
    local r = pack(crud.upsert_many('customers', {
        {{1, box.NULL, 'A', 10}, {{'+', 'age', 5}}},
        {{2, box.NULL, 'B', 20}, {{'+', 'age', 5}}},
    }))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'errs')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    eq(r[1].rows, nil, 'no rows key')
    eq(box.space.customers:get(1).age, 15, 'updated')
    eq(box.space.customers:get(2):totable(), {2, 401, 'B', 20}, 'inserted')
    local res, errs = crud.upsert_many('customers', {
        {{3, box.NULL, 3}, {}}, {{4, box.NULL, 'D'}, {}},
    })
    ok(res ~= nil and res.rows == nil, 'partial success keeps metadata')
    is_error(errs[1], 'CallError', 'Function returned an error: ')
    eq(errs[1].operation_data, {3, 2804, 3}, 'operation_data')
    res, errs = crud.upsert_many('customers', {{{5, box.NULL, 5}, {}}})
    eq(res, nil, 'all failed')
    res, errs = crud.upsert_many('customers', {
        {{6, box.NULL, 'F'}, {}}, {{7, box.NULL, 7}, {}},
    }, {rollback_on_error = true})
    eq(res, nil, 'rolled back')
    eq(#errs, 2, 'failure + rollback')
    contains(errs[2].err, 'was rollback')
    eq(box.space.customers:get(6), nil, 'nothing kept')
    res, errs = crud.upsert_many('customers', {{{8, box.NULL, 'H'}, {}}}, {fields = {'id'}})
    eq(names(res.metadata), {'id'}, 'fields metadata')
    res, errs = crud.upsert_many('customers', {})
    is_error(errs[1], 'UpsertManyError', 'At least one tuple expected')
    res, errs = crud.upsert_object_many('customers', {
        {{id = 9, name = 'I'}, {{'=', 'name', 'J'}}}, {{id = 10, nope = 1}, {}},
    })
    ok(res ~= nil and res.rows == nil, 'object result')
    is_error(errs[1], 'UpsertManyError', 'Unknown field "nope" is specified')
    eq(box.space.customers:get(9).bucket_id, bucket(9), 'object bucket_id')
    res, errs = crud.upsert_object_many('customers', {})
    eq(errs[1].err, 'At least one object expected', 'empty text')
end)

---------------------------------------------------------------------------
-- select / pairs / count
---------------------------------------------------------------------------

local PEOPLE = {
    {1, 'Elizabeth', 12}, {2, 'Mary', 46}, {3, 'David', 33}, {4, 'William', 81},
    {5, 'Jack', 35}, {6, 'William', 25}, {7, 'Edward', 18}, {8, 'Nobody', box.NULL},
}

local function load_people()
    reset()
    for _, p in ipairs(PEOPLE) do
        local res, err = crud.insert('customers', {p[1], box.NULL, p[2], p[3]})
        assert(err == nil, tostring(err))
    end
end

local function ids(rows)
    return column(rows, 1)
end

test('select: plans and ordering', function()
    load_people()
    local r = pack(crud.select('customers'))
    eq(r.n, 2, 'arity')
    eq(r[2], nil, 'err')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    eq(ids(r[1].rows), {1, 2, 3, 4, 5, 6, 7, 8}, 'full scan by primary key')
    local res = crud.select('customers', {{'<=', 'age', 35}})
    eq(column(res.rows, 4), {35, 33, 25, 18, 12, box.NULL}, '<= scans descending')
    res = crud.select('customers', {{'>', 'age', 30}})
    eq(column(res.rows, 4), {33, 35, 46, 81}, '> scans ascending')
    res = crud.select('customers', {{'==', 'age', 33}})
    eq(ids(res.rows), {3}, '==')
    res = crud.select('customers', {{'=', 'name', 'William'}})
    eq(ids(res.rows), {4, 6}, 'non-indexed field filter')
    res = crud.select('customers', {{'>=', 'primary_index', 6}})
    eq(ids(res.rows), {6, 7, 8}, 'index name operand')
    res = crud.select('customers', {{'<', 'id', 3}})
    eq(ids(res.rows), {2, 1}, 'field of the primary index, descending')
    res = crud.select('customers', {{'>=', 'age', 18}, {'<', 'id', 5}})
    eq(ids(res.rows), {3, 2, 4}, 'two conditions (scan by age)')
    res = crud.select('customers', {{'>', 'name', 'Mary'}, {'<=', 'age', 30}})
    eq(ids(res.rows), {6, 8}, 'scan index chosen by the second condition (NULL < 30)')
    res = crud.select('customers', {{'==', 'age', box.NULL}})
    eq(ids(res.rows), {8}, 'NULL key')
    res = crud.select('customers', {{'>', 'age', 1000}})
    eq(res.rows, {}, 'empty result')
    ok(is_array_encoded(res.rows), 'empty rows encode as an array')
end)

test('select: multi-part keys', function()
    reset()
    for _, t in ipairs({{1, 'a', 10}, {1, 'b', 20}, {2, 'a', 30}, {3, 'c', box.NULL}}) do
        crud.insert('accounts', {t[1], t[2], box.NULL, t[3]})
    end
    local res = crud.select('accounts', {{'==', 'primary_index', {1}}})
    eq(column(res.rows, 2), {'a', 'b'}, 'key prefix')
    res = crud.select('accounts', {{'==', 'primary_index', {1, 'b'}}})
    eq(column(res.rows, 4), {20}, 'full key')
    res = crud.select('accounts', {{'>=', 'user_id', 2}})
    eq(column(res.rows, 1), {2, 3}, 'first part field uses the primary index')
    res = crud.select('accounts', {{'>', 'primary_index', {1, 'a'}}})
    eq(#res.rows, 3, 'multi-part > key')
    res = crud.select('accounts', {{'<', 'balance', 25}})
    eq(column(res.rows, 4), {20, 10, box.NULL}, 'secondary index descending')
end)

test('select: first, after and negative first', function()
    load_people()
    local page1 = crud.select('customers', nil, {first = 3})
    eq(ids(page1.rows), {1, 2, 3}, 'page 1')
    local page2 = crud.select('customers', nil, {first = 3, after = page1.rows[3]})
    eq(ids(page2.rows), {4, 5, 6}, 'page 2')
    local back = crud.select('customers', nil, {first = -3, after = page2.rows[1]})
    eq(ids(back.rows), {1, 2, 3}, 'negative first returns the previous page in order')
    local res = crud.select('customers', nil, {first = 0})
    eq(res.rows, {}, 'first = 0')
    -- Paging over a secondary index (descending scan with NULLs last).
    local all = crud.select('customers', {{'<=', 'age', 100}})
    local collected, after = {}, nil
    for _ = 1, 10 do
        local page = crud.select('customers', {{'<=', 'age', 100}}, {first = 3, after = after})
        for _, row in ipairs(page.rows) do
            table.insert(collected, row[1])
        end
        if #page.rows < 3 then
            break
        end
        after = page.rows[#page.rows]
    end
    eq(collected, ids(all.rows), 'pages over age_index')
    res = crud.select('customers', {{'<=', 'age', 100}}, {first = -2, after = all.rows[5]})
    eq(ids(res.rows), {ids(all.rows)[3], ids(all.rows)[4]}, 'negative first on a descending scan')
    -- == scan with after inside the group of equal keys.
    res = crud.select('customers', {{'==', 'name', 'William'}}, {first = 1})
    res = crud.select('customers', {{'==', 'name', 'William'}}, {after = res.rows[1]})
    eq(ids(res.rows), {6}, 'after within a non-indexed == filter')
    -- Ascending scan after a row outside the range still keeps the bound.
    res = crud.select('customers', {{'>', 'age', 30}}, {after = {7, 1, 'Edward', 18}})
    eq(column(res.rows, 4), {33, 35, 46, 81}, 'after below the range')
    local r = pack(crud.select('customers', nil, {first = -1}))
    eq(r.n, 2, 'arity')
    eq(r[1], nil, 'res')
    is_error(r[2], 'SelectError')
    eq(r[2].err, 'Negative first should be specified only with after option', 'text')
end)

test('select: fields', function()
    load_people()
    local res = crud.select('customers', {{'>=', 'age', 30}}, {fields = {'name'}, first = 2})
    eq(names(res.metadata), {'name', 'age', 'id'}, 'scan and primary key fields appended')
    eq(res.rows, {{'David', 33, 3}, {'Jack', 35, 5}}, 'rows')
    local next_page = crud.select('customers', {{'>=', 'age', 30}},
                                  {fields = {'name'}, first = 2, after = res.rows[2]})
    eq(next_page.rows, {{'Mary', 46, 2}, {'William', 81, 4}}, 'after in the fields shape')
    res = crud.select('customers', nil, {fields = {'id', 'name'}, first = 1})
    eq(names(res.metadata), {'id', 'name'}, 'no duplicate key fields')
    local cut = crud.cut_rows(res.rows, res.metadata, {'id'})
    eq(cut.rows, {{1}}, 'cut_rows rows')
    eq(names(cut.metadata), {'id'}, 'cut_rows metadata')
    local err
    res, err = crud.select('customers', nil, {fields = {'nope'}})
    is_error(err, 'FilterFieldsError', 'Space format doesn\'t contain field named "nope"')
end)

test('select: errors are returned, not raised', function()
    load_people()
    local r = pack(crud.select('nope'))
    eq(r.n, 2, 'arity')
    is_error(r[2], 'SelectError')
    eq(r[2].err, 'Space "nope" doesn\'t exist', 'missing space')
    ok(type(r[2].stack) == 'string', 'SelectError has a stack')
    local res, err = crud.select('customers', {{'~', 'age', 1}})
    is_error(err, 'SelectError', 'Failed to parse conditions: ')
    contains(err.err, 'condition[1] "~" isn\'t a valid condition operator')
    res, err = crud.select('customers', {{'=='}})
    contains(err.err, 'Each condition should be {"<operator>", "<operand>", <value>}')
    res, err = crud.select('customers', {{'==', 1, 1}})
    contains(err.err, 'condition[2] should be string')
    res, err = crud.select('customers', {'x'})
    contains(err.err, 'Each condition should be table')
    res, err = crud.select('customers', {{'==', 'nope', 1}})
    is_error(err, 'SelectError', 'No field or index is found for condition')
    res, err = crud.select('customers', {{'>', 'id', 'x'}})
    is_error(err, 'SelectError', 'Supplied key type')
    res, err = crud.select('customers', nil, {foo = 1})
    is_error(err, 'SelectError', 'unexpected argument opts.foo to crud.select')
    res, err = crud.select('customers', nil, {first = 'x'})
    is_error(err, 'SelectError', 'bad argument opts.first to crud.select (?number expected, got string)')
    res, err = crud.select('customers', 'x')
    is_error(err, 'SelectError', 'bad argument #2 to crud.select')
    res, err = crud.select('customers', nil, {batch_size = 0})
    eq(err.err, 'batch_size should be > 0', 'batch_size')
    res, err = crud.select('customers', nil, {yield_every = 0})
    eq(err.err, 'yield_every should be > 0', 'yield_every')
    -- All documented options are accepted.
    res, err = crud.select('customers', nil, {
        batch_size = 10, bucket_id = 5, force_map_call = true, fullscan = true,
        mode = 'read', prefer_replica = true, balance = true, timeout = 1, request_timeout = 1,
        yield_every = 10, fetch_latest_metadata = true, vshard_router = 'default',
    })
    eq(err, nil, 'options accepted')
    eq(#res.rows, #PEOPLE, 'rows')
end)

test('pairs', function()
    load_people()
    local got = {}
    for _, row in crud.pairs('customers', {{'>', 'age', 30}}) do
        table.insert(got, row[1])
    end
    eq(got, ids(crud.select('customers', {{'>', 'age', 30}}).rows), 'same as select')
    got = {}
    for _, object in crud.pairs('customers', {{'==', 'id', 1}}, {use_tomap = true}) do
        table.insert(got, object)
    end
    eq(got, {{id = 1, bucket_id = 477, name = 'Elizabeth', age = 12}}, 'use_tomap')
    got = {}
    for _, row in crud.pairs('customers', nil, {first = 2, after = {2, 401, 'Mary', 46}}) do
        table.insert(got, row[1])
    end
    eq(got, {3, 4}, 'first and after')
    raises("Negative first isn't allowed for pairs", crud.pairs, 'customers', nil,
           {first = -1, after = {1}})
    raises('Failed to generate iterator: SelectError: Space "nope" doesn\'t exist', crud.pairs, 'nope')
    raises('unexpected argument opts.fullscan to crud.pairs', crud.pairs, 'customers', nil, {fullscan = true})
end)

test('count', function()
    load_people()
    local r = pack(crud.count('customers'))
    eq({r.n, r[1], r[2]}, {2, #PEOPLE, nil}, 'count all')
    eq(crud.count('customers', {{'>=', 'age', 30}}), 4, 'count >=')
    eq(crud.count('customers', {{'<', 'age', 30}}), 4, 'count < (NULL included)')
    eq(crud.count('customers', {{'==', 'name', 'William'}, {'>', 'id', 4}}), 1, 'two conditions')
    local res, err = crud.count('nope')
    is_error(err, 'CountError', 'Space "nope" doesn\'t exist')
    res, err = crud.count('customers', {{'~', 'age', 1}})
    is_error(err, 'CountError', 'Failed to parse conditions: ')
    res, err = crud.count('customers', {{'==', 'nope', 1}})
    is_error(err, 'CountError', 'No field or index is found for condition')
    res, err = crud.count('customers', nil, {yield_every = 0})
    eq(err.err, 'yield_every should be > 0', 'yield_every')
    raises('unexpected argument opts.first to crud.count', crud.count, 'customers', nil, {first = 1})
end)

---------------------------------------------------------------------------
-- min / max / len / truncate
---------------------------------------------------------------------------

test('min and max', function()
    load_people()
    local r = pack(crud.min('customers'))
    eq(r.n, 2, 'arity')
    eq(r[1].rows, {{1, 477, 'Elizabeth', 12}}, 'min by primary')
    local res = crud.max('customers', 'age_index')
    eq(res.rows[1][1], 4, 'max by age')
    res = crud.min('customers', 'age_index', {fields = {'name'}})
    eq(names(res.metadata), {'name'}, 'exactly the requested fields')
    eq(res.rows, {{'Nobody'}}, 'NULL sorts first')
    res = crud.max('customers', 0, {fields = {'id'}})
    eq(res.rows, {{8}}, 'index by id')
    local err
    res, err = crud.min('customers', 'nope')
    is_error(err, 'BorderError')
    eq(err.err, 'Index "nope" of space "customers" doesn\'t exist', 'missing index')
    res, err = crud.max('nope')
    is_error(err, 'BorderError', 'Space "nope" doesn\'t exist')
    reset()
    res, err = crud.max('customers')
    eq(res.rows, {}, 'empty space')
    raises('unexpected argument opts.bucket_id to crud.min', crud.min, 'customers', nil, {bucket_id = 1})
end)

test('len and truncate', function()
    load_people()
    local r = pack(crud.len('customers'))
    eq({r.n, r[1]}, {1, #PEOPLE}, 'len is one value')
    eq(crud.len(box.space.customers.id), #PEOPLE, 'len by space id')
    local res, err = crud.len('nope')
    is_error(err, 'LenError', 'Space "nope" doesn\'t exist')
    r = pack(crud.truncate('customers'))
    eq({r.n, r[1]}, {1, true}, 'truncate is one value')
    eq(box.space.customers:len(), 0, 'truncated')
    res, err = crud.truncate('nope')
    is_error(err, 'TruncateError', 'Space "nope" doesn\'t exist')
    raises('unexpected argument opts.mode to crud.truncate', crud.truncate, 'customers', {mode = 'write'})
end)

---------------------------------------------------------------------------
-- storage_info, schema, unflatten/cut helpers
---------------------------------------------------------------------------

test('storage_info', function()
    local r = pack(crud.storage_info())
    eq(r.n, 1, 'one value')
    eq(r[1], {[box.info.uuid] = {status = 'running', is_master = true}}, 'shape')
    raises('unexpected argument opts.foo to crud.storage_info', crud.storage_info, {foo = 1})
end)

test('schema', function()
    local res = crud.schema('customers')
    eq(res.format[2], {name = 'bucket_id', type = 'unsigned', is_nullable = true}, 'bucket_id nullable')
    eq(res.indexes[0].name, 'primary_index', 'primary index')
    eq(res.indexes[2].name, 'age_index', 'age index')
    eq(res.indexes[1], nil, 'bucket_id index hidden')
    local all = crud.schema()
    ok(all.customers ~= nil and all.developers ~= nil and all._space == nil, 'all user spaces')
    local _, err = crud.schema('nope')
    is_error(err, 'SchemaError', 'Space "nope" doesn\'t exist')
end)

test('unflatten_rows, cut_rows, cut_objects', function()
    local metadata = {{name = 'id', type = 'unsigned'}, {name = 'age', type = 'number', is_nullable = true}}
    local r = pack(crud.unflatten_rows({{1, 20}, {2}}, metadata))
    eq(r.n, 1, 'one value')
    eq(r[1], {{id = 1, age = 20}, {id = 2}}, 'objects')
    local res, err = crud.unflatten_rows({{box.NULL, 1}}, metadata)
    is_error(err, 'UnflattenError', "Field 1 isn't nullable")
    res, err = crud.unflatten_rows({{1}})
    is_error(err, 'UnflattenError', 'Metadata is not provided')
    r = pack(crud.cut_rows({{1, 20, 'x'}}, metadata, {'id'}))
    eq(r.n, 1, 'cut_rows one value')
    eq(r[1], {metadata = {metadata[1]}, rows = {{1}}}, 'cut_rows')
    res, err = crud.cut_rows({{1, 20}}, metadata, {'age'})
    is_error(err, 'FilterFieldsError', "Field names don't match to tuple metadata")
    eq(crud.cut_objects({{id = 1, age = 2, name = 'x'}}, {'id', 'name'}), {{id = 1, name = 'x'}}, 'cut_objects')
end)

---------------------------------------------------------------------------
-- cfg / stats
---------------------------------------------------------------------------

test('stats', function()
    eq(crud.stats(), {}, 'disabled: empty')
    eq(crud.cfg.stats, false, 'cfg.stats readable')
    local cfg = crud.cfg{stats = true}
    eq(cfg.stats, true, 'cfg result')
    eq(cfg.stats_driver, 'local', 'driver')
    load_people()
    crud.insert('customers', {1, box.NULL, 'Dup'})
    crud.get('customers', 1)
    crud.select('customers', {{'>', 'age', 30}})
    crud.insert_many('customers', {{100, box.NULL, 'Z'}})
    crud.min('customers')
    local all = crud.stats()
    local space_stats = all.spaces.customers
    eq(space_stats.insert.ok.count, #PEOPLE, 'insert ok count')
    eq(space_stats.insert.error.count, 1, 'insert error count')
    eq(space_stats.get.ok.count, 1, 'get')
    eq(space_stats.select.ok.count, 1, 'select')
    eq(space_stats.select.details.tuples_fetched, 4, 'select details')
    eq(space_stats.insert_many.ok.count, 1, 'insert_many')
    eq(space_stats.borders.ok.count, 1, 'borders')
    ok(type(space_stats.get.ok.latency) == 'number', 'latency')
    eq(crud.stats('customers'), space_stats, 'stats(space)')
    eq(crud.stats('nope'), {}, 'unknown space')
    pcall(crud.insert, 'customers', 'bad')
    eq(crud.stats('customers').insert.error.count, 2, 'raised errors counted')
    eq(crud.reset_stats(), true, 'reset_stats')
    eq(crud.stats(), {spaces = {}}, 'after reset')
    crud.cfg{stats = false}
    eq(crud.stats(), {}, 'disabled again')
    raises('unexpected argument opts.foo to crud.cfg', crud.cfg, {foo = 1})
    raises('Unsupported driver: metrics', crud.cfg, {stats_driver = 'metrics'})
end)

---------------------------------------------------------------------------
-- Over IPROTO (net.box to the unix socket): arity and shapes on the wire
---------------------------------------------------------------------------

local function wire(name, ...)
    return pack(conn:call('crud.' .. name, {...}))
end

test('IPROTO: return arity of every function', function()
    load_people()
    local cases = {
        {'insert', 2, 'customers', {20, box.NULL, 'T'}},
        {'insert_object', 2, 'customers', {id = 21, name = 'T'}},
        {'insert_many', 2, 'customers', {{22, box.NULL, 'T'}}},
        {'insert_object_many', 2, 'customers', {{id = 23, name = 'T'}}},
        {'get', 2, 'customers', 20},
        {'update', 2, 'customers', 20, {{'=', 'age', 1}}},
        {'delete', 2, 'customers', 20},
        {'replace', 2, 'customers', {20, box.NULL, 'T'}},
        {'replace_object', 2, 'customers', {id = 20, name = 'T'}},
        {'replace_many', 2, 'customers', {{20, box.NULL, 'T'}}},
        {'replace_object_many', 2, 'customers', {{id = 20, name = 'T'}}},
        {'upsert', 2, 'customers', {20, box.NULL, 'T'}, {}},
        {'upsert_object', 2, 'customers', {id = 20, name = 'T'}, {}},
        {'upsert_many', 2, 'customers', {{{20, box.NULL, 'T'}, {}}}},
        {'upsert_object_many', 2, 'customers', {{{id = 20, name = 'T'}, {}}}},
        {'select', 2, 'customers', box.NULL, {first = 1}},
        {'min', 2, 'customers'},
        {'max', 2, 'customers', 'age_index'},
        {'count', 2, 'customers'},
        {'len', 1, 'customers'},
        {'storage_info', 1},
        {'stats', 1},
        {'unflatten_rows', 1, {{1}}, {{name = 'id', type = 'unsigned'}}},
        {'cut_rows', 1, {{1, 2}}, {{name = 'a'}, {name = 'b'}}, {'a'}},
        {'cut_objects', 1, {{a = 1, b = 2}}, {'a'}},
        {'schema', 1, 'customers'},
        {'reset_stats', 1},
        {'cfg', 1},
        {'truncate', 1, 'customers'},
    }
    for _, case in ipairs(cases) do
        local r = wire(case[1], unpack(case, 3, table.maxn(case)))
        eq(r.n, case[2], 'arity of crud.' .. case[1])
        if case[2] == 2 then
            eq(r[2], nil, 'no error from crud.' .. case[1])
        end
    end
    -- Errors also come back as two values.
    local r = wire('len', 'nope')
    eq(r.n, 2, 'len error arity')
    r = wire('truncate', 'nope')
    eq(r.n, 2, 'truncate error arity')
end)

test('IPROTO: result and error shapes', function()
    reset()
    local r = wire('insert', 'customers', {1, box.NULL, 'Elizabeth', 23})
    eq(r[1].rows, {{1, 477, 'Elizabeth', 23}}, 'rows')
    eq(r[1].metadata, CUSTOMERS_FORMAT, 'metadata')
    r = wire('get', 'customers', 100)
    eq(r[1].rows, {}, 'empty rows')
    ok(decoded_as_array(r[1].rows), 'empty rows are an msgpack array on the wire')
    r = wire('insert', 'customers', {1, box.NULL, 'Elizabeth', 23})
    eq(r[1], nil, 'res')
    local err = r[2]
    eq(err.class_name, 'InsertError', 'class_name')
    eq(err.str, 'InsertError: ' .. err.err, 'str')
    contains(err.err, 'Failed to insert: Duplicate key exists')
    ok(type(err.file) == 'string' and type(err.line) == 'number', 'file and line')
    r = wire('insert_many', 'customers', {{1, box.NULL, 'A'}, {2, box.NULL, 'B'}})
    eq(r[1].rows, {{2, 401, 'B'}}, 'many rows')
    eq(r[2][1].operation_data, {1, 477, 'A'}, 'operation_data')
    contains(r[2][1].err, 'Duplicate key exists')
    r = wire('upsert_many', 'customers', {{{3, box.NULL, 'C'}, {}}})
    ok(r[1].metadata ~= nil and r[1].rows == nil, 'upsert_many has no rows key')
    r = wire('select', 'customers', box.NULL, {first = -1})
    eq(r[2].class_name, 'SelectError', 'select returns its error')
    r = wire('cfg', {stats = true})
    eq(r[1].stats, true, 'crud.cfg callable over IPROTO')
    wire('cfg', {stats = false})
    local ok_call, call_err = pcall(conn.call, conn, 'crud.insert', {'customers', {1}, {foo = 1}})
    ok(not ok_call, 'checks errors raise')
    contains(tostring(call_err), 'unexpected argument opts.foo to crud.insert')
    ok_call, call_err = pcall(conn.call, conn, 'crud.pairs', {'customers'})
    ok(not ok_call, 'pairs cannot cross IPROTO')
end)

---------------------------------------------------------------------------
-- Read-only instance: reads work, writes return error objects
---------------------------------------------------------------------------

test('read-only instance', function()
    load_people()
    box.cfg{read_only = true}
    local results = {pcall(function()
        local res, err = crud.get('customers', 1)
        eq(err, nil, 'get')
        eq(#res.rows, 1, 'get rows')
        res, err = crud.select('customers', {{'>', 'age', 30}})
        eq(#res.rows, 4, 'select')
        eq(crud.count('customers'), #PEOPLE, 'count')
        eq(crud.len('customers'), #PEOPLE, 'len')
        eq(crud.min('customers').rows[1][1], 1, 'min')
        eq(crud.max('customers').rows[1][1], 8, 'max')
        eq(crud.storage_info()[box.info.uuid].is_master, false, 'is_master')
        local r = pack(crud.insert('customers', {50, box.NULL, 'RO'}))
        eq(r.n, 2, 'write arity')
        eq(r[1], nil, 'write res')
        is_error(r[2], 'InsertError')
        eq(r[2].err, "Failed to insert: Can't modify data because this instance is in read-only mode.",
           'read-only text')
        res, err = crud.update('customers', 1, {{'=', 'age', 1}})
        is_error(err, 'UpdateError', 'read-only')
        res, err = crud.insert_many('customers', {{51, box.NULL, 'RO'}})
        eq(res, nil, 'many res')
        is_error(err[1], 'CallError', 'read-only')
        res, err = crud.truncate('customers')
        is_error(err, 'TruncateError', 'Failed to truncate: ')
        r = wire('insert', 'customers', {52, box.NULL, 'RO'})
        eq(r.n, 2, 'IPROTO write arity')
        contains(r[2].err, 'read-only')
    end)}
    box.cfg{read_only = false}
    if not results[1] then
        error(results[2], 0)
    end
end)

---------------------------------------------------------------------------

conn:close()
print(string.format('%d passed, %d failed', passed, failed))
box.cfg{read_only = false}
fio.rmtree(workdir)
os.exit(failed == 0 and 0 or 1)
