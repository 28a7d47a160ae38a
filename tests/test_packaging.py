"""Packaging: the wheel and the sdist build, and the wheel installs and imports.

Everything is built from a copy of the package sources in one temporary
directory per session, so the working tree (``build/``, ``*.egg-info``) is not
touched.  The wheel is built with ``pip wheel --no-deps`` (without build
isolation when the running Python can build wheels itself, else pip fetches
the build backend), installed with ``--no-deps`` into a fresh venv that does
not see this interpreter's packages, next to ``msgpack`` and ``tenacity``
from the pip cache or PyPI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["setup.py", "setup.cfg", "README.md", "MANIFEST.in", "pyproject.toml", "LICENSE"]
VERSION = re.search(r'^__version__ = "([^"]+)"', (ROOT / "tarantool_pool" / "__init__.py").read_text(),
                    re.MULTILINE).group(1)  # type: ignore[union-attr]

CHECK_INSTALLED = """
import importlib.metadata as md, json, pathlib, sys
import tarantool_pool
from tarantool_pool.connection_pool import ConnectionPool, Mode
package = pathlib.Path(tarantool_pool.__file__).resolve().parent
print(json.dumps({
    "version": tarantool_pool.__version__,
    "dist_version": md.version("tarantool_pool"),
    "py_typed": (package / "py.typed").is_file(),
    "in_venv": str(package).startswith(str(pathlib.Path(sys.prefix).resolve())),
    "requires": md.requires("tarantool_pool") or [],
    "names": [ConnectionPool.__name__, Mode.RO.name],
}))
"""


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(part) for part in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=280)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def can_build_wheels_here() -> bool:
    """setuptools builds wheels itself from 70.1; older ones need the ``wheel`` package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    version = tuple(int(part) for part in re.findall(r"\d+", setuptools.__version__)[:2])
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``src/`` (a copy of what packaging reads) and room for ``dist/`` and ``venv/``."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "tarantool_pool", src / "tarantool_pool",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return base


@pytest.fixture(scope="session")
def wheel(workdir: Path) -> Path:
    out = workdir / "dist"
    cmd: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, "."]
    if can_build_wheels_here():
        cmd.insert(4, "--no-build-isolation")
    run(cmd, workdir / "src")
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def sdist(workdir: Path) -> Path:
    out = workdir / "sdist"
    env = None
    if importlib.util.find_spec("setuptools") is None:  # e.g. a fresh venv of Python 3.12: fetch it aside
        tools = workdir / "build-tools"
        run([sys.executable, "-m", "pip", "install", "-q", "--target", tools, "setuptools"], workdir)
        env = {**os.environ, "PYTHONPATH": str(tools)}
    run([sys.executable, "setup.py", "-q", "sdist", "-d", out], workdir / "src", env)
    archives = list(out.glob("*.tar.gz"))
    assert len(archives) == 1, archives
    return archives[0]


@pytest.fixture(scope="session")
def venv_python(workdir: Path, wheel: Path) -> Path:
    """A fresh venv (no access to this interpreter's packages) with the wheel installed."""
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    pip_version = tuple(int(part) for part in re.findall(r"\d+", run(
        [sys.executable, "-m", "pip", "--version"], workdir).split()[1])[:2])
    if pip_version >= (22, 3):  # this pip can install into another environment: no pip in the venv
        run([sys.executable, "-m", "venv", "--without-pip", venv], workdir)
        pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    else:
        run([sys.executable, "-m", "venv", venv], workdir)
        pip = [python, "-m", "pip"]
    run([*pip, "install", "-q", "--no-deps", wheel], workdir)
    run([*pip, "install", "-q", "msgpack>=1.0", "tenacity>=8.0"], workdir)
    return python


def test_wheel_name_and_contents(wheel: Path) -> None:
    assert wheel.name == f"tarantool_pool-{VERSION}-py3-none-any.whl"
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tarantool_pool/__init__.py", "tarantool_pool/py.typed", "tarantool_pool/pool/__init__.py",
            "tarantool_pool/connection_pool.py", "tarantool_pool/streaming.py"} <= names
    assert not any(name.startswith("tests/") for name in names)


def test_installed_wheel_imports(workdir: Path, venv_python: Path) -> None:
    # -I: neither the working tree nor PYTHONPATH is on sys.path, only the venv.
    info = json.loads(run([venv_python, "-I", "-c", CHECK_INSTALLED], workdir).strip().splitlines()[-1])
    assert info["version"] == info["dist_version"] == VERSION
    assert info["py_typed"], "py.typed is missing from the installed package"
    assert info["in_venv"], "imported tarantool_pool from outside the venv"
    assert info["names"] == ["ConnectionPool", "RO"]
    requires = " ".join(info["requires"])
    assert "msgpack" in requires and "tenacity" in requires


def test_sdist_contents(sdist: Path) -> None:
    assert sdist.name == f"tarantool_pool-{VERSION}.tar.gz"
    top = f"tarantool_pool-{VERSION}/"
    with tarfile.open(sdist) as archive:
        names = {name[len(top):] for name in archive.getnames() if name.startswith(top)}
    assert {"setup.cfg", "setup.py", "README.md", "PKG-INFO", "tarantool_pool/__init__.py",
            "tarantool_pool/py.typed", "tarantool_pool/pool/pool.py"} <= names
