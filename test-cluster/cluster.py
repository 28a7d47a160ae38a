"""Launcher for the local Tarantool replica set used by the tests.

Starts three real ``tarantool`` processes (``inst1`` read-write, ``inst2`` and
``inst3`` read-only replicas, full-mesh replication) on 127.0.0.1, and gives
tests the means to break and repair them: stop, kill, freeze, restart,
promote/demote, run Lua on an instance, and restore the initial shape.

Importable (``from cluster import Cluster``) and runnable::

    python test-cluster/cluster.py up [--fixed-ports] [--dir DIR]
    python test-cluster/cluster.py status [--dir DIR]
    python test-cluster/cluster.py down [--dir DIR] [--all]
    python test-cluster/cluster.py eval NAME LUA [--dir DIR]

Lua is run through a control channel of its own (a unix socket served by
``instance.lua`` that speaks one JSON line each way), never through the
project's client, which is the code under test.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INSTANCE_SCRIPT = HERE / "instance.lua"
RUN_DIR = HERE / ".run"
CLI_DIR = RUN_DIR / "cli"
STATE_FILE = "cluster.json"
PID_FILE = "instance.pid"
LOG_FILE = "tarantool.log"
OUTPUT_FILE = "output.log"
EVENT_FILE = "launcher.log"
LOCK_FILE = ".lock"
CTL_SOCKET = "control.sock"

HOST = "127.0.0.1"
NAMES = ("inst1", "inst2", "inst3")
MASTER = "inst1"
FIXED_PORTS = {"inst1": 3301, "inst2": 3302, "inst3": 3303}

# Seconds a SIGTERM'ed instance gets before SIGKILL.
TERM_GRACE = 5.0
# Pause between polls while waiting for a condition.
POLL_INTERVAL = 0.05
# How many dead auto-named run directories are kept for post-mortems.
KEEP_RUN_DIRS = 5
# AF_UNIX paths are limited to 108 bytes including the terminator.
MAX_UNIX_PATH = 100

REPLICATION_OK_LUA = """
local n = 0
for _, r in pairs(box.info.replication) do
    n = n + 1
    if r.uuid ~= box.info.uuid then
        if r.upstream == nil or r.upstream.status ~= 'follow' then
            return false
        end
        if r.downstream == nil or r.downstream.status ~= 'follow' then
            return false
        end
    end
end
return n == %d
"""

REPLICATION_INFO_LUA = """
local out = {}
for _, r in pairs(box.info.replication) do
    if r.uuid ~= box.info.uuid then
        table.insert(out, {
            id = r.id,
            upstream = r.upstream and r.upstream.status or box.NULL,
            upstream_message = r.upstream and r.upstream.message or box.NULL,
            downstream = r.downstream and r.downstream.status or box.NULL,
        })
    end
end
return out
"""

# Vclock without the local component 0, as a JSON-friendly map.
VCLOCK_LUA = """
local out = {}
for id, lsn in pairs(box.info.vclock) do
    if id ~= 0 then out[tostring(id)] = lsn end
end
return setmetatable(out, {__serialize = 'map'})
"""

# True when the instance's appliers will not come back by themselves: its
# replication config is not the mesh any more, or an applier stopped.
REPLICATION_BROKEN_LUA = """
local have = box.cfg.replication or {}
if type(have) ~= 'table' then have = {have} end
if #have ~= #tc_mesh_cfg.replication then
    return true
end
for _, r in pairs(box.info.replication) do
    if r.upstream ~= nil and r.upstream.status == 'stopped' then
        return true
    end
