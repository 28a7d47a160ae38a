-- crud.lua: a stand-in for the tarantool/crud router API, for ONE replica set.
--
-- The real `crud` rock needs vshard, which this test cluster does not run. This
-- module exposes the same functions under the same names (the cluster does
-- `rawset(_G, 'crud', require('crud'))`, so IPROTO clients CALL `crud.insert`,
-- `crud.select`, ...) and executes everything locally with `box`. The wire
-- contract it follows is /work/shared/reference/crud.md: argument order, return
-- arity, result and error shapes, option names and message texts.
--
-- Deliberate deviations from the real crud (see crud.md section 7):
--   * No vshard: no routing, bucket refs, rebalancing "safe mode", replicaset
--     discovery, schema or sharding-hash reload retries. Every call runs on the
--     instance that received it. Reads work on a read-only replica; a write there
--     returns the box error inside the usual error object ("Failed to insert: Can't
--     modify data because this instance is in read-only mode.").
--   * Sharding is always by primary key with vshard's strcrc32 (CRC-32C over the
--     tostring'd key parts, `% bucket_count + 1`). No custom sharding key or
--     function (_ddl_sharding_key / _ddl_sharding_func). bucket_count defaults to
--     3000 and is taken from the environment variable CRUD_BUCKET_COUNT at load
--     time, or set later with crud._set_bucket_count(n) (a stand-in-only
--     helper). Bucket ids above bucket_count are not rejected (there are no
--     buckets to route to).
--   * Spaces without a "bucket_id" index: insert-like calls fail as in the real
--     crud ("bucket_id" index is not found). get/update/delete/select/count only
--     validate opts.bucket_id and otherwise ignore it.
--   * Accepted but ignored options: timeout, request_timeout, vshard_router,
--     fetch_latest_metadata (metadata is always current on one node), mode,
--     prefer_replica, balance, force_map_call, fullscan (no "potentially long
--     select" log), batch_size and yield_every (only validated to be > 0; scans
--     never yield), readview/readview_info (Enterprise only).
--   * `fields` naming a field that is not in the format is reported before the
--     write is attempted (the real crud writes first and then fails to build the
--     result). The error is FilterFieldsError as in the real crud.
--   * Per-tuple errors of *_many are CallError objects whose text is
--     "Failed for <box.info.cluster.uuid>: Function returned an error: <msg>",
--     as the real router produces them (replicaset uuid = the cluster uuid here).
--   * Error objects carry class_name, err, str, file, line (+ operation_data for
--     *_many). `file`/`line` point into this module; `stack` is a plain
--     debug.traceback(), present only for SelectError, CallError and
--     SplitTuplesError (classes that capture stacks in the real crud).
--   * Errors raised while scanning (e.g. a key of the wrong type) come back as
--     the bare box message inside SelectError / "Failed to call count on
--     storage-side: <msg>" for count, without the CallError nesting the real
--     router adds. An unknown condition operand gives "Failed to generate tuples
--     filter: No field or index is found for condition ...".
--   * crud.truncate on a missing space returns TruncateError 'Space "x" doesn't
--     exist' without the CallError nesting.
--   * pairs() builds the whole result first (no streaming in batches) and
--     returns a luafun iterator over it. Lua-only, as in the real crud. Its
--     stats are counted when the iterator is created, not when it is drained.
--   * Stats: only the 'local' driver. crud.cfg{stats_driver = 'metrics'} or
--     stats_quantiles = true raise. select `details.map_reduces` counts every
--     select that is not pinned to one bucket (bucket_id given, or == on the
--     full primary key). crud.cfg settings are not persisted.
--   * crud.schema(space?, opts) is implemented from the local box schema;
--     `cached` is accepted and ignored. Without a space name it lists every
--     space whose name does not start with '_' (the real crud skips a fixed
--     list of system spaces).
--   * Checks-style argument errors are raised with error(msg, 0) (no source
--     position prefix) and name the function as e.g. "crud.insert".
--   * No readview, locate, _crud.*_on_storage functions or storage/router init
--     functions (init_router, init_storage, stop_*).

local clock = require('clock')
local digest = require('digest')
local fun = require('fun')
local json = require('json')
local key_def_lib = require('key_def')

local crud = {}

local DEFAULT_BUCKET_COUNT = 3000
local bucket_count = tonumber(os.getenv('CRUD_BUCKET_COUNT')) or DEFAULT_BUCKET_COUNT

local NOT_PERFORMED_MSG = 'Operation with tuple was not performed'
local ROLLBACK_MSG = 'Operation with tuple was rollback'

---------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------

-- Rows, metadata and result lists must encode as msgpack arrays even when empty.
local function array(t)
    return setmetatable(t or {}, {__serialize = 'array'})
end

-- Objects (unflattened rows) must stay maps even when every value is nil.
local function map(t)
    return setmetatable(t or {}, {__serialize = 'map'})
end

-- Arguments coming over IPROTO carry msgpack nil as box.NULL (a cdata that
-- compares equal to nil). Options are copied into a plain table without them.
local function normalize_opts(opts)
    local res = {}
    if opts ~= nil then
        for k, v in pairs(opts) do
            if v ~= nil then
                res[k] = v
            end
        end
    end
    return res
end

-- A shallow copy of a tuple given as a Lua table or a box tuple, so that
-- filling bucket_id never changes the caller's table.
local function copy_tuple(tuple)
    if box.tuple.is(tuple) then
        return tuple:totable()
    end
    local res = {}
    for k, v in pairs(tuple) do
        res[k] = v
    end
    return res
end

local function type_name(value)
    if value == nil then
        return 'nil'
    end
    return type(value)
end

---------------------------------------------------------------------------
-- Error objects: plain tables shaped like the `errors` rock's, so that they
-- serialize over IPROTO the same way.
---------------------------------------------------------------------------

-- Classes that the real crud creates with stack capture.
local STACK_CLASSES = {SelectError = true, CallError = true, SplitTuplesError = true}

local error_mt = {__tostring = function(self) return self.str end}

local function new_error(class_name, fmt, ...)
    local msg = fmt
    if select('#', ...) > 0 then
        msg = string.format(fmt, ...)
    end
    local where = debug.getinfo(2, 'Sl') or {}
    local err = {
        class_name = class_name,
        err = msg,
        str = class_name .. ': ' .. msg,
        file = where.short_src,
        line = where.currentline,
    }
    if STACK_CLASSES[class_name] then
        err.stack = debug.traceback('', 2):gsub('^\n', '')
    end
    return setmetatable(err, error_mt)
end

-- Per-tuple error of a *_many call, as the real router re-wraps it.
local function call_error(msg, operation_data)
    local replicaset_id = box.info.cluster.uuid
    local err = new_error('CallError', 'Failed for %s: Function returned an error: %s',
                          replicaset_id, msg)
    err.operation_data = operation_data
    return err
end

---------------------------------------------------------------------------
-- Argument checks in the manner of the `checks` rock: they RAISE.
---------------------------------------------------------------------------

local custom_checkers = {
    tuple = function(value) return box.tuple.is(value) end,
    vshard_call_mode = function(value) return value == 'read' or value == 'write' end,
}

-- `expected` is a checks type string: '?' prefix = optional, '|' = union,
-- a lone '?' = anything.
local function value_matches(value, expected)
    local optional = expected:sub(1, 1) == '?'
    local types = optional and expected:sub(2) or expected
    if value == nil then
        return optional
    end
    if types == '' then
        return true
    end
    for name in types:gmatch('[^|]+') do
        local checker = custom_checkers[name]
        if checker ~= nil then
            if checker(value) then
                return true
            end
        elseif type(value) == name then
            return true
        end
    end
    return false
end

-- check_args('crud.insert', {'string', 'table|tuple'}, INSERT_OPTS, ...):
-- positional arguments first, then (if opts_spec is given) the opts table right
-- after them.
local function check_args(fname, arg_types, opts_spec, ...)
    for i, expected in ipairs(arg_types) do
        local value = select(i, ...)
        if not value_matches(value, expected) then
            error(string.format('bad argument #%d to %s (%s expected, got %s)',
                                i, fname, expected, type_name(value)), 0)
        end
    end
    if opts_spec == nil then
        return
    end
    local opts_pos = #arg_types + 1
    local opts = select(opts_pos, ...)
    if opts == nil then
        return
    end
    if type(opts) ~= 'table' then
        error(string.format('bad argument #%d to %s (?table expected, got %s)',
                            opts_pos, fname, type_name(opts)), 0)
    end
    for key, value in pairs(opts) do
        local expected = opts_spec[key]
        if expected == nil then
            error(string.format('unexpected argument opts.%s to %s', tostring(key), fname), 0)
        end
        if not value_matches(value, expected) then
            error(string.format('bad argument opts.%s to %s (%s expected, got %s)',
                                tostring(key), fname, expected, type_name(value)), 0)
        end
    end
end

-- Option sets, per crud.md section 3.
local function opts_spec(...)
    local spec = {timeout = '?number', vshard_router = '?string|table'}
    for _, extra in ipairs({...}) do
        for k, v in pairs(extra) do
            spec[k] = v
        end
    end
    return spec
end

local O_BUCKET = {bucket_id = '?number|cdata'}
local O_FIELDS = {fields = '?table'}
local O_NORETURN = {noreturn = '?boolean'}
local O_METADATA = {fetch_latest_metadata = '?boolean'}
local O_SKIP_NULL = {skip_nullability_check_on_flatten = '?boolean'}
local O_BATCH = {stop_on_error = '?boolean', rollback_on_error = '?boolean'}
local O_READ = {
    request_timeout = '?number', mode = '?vshard_call_mode',
    prefer_replica = '?boolean', balance = '?boolean',
}
local O_SCAN = {
    after = '?table|cdata', first = '?number', batch_size = '?number',
    force_map_call = '?boolean', yield_every = '?number',
    readview = '?boolean', readview_info = '?table',
}

local INSERT_OPTS = opts_spec(O_BUCKET, O_FIELDS, O_NORETURN, O_METADATA)
local INSERT_OBJECT_OPTS = opts_spec(INSERT_OPTS, O_SKIP_NULL)
local MANY_OPTS = opts_spec(O_FIELDS, O_BATCH, O_NORETURN, O_METADATA)
local MANY_OBJECT_OPTS = opts_spec(MANY_OPTS, O_SKIP_NULL)
local GET_OPTS = opts_spec(O_BUCKET, O_FIELDS, O_METADATA, O_READ)
local KEY_WRITE_OPTS = opts_spec(O_BUCKET, O_FIELDS, O_NORETURN, O_METADATA)
local SELECT_OPTS = opts_spec(O_BUCKET, O_FIELDS, O_METADATA, O_READ, O_SCAN, {fullscan = '?boolean'})
local PAIRS_OPTS = opts_spec(O_BUCKET, O_FIELDS, O_METADATA, O_READ, O_SCAN, {use_tomap = '?boolean'})
local BORDER_OPTS = opts_spec(O_FIELDS, O_METADATA,
                              {request_timeout = '?number', mode = '?vshard_call_mode'})
local COUNT_OPTS = opts_spec(O_BUCKET, O_READ, {
    force_map_call = '?boolean', fullscan = '?boolean', yield_every = '?number',
})
local LEN_OPTS = opts_spec(O_READ)
local TIMEOUT_OPTS = opts_spec()
local SCHEMA_OPTS = opts_spec({cached = '?boolean'})
local CFG_OPTS = {
    stats = '?boolean', stats_driver = '?string', stats_quantiles = '?boolean',
    stats_quantile_tolerance = '?number', stats_quantile_age_buckets_count = '?number',
    stats_quantile_max_age_time = '?number',
}

---------------------------------------------------------------------------
-- Statistics ('local' driver only), enabled by crud.cfg{stats = true}.
---------------------------------------------------------------------------

local stats_state = {enabled = false, spaces = {}}

local function new_collector()
    return {count = 0, time = 0, latency = 0, latency_average = 0}
end

local function space_op_stats(space_name, op)
    local space_stats = stats_state.spaces[space_name]
    if space_stats == nil then
        space_stats = {}
        stats_state.spaces[space_name] = space_stats
    end
    local op_stats = space_stats[op]
    if op_stats == nil then
        op_stats = {ok = new_collector(), error = new_collector()}
        if op == 'select' then
            op_stats.details = {map_reduces = 0, tuples_fetched = 0, tuples_lookup = 0}
        end
        space_stats[op] = op_stats
    end
    return op_stats
end

local function observe(space_name, op, status, latency)
    local collector = space_op_stats(space_name, op)[status]
    collector.count = collector.count + 1
    collector.time = collector.time + latency
    collector.latency = collector.time / collector.count
    collector.latency_average = collector.latency
end

local function observe_select_details(space_name, map_reduce, fetched, looked_up)
    if not stats_state.enabled then
        return
    end
    local details = space_op_stats(space_name, 'select').details
    details.map_reduces = details.map_reduces + (map_reduce and 1 or 0)
    details.tuples_fetched = details.tuples_fetched + fetched
    details.tuples_lookup = details.tuples_lookup + looked_up
end

local function stats_space_name(space_name)
    if type(space_name) == 'string' then
        return space_name
    end
    local space = box.space[space_name]
    return space ~= nil and space.name or tostring(space_name)
end

local function observe_tail(space_name, op, start, ok, ...)
    local latency = clock.monotonic() - start
    local name = stats_space_name(space_name)
    if not ok then
        observe(name, op, 'error', latency)
        error((...), 0)
    end
    -- `nil, err` (or `res, errs` of *_many) counts as an error, like crud does.
    observe(name, op, select(2, ...) ~= nil and 'error' or 'ok', latency)
    return ...
end

-- Wraps an API function to count calls per space and operation label.
local function with_stats(op, func)
    return function(space_name, ...)
        if not stats_state.enabled then
            return func(space_name, ...)
        end
        return observe_tail(space_name, op, clock.monotonic(), pcall(func, space_name, ...))
    end
end

---------------------------------------------------------------------------
-- Space format helpers: metadata, `fields`, flatten/unflatten.
---------------------------------------------------------------------------

local function field_numbers(format)
    local res = {}
    for i, field in ipairs(format) do
        res[field.name] = i
    end
    return res
end

-- Validates opts.fields against the space format. Returns
-- {fieldnos = {...}, metadata = {...}}, or nil for "all fields".
local function resolve_fields(space, field_names)
    if field_names == nil then
        return nil
    end
    local format = space:format()
    local numbers = field_numbers(format)
    local fieldnos, metadata = {}, array()
    for i, name in ipairs(field_names) do
        local fieldno = numbers[name]
        if fieldno == nil then
            return nil, new_error('FilterFieldsError',
                                  "Space format doesn't contain field named %q", name)
        end
        fieldnos[i] = fieldno
        metadata[i] = table.deepcopy(format[fieldno])
    end
    return {fieldnos = fieldnos, metadata = metadata}
end

local function space_metadata(space)
    return array(table.deepcopy(space:format()))
end

-- A box tuple as a row: all fields, or only the requested ones (in that order).
local function tuple_to_row(tuple, fields)
    if fields == nil then
        return array(tuple:totable())
    end
    local row = array()
    for i, fieldno in ipairs(fields.fieldnos) do
        local value = tuple[fieldno]
        if value == nil then
            value = box.NULL
        end
        row[i] = value
    end
    return row
end

-- {metadata = ..., rows = ...} from box tuples.
local function format_result(space, tuples, fields)
    local rows = array()
    for _, tuple in ipairs(tuples) do
        table.insert(rows, tuple_to_row(tuple, fields))
    end
    return {
        metadata = fields ~= nil and fields.metadata or space_metadata(space),
        rows = rows,
    }
end

-- Object -> tuple by the space format, with the real crud's messages.
local function flatten(object, format, skip_nullability_check)
    local numbers = field_numbers(format)
    for name in pairs(object) do
        if numbers[name] == nil then
            return nil, string.format('Unknown field %q is specified', name)
        end
    end
    local tuple = {}
    for i, field in ipairs(format) do
        local value = object[field.name]
        if value ~= nil then
            tuple[i] = value
        elseif field.name ~= 'bucket_id' and field.is_nullable ~= true
               and skip_nullability_check ~= true then
            return nil, string.format("Field %q isn't nullable (set " ..
                                      'skip_nullability_check_on_flatten option to true to skip check)',
                                      field.name)
        else
            tuple[i] = box.NULL
        end
    end
    return tuple
end

-- The text that follows "Failed to flatten object: " in the real crud.
local function flatten_error_text(msg)
    return 'FlattenError: Object is specified in bad format: FlattenError: ' .. msg
end

---------------------------------------------------------------------------
-- bucket_id: vshard's strcrc32 over the primary key.
---------------------------------------------------------------------------

local function is_valid_bucket_id(value)
    local number = value
    if type(value) == 'cdata' then
        number = tonumber(value)
    elseif type(value) ~= 'number' then
        return false
    end
    return number ~= nil and number >= 1 and number % 1 == 0
end

-- vshard.router.bucket_id_strcrc32: CRC-32C of the concatenated tostring()'d
-- key parts (stopping at the first nil, like ipairs), then % count + 1.
local function bucket_id_of_key(key_values)
    local parts = {}
    for _, value in ipairs(key_values) do
        if value == nil then
            break
        end
        table.insert(parts, tostring(value))
    end
    return digest.crc32(table.concat(parts)) % bucket_count + 1
end

local function primary_key_values(space, tuple)
    local values = {}
    local pk = space.index[0]
    if pk == nil then
        return values
    end
    for i, part in ipairs(pk.parts) do
        values[i] = tuple[part.fieldno]
    end
    return values
end

-- Returns nil or the message that follows "Failed to get bucket ID: ".
local function validate_opts_bucket_id(bucket_id)
    if bucket_id ~= nil and not is_valid_bucket_id(bucket_id) then
        return 'BucketIDError: Invalid bucket_id in opts: expected unsigned, got ' .. type(bucket_id)
    end
    return nil
end

-- Fills the bucket_id field of `tuple` (a private copy) the way the crud router
-- does before sending it to a storage. Returns nil or the message that follows
-- "Failed to get bucket ID: ".
local function fill_bucket_id(space, tuple, opts_bucket_id)
    local index = space.index.bucket_id
    if index == nil then
        return 'BucketIDError: Failed to get bucket ID fieldno: ' ..
               'ShardingError: "bucket_id" index is not found'
    end
    local fieldno = index.parts[1].fieldno

    local err = validate_opts_bucket_id(opts_bucket_id)
    if err ~= nil then
        return err
    end
    if opts_bucket_id ~= nil then
        if tuple[fieldno] == nil then
            tuple[fieldno] = opts_bucket_id
        elseif tuple[fieldno] ~= opts_bucket_id then
            return string.format('BucketIDError: Tuple and opts.bucket_id contain ' ..
                                 'different bucket_id values: %s and %s',
                                 tostring(tuple[fieldno]), tostring(opts_bucket_id))
        end
    end

    if tuple[fieldno] == nil then
        tuple[fieldno] = bucket_id_of_key(primary_key_values(space, tuple))
    elseif not is_valid_bucket_id(tuple[fieldno]) then
        return 'BucketIDError: Invalid bucket_id in data: expected unsigned, got ' ..
               type(tuple[fieldno])
    end
    return nil
end

---------------------------------------------------------------------------
-- Single-tuple operations
---------------------------------------------------------------------------

local function single_result(space, tuple, fields, noreturn)
    if noreturn then
        return nil, nil
    end
    return format_result(space, {tuple}, fields), nil
end

-- insert / replace / upsert of one tuple. `class` is the error class.
local function write_tuple(op, class, space_name, tuple, operations, opts)
    local space = box.space[space_name]
    if space == nil then
        return nil, new_error(class, "Space %q doesn't exist", space_name)
    end
    local fields, err = resolve_fields(space, opts.fields)
    if err ~= nil then
        return nil, err
    end

    tuple = copy_tuple(tuple)
    local bucket_err = fill_bucket_id(space, tuple, opts.bucket_id)
    if bucket_err ~= nil then
        return nil, new_error(class, 'Failed to get bucket ID: %s', bucket_err)
    end

    local ok, res
    if op == 'upsert' then
        ok, res = pcall(space.upsert, space, tuple, operations)
        if ok then
            res = nil -- upsert never returns a row (on failure res is the error)
        end
    else
        ok, res = pcall(space[op], space, tuple)
    end
    if not ok then
        return nil, new_error(class, 'Failed to %s: %s', op, tostring(res))
    end
    return single_result(space, res, fields, opts.noreturn)
end

local function write_object(op, class, space_name, object, operations, opts)
    local space = box.space[space_name]
    if space == nil then
        return nil, new_error(class, "Space %q doesn't exist", space_name)
    end
    local tuple, err = flatten(object, space:format(), opts.skip_nullability_check_on_flatten)
    if tuple == nil then
        return nil, new_error(class, 'Failed to flatten object: %s', flatten_error_text(err))
    end
    return write_tuple(op, class, space_name, tuple, operations, opts)
end

function crud.insert(space_name, tuple, opts)
    check_args('crud.insert', {'string', 'table|tuple'}, INSERT_OPTS, space_name, tuple, opts)
    return write_tuple('insert', 'InsertError', space_name, tuple, nil, normalize_opts(opts))
end

function crud.insert_object(space_name, object, opts)
    check_args('crud.insert_object', {'string', 'table'}, INSERT_OBJECT_OPTS, space_name, object, opts)
    return write_object('insert', 'InsertError', space_name, object, nil, normalize_opts(opts))
end

function crud.replace(space_name, tuple, opts)
    check_args('crud.replace', {'string', 'table|tuple'}, INSERT_OPTS, space_name, tuple, opts)
    return write_tuple('replace', 'ReplaceError', space_name, tuple, nil, normalize_opts(opts))
end

function crud.replace_object(space_name, object, opts)
    check_args('crud.replace_object', {'string', 'table'}, INSERT_OBJECT_OPTS, space_name, object, opts)
    return write_object('replace', 'ReplaceError', space_name, object, nil, normalize_opts(opts))
end

function crud.upsert(space_name, tuple, operations, opts)
    check_args('crud.upsert', {'string', 'table|tuple', 'table'}, KEY_WRITE_OPTS,
               space_name, tuple, operations, opts)
    return write_tuple('upsert', 'UpsertError', space_name, tuple, operations, normalize_opts(opts))
end

function crud.upsert_object(space_name, object, operations, opts)
    check_args('crud.upsert_object', {'string', 'table', 'table'}, KEY_WRITE_OPTS,
               space_name, object, operations, opts)
    return write_object('upsert', 'UpsertError', space_name, object, operations, normalize_opts(opts))
end

-- Common start of get/update/delete: the space, `fields` and opts.bucket_id.
local function prepare_key_op(class, space_name, opts)
    local space = box.space[space_name]
    if space == nil then
        return nil, nil, new_error(class, "Space %q doesn't exist", space_name)
    end
    local fields, err = resolve_fields(space, opts.fields)
    if err ~= nil then
        return nil, nil, err
    end
    local bucket_err = validate_opts_bucket_id(opts.bucket_id)
    if bucket_err ~= nil then
        return nil, nil, new_error(class, 'Failed to get bucket ID: %s', bucket_err)
    end
    return space, fields
end

function crud.get(space_name, key, opts)
    check_args('crud.get', {'string', '?'}, GET_OPTS, space_name, key, opts)
    opts = normalize_opts(opts)
    local space, fields, err = prepare_key_op('GetError', space_name, opts)
    if err ~= nil then
        return nil, err
    end
    local ok, res = pcall(space.get, space, key)
    if not ok then
        return nil, new_error('GetError', 'Failed to get: %s', tostring(res))
    end
    return single_result(space, res, fields, false)
end

function crud.delete(space_name, key, opts)
    check_args('crud.delete', {'string', '?'}, KEY_WRITE_OPTS, space_name, key, opts)
    opts = normalize_opts(opts)
    local space, fields, err = prepare_key_op('DeleteError', space_name, opts)
    if err ~= nil then
        return nil, err
    end
    local ok, res = pcall(space.delete, space, key)
    if not ok then
        return nil, new_error('DeleteError', 'Failed to delete: %s', tostring(res))
    end
    return single_result(space, res, fields, opts.noreturn)
end

-- Tarantool can only append the field right after the last one. Like crud, a
-- failed update is retried after padding the skipped nullable fields with NULL
-- (tarantool/tarantool#3378). Operations are renumbered and sorted by field.
local function pad_nullable_fields(operations, format, tuple)
    if tuple == nil then
        return nil
    end
    local numbers = field_numbers(format)
    local ops, touched = {}, {}
    for i, op in ipairs(operations) do
        if type(op) ~= 'table' then
            return nil
        end
        local fieldno = op[2]
        if type(fieldno) == 'string' then
            fieldno = numbers[fieldno]
        end
        if type(fieldno) ~= 'number' then
            return nil
        end
        local copy = table.copy(op)
        copy[2] = fieldno
        table.insert(ops, {op = copy, order = i})
        touched[fieldno] = true
    end
    local len = #tuple
    for _, item in ipairs(table.copy(ops)) do
        for fieldno = len + 1, item.op[2] - 1 do
            local field = format[fieldno]
            if not touched[fieldno] and field ~= nil and field.is_nullable then
                touched[fieldno] = true
                table.insert(ops, {op = {'=', fieldno, box.NULL}, order = 0})
            end
        end
    end
    table.sort(ops, function(a, b)
        if a.op[2] ~= b.op[2] then
            return a.op[2] < b.op[2]
        end
        return a.order < b.order
    end)
    local res = {}
    for i, item in ipairs(ops) do
        res[i] = item.op
    end
    return res
end

function crud.update(space_name, key, operations, opts)
    check_args('crud.update', {'string', '?', 'table'}, KEY_WRITE_OPTS,
               space_name, key, operations, opts)
    opts = normalize_opts(opts)
    local space, fields, err = prepare_key_op('UpdateError', space_name, opts)
    if err ~= nil then
        return nil, err
    end
    local ok, res = pcall(space.update, space, key, operations)
    if not ok and type(res) == 'cdata' and (res.code == box.error.NO_SUCH_FIELD_NO or
                                             res.code == box.error.NO_SUCH_FIELD_NAME) then
        local got, current = pcall(space.get, space, key)
        local padded = got and pad_nullable_fields(operations, space:format(), current)
        if padded ~= nil then
            ok, res = pcall(space.update, space, key, padded)
        end
    end
    if not ok then
        return nil, new_error('UpdateError', 'Failed to update: %s', tostring(res))
    end
    return single_result(space, res, fields, opts.noreturn)
end

---------------------------------------------------------------------------
-- Batch operations (*_many): one transaction per call, as on one storage.
---------------------------------------------------------------------------

-- Applies `entries` ({tuple = ..., operations = ...}) inside box.begin() ...
-- box.commit()/box.rollback(). Returns the list of successful box results (or
-- input tuples for upsert) and the list of per-tuple errors, in the real crud's
-- order: failures, then "not performed" ones, then "was rollback" ones.
local function run_batch(space, op, entries, opts, fields)
    local done, errs = {}, {}
    local function apply_all()
        for i, entry in ipairs(entries) do
            local ok, res
            if op == 'upsert' then
                ok, res = pcall(space.upsert, space, entry.tuple, entry.operations)
                if ok then
                    res = entry.tuple -- on failure res is the error
                end
            else
                ok, res = pcall(space[op], space, entry.tuple)
            end
            if ok then
                table.insert(done, res)
            else
                table.insert(errs, call_error(tostring(res), entry.tuple))
                if opts.stop_on_error then
                    for j = i + 1, #entries do
                        table.insert(errs, call_error(NOT_PERFORMED_MSG, entries[j].tuple))
                    end
                    return
                end
            end
        end
    end

    box.begin()
    local ok, err = pcall(apply_all)
    if not ok then
        box.rollback()
        error(err, 0)
    end
    if #errs > 0 and opts.rollback_on_error then
        box.rollback()
        for _, res in ipairs(done) do
            local data = res
            if box.tuple.is(res) then
                data = tuple_to_row(res, fields)
            end
            table.insert(errs, call_error(ROLLBACK_MSG, data))
        end
        return {}, errs
    end
    box.commit()
    return done, errs
end

local function many_class(op)
    return ({insert = 'InsertManyError', replace = 'ReplaceManyError',
             upsert = 'UpsertManyError'})[op]
end

-- Core of every *_many call. `items` are {tuple = ..., operations = ...} after
-- flattening; `format_errs` are flatten errors to append at the end.
local function write_many(op, space, items, format_errs, opts)
    local fields, err = resolve_fields(space, opts.fields)
    if err ~= nil then
        return nil, {err}
    end

    -- Fill bucket_id first: one failure fails the whole call, as the router's
    -- split-by-replicaset step does.
    local entries = {}
    for _, item in ipairs(items) do
        local tuple = item.tuple
        if type(tuple) == 'table' or box.tuple.is(tuple) then
            tuple = copy_tuple(tuple)
            local bucket_err = fill_bucket_id(space, tuple, nil)
            if bucket_err ~= nil then
                return nil, {new_error('SplitTuplesError',
                                       'Failed to split tuples by replicaset: Failed to get bucket ID: %s',
                                       bucket_err)}
            end
        end
        table.insert(entries, {tuple = tuple, operations = item.operations})
    end

    local done, errs = run_batch(space, op, entries, opts, fields)
    for _, format_err in ipairs(format_errs) do
        table.insert(errs, format_err)
    end

    local res
    if op == 'upsert' then
        -- upsert_many returns metadata only, and nil when every tuple failed.
        local storage_errs = #errs - #format_errs
        if storage_errs < #entries and not opts.noreturn then
            res = {metadata = fields ~= nil and fields.metadata or space_metadata(space)}
        end
    elseif #done > 0 and not opts.noreturn then
        res = format_result(space, done, fields)
    end

    if #errs == 0 then
        return res, nil
    end
    return res, errs
end

local function many_tuples(op, space_name, list, opts, with_operations)
    local class = many_class(op)
    local space = box.space[space_name]
    if space == nil then
        return nil, {new_error(class, "Space %q doesn't exist", space_name)}
    end
    if next(list) == nil then
        return nil, {new_error(class, 'At least one tuple expected')}
    end
    local items = {}
    for _, element in ipairs(list) do
        if with_operations then
            table.insert(items, {tuple = element[1], operations = element[2]})
        else
            table.insert(items, {tuple = element})
        end
    end
    return write_many(op, space, items, {}, opts)
end

local function many_objects(op, space_name, list, opts, with_operations)
    local class = many_class(op)
    local space = box.space[space_name]
    if space == nil then
        return nil, {new_error(class, "Space %q doesn't exist", space_name)}
    end
    if next(list) == nil then
        return nil, {new_error(class, 'At least one object expected')}
    end
    local format = space:format()
    local items, format_errs = {}, {}
    for _, element in ipairs(list) do
        local object, operations = element, nil
        if with_operations then
            object, operations = element[1], element[2]
        end
        local tuple, err = flatten(object, format, opts.skip_nullability_check_on_flatten)
        if tuple == nil then
            local err_obj = new_error(class, 'Failed to flatten object: %s', flatten_error_text(err))
            err_obj.operation_data = object
            -- The real crud gives up before touching the storage here.
            if opts.stop_on_error then
                return nil, {err_obj}
            end
            table.insert(format_errs, err_obj)
        else
            table.insert(items, {tuple = tuple, operations = operations})
        end
    end
    if #items == 0 then
        return nil, format_errs
    end
    return write_many(op, space, items, format_errs, opts)
end

function crud.insert_many(space_name, tuples, opts)
    check_args('crud.insert_many', {'string', 'table'}, MANY_OPTS, space_name, tuples, opts)
    return many_tuples('insert', space_name, tuples, normalize_opts(opts), false)
end

function crud.insert_object_many(space_name, objects, opts)
    check_args('crud.insert_object_many', {'string', 'table'}, MANY_OBJECT_OPTS, space_name, objects, opts)
    return many_objects('insert', space_name, objects, normalize_opts(opts), false)
end

function crud.replace_many(space_name, tuples, opts)
    check_args('crud.replace_many', {'string', 'table'}, MANY_OPTS, space_name, tuples, opts)
    return many_tuples('replace', space_name, tuples, normalize_opts(opts), false)
end

function crud.replace_object_many(space_name, objects, opts)
    check_args('crud.replace_object_many', {'string', 'table'}, MANY_OBJECT_OPTS, space_name, objects, opts)
    return many_objects('replace', space_name, objects, normalize_opts(opts), false)
end

function crud.upsert_many(space_name, tuples_operations, opts)
    check_args('crud.upsert_many', {'string', 'table'}, MANY_OPTS, space_name, tuples_operations, opts)
    return many_tuples('upsert', space_name, tuples_operations,
                       normalize_opts(opts), true)
end

function crud.upsert_object_many(space_name, objects_operations, opts)
    check_args('crud.upsert_object_many', {'string', 'table'}, MANY_OBJECT_OPTS,
               space_name, objects_operations, opts)
    return many_objects('upsert', space_name, objects_operations, normalize_opts(opts), true)
end

---------------------------------------------------------------------------
-- Conditions, scan planning and execution (select, pairs, count)
---------------------------------------------------------------------------

local ITERATOR_BY_OPERATOR = {
    ['='] = 'EQ', ['=='] = 'EQ', ['<'] = 'LT', ['<='] = 'LE', ['>'] = 'GT', ['>='] = 'GE',
}
local INVERTED_ITERATOR = {EQ = 'REQ', REQ = 'EQ', GT = 'LT', GE = 'LE', LT = 'GT', LE = 'GE'}
local DESCENDING_ITERATOR = {REQ = true, LT = true, LE = true}

-- Texts of crud's ParseConditionError. Returns conditions {operator, operand,
-- values} or nil, message.
local function parse_conditions(user_conditions)
    local conditions = {}
    if user_conditions == nil then
        return conditions
    end
    for i, condition in ipairs(user_conditions) do
        if type(condition) ~= 'table' then
            return nil, string.format('Each condition should be table, got %q (condition %s)',
                                      type_name(condition), i)
        end
        if #condition > 3 or #condition < 2 then
            return nil, string.format('Each condition should be {"<operator>", "<operand>", ' ..
                                      '<value>} (condition %s)', i)
        end
        local operator, operand, value = condition[1], condition[2], condition[3]
        if type(operator) ~= 'string' then
            return nil, string.format('condition[1] should be string, got %q (condition %s)',
                                      type_name(operator), i)
        end
        if ITERATOR_BY_OPERATOR[operator] == nil then
            return nil, string.format("condition[1] %q isn't a valid condition operator, " ..
                                      '(condition %s)', operator, i)
        end
        if type(operand) ~= 'string' then
            return nil, string.format('condition[2] should be string, got %q (condition %s)',
                                      type_name(operand), i)
        end
        -- A scalar value is a one-part key.
        local values = value
        if type(values) ~= 'table' then
            values = {value}
        end
        table.insert(conditions, {operator = operator, operand = operand, values = values})
    end
    return conditions
end

-- Index parts as key_def parts. Comparisons treat every part as nullable so
-- that a NULL in a key or a missing trailing field compares (as the lowest
-- value) instead of raising.
local function key_def_parts(parts)
    local res = {}
    for i, part in ipairs(parts) do
        res[i] = {
            fieldno = part.fieldno, type = part.type, is_nullable = true,
            collation = part.collation, path = part.path,
        }
    end
    return res
end

-- Field types relaxed for filters on fields outside the scan index, so that
-- e.g. an unsigned field can be compared with -1.
local FILTER_TYPES = {
    unsigned = 'number', integer = 'number', number = 'number', double = 'number',
    string = 'string', boolean = 'boolean', varbinary = 'varbinary', scalar = 'scalar',
    uuid = 'uuid', decimal = 'decimal',
}

local function holds(operator, cmp)
    if operator == '=' or operator == '==' then
        return cmp == 0
    elseif operator == '<' then
        return cmp < 0
    elseif operator == '<=' then
        return cmp <= 0
    elseif operator == '>' then
        return cmp > 0
    end
    return cmp >= 0
end

-- The index the real crud would scan for this condition: a TREE index named
-- by the operand, else the first TREE index whose first part is that field.
local function index_for_condition(space, format, condition)
    local max_id = table.maxn(space.index)
    for id = 0, max_id do
        local index = space.index[id]
        if index ~= nil and index.name == condition.operand and index.type == 'TREE' then
            return index
        end
    end
    for id = 0, max_id do
        local index = space.index[id]
        if index ~= nil and index.type == 'TREE' then
            local first = format[index.parts[1].fieldno]
            if first ~= nil and first.name == condition.operand then
                return index
            end
        end
    end
    return nil
end

-- Primary-key parts appended to the scan index parts (crud's cmp key): this
-- defines the scan order and the key fields `fields` must include.
local function merged_parts(scan_index, primary_index)
    local res, seen = {}, {}
    for _, part in ipairs(scan_index.parts) do
        table.insert(res, part)
        seen[part.fieldno] = true
    end
    for _, part in ipairs(primary_index.parts) do
        if not seen[part.fieldno] then
            table.insert(res, part)
        end
    end
    return res
end

-- Builds the scan plan. Every condition becomes a filter (including the one
-- that drives the scan, so that paging from `after` keeps its bound). A
-- filter is `monotone` when the scan order follows its comparator: once it
-- fails in the direction of travel, no later tuple can pass.
local function plan_scan(space, conditions)
    local format = space:format()
    local numbers = field_numbers(format)
    local primary = space.index[0]

    local scan_index, scan_condition_no
    for i, condition in ipairs(conditions) do
        scan_index = index_for_condition(space, format, condition)
        if scan_index ~= nil then
            scan_condition_no = i
            break
        end
    end

    local iterator, key
    if scan_index ~= nil then
        iterator = ITERATOR_BY_OPERATOR[conditions[scan_condition_no].operator]
        key = conditions[scan_condition_no].values
    else
        if primary == nil or primary.type ~= 'TREE' then
            return nil, 'IndexTypeError: An index that matches specified conditions was not ' ..
                        'found: At least one of condition indexes or primary index should be ' ..
                        'of type TREE'
        end
        scan_index, iterator, key = primary, 'GE', {}
    end

    local scan_key_def = key_def_lib.new(key_def_parts(scan_index.parts))
    local cmp_parts = merged_parts(scan_index, primary)
    local filters = {}
    for i, condition in ipairs(conditions) do
        local filter = {operator = condition.operator, values = condition.values}
        local index = space.index[condition.operand]
        if i == scan_condition_no then
            filter.key_def, filter.monotone = scan_key_def, true
        elseif index ~= nil then
            filter.key_def = key_def_lib.new(key_def_parts(index.parts))
            filter.monotone = index.id == scan_index.id
        elseif numbers[condition.operand] ~= nil then
            local fieldno = numbers[condition.operand]
            local first = scan_index.parts[1]
            if first.fieldno == fieldno and first.path == nil then
                -- Compare exactly as the scan index orders this field.
                filter.key_def = key_def_lib.new(key_def_parts({first}))
                filter.monotone = true
            else
                local field = format[fieldno]
                filter.key_def = key_def_lib.new({{
                    fieldno = fieldno, type = FILTER_TYPES[field.type] or 'scalar',
                    is_nullable = true, collation = field.collation,
                }})
                filter.monotone = false
            end
            filter.values = {condition.values[1]}
        else
            return nil, nil, string.format('No field or index is found for condition %s',
                                           json.encode(condition))
        end
        filters[i] = filter
    end

    return {
        space = space,
        index = scan_index,
        iterator = iterator,
        key = key,
        scan_key_def = scan_key_def,
        cmp_key_def = key_def_lib.new(key_def_parts(cmp_parts)),
        cmp_parts = cmp_parts,
        filters = filters,
    }
end

-- Returns matches (boolean) and stop (no later tuple in this direction can match).
local function apply_filters(filters, tuple, descending)
    for _, filter in ipairs(filters) do
        local cmp = filter.key_def:compare_with_key(tuple, filter.values)
        if not holds(filter.operator, cmp) then
            local stop = false
            if filter.monotone then
                local op = filter.operator
                if descending then
                    stop = cmp <= 0 and (op == '>' or op == '>=' or op == '=' or op == '==')
                else
                    stop = cmp >= 0 and (op == '<' or op == '<=' or op == '=' or op == '==')
                end
            end
            return false, stop
        end
    end
    return true, false
end

-- Walks the plan and calls on_tuple(tuple) for each match until it returns
-- false. opts: after (full-width tuple or nil), reverse (negative first).
-- Returns the number of tuples looked up.
local function run_scan(plan, opts, on_tuple)
    local iterator, key = plan.iterator, plan.key
    if opts.reverse then
        iterator = INVERTED_ITERATOR[iterator]
    end
    local after = opts.after
    if after ~= nil and iterator ~= 'EQ' and iterator ~= 'REQ' then
        -- Start at the `after` row's position; the scan condition itself is
        -- still enforced by the filters.
        key = plan.scan_key_def:extract_key(after):totable()
        iterator = DESCENDING_ITERATOR[iterator] and 'LE' or 'GE'
    end
    local descending = DESCENDING_ITERATOR[iterator] == true

    local passed_after = after == nil
    local looked_up = 0
    for _, tuple in plan.index:pairs(key, {iterator = iterator}) do
        looked_up = looked_up + 1
        if not passed_after then
            -- Skip rows up to and including `after` in scan order.
            local cmp = plan.cmp_key_def:compare(tuple, after)
            passed_after = (descending and cmp < 0) or (not descending and cmp > 0)
        end
        if passed_after then
            local matches, stop = apply_filters(plan.filters, tuple, descending)
            if matches then
                if on_tuple(tuple) == false then
                    break
                end
            elseif stop then
                break
            end
        end
    end
    return looked_up
end

-- `fields` of select: the requested names plus any scan-key and primary-key
-- fields not already listed.
local function enrich_field_names(field_names, plan, format)
    local res, present = {}, {}
    for i, name in ipairs(field_names) do
        res[i] = name
        present[name] = true
    end
    for _, part in ipairs(plan.cmp_parts) do
        local field = format[part.fieldno]
        if field ~= nil and part.path == nil and not present[field.name] then
            table.insert(res, field.name)
            present[field.name] = true
        end
    end
    return res
end

-- An `after` row given in the shape of the returned rows, back to full width.
local function after_to_tuple(after, fields, format)
    if box.tuple.is(after) then
        after = after:totable()
    end
    if fields == nil then
        return after
    end
    local tuple = {}
    for i = 1, #format do
        tuple[i] = box.NULL
    end
    for i, fieldno in ipairs(fields.fieldnos) do
        local value = after[i]
        if value ~= nil then
            tuple[fieldno] = value
        end
    end
    return tuple
end

-- Whether the real crud would send this select to one bucket (no map-reduce).
local function is_single_bucket(plan, opts)
    if opts.force_map_call then
        return false
    end
    if opts.bucket_id ~= nil then
        return true
    end
    return plan.index.id == 0 and plan.iterator == 'EQ' and
           #plan.key >= #plan.index.parts
end

-- The checks and the scan plan select and count share.  Returns space, plan, or nil and an
-- error object of `class` ('SelectError' / 'CountError'); `op` names the operation in messages.
local function prepare_scan(class, op, space_name, user_conditions, opts)
    if opts.yield_every ~= nil and opts.yield_every < 1 then
        return nil, new_error(class, 'yield_every should be > 0')
    end
    local conditions, parse_err = parse_conditions(user_conditions)
    if conditions == nil then
        return nil, new_error(class, 'Failed to parse conditions: ParseConditionError: %s', parse_err)
    end
    local space = box.space[space_name]
    if space == nil then
        return nil, new_error(class, "Space %q doesn't exist", space_name)
    end
    local bucket_err = validate_opts_bucket_id(opts.bucket_id)
    if bucket_err ~= nil then
        return nil, new_error(class, 'Failed to get bucket ID: %s', bucket_err)
    end
    local plan, plan_err, filter_err = plan_scan(space, conditions)
    if plan_err ~= nil then
        return nil, new_error(class, 'Failed to plan ' .. op .. ': %s', plan_err)
    end
    if filter_err ~= nil then
        return nil, new_error(class, 'Failed to generate tuples filter: %s', filter_err)
    end
    return space, plan
end

-- select without the argument checks. Returns result or nil, error object.
local function select_core(space_name, user_conditions, opts)
    if opts.first ~= nil and opts.first < 0 and opts.after == nil then
        return nil, new_error('SelectError', 'Negative first should be specified only with after option')
    end
    if opts.batch_size ~= nil and opts.batch_size < 1 then
        return nil, new_error('SelectError', 'batch_size should be > 0')
    end
    local space, plan = prepare_scan('SelectError', 'select', space_name, user_conditions, opts)
    if space == nil then
        return nil, plan
    end

    local format = space:format()
    local fields, fields_err
    if opts.fields ~= nil then
        fields, fields_err = resolve_fields(space, enrich_field_names(opts.fields, plan, format))
        if fields_err ~= nil then
            return nil, fields_err
        end
    end

    local after
    if opts.after ~= nil then
        after = after_to_tuple(opts.after, fields, format)
    end
    local limit = opts.first and math.abs(opts.first)
    local rows = array()
    local looked_up = 0
    if limit == nil or limit > 0 then
        looked_up = run_scan(plan, {after = after, reverse = opts.first ~= nil and opts.first < 0},
                             function(tuple)
            table.insert(rows, tuple_to_row(tuple, fields))
            return limit == nil or #rows < limit
        end)
    end
    if opts.first ~= nil and opts.first < 0 then
        -- Collected backwards from `after`: return them in scan order.
        local n = #rows
        for i = 1, math.floor(n / 2) do
            rows[i], rows[n - i + 1] = rows[n - i + 1], rows[i]
        end
    end
    observe_select_details(space.name, not is_single_bucket(plan, opts), #rows, looked_up)

    return {
        metadata = fields ~= nil and fields.metadata or space_metadata(space),
        rows = rows,
    }
end

function crud.select(space_name, user_conditions, opts)
    -- The real crud.select runs under SelectError:pcall: even argument errors
    -- come back as a returned SelectError.
    local ok, res, err = pcall(function()
        check_args('crud.select', {'string', '?table'}, SELECT_OPTS, space_name, user_conditions, opts)
        return select_core(space_name, user_conditions, normalize_opts(opts))
    end)
    if not ok then
        if type(res) == 'table' and res.class_name ~= nil then
            return nil, res
        end
        return nil, new_error('SelectError', '%s', tostring(res))
    end
    return res, err
end

function crud.unflatten_rows(rows, metadata)
    if metadata == nil then
        return nil, new_error('UnflattenError', 'Metadata is not provided')
    end
    local objects = array()
    for i, row in ipairs(rows) do
        local object = map()
        for fieldno, field in ipairs(metadata) do
            local value = row[fieldno]
            if value == nil and not field.is_nullable then
                return nil, new_error('UnflattenError', "Field %s isn't nullable", fieldno)
            end
            object[field.name] = value
        end
        objects[i] = object
    end
    return objects
end

-- Lua-only: an iterator over the select result (built in full, see header).
function crud.pairs(space_name, user_conditions, opts)
    check_args('crud.pairs', {'string', '?table'}, PAIRS_OPTS, space_name, user_conditions, opts)
    opts = normalize_opts(opts)
    if opts.first ~= nil and opts.first < 0 then
        error("Negative first isn't allowed for pairs", 0)
    end
    local ok, res, err = pcall(select_core, space_name, user_conditions, opts)
    if not ok then
        err = new_error('SelectError', '%s', tostring(res))
    end
    if err ~= nil then
        error(string.format('Failed to generate iterator: %s', tostring(err)), 0)
    end
    local items = res.rows
    if opts.use_tomap then
        local objects, unflatten_err = crud.unflatten_rows(res.rows, res.metadata)
        if objects == nil then
            error(string.format('Failed to unflatten next object: %s', tostring(unflatten_err)), 0)
        end
        items = objects
    end
    return fun.iter(items):unwrap()
end

function crud.count(space_name, user_conditions, opts)
    check_args('crud.count', {'string', '?table'}, COUNT_OPTS, space_name, user_conditions, opts)
    opts = normalize_opts(opts)
    local space, plan = prepare_scan('CountError', 'count', space_name, user_conditions, opts)
    if space == nil then
        return nil, plan
    end
    local total = 0
    local ok, scan_err = pcall(run_scan, plan, {}, function()
        total = total + 1
    end)
    if not ok then
        return nil, new_error('CountError', 'Failed to call count on storage-side: %s', tostring(scan_err))
    end
    return total, nil
end

---------------------------------------------------------------------------
-- min / max / len / truncate
---------------------------------------------------------------------------

local function get_border(border, space_name, index_name, opts)
    check_args('crud.' .. border, {'string', '?string|number'}, BORDER_OPTS, space_name, index_name, opts)
    opts = normalize_opts(opts)
    local space = box.space[space_name]
    if space == nil then
        return nil, new_error('BorderError', "Space %q doesn't exist", space_name)
    end
    local index
    if index_name == nil then -- also box.NULL: the primary index
        index = space.index[0]
    else
        index = space.index[index_name]
    end
    if index == nil then
        return nil, new_error('BorderError', "Index %q of space %q doesn't exist", index_name, space_name)
    end
    local fields, err = resolve_fields(space, opts.fields)
    if err ~= nil then
        return nil, err
    end
    local ok, res = pcall(index[border], index)
    if not ok then
        return nil, new_error('BorderError', 'Failed to get %s: %s', border, tostring(res))
    end
    return format_result(space, {res}, fields), nil
end

function crud.min(space_name, index_name, opts)
    return get_border('min', space_name, index_name, opts)
end

function crud.max(space_name, index_name, opts)
    return get_border('max', space_name, index_name, opts)
end

function crud.len(space_name, opts)
    check_args('crud.len', {'string|number'}, LEN_OPTS, space_name, opts)
    local space = box.space[space_name]
    if space == nil then
        return nil, new_error('LenError', "Space %q doesn't exist", space_name)
    end
    local ok, res = pcall(space.len, space)
    if not ok then
        return nil, new_error('LenError', 'Failed to call len on storage-side: %s', tostring(res))
    end
    return res
end

function crud.truncate(space_name, opts)
    check_args('crud.truncate', {'string'}, TIMEOUT_OPTS, space_name, opts)
    local space = box.space[space_name]
    if space == nil then
        return nil, new_error('TruncateError', "Space %q doesn't exist", space_name)
    end
    local ok, err = pcall(space.truncate, space)
    if not ok then
        return nil, new_error('TruncateError', 'Failed to truncate: %s', tostring(err))
    end
    return true
end

---------------------------------------------------------------------------
-- storage_info, schema, cut_* helpers
---------------------------------------------------------------------------

function crud.storage_info(opts)
    check_args('crud.storage_info', {}, TIMEOUT_OPTS, opts)
    return {
        [box.info.uuid] = {status = 'running', is_master = not box.info.ro},
    }
end

-- crud.schema's view of a space: bucket_id shown as nullable (users may omit
-- it) and the bucket_id index hidden.
local function space_schema(space)
    local format = table.deepcopy(space:format())
    for _, field in ipairs(format) do
        if field.name == 'bucket_id' then
            field.is_nullable = true
        end
    end
    local indexes = map()
    for id = 0, table.maxn(space.index) do
        local index = space.index[id]
        if index ~= nil and index.name ~= 'bucket_id' then
            indexes[id] = {
                id = index.id, name = index.name, type = index.type, unique = index.unique,
                parts = table.deepcopy(index.parts),
            }
        end
    end
    return {format = array(format), indexes = indexes}
end

function crud.schema(space_name, opts)
    check_args('crud.schema', {'?string'}, SCHEMA_OPTS, space_name, opts)
    if space_name ~= nil then
        local space = box.space[space_name]
        if space == nil then
            return nil, new_error('SchemaError', "Space %q doesn't exist", space_name)
        end
        return space_schema(space)
    end
    local res = map()
    for name, space in pairs(box.space) do
        if type(name) == 'string' and not name:startswith('_') then
            res[name] = space_schema(space)
        end
    end
    return res
end

function crud.cut_rows(rows, metadata, field_names)
    local truncated_metadata
    if metadata ~= nil then
        if #metadata < #field_names then
            return nil, new_error('FilterFieldsError', "Field names don't match to tuple metadata")
        end
        truncated_metadata = array()
        for i, name in ipairs(field_names) do
            if metadata[i].name ~= name then
                return nil, new_error('FilterFieldsError', "Field names don't match to tuple metadata")
            end
            truncated_metadata[i] = metadata[i]
        end
    end
    local truncated_rows = array()
    for i, row in ipairs(rows) do
        if box.tuple.is(row) then
            row = row:totable()
        end
        local cut = array()
        for j = 1, #field_names do
            local value = row[j]
            if value == nil then
                value = box.NULL
            end
            cut[j] = value
        end
        truncated_rows[i] = cut
    end
    return {metadata = truncated_metadata, rows = truncated_rows}
end

function crud.cut_objects(objects, field_names)
    local res = array()
    for i, object in ipairs(objects) do
        local cut = map()
        for _, name in ipairs(field_names) do
            cut[name] = object[name]
        end
        res[i] = cut
    end
    return res
end

---------------------------------------------------------------------------
-- cfg / stats
---------------------------------------------------------------------------

local cfg_values = {
    stats = false,
    stats_driver = 'local',
    stats_quantiles = false,
    stats_quantile_tolerance = 1e-3,
    stats_quantile_age_buckets_count = 2,
    stats_quantile_max_age_time = 60,
}

local function configure(_, opts)
    check_args('crud.cfg', {}, CFG_OPTS, opts)
    opts = normalize_opts(opts)
    if opts.stats_driver ~= nil and opts.stats_driver ~= 'local' then
        error(string.format('StatsError: Unsupported driver: %s', opts.stats_driver), 0)
    end
    if opts.stats_quantiles == true then
        error("StatsLocalError: Quantiles are not supported for 'local' statistics registry", 0)
    end
    for key, value in pairs(opts) do
        cfg_values[key] = value
    end
    if opts.stats ~= nil and opts.stats ~= stats_state.enabled then
        stats_state.enabled = opts.stats
        stats_state.spaces = {}
    end
    return table.copy(cfg_values)
end

-- crud.cfg is a callable table (crud.cfg{stats = true}) whose fields read the
-- current settings, like the real one.
crud.cfg = setmetatable({}, {
    __call = configure,
    __index = function(_, key) return cfg_values[key] end,
    __newindex = function() error('Use crud.cfg{} instead', 2) end,
    __serialize = function() return table.copy(cfg_values) end,
})

function crud.stats(space_name)
    check_args('crud.stats', {'?string'}, nil, space_name)
    if not stats_state.enabled then
        return {}
    end
    if space_name ~= nil then
        return table.deepcopy(stats_state.spaces[space_name]) or {}
    end
    return {spaces = table.deepcopy(stats_state.spaces)}
end

function crud.reset_stats()
    if stats_state.enabled then
        stats_state.spaces = {}
    end
    return true
end

-- Stand-in only: vshard's bucket_count (tarantool-python's test cluster uses 300).
function crud._set_bucket_count(count)
    assert(type(count) == 'number' and count >= 1 and count % 1 == 0,
           'bucket_count must be a positive integer')
    bucket_count = count
    return true
end

-- Operation labels of the stats, as in crud.stats.operation.
local STATS_LABELS = {
    insert = 'insert', insert_object = 'insert', get = 'get',
    replace = 'replace', replace_object = 'replace', update = 'update',
    upsert = 'upsert', upsert_object = 'upsert', delete = 'delete',
    select = 'select', pairs = 'select', truncate = 'truncate', len = 'len',
    count = 'count', min = 'borders', max = 'borders',
    insert_many = 'insert_many', insert_object_many = 'insert_many',
    replace_many = 'replace_many', replace_object_many = 'replace_many',
    upsert_many = 'upsert_many', upsert_object_many = 'upsert_many',
}
for name, label in pairs(STATS_LABELS) do
    crud[name] = with_stats(label, crud[name])
end

return crud
