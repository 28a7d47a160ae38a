"""TLS test helpers: throw-away certificates and a stunnel in front of Tarantool.

Tarantool Community Edition speaks no TLS, so the TLS tests put ``stunnel``
(Debian's ``stunnel4``) in front of a real instance of the test cluster: the
client talks TLS to stunnel, stunnel talks plain iproto to the instance.

- :func:`make_tls_files` writes, with the ``openssl`` command-line tool, a
  CA, a server certificate and a client certificate signed by it, the client
  key once more encrypted with a password, and a second, unrelated CA.
- :func:`run_stunnel` starts one stunnel process (``foreground = yes``) on a
  free port of 127.0.0.1 that forwards to a given port, waits until that port
  accepts TCP connections, and terminates the process when its ``with`` block
  ends.

The fixtures ``tls_files`` (one set of files per test module) and
``stunnel`` (a factory; every process it started is terminated when the test
ends) are imported by the test modules that need them.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
CLIENT_KEY_PASSWORD = "correct horse battery staple"
# Bounds of the helpers' own waits (seconds).
OPENSSL_TIMEOUT = 30.0
STUNNEL_START_TIMEOUT = 10.0
STUNNEL_STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.02
# A port picked as free may be taken by someone else before stunnel binds it.
STUNNEL_START_ATTEMPTS = 3


def openssl_binary() -> str:
    """Path of ``openssl``; fails the test with what to install when there is none."""
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the `openssl` command-line tool is not installed: the TLS tests make their "
                    "certificates with it (Debian package `openssl`; `make test` installs stunnel4, "
                    "which depends on it)", pytrace=False)
    return path


def stunnel_binary() -> str:
    """Path of stunnel (``stunnel4`` on Debian); fails the test with what to install when there is none."""
    path = shutil.which("stunnel4") or shutil.which("stunnel")
    if path is None:
        pytest.fail("stunnel is not installed (no `stunnel4` or `stunnel` on PATH): the TLS tests put it "
                    "in front of Tarantool, which has no TLS of its own; `make test` installs it "
                    "(Debian package `stunnel4`)", pytrace=False)
    return path


# -- certificates ------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """Paths (as str, the way the client options take them) of the generated files."""

    directory: Path
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    client_key_encrypted: str
    client_key_password: str
    other_ca_cert: str


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run([openssl_binary(), *args], cwd=directory, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=OPENSSL_TIMEOUT, check=False)
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed (exit {result.returncode}):\n"
                    f"{result.stderr.strip() or result.stdout.strip()}", pytrace=False)


def _new_ca(directory: Path, name: str, common_name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(directory, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={common_name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return str(cert), str(key)


def _new_signed(directory: Path, name: str, common_name: str, usage: str, ca_cert: str, ca_key: str,
                alt_names: str | None = None) -> tuple[str, str]:
    cert, key, csr = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid,issuer"]
    if alt_names:
        lines.append(f"subjectAltName={alt_names}")
    extensions.write_text("\n".join(lines) + "\n", encoding="ascii")
    _openssl(directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}")
    _openssl(directory, "x509", "-req", "-in", str(csr), "-CA", ca_cert, "-CAkey", ca_key,
             "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-sha256",
             "-extfile", str(extensions), "-out", str(cert))
    return str(cert), str(key)


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a CA, server and client certificates signed by it, an encrypted copy of
    the client key (password :data:`CLIENT_KEY_PASSWORD`) and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _new_ca(directory, "ca", "tarantool_pool test CA")
    server_cert, server_key = _new_signed(directory, "server", HOST, "serverAuth", ca_cert, ca_key,
                                          alt_names=f"IP:{HOST},DNS:localhost")
    client_cert, client_key = _new_signed(directory, "client", "tarantool_pool test client", "clientAuth",
                                          ca_cert, ca_key)
    password_file = directory / "client-key-password.txt"
    password_file.write_text(CLIENT_KEY_PASSWORD + "\n", encoding="utf-8")
    encrypted = directory / "client-encrypted.key"
    _openssl(directory, "pkey", "-in", client_key, "-aes256", "-passout", f"file:{password_file}",
             "-out", str(encrypted))
    password_file.unlink()
    if "ENCRYPTED" not in encrypted.read_text(encoding="ascii"):
        pytest.fail(f"openssl did not encrypt {encrypted}", pytrace=False)
    other_ca_cert, _ = _new_ca(directory, "other-ca", "unrelated test CA")
    return TlsFiles(directory, ca_cert, ca_key, server_cert, server_key, client_cert, client_key,
                    str(encrypted), CLIENT_KEY_PASSWORD, other_ca_cert)


# -- stunnel ---------------------------------------------------------------------


@dataclass
class Stunnel:
    """A running stunnel: TLS on ``host:port``, plain TCP to ``target_port``."""

    host: str
    port: int
    target_port: int
    process: subprocess.Popen[bytes]
    config_file: Path
    log_file: Path

    @property
    def addr(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port}

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STUNNEL_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STUNNEL_STOP_TIMEOUT)


def processes_using(directory: Path) -> list[str]:
    """Command lines of running processes that mention ``directory`` (e.g. its stunnel configs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile, or not ours to read
            continue
        command = " ".join(arg.decode(errors="replace") for arg in argv if arg)
        if str(directory) in command:
            found.append(f"{entry.name}: {command}")
    return found


def _write_config(directory: Path, name: str, port: int, target_port: int, files: TlsFiles,
                  require_client_cert: bool) -> tuple[Path, Path]:
    config, log_file = directory / f"{name}.conf", directory / f"{name}.log"
    lines = [
        "foreground = yes",
        "pid =",  # no pid file
        "syslog = no",
        "debug = info",
        f"output = {log_file}",
        "",
        "[tarantool]",
        f"accept = {HOST}:{port}",
        f"connect = {HOST}:{target_port}",
        f"cert = {files.server_cert}",
        f"key = {files.server_key}",
    ]
    if require_client_cert:
        lines += ["verify = 2", f"CAfile = {files.ca_cert}"]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config, log_file


@contextlib.contextmanager
def run_stunnel(directory: Path, target_port: int, files: TlsFiles, *, require_client_cert: bool = False,
                name: str = "stunnel") -> Iterator[Stunnel]:
    """A stunnel that accepts TLS on a free 127.0.0.1 port and forwards to ``target_port``.

    Yields once the port accepts TCP connections (within
    :data:`STUNNEL_START_TIMEOUT`); the process is terminated on exit.
    """
    binary = stunnel_binary()
    directory.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for attempt in range(1, STUNNEL_START_ATTEMPTS + 1):
        port = _free_port()
        config, log_file = _write_config(directory, f"{name}-{attempt}", port, target_port, files,
                                         require_client_cert)
        stderr_file = directory / f"{name}-{attempt}.stderr"
        with open(stderr_file, "wb") as stderr:
            process = subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            deadline = time.monotonic() + STUNNEL_START_TIMEOUT
            while process.poll() is None and time.monotonic() < deadline:
                if _accepts_tcp(port):
                    break
                time.sleep(POLL_INTERVAL)
            else:
                output = stderr_file.read_text(encoding="utf-8", errors="replace").strip()
                if process.poll() is None:
                    pytest.fail(f"stunnel ({config}) did not accept TCP on {HOST}:{port} within "
                                f"{STUNNEL_START_TIMEOUT} s:\n{output}", pytrace=False)
                failures.append(f"attempt {attempt}, port {port}, exit {process.returncode}:\n{output}")
                continue
            yield Stunnel(HOST, port, target_port, process, config, log_file)
            return
        finally:
            _stop(process)
    pytest.fail("stunnel did not start:\n" + "\n".join(failures), pytrace=False)


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """CA, server and client certificates and keys for the module's tests."""
    stunnel_binary()  # fail early, before making files, when stunnel is missing
    return make_tls_files(tmp_path_factory.mktemp("tls"))


StunnelFactory = Callable[..., Stunnel]


@pytest.fixture
def stunnel(tls_files: TlsFiles, tmp_path: Path) -> Iterator[StunnelFactory]:
    """``stunnel(target_port, require_client_cert=False)`` starts a stunnel for this test.

    Every stunnel started through it is terminated when the test ends.
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def start(target_port: int, *, require_client_cert: bool = False) -> Stunnel:
            nonlocal count
            count += 1
            return stack.enter_context(run_stunnel(tmp_path / "stunnel", target_port, tls_files,
                                                   require_client_cert=require_client_cert,
                                                   name=f"stunnel{count}"))

        yield start
    left = processes_using(tmp_path / "stunnel")
    if left:
        pytest.fail("stunnel processes left running after the test:\n" + "\n".join(left), pytrace=False)


__all__ = ["CLIENT_KEY_PASSWORD", "HOST", "Stunnel", "StunnelFactory", "TlsFiles", "make_tls_files",
           "openssl_binary", "processes_using", "run_stunnel", "stunnel", "stunnel_binary", "tls_files"]