end
return false
"""

RESET_REPLICATION_LUA = """
box.cfg{replication = {}}
box.cfg(tc_mesh_cfg)
return true
"""


class ClusterError(RuntimeError):
    """The cluster could not be brought into the requested state."""


class AdminError(RuntimeError):
    """A Lua chunk sent through ``Cluster.admin`` raised an error."""

    def __init__(self, instance: str, message: str, code: int | None = None,
                 error_type: str | None = None) -> None:
        super().__init__(f"{instance}: {message}")
        self.instance = instance
        self.message = message
        self.code = code
        self.error_type = error_type


class AdminTimeout(TimeoutError):
    """The control channel did not answer in time (frozen or hung)."""


class AdminUnavailable(ConnectionError):
    """The control channel is not there (instance down or still starting)."""


def tarantool_binary() -> str | None:
    """Path of the tarantool executable, or None when it is not installed."""
    explicit = os.environ.get("TARANTOOL_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("tarantool") or (
        "/usr/bin/tarantool" if os.access("/usr/bin/tarantool", os.X_OK) else None)


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for port 0 (held together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, starttime) of a process, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def pid_alive(pid: int | None) -> bool:
    """True when the process exists and is not a zombie."""
    if not pid:
        return False
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def is_instance_process(pid: int, workdir: Path | None = None) -> bool:
    """True when ``pid`` is a live tarantool (of ``workdir``, when readable).

    Guards against PID reuse before a signal is sent.
    """
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    if b"tarantool" not in cmdline and "tarantool" not in os.path.basename(exe):
        return False
    if workdir is not None:
        # Instances run with their work dir as cwd (Popen cwd and
        # box.cfg work_dir).  /proc/PID/environ is useless here: the
        # process title overwrites it.
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return True  # cannot tell more; the command line matched
        return os.path.realpath(cwd) == os.path.realpath(workdir)
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"  ({path} not found)"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


class Instance:
    """One tarantool process of the cluster."""

    def __init__(self, name: str, port: int, workdir: Path,
                 read_only: bool) -> None:
        self.name = name
        self.host = HOST
        self.port = port
        self.workdir = workdir
        self.read_only = read_only  # role it is (re)started with
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}

    @property
    def uri(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.workdir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.workdir / LOG_FILE

    @property
    def output_file(self) -> Path:
        return self.workdir / OUTPUT_FILE

    @property
    def control_socket(self) -> str:
        path = str(self.workdir / CTL_SOCKET)
        if len(path) <= MAX_UNIX_PATH:
            return path
        digest = hashlib.sha1(path.encode()).hexdigest()[:16]
        return f"/tmp/tc-{digest}.sock"

    def has_data(self) -> bool:
        return any(self.workdir.glob("*.snap"))

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.proc is not None and self.proc.poll() is not None:
            return False
        return is_instance_process(self.pid, self.workdir)

    def read_pid_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def __repr__(self) -> str:
        return f"Instance({self.name!r}, {self.uri}, pid={self.pid})"


class Cluster:
    """A three-instance replica set on 127.0.0.1, driven by PID."""

    user = "test"
    password = "test-password"

    def __init__(self, base_dir: str | os.PathLike[str] | None = None,
                 fixed_ports: bool = False) -> None:
        self.auto_dir = base_dir is None
        if base_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base_dir = RUN_DIR / f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}"
        self.base_dir = Path(base_dir).resolve()
        self.fixed_ports = fixed_ports
        self.instances: dict[str, Instance] = {}
        self._pick_ports()
        self._atexit_registered = False
        self._lock_fd: int | None = None
        self.rebuilds = 0  # times restore() had to rebuild from scratch

    # ------------------------------------------------------------------
    # construction helpers

    def _pick_ports(self) -> None:
        if self.fixed_ports:
            ports = [FIXED_PORTS[name] for name in NAMES]
        else:
            ports = _free_ports(len(NAMES))
        old = self.instances
        self.instances = {}
        for name, port in zip(NAMES, ports):
            inst = Instance(name, port, self.base_dir / name,
                            read_only=name != MASTER)
            if name in old:
                inst.pid, inst.proc = old[name].pid, old[name].proc
            self.instances[name] = inst

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str]) -> Cluster:
        """Attach to a cluster started by another process (CLI down/status)."""
        base = Path(base_dir).resolve()
        state = json.loads((base / STATE_FILE).read_text())
        cluster = cls.__new__(cls)
        cluster.auto_dir = False
        cluster.base_dir = base
        cluster.fixed_ports = bool(state.get("fixed_ports"))
        cluster._atexit_registered = False
        cluster._lock_fd = None
        cluster.rebuilds = 0
        cluster.instances = {}
        for name, info in state["instances"].items():
            inst = Instance(name, int(info["port"]), base / name,
                            read_only=bool(info["read_only"]))
            inst.pid = inst.read_pid_file()
            cluster.instances[name] = inst
        return cluster

    def _write_state(self) -> None:
        state = {
            "fixed_ports": self.fixed_ports,
            "owner_pid": os.getpid(),
            "instances": {
                name: {"host": inst.host, "port": inst.port,
                       "read_only": inst.read_only}
                for name, inst in self.instances.items()
            },
        }
        self.base_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.base_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.base_dir / STATE_FILE)

    def _lock_dir(self) -> None:
        """Hold an flock on the cluster dir while this object runs it, so
        that other test sessions never prune it."""
        if self._lock_fd is not None:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.base_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClusterError(f"{self.base_dir} is in use by another process") from None
        self._lock_fd = fd

    def _unlock_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _event(self, message: str) -> None:
        """Append a line to the launcher's own log in the cluster dir."""
        with contextlib.suppress(OSError):
            self.base_dir.mkdir(parents=True, exist_ok=True)
            with open(self.base_dir / EVENT_FILE, "a") as log:
                log.write(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {message}\n")

    def _instance(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            raise KeyError(f"no instance {name!r}; have {sorted(self.instances)}") from None

    def addrs(self) -> list[dict[str, Any]]:
        return [self.instances[name].addr for name in sorted(self.instances)]

    # ------------------------------------------------------------------
    # processes

    def _spawn(self, inst: Instance, bootstrap: str, join_uri: str | None,
               owner: bool) -> None:
        binary = tarantool_binary()
        if binary is None:
            raise ClusterError("tarantool is not installed (not on PATH, "
                               "no /usr/bin/tarantool); install it first")
        inst.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TC_", "TT_"))}
        env.update({
            "TC_NAME": inst.name,
            "TC_HOST": inst.host,
            "TC_PORT": str(inst.port),
            "TC_WORKDIR": str(inst.workdir),
            "TC_PEERS": ",".join(i.uri for i in self.instances.values()),
            "TC_READ_ONLY": "1" if inst.read_only else "0",
            "TC_CTL_SOCK": inst.control_socket,
            "TC_BOOTSTRAP": bootstrap,
        })
        if join_uri:
            env["TC_JOIN_URI"] = join_uri
        if owner:
            env["TC_OWNER_PID"] = str(os.getpid())
        with open(inst.output_file, "ab") as out:
            proc = subprocess.Popen(
                [binary, str(INSTANCE_SCRIPT)],
                cwd=inst.workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        inst.proc = proc
        inst.pid = proc.pid
        self._event(f"spawned {inst.name} pid {proc.pid} port {inst.port} "
                    f"bootstrap={bootstrap} read_only={inst.read_only}")
        inst.pid_file.write_text(f"{proc.pid}\n")

    def _wait_exit(self, insts: Iterable[Instance], deadline: float) -> list[Instance]:
        """Wait until the processes are gone; return those still alive."""
        pending = [i for i in insts if i.pid is not None]
        while pending:
            for inst in pending:
                if inst.proc is not None:
                    inst.proc.poll()  # reaps our own children
            pending = [i for i in pending if i.alive()]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        return pending

    def _forget(self, inst: Instance) -> None:
        if inst.pid is not None:
            self._event(f"{inst.name} pid {inst.pid} is gone")
        if inst.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                inst.proc.wait(timeout=1)
        inst.proc = None
        inst.pid = None
        with contextlib.suppress(OSError):
            inst.pid_file.unlink()
        if inst.control_socket.startswith("/tmp/tc-"):
            with contextlib.suppress(OSError):
                os.unlink(inst.control_socket)

    def _terminate(self, insts: list[Instance], grace: float = TERM_GRACE) -> None:
        """SIGCONT + SIGTERM, then SIGKILL whatever outlives the grace."""
        live = []
        for inst in insts:
            if inst.pid is None:
                inst.pid = inst.read_pid_file()
            if inst.pid is not None and inst.alive():
                _signal(inst.pid, signal.SIGCONT)
                _signal(inst.pid, signal.SIGTERM)
                self._event(f"SIGTERM {inst.name} pid {inst.pid}")
                live.append(inst)
            elif inst.pid is not None:
                self._forget(inst)
        stubborn = self._wait_exit(live, time.monotonic() + grace)
        for inst in stubborn:
            if inst.pid is not None and inst.alive():
                self._event(f"SIGKILL {inst.name} pid {inst.pid} (ignored SIGTERM)")
                _signal(inst.pid, signal.SIGKILL)
        left = self._wait_exit(stubborn, time.monotonic() + 10)
        if left:
            raise ClusterError(f"could not stop {left}")
        for inst in live:
            self._forget(inst)

    # ------------------------------------------------------------------
    # lifecycle

    def up(self, timeout: float = 60, cleanup_at_exit: bool = True) -> None:
        """Bootstrap a fresh replica set and wait until it fully replicates.

        ``cleanup_at_exit`` stops the instances when this Python process
        exits (and makes them exit by themselves if it dies); the CLI turns
        it off so the cluster outlives ``cluster.py up``.
        """
        running = [i.name for i in self.instances.values() if i.alive()]
        if running:
            raise ClusterError(f"already running: {running}; call down() first")
        self._lock_dir()
        if self.auto_dir:
            _prune_run_dirs()
        attempts = 1 if self.fixed_ports else 2
        for attempt in range(attempts):
            try:
                self._bootstrap(timeout, owner=cleanup_at_exit)
                return
            except ClusterError as exc:
                self._terminate(list(self.instances.values()))
                clash = "failed to bind" in str(exc) or "Address already in use" in str(exc)
                if clash and attempt + 1 < attempts:
                    self._event("a port was taken meanwhile; picking new ports")
                    self._pick_ports()
                    continue
                self._unlock_dir()
                raise

    def _bootstrap(self, timeout: float, owner: bool) -> None:
        deadline = time.monotonic() + timeout
        for inst in self.instances.values():
            inst.read_only = inst.name != MASTER
            if inst.workdir.exists():
                shutil.rmtree(inst.workdir)
        self._write_state()
        if owner and not self._atexit_registered:
            atexit.register(self._cleanup_at_exit)
            self._atexit_registered = True
        master = self.instances[MASTER]
        try:
            self._spawn(master, "master", None, owner)
            self._wait_started([master], deadline, extra="box.space.customers ~= nil")
            replicas = [i for i in self.instances.values() if i is not master]
            for inst in replicas:
                self._spawn(inst, "join", master.uri, owner)
            self._wait_started(replicas, deadline)
            self.wait_replication(max(0.0, deadline - time.monotonic()))
        except (ClusterError, TimeoutError) as exc:
            raise ClusterError(f"cluster did not come up: {exc}\n"
                               + self.log_tails()) from exc

    def _wait_started(self, insts: list[Instance], deadline: float,
                      extra: str = "true") -> None:
        """Wait until each instance answers and box.info.status is running."""
        predicate = f"box.info.status == 'running' and ({extra})"
        for inst in insts:
            while True:
                if not inst.alive():
                    raise ClusterError(f"{inst.name} exited during startup")
                poll = min(2.0, max(0.1, deadline - time.monotonic()))
                try:
                    if self.admin(inst.name, predicate, timeout=poll):
                        break
                except (AdminUnavailable, AdminTimeout, AdminError):
                    pass
                if time.monotonic() >= deadline:
                    raise ClusterError(
                        f"{inst.name} did not start (predicate {predicate!r})")
                time.sleep(POLL_INTERVAL)

    def down(self) -> None:
        """Stop every instance (SIGTERM, SIGKILL after a grace). Idempotent."""
        self._terminate(list(self.instances.values()))
        self._unlock_dir()

    def _cleanup_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.down()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per instance: pid, port, running, reachable, and ro/status when
        reachable (``error`` says why not)."""
        out: dict[str, dict[str, Any]] = {}
        for name, inst in self.instances.items():
            if inst.pid is None:
                inst.pid = inst.read_pid_file()
            info: dict[str, Any] = {"pid": inst.pid, "port": inst.port,
                                    "running": inst.alive(), "reachable": False}
            if info["running"]:
                try:
                    res = self.admin(name, "{ro = box.info.ro, status = box.info.status}",
                                     timeout=1)
                    info.update(reachable=True, ro=res["ro"], status=res["status"])
                except (AdminUnavailable, AdminTimeout, AdminError) as exc:
                    info["error"] = str(exc)
            out[name] = info
        return out

    # ------------------------------------------------------------------
    # fault injection

    def stop(self, name: str) -> None:
        """SIGTERM (SIGKILL after a grace) and wait until it has exited."""
        self._terminate([self._instance(name)])

    def kill(self, name: str) -> None:
        """SIGKILL and wait until it has exited."""
        inst = self._instance(name)
        if inst.pid is not None and inst.alive():
            _signal(inst.pid, signal.SIGKILL)
            self._event(f"SIGKILL {name} pid {inst.pid}")
            if self._wait_exit([inst], time.monotonic() + 10):
                raise ClusterError(f"{name} survived SIGKILL")
        self._forget(inst)

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        inst = self._instance(name)
        if inst.pid is None or not inst.alive():
            raise ClusterError(f"{name} is not running")
        _signal(inst.pid, signal.SIGSTOP)
        self._event(f"SIGSTOP {name} pid {inst.pid}")

    def thaw(self, name: str) -> None:
        """SIGCONT a frozen instance."""
        inst = self._instance(name)
        if inst.pid is not None and inst.alive():
            _signal(inst.pid, signal.SIGCONT)
            self._event(f"SIGCONT {name} pid {inst.pid}")

    def start(self, name: str, wait: bool = True, timeout: float = 30,
              read_only: bool | None = None) -> None:
        """Start a stopped instance on its existing data.

        It comes back with ``read_only`` if given, else with its last role
        (the initial one, or the last ``set_read_only``).  With ``wait`` it
        returns once the instance answers and its status is ``running``.
        """
        inst = self._instance(name)
        if inst.alive():
            raise ClusterError(f"{name} is already running (pid {inst.pid})")
        self._forget(inst)
        if read_only is not None:
            inst.read_only = read_only
        if not inst.has_data():
            raise ClusterError(f"{name} has no data in {inst.workdir}; "
                               "a fresh cluster needs up()")
        self._spawn(inst, "none", None, owner=self._atexit_registered)
        self._write_state()
        if wait:
            try:
                self._wait_started([inst], time.monotonic() + timeout)
            except ClusterError as exc:
                raise ClusterError(f"{exc}\n{self.log_tails([name])}") from exc

    def restart(self, name: str, timeout: float = 30) -> None:
        self.stop(name)
        self.start(name, timeout=timeout)

    def set_read_only(self, name: str, read_only: bool, timeout: float = 10) -> None:
        """box.cfg{read_only=...} and wait until box.info.ro agrees."""
        inst = self._instance(name)
        flag = "true" if read_only else "false"
        self.admin(name, f"box.cfg{{read_only = {flag}}}", timeout=timeout)
        inst.read_only = read_only
        self._write_state()
        self.wait_until(name, f"box.info.ro == {flag}", timeout=timeout)

    # ------------------------------------------------------------------
    # control channel

    def admin(self, name: str, lua: str, timeout: float = 5) -> Any:
        """Run a Lua chunk on the instance and return its result.

        The chunk may be an expression (``box.info.ro``) or statements with
        ``return``.  No value gives None, one value gives that value, several
        give a list.  Lua errors raise AdminError; no answer within
        ``timeout`` raises AdminTimeout; no listener raises AdminUnavailable.
        """
        inst = self._instance(name)
        deadline = time.monotonic() + timeout
        request = json.dumps({"lua": lua, "deadline": time.time() + timeout})
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(inst.control_socket)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise AdminUnavailable(f"{name}: control socket not available: {exc}") from exc
            sock.sendall(request.encode() + b"\n")
            chunks: list[bytes] = []
            while not chunks or not chunks[-1].endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                sock.settimeout(left)
                data = sock.recv(1 << 16)
                if not data:
                    raise AdminUnavailable(f"{name}: control connection closed")
                chunks.append(data)
        except TimeoutError as exc:
            raise AdminTimeout(
                f"{name}: no answer within {timeout}s to {lua.strip()[:80]!r}") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise AdminUnavailable(f"{name}: control connection lost: {exc}") from exc
        finally:
            sock.close()
        response = json.loads(b"".join(chunks))
        if not response.get("ok"):
            err = response.get("error") or {}
            raise AdminError(name, str(err.get("message")), err.get("code"), err.get("type"))
        results = response.get("results") or []
        if len(results) == 0:
            return None
        if len(results) == 1:
            return results[0]
        return results

    def wait_until(self, name: str, lua_predicate: str, timeout: float) -> Any:
        """Poll a Lua expression until it is truthy; return its value.

        Errors and timeouts of single polls count as "not yet".  Raises
        TimeoutError naming the instance, the predicate and the last outcome.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            left = deadline - time.monotonic()
            try:
                value = self.admin(name, lua_predicate, timeout=max(0.1, min(2.0, left)))
                if value:
                    return value
                last = value
            except (AdminError, AdminTimeout, AdminUnavailable) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{name}: {lua_predicate.strip()!r} not true within {timeout}s "
                    f"(last result: {last!r})")
            time.sleep(POLL_INTERVAL)

    # ------------------------------------------------------------------
    # replication

    def replication_ok(self, name: str) -> bool:
        """Every peer of ``name`` is followed both ways (upstream/downstream)."""
        return bool(self.admin(name, REPLICATION_OK_LUA % len(self.instances), timeout=2))

    def replication_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for name in self.instances:
            try:
                info[name] = self.admin(name, REPLICATION_INFO_LUA, timeout=1)
            except (AdminError, AdminTimeout, AdminUnavailable) as exc:
                info[name] = str(exc)
        return info

    def wait_replication(self, timeout: float = 30,
                         names: Iterable[str] | None = None,
                         heal: bool = True) -> None:
        """Wait until every instance follows every peer, both directions.

        With ``heal``, an instance whose appliers will not recover by
        themselves (one stopped on an error, or its replication config is no
        longer the mesh) gets its replication restarted, at most once a
        second.  Tarantool 2.6 stops an applier for good when it reaches a
        peer that has not yet learnt about the applier's instance
        (ER_UNKNOWN_REPLICA), which can happen while replicas join.
        """
        deadline = time.monotonic() + timeout
        ok_lua = REPLICATION_OK_LUA % len(self.instances)
        pending = list(names or self.instances)
        last: dict[str, Any] = {}
        last_heal: dict[str, float] = {}
        while True:
            for name in list(pending):
                poll = min(2.0, max(0.1, deadline - time.monotonic()))
                try:
                    if self.admin(name, ok_lua, timeout=poll):
                        pending.remove(name)
                        continue
                    last[name] = "not following every peer"
                    now = time.monotonic()
                    if heal and now - last_heal.get(name, 0.0) >= 1.0 \
                            and self.admin(name, REPLICATION_BROKEN_LUA, timeout=poll):
                        last_heal[name] = now
                        self._event(f"restarting replication on {name}: "
                                    f"{self.admin(name, REPLICATION_INFO_LUA, timeout=poll)}")
                        self.admin(name, RESET_REPLICATION_LUA, timeout=poll)
                except (AdminError, AdminTimeout, AdminUnavailable) as exc:
                    last[name] = exc
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"replication not up within {timeout:.1f}s on {pending} "
                    f"({ {n: str(last.get(n)) for n in pending} }); "
                    f"state: {self.replication_info()}")
            time.sleep(POLL_INTERVAL)

    def wait_synced(self, timeout: float = 30) -> None:
        """Wait until all instances have the same vclock."""
        deadline = time.monotonic() + timeout
        while True:
            clocks = {}
            for name in self.instances:
                with contextlib.suppress(AdminError, AdminTimeout, AdminUnavailable):
                    clocks[name] = self.admin(name, VCLOCK_LUA, timeout=1)
            distinct = {json.dumps(c, sort_keys=True) for c in clocks.values()}
            if len(clocks) == len(self.instances) and len(distinct) == 1:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"vclocks did not converge: {clocks}")
            time.sleep(POLL_INTERVAL)

    def restore(self, timeout: float = 60) -> None:
        """Back to the initial shape: all running, inst1 rw, others ro,
        replication up and vclocks equal.

        Thaws frozen and starts stopped instances, resets the roles, and
        restarts appliers that stopped on an error.  If that does not work
        within half the budget the cluster is rebuilt from scratch on the
        same ports (data is lost; ``self.rebuilds`` counts such events).
        """
        deadline = time.monotonic() + timeout
        try:
            self._repair(deadline - timeout / 2)
        except (ClusterError, TimeoutError, AdminError, AdminUnavailable) as exc:
            self.rebuilds += 1
            sys.stderr.write(f"test-cluster: restore failed ({exc}); rebuilding\n")
            self._event(f"restore failed, rebuilding: {exc}")
            self._terminate(list(self.instances.values()))
            self._bootstrap(max(30.0, deadline - time.monotonic()),
                            owner=self._atexit_registered)

    def _repair(self, deadline: float) -> None:
        for inst in self.instances.values():
            if inst.alive():
                _signal(inst.pid or 0, signal.SIGCONT)
        stopped = [i for i in self.instances.values() if not i.alive()]
        for inst in stopped:
            # Come back read-only; the master is promoted below once synced.
            self.start(inst.name, wait=False, read_only=True)
        self._wait_started(list(self.instances.values()), deadline)
        for name in self.instances:
            if name != MASTER:
                self.set_read_only(name, True, timeout=max(1.0, deadline - time.monotonic()))
        self.wait_replication(max(1.0, deadline - time.monotonic()))
        self.wait_synced(max(1.0, deadline - time.monotonic()))
        self.set_read_only(MASTER, False, timeout=max(1.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------
    # diagnostics

    def log_tails(self, names: Iterable[str] | None = None, lines: int = 25) -> str:
        parts = []
        for name in names or self.instances:
            inst = self._instance(name)
            parts.append(f"--- {name} {inst.log_file}\n{_tail(inst.log_file, lines)}")
            if inst.output_file.exists() and inst.output_file.stat().st_size:
                parts.append(f"--- {name} {inst.output_file}\n"
                             f"{_tail(inst.output_file, lines)}")
        return "\n".join(parts)


def _iter_pid_files(run_dir: Path) -> Iterator[Path]:
    yield from sorted(run_dir.glob(f"*/*/{PID_FILE}"))


def _dir_locked(directory: Path) -> bool:
    """True when a live Cluster object holds the dir's lock."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _prune_run_dirs(run_dir: Path = RUN_DIR, keep: int = KEEP_RUN_DIRS) -> None:
    """Remove old auto-named run dirs nobody uses (no lock, no instance)."""
    if not run_dir.is_dir():
        return
    candidates = []
    for d in run_dir.iterdir():
        if not d.is_dir() or d.name == CLI_DIR.name or _dir_locked(d):
            continue
        pids = []
        for pid_file in d.glob(f"*/{PID_FILE}"):
            with contextlib.suppress(OSError, ValueError):
                pids.append((int(pid_file.read_text().strip()), pid_file.parent))
        if any(is_instance_process(pid, wd) for pid, wd in pids):
            continue
        with contextlib.suppress(OSError):
            candidates.append((d.stat().st_mtime, d))
    candidates.sort(reverse=True)
    for _, d in candidates[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def down_all(run_dir: Path = RUN_DIR) -> list[int]:
    """Kill every instance recorded under ``run_dir``; return their PIDs."""
    victims: list[tuple[int, Path]] = []
    for pid_file in _iter_pid_files(run_dir):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if is_instance_process(pid, pid_file.parent):
            _signal(pid, signal.SIGCONT)
            _signal(pid, signal.SIGTERM)
            victims.append((pid, pid_file))
        else:
            with contextlib.suppress(OSError):
                pid_file.unlink()
    deadline = time.monotonic() + TERM_GRACE
    while any(pid_alive(pid) for pid, _ in victims) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    for pid, pid_file in victims:
        if is_instance_process(pid, pid_file.parent):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid, _ in victims) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    for _, pid_file in victims:
        with contextlib.suppress(OSError):
            pid_file.unlink()
    return [pid for pid, _ in victims]


def _print_status(cluster: Cluster) -> None:
    rows = [("name", "uri", "pid", "running", "ro", "status")]
    for name, info in cluster.status().items():
        rows.append((
            name,
            cluster.instances[name].uri,
            str(info.get("pid") or "-"),
            "yes" if info["running"] else "no",
            str(info.get("ro", "-")).lower(),
            str(info.get("status", "-" if not info["running"] else "unreachable")),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bootstrap the replica set")
    p_up.add_argument("--fixed-ports", action="store_true",
                      help="listen on 3301, 3302, 3303 instead of free ports")
    p_up.add_argument("--timeout", type=float, default=60)
    p_down = sub.add_parser("down", help="stop the replica set")
    p_down.add_argument("--all", action="store_true",
                        help=f"kill every instance recorded under {RUN_DIR}")
    p_status = sub.add_parser("status", help="show the instances")
    p_eval = sub.add_parser("eval", help="run a Lua chunk on one instance")
    p_eval.add_argument("name")
    p_eval.add_argument("lua")
    for p in (p_up, p_down, p_status, p_eval):
        p.add_argument("--dir", default=str(CLI_DIR),
                       help="cluster directory (default: %(default)s)")
    args = parser.parse_args(argv)
    base = Path(args.dir)

    if args.command == "up":
        if (base / STATE_FILE).exists():
            old = Cluster.load(base)
            if any(i.alive() for i in old.instances.values()):
                print(f"a cluster is already running in {base}; run down first",
                      file=sys.stderr)
                return 1
        cluster = Cluster(base, fixed_ports=args.fixed_ports)
        started = time.monotonic()
        try:
            cluster.up(timeout=args.timeout, cleanup_at_exit=False)
        except ClusterError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"cluster up in {time.monotonic() - started:.1f}s, dir {cluster.base_dir}")
        _print_status(cluster)
        return 0

    if args.command == "down":
        if args.all:
            pids = down_all()
            print(f"stopped {len(pids)} instance(s)" + (f": {pids}" if pids else ""))
            return 0
        if not (base / STATE_FILE).exists():
            print(f"no cluster in {base}")
            return 0
        Cluster.load(base).down()
        print(f"cluster in {base} is down")
        return 0

    if not (base / STATE_FILE).exists():
        print(f"no cluster in {base}", file=sys.stderr)
        return 1
    cluster = Cluster.load(base)
    if args.command == "status":
        _print_status(cluster)
        return 0
    try:
        print(json.dumps(cluster.admin(args.name, args.lua), indent=2))
    except (AdminError, AdminTimeout, AdminUnavailable) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
