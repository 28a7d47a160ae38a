"""Tests of the test cluster harness itself (test-cluster/cluster.py).

They check that the replica set really has the shape the other tests rely
on (roles, replication, schema, users, global functions) and that each fault
injection does what it claims and can be undone.  Everything here talks to
the instances through the harness's own control channel or through net.box
inside an instance, never through the project's client.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    NAMES,
    AdminError,
    AdminTimeout,
    AdminUnavailable,
    Cluster,
    ClusterError,
    down_all,
    pid_alive,
)

pytestmark = pytest.mark.timeout(120)

CLUSTER_PY = Path(__file__).resolve().parent.parent / "test-cluster" / "cluster.py"
_keys = itertools.count(int(time.time() * 1000) % 10_000_000 * 100)


def new_key() -> int:
    """A test_int primary key no other test in this session uses."""
    return next(_keys)


def netbox(cluster: Cluster, name: str, body: str, user: str = "test",
           password: str = "test-password") -> Any:
    """Run ``body`` on ``name`` with ``c`` = a net.box connection to itself."""
    port = cluster.instances[name].port
    chunk = f"""
        local c = require('net.box').connect('127.0.0.1:{port}', {{
            user = '{user}', password = '{password}',
            wait_connected = true, connect_timeout = 5}})
        local ok, res = pcall(function() {body} end)
        c:close()
        if not ok then error(res) end
        return res
    """
    return cluster.admin(name, chunk, timeout=10)


def insert_on(cluster: Cluster, name: str, key: int, label: str) -> None:
    cluster.admin(name, f"box.space.test_int:replace{{{key}, '{label}'}}")


def wait_row(cluster: Cluster, name: str, key: int, label: str,
             timeout: float = 10) -> None:
    cluster.wait_until(
        name, f"(box.space.test_int:get({key}) or {{}})[2] == '{label}'", timeout)


# ----------------------------------------------------------------------
# shape after up()


def test_master_is_rw_and_replicas_are_ro(cluster: Cluster) -> None:
    assert cluster.admin("inst1", "box.info.ro") is False
    assert cluster.admin("inst2", "box.info.ro") is True
    assert cluster.admin("inst3", "box.info.ro") is True
    for name in NAMES:
        assert cluster.admin(name, "box.info.status") == "running"


def test_every_instance_follows_every_peer(cluster: Cluster) -> None:
    for name in NAMES:
        assert cluster.replication_ok(name), cluster.replication_info()
        peers = cluster.admin(name, "#box.info.replication")
        assert peers == 3


def test_whoami_reports_name_port_and_role(cluster: Cluster) -> None:
    uuids = set()
    for name in NAMES:
        me = cluster.admin(name, "whoami()")
        assert me["name"] == name
        assert me["port"] == cluster.instances[name].port
        assert me["ro"] is (name != "inst1")
        assert me["status"] == "running"
        uuids.add(me["uuid"])
    assert len(uuids) == 3


def test_addrs_and_status_match_instances(cluster: Cluster, addrs: list[dict[str, Any]]) -> None:
    assert addrs == [{"host": "127.0.0.1", "port": cluster.instances[n].port}
                     for n in NAMES]
    assert len({a["port"] for a in addrs}) == 3
    status = cluster.status()
    assert set(status) == set(NAMES)
    for name in NAMES:
        assert status[name]["running"] is True
        assert status[name]["ro"] is (name != "inst1")
        assert pid_alive(status[name]["pid"])


def test_write_on_master_replicates_to_both_replicas(cluster: Cluster) -> None:
    key = new_key()
    insert_on(cluster, "inst1", key, "replicated")
    wait_row(cluster, "inst2", key, "replicated")
    wait_row(cluster, "inst3", key, "replicated")


def test_replica_rejects_writes(cluster: Cluster) -> None:
    with pytest.raises(AdminError, match="read-only"):
        insert_on(cluster, "inst2", new_key(), "nope")


# ----------------------------------------------------------------------
# schema and users


def test_spaces_and_indexes_exist_on_every_instance(cluster: Cluster) -> None:
    for name in NAMES:
        shape = cluster.admin(name, """
            local s = box.space
            return {
                int_format = s.test_int:format(),
                int_pk = s.test_int.index.primary.unique,
                by_name_unique = s.test_int.index.by_name.unique,
                by_name_type = s.test_int.index.by_name.type,
                str_format_len = #s.test_str:format(),
                str_pk_type = s.test_str.index[0].parts[1].type,
                customers_indexes = {
                    s.customers.index[0].name,
                    s.customers.index[1].name,
                    s.customers.index[2].name,
                },
                age_unique = s.customers.index.age_index.unique,
                bucket_unique = s.customers.index.bucket_id.unique,
                age_nullable = s.customers:format()[4].is_nullable,
            }
        """)
        assert [f["name"] for f in shape["int_format"]] == ["id", "name", "value"]
        assert shape["int_format"][2]["is_nullable"] is True
        assert shape["int_pk"] is True
        assert shape["by_name_unique"] is False
        assert shape["by_name_type"] == "TREE"
        assert shape["str_format_len"] == 0
        assert shape["str_pk_type"] == "string"
        assert shape["customers_indexes"] == ["primary_index", "bucket_id", "age_index"]
        assert shape["age_unique"] is False
        assert shape["bucket_unique"] is False
        assert shape["age_nullable"] is True


def test_test_user_can_run_sql_ddl_over_iproto(cluster: Cluster) -> None:
    table = f"HARNESS_SQL_{new_key()}"
    rows = netbox(cluster, "inst1", f"""
        c:execute('CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)')
        c:execute('INSERT INTO {table} VALUES (1, ?)', {{'one'}})
        local r = c:execute('SELECT v FROM {table} WHERE id = 1')
        c:execute('DROP TABLE {table}')
        return r.rows
    """)
    assert rows == [["one"]]


def test_limited_user_connects_but_has_no_rights(cluster: Cluster) -> None:
    assert netbox(cluster, "inst1", "return c:ping()",
                  user="limited", password="limited-password") is True
    with pytest.raises(AdminError, match="denied"):
        netbox(cluster, "inst1", "return c:call('whoami')",
               user="limited", password="limited-password")


def test_wrong_password_is_refused(cluster: Cluster) -> None:
    with pytest.raises(AdminError, match="[Ii]ncorrect password|denied"):
        netbox(cluster, "inst1", "return c:call('echo', {1})",
               password="wrong-password")


# ----------------------------------------------------------------------
# global functions, called by name over iproto as user test


def test_echo_returns_all_arguments(cluster: Cluster) -> None:
    assert netbox(cluster, "inst2",
                  "return {c:call('echo', {1, 'two', {3}})}") == [1, "two", [3]]


def test_sleep_sleeps_and_returns_seconds(cluster: Cluster) -> None:
    started = time.monotonic()
    assert netbox(cluster, "inst1", "return c:call('sleep', {0.3})") == 0.3
    assert time.monotonic() - started >= 0.3


def test_push_sends_n_pushes_then_returns_n(cluster: Cluster) -> None:
    res = netbox(cluster, "inst1", """
        local got = {}
        local n = c:call('push', {3}, {on_push = function(_, x)
            table.insert(got, x)
        end})
        return {n = n, got = got}
    """)
    assert res == {"n": 3, "got": [1, 2, 3]}


def test_raise_and_raise_code_raise(cluster: Cluster) -> None:
    res = netbox(cluster, "inst1", """
        local ok1, e1 = pcall(c.call, c, 'raise', {'plain failure'})
        local ok2, e2 = pcall(c.call, c, 'raise_code', {32, 'coded failure'})
        return {ok1, tostring(e1), ok2, e2.code, e2.message}
    """)
    assert res[0] is False and "plain failure" in res[1]
    assert res[2:] == [False, 32, "coded failure"]


# ----------------------------------------------------------------------
# the control channel


def test_admin_decodes_lua_values(cluster: Cluster) -> None:
    assert cluster.admin("inst1", "nil") is None
    assert cluster.admin("inst1", "local x = 1") is None
    assert cluster.admin("inst1", "1, nil, 'x'") == [1, None, "x"]
    assert cluster.admin("inst1", "{a = {1, 2}, b = true}") == {"a": [1, 2], "b": True}
    assert cluster.admin("inst1", "local a = 20\nreturn a + 1") == 21
    assert cluster.admin("inst1", "[[it's: ]] .. '\\n---'") == "it's: \n---"


def test_admin_raises_lua_errors(cluster: Cluster) -> None:
    with pytest.raises(AdminError, match="kaboom") as info:
        cluster.admin("inst2", "error('kaboom')")
    assert info.value.instance == "inst2"
    with pytest.raises(AdminError) as info:
        cluster.admin("inst2", "box.error{code = 77, reason = 'coded'}")
    assert info.value.code == 77
    with pytest.raises(AdminError):
        cluster.admin("inst2", "this is not lua")


def test_wait_until_times_out_naming_instance_and_predicate(cluster: Cluster) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="inst3.*1 == 2"):
        cluster.wait_until("inst3", "1 == 2", timeout=0.5)
    assert time.monotonic() - started < 3


# ----------------------------------------------------------------------
# fault injection (each test starts from and returns to the initial shape)


def test_freeze_times_admin_out_and_thaw_recovers(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.freeze("inst2")
    try:
        started = time.monotonic()
        with pytest.raises(AdminTimeout):
            c.admin("inst2", "1", timeout=1)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 2.5
        frozen = c.status()["inst2"]
        assert frozen["running"] is True and frozen["reachable"] is False
    finally:
        c.thaw("inst2")
    assert c.admin("inst2", "1", timeout=5) == 1


def test_request_sent_while_frozen_is_not_run_after_thaw(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.admin("inst2", "_G.harness_marker = nil")
    c.freeze("inst2")
    try:
        with pytest.raises(AdminTimeout):
            c.admin("inst2", "_G.harness_marker = 1", timeout=0.5)
        time.sleep(0.1)  # past the request's deadline for sure
    finally:
        c.thaw("inst2")
    time.sleep(0.3)
    assert c.admin("inst2", "harness_marker") is None


def test_kill_and_start_bring_instance_back_with_its_data(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    before, during = new_key(), new_key()
    insert_on(c, "inst1", before, "before-kill")
    wait_row(c, "inst3", before, "before-kill")
    old_pid = c.instances["inst3"].pid
    c.kill("inst3")
    assert not pid_alive(old_pid)
    assert c.status()["inst3"]["running"] is False
    with pytest.raises(AdminUnavailable):
        c.admin("inst3", "1", timeout=1)
    insert_on(c, "inst1", during, "while-down")
    c.start("inst3")
    assert c.instances["inst3"].pid != old_pid
    assert c.admin("inst3", "box.info.ro") is True
    # Its own data survived SIGKILL, and it catches up on what it missed.
    assert c.admin("inst3", f"box.space.test_int:get({before})[2]") == "before-kill"
    wait_row(c, "inst3", during, "while-down")
    c.wait_replication(15)


def test_stop_terminates_and_restart_comes_back(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    old_pid = c.instances["inst2"].pid
    c.stop("inst2")
    assert not pid_alive(old_pid)
    assert c.instances["inst2"].pid is None
    c.start("inst2")
    old_pid = c.instances["inst2"].pid
    c.restart("inst2")
    assert not pid_alive(old_pid)
    assert c.admin("inst2", "box.info.status") == "running"
    with pytest.raises(ClusterError, match="already running"):
        c.start("inst2")


def test_set_read_only_flips_box_info_ro(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.set_read_only("inst2", False)
    assert c.admin("inst2", "box.info.ro") is False
    key = new_key()
    insert_on(c, "inst2", key, "written-on-inst2")
    wait_row(c, "inst1", key, "written-on-inst2")
    wait_row(c, "inst3", key, "written-on-inst2")
    c.set_read_only("inst1", True)
    assert c.admin("inst1", "box.info.ro") is True
    with pytest.raises(AdminError, match="read-only"):
        insert_on(c, "inst1", new_key(), "nope")


def test_promoted_replica_feeds_the_other_and_old_master_rejoins(
        fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.kill("inst1")
    c.set_read_only("inst2", False)
    key = new_key()
    insert_on(c, "inst2", key, "after-failover")
    wait_row(c, "inst3", key, "after-failover")
    c.start("inst1", read_only=True)
    assert c.admin("inst1", "box.info.ro") is True
    wait_row(c, "inst1", key, "after-failover")
    c.wait_replication(15)


def test_instance_starts_while_its_peers_are_down(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.stop("inst2")
    c.stop("inst3")
    started = time.monotonic()
    c.restart("inst1")
    assert time.monotonic() - started < 10
    assert c.admin("inst1", "box.info.status") == "running"
    assert c.admin("inst1", "box.info.ro") is False
    key = new_key()
    insert_on(c, "inst1", key, "alone")
    c.start("inst2")
    c.start("inst3")
    wait_row(c, "inst2", key, "alone")
    wait_row(c, "inst3", key, "alone")


def test_restore_repairs_every_fault_at_once(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.kill("inst1")
    c.set_read_only("inst3", False)
    c.freeze("inst3")
    c.stop("inst2")
    c.restore()
    for name in NAMES:
        assert c.admin(name, "box.info.status") == "running"
        assert c.admin(name, "box.info.ro") is (name != "inst1")
        assert c.replication_ok(name), c.replication_info()
    assert c.rebuilds == 0
    key = new_key()
    insert_on(c, "inst1", key, "restored")
    wait_row(c, "inst2", key, "restored")
    wait_row(c, "inst3", key, "restored")


def test_restore_recovers_from_conflicting_masters(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    key = new_key()
    # Two masters that do not pull from each other insert the same key.
    c.set_read_only("inst3", False)
    c.admin("inst1", "box.cfg{replication = {}}")
    c.admin("inst3", "box.cfg{replication = {}}")
    c.admin("inst3", f"box.space.test_int:insert{{{key}, 'from-inst3'}}")
    c.admin("inst1", f"box.space.test_int:insert{{{key}, 'from-inst1'}}")
    assert not c.replication_ok("inst1")
    c.restore()
    for name in NAMES:
        assert c.replication_ok(name), c.replication_info()
        assert c.admin(name, f"box.space.test_int:get({key}) ~= nil") is True
    assert c.admin("inst1", "box.info.ro") is False
    assert c.rebuilds == 0


STOPPED_UPSTREAM_LUA = """(function()
    for _, r in pairs(box.info.replication) do
        if r.upstream ~= nil and r.upstream.status == 'stopped' then
            return true
        end
    end
    return false
end)()"""


def test_restore_restarts_an_applier_stopped_by_a_conflict(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    key = new_key()
    # inst1 must not pull inst2's row, and inst3 must not relay inst1's row
    # to inst2 (it would arrive as a harmless NOP after inst3 skips it).
    c.admin("inst1", "box.cfg{replication = {}}")
    c.admin("inst3", "box.cfg{replication = {}}")
    c.admin("inst2", "box.cfg{replication_skip_conflict = false}")
    try:
        c.set_read_only("inst2", False)
        c.admin("inst2", f"box.space.test_int:insert{{{key}, 'local'}}")
        c.set_read_only("inst2", True)
        c.admin("inst1", f"box.space.test_int:insert{{{key}, 'conflict'}}")
        c.wait_until("inst2", STOPPED_UPSTREAM_LUA, timeout=10)
    finally:
        c.admin("inst2", "box.cfg{replication_skip_conflict = true}")
    c.restore()
    for name in NAMES:
        assert c.replication_ok(name), c.replication_info()
    assert c.admin("inst2", STOPPED_UPSTREAM_LUA) is False
    assert c.rebuilds == 0


# ----------------------------------------------------------------------
# a cluster of its own: up, down and the CLI


def _tarantool_pids_under(directory: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(directory)) and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def test_down_stops_everything_and_is_idempotent(tmp_path: Path) -> None:
    own = Cluster(tmp_path / "own")
    own.up(timeout=60)
    try:
        assert len(_tarantool_pids_under(tmp_path)) == 3
        own.freeze("inst3")  # down() must cope with a frozen instance
    finally:
        own.down()
    assert _tarantool_pids_under(tmp_path) == []
    own.down()
    assert all(not s["running"] for s in own.status().values())


def test_cli_up_status_down(tmp_path: Path) -> None:
    base = tmp_path / "cli"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(CLUSTER_PY), *args, "--dir", str(base)],
                              capture_output=True, text=True, timeout=90, check=False)

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        # The cluster outlives the CLI process that started it.
        assert len(_tarantool_pids_under(base)) == 3
        status = cli("status")
        assert status.returncode == 0
        lines = status.stdout.splitlines()
        assert lines[0].split()[:2] == ["name", "uri"]
        assert [line.split()[0] for line in lines[1:]] == list(NAMES)
        assert "running" in lines[1] and "false" in lines[1]
        assert cli("up").returncode == 1  # refuses to start twice
        value = cli("eval", "inst2", "box.info.ro")
        assert value.stdout.strip() == "true"
        down = cli("down")
        assert down.returncode == 0, down.stderr
        assert _tarantool_pids_under(base) == []
    finally:
        if (base / "cluster.json").exists():
            Cluster.load(base).down()


def test_down_all_kills_instances_recorded_in_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    orphan = Cluster(run_dir / "orphaned")
    try:
        orphan.up(timeout=60, cleanup_at_exit=False)
        killed = down_all(run_dir)
        assert sorted(killed) == sorted(i.pid or 0 for i in orphan.instances.values())
        assert _tarantool_pids_under(tmp_path) == []
    finally:
        orphan.down()
