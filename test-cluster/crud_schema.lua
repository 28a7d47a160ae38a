-- crud_schema.lua: extra spaces for the crud tests, besides `customers`.
--
-- Run with dofile() inside the master's one-time bootstrap (box.once), and by
-- crud_selftest.lua. Plain DDL, safe to run twice (if_not_exists everywhere).

-- `developers`: for the *_object* calls. `name` is required, so a missing
-- name gives the "isn't nullable" flatten error; `surname` and `age` may be
-- left out.
local developers = box.schema.space.create('developers', {
    if_not_exists = true,
    format = {
        {name = 'id', type = 'unsigned'},
        {name = 'bucket_id', type = 'unsigned'},
        {name = 'name', type = 'string'},
        {name = 'surname', type = 'string', is_nullable = true},
        {name = 'age', type = 'number', is_nullable = true},
    },
})
developers:create_index('primary_index', {
    if_not_exists = true, parts = {{field = 'id'}},
})
developers:create_index('bucket_id', {
    if_not_exists = true, unique = false, parts = {{field = 'bucket_id'}},
})

-- `no_bucket`: a space WITHOUT a bucket_id field or index, so insert-like
-- calls fail with '"bucket_id" index is not found' (reads still work).
local no_bucket = box.schema.space.create('no_bucket', {
    if_not_exists = true,
    format = {
        {name = 'id', type = 'unsigned'},
        {name = 'name', type = 'string'},
    },
})
no_bucket:create_index('primary_index', {
    if_not_exists = true, parts = {{field = 'id'}},
})

-- `accounts`: a two-part primary key (bucket_id is computed over both parts,
-- and select keys are arrays), plus a non-unique secondary TREE index.
local accounts = box.schema.space.create('accounts', {
    if_not_exists = true,
    format = {
        {name = 'user_id', type = 'unsigned'},
        {name = 'account', type = 'string'},
        {name = 'bucket_id', type = 'unsigned'},
        {name = 'balance', type = 'number', is_nullable = true},
    },
})
accounts:create_index('primary_index', {
    if_not_exists = true, parts = {{field = 'user_id'}, {field = 'account'}},
})
accounts:create_index('bucket_id', {
    if_not_exists = true, unique = false, parts = {{field = 'bucket_id'}},
})
accounts:create_index('balance_index', {
    if_not_exists = true, unique = false, parts = {{field = 'balance', is_nullable = true}},
})
