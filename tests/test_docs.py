"""The documentation keeps up with the code (docs/, the site ``make docs`` builds).

Without Sphinx and without a server, this checks:

- every page of docs/ is in a toctree (or excluded in docs/conf.py), and
  every toctree entry is a page;
- the ``python`` code blocks of the guide pages use only names that exist:
  what they import from tarantool_pool, the attributes they read from those
  names (``Mode.RW``), the methods they call on a pool, a session, a result,
  and the keywords and argument counts of those calls (checked against the
  signatures);
- the table of default modes in docs/modes.md is what the pool does (a
  request method is called on a pool that sends nothing, and the mode it
  routes with is recorded), and lists every method that takes a mode;
- docs/crud.md names every ``crud_*`` method.

Each checker is also run on a wrong input, so that a checker that finds
nothing cannot pass silently.  Running the samples against a replica set is
left to the reader: they were written against test-cluster/.
"""

from __future__ import annotations

import ast
import enum
import fnmatch
import importlib
import inspect
import re
import runpy
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest

import tarantool_pool
from tarantool_pool import ConnectionPool, Mode
from tarantool_pool.crud import CrudError, CrudResult

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDE_PAGES = ["index.md", "quickstart.md", "modes.md", "crud.md", "tuning.md"]

# Attributes that exist on instances only because the server sent them (crud's result and
# error maps become attributes): the ones the pages may use.
DYNAMIC_ATTRIBUTES: dict[type, set[str]] = {
    CrudResult: {"rows", "metadata"},
    CrudError: {"class_name", "err", "str", "file", "line", "stack", "operation_data"},
}


# -- the toctree ------------------------------------------------------------------------------------

def toctree_entries(text: str) -> list[str]:
    """The entries of every toctree in a page: MyST ```{toctree} fences or rST ``.. toctree::``."""
    entries = []
    for body in re.findall(r"^```\{toctree\}[^\n]*\n(.*?)^```", text, re.S | re.M):
        entries += [line.strip() for line in body.splitlines() if line.strip() and not line.startswith(":")]
    for body in re.findall(r"^\.\. toctree::[^\n]*\n((?:[ \t]+[^\n]*\n|[ \t]*\n)*)", text, re.M):
        entries += [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith(":")]
    return entries


def toctree_problems(pages: dict[str, str], excluded: Iterable[str], root: str = "index") -> list[str]:
    """``pages``: docname -> text.  Problems: pages in no toctree, entries that are no page."""
    listed: set[str] = set()
    problems = []
    for name, text in pages.items():
        for entry in toctree_entries(text):
            if entry not in pages:
                problems.append(f"{name}: toctree entry {entry!r} is not a page of docs/")
            listed.add(entry)
    for name in pages:
        if name != root and name not in listed and not any(fnmatch.fnmatch(name, pattern) for pattern in excluded):
            problems.append(f"docs/{name}: in no toctree (add it to one, or to exclude_patterns in docs/conf.py)")
    return problems


def site_pages() -> dict[str, str]:
    return {path.stem: path.read_text(encoding="utf-8")
            for path in sorted(DOCS.glob("*")) if path.suffix in (".md", ".rst")}


def test_every_page_is_in_a_toctree() -> None:
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["root_doc"] == "index"
    assert toctree_problems(site_pages(), conf["exclude_patterns"]) == []


def test_the_toctree_check_finds_a_forgotten_page() -> None:
    pages = {"index": "```{toctree}\n:maxdepth: 2\n\nmodes\n```\n", "modes": "# Modes", "new": "# New"}
    assert toctree_problems(pages, []) == ["docs/new: in no toctree (add it to one, or to exclude_patterns "
                                           "in docs/conf.py)"]
    assert toctree_problems(pages, ["new"]) == []
    rst = {"index": ".. toctree::\n   :maxdepth: 1\n\n   modes\n   gone\n\nText\n", "modes": ""}
    assert toctree_problems(rst, []) == ["index: toctree entry 'gone' is not a page of docs/"]


# -- names in the code samples ---------------------------------------------------------------------

class Obj:
    """A known object: a module, a class, a function, an enum member."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Inst:
    """An instance of a known class."""

    def __init__(self, cls: type) -> None:
        self.cls = cls


class Method:
    """A method of a known class, read from an instance."""

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name


Value = Any  # Obj | Inst | Method | None (unknown: not checked)


def _resolve_annotation(annotation: Any, func: Any) -> Value:
    """An instance of the class a return annotation names, when it names exactly one."""
    if annotation is inspect.Signature.empty:
        return None
    if isinstance(annotation, type):
        return Inst(annotation)
    if not isinstance(annotation, str):
        return None
    names = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
    if len(names) != 1 or not re.fullmatch(r"[A-Za-z_][\w.]*", names[0]):
        return None
    name = names[0]
    for namespace in (getattr(func, "__globals__", {}), vars(tarantool_pool)):
        found = namespace.get(name)
        if isinstance(found, type):
            return Inst(found)
    return None


def _instance_has(cls: type, attr: str) -> bool:
    if hasattr(cls, attr) or attr in DYNAMIC_ATTRIBUTES.get(cls, ()):
        return True
    for klass in cls.__mro__:
        if attr in getattr(klass, "__annotations__", {}):
            return True
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]*)?=[^=]", source):
            return True
    return False


class SampleChecker:
    """Walks one code sample in order, following the names that come from tarantool_pool."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.env: dict[str, Value] = {}
        self.problems: list[str] = []

    def problem(self, node: ast.AST, text: str) -> None:
        self.problems.append(f"{self.where}, line {getattr(node, 'lineno', '?')}: {text}")

    # statements
    def run(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.import_module(node, alias.name, alias.asname)
        elif isinstance(node, ast.ImportFrom):
            self.import_from(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            value = self.infer(node.value) if node.value is not None else None
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                self.bind(target, value)
        elif isinstance(node, ast.With):
            for item in node.items:
                value = self.infer(item.context_expr)
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, self.entered(value))
            self.run(node.body)
        elif isinstance(node, ast.Try):
            self.run(node.body)
            for handler in node.handlers:
                caught = self.infer(handler.type) if handler.type is not None else None
                if handler.name:
                    self.env[handler.name] = (Inst(caught.value) if isinstance(caught, Obj)
                                              and isinstance(caught.value, type) else None)
                self.run(handler.body)
            self.run(node.orelse)
            self.run(node.finalbody)
        elif isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                self.infer(decorator)
            saved = dict(self.env)
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                        *filter(None, [arguments.vararg, arguments.kwarg])]:
                self.env[arg.arg] = None  # parameters are unknown: never checked
            self.run(node.body)
            self.env = saved
            self.env[node.name] = None
        elif isinstance(node, ast.For):
            self.infer(node.iter)
            self.bind(node.target, None)
            self.run(node.body)
            self.run(node.orelse)
        elif isinstance(node, (ast.If, ast.While)):
            self.infer(node.test)
            self.run(node.body)
            self.run(node.orelse)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.infer(child)
                elif isinstance(child, ast.stmt):
                    self.statement(child)

    def bind(self, target: ast.expr, value: Value) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.bind(element, None)
        else:
            self.infer(target)

    def import_module(self, node: ast.AST, name: str, asname: str | None) -> None:
        if name.split(".")[0] != "tarantool_pool":
            self.env[asname or name.split(".")[0]] = None
            return
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            self.problem(node, f"import {name}: {error}")
            return
        if asname:
            self.env[asname] = Obj(module)
        else:  # `import a.b` binds `a`
            self.env[name.split(".")[0]] = Obj(importlib.import_module(name.split(".")[0]))

    def import_from(self, node: ast.ImportFrom) -> None:
        module_name = node.module or ""
        if module_name.split(".")[0] != "tarantool_pool":
            for alias in node.names:
                self.env[alias.asname or alias.name] = None
            return
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            self.problem(node, f"from {module_name} import ...: {error}")
            return
        for alias in node.names:
            if not hasattr(module, alias.name):
                self.problem(node, f"{module_name} has no {alias.name!r}")
                self.env[alias.asname or alias.name] = None
            else:
                self.env[alias.asname or alias.name] = Obj(getattr(module, alias.name))

    def entered(self, value: Value) -> Value:
        """What ``with value as name`` binds: the return of ``__enter__``."""
        if isinstance(value, Inst):
            enter = getattr(value.cls, "__enter__", None)
            return _resolve_annotation(inspect.signature(enter).return_annotation, enter) if enter else None
        return None

    # expressions
    def infer(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, self.infer(node.value))
        if isinstance(node, ast.Call):
            function = self.infer(node.func)
            for argument in node.args:
                self.infer(argument.value if isinstance(argument, ast.Starred) else argument)
            for keyword in node.keywords:
                self.infer(keyword.value)
            return self.call(node, function)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.infer(child)
            elif isinstance(child, ast.comprehension):
                self.infer(child.iter)
                for condition in child.ifs:
                    self.infer(condition)
        return None

    def attribute(self, node: ast.Attribute, base: Value) -> Value:
        name = node.attr
        if isinstance(base, Obj):
            if not hasattr(base.value, name):
                self.problem(node, f"{getattr(base.value, '__name__', base.value)!s} has no attribute {name!r}")
                return None
            found = getattr(base.value, name)
            return Obj(found) if not isinstance(base.value, enum.Enum) else None
        if isinstance(base, Inst):
            if not _instance_has(base.cls, name):
                self.problem(node, f"a {base.cls.__name__} has no attribute {name!r}")
                return None
            static = inspect.getattr_static(base.cls, name, None)
            if callable(static) and not isinstance(static, type):
                return Method(base.cls, name)
            if isinstance(static, property) and static.fget is not None:
                return _resolve_annotation(inspect.signature(static.fget).return_annotation, static.fget)
        return None

    def call(self, node: ast.Call, function: Value) -> Value:
        if isinstance(function, Obj) and callable(function.value):
            target = function.value
            self.check_arguments(node, target, getattr(target, "__name__", repr(target)), drop_self=False)
            if isinstance(target, type):
                return Inst(target)
            try:
                return _resolve_annotation(inspect.signature(target).return_annotation, target)
            except (TypeError, ValueError):
                return None
        if isinstance(function, Method):
            method = getattr(function.cls, function.name)
            self.check_arguments(node, method, f"{function.cls.__name__}.{function.name}", drop_self=True)
            return _resolve_annotation(inspect.signature(method).return_annotation, method)
        return None

    def check_arguments(self, node: ast.Call, target: Any, name: str, drop_self: bool) -> None:
        if any(isinstance(argument, ast.Starred) for argument in node.args) or \
                any(keyword.arg is None for keyword in node.keywords):
            return  # *args / **kwargs at the call: not checked
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return
        if drop_self:
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        keywords = [keyword.arg for keyword in node.keywords if keyword.arg is not None]
        try:
            signature.bind(*[None] * len(node.args), **dict.fromkeys(keywords))
        except TypeError as error:
            self.problem(node, f"{name}{signature}: {error}")
            return
        forwarded = self.forwarded_keywords(name)
        if forwarded is not None:
            unknown = [keyword for keyword in keywords if keyword not in signature.parameters
                       and keyword not in forwarded]
            if unknown:
                self.problem(node, f"{name}: keyword {', '.join(unknown)} is neither its own nor call()'s")

    @staticmethod
    def forwarded_keywords(name: str) -> set[str] | None:
        """The crud methods pass their other keywords on to ``call()``: those of call() are allowed."""
        owner, _, method = name.rpartition(".")
        cls = getattr(tarantool_pool, owner, None)
        if not method.startswith("crud_") or not isinstance(cls, type) or not hasattr(cls, "call"):
            return None
        return {parameter.name for parameter in inspect.signature(cls.call).parameters.values()
                if parameter.kind is parameter.KEYWORD_ONLY}


def python_blocks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, code) of every ```python fence."""
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        yield text.count("\n", 0, match.start()) + 2, match.group(1)


def sample_problems(code: str, where: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        return [f"{where}: not valid Python: {error}"]
    checker = SampleChecker(where)
    checker.run(tree.body)
    return checker.problems


@pytest.mark.parametrize("page", GUIDE_PAGES)
def test_the_samples_use_names_that_exist(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = list(python_blocks(text))
    assert blocks, f"docs/{page} has no ```python block: update GUIDE_PAGES"
    problems = [problem for line, code in blocks for problem in sample_problems(code, f"docs/{page}:{line}")]
    assert problems == []


BAD_SAMPLES = [
    ("from tarantool_pool import ConnectionPol", "has no 'ConnectionPol'"),
    ("import tarantool_pool.asyncio_facade", "import tarantool_pool.asyncio_facade"),
    ("import tarantool_pool\ntarantool_pool.init()", "has no attribute 'init'"),
    ("from tarantool_pool import Mode\nMode.MASTER", "has no attribute 'MASTER'"),
    ("from tarantool_pool import ConnectionPool\nConnectionPool(['h:1'], selection_timout=1)",
     "unexpected keyword argument 'selection_timout'"),
    ("from tarantool_pool import ConnectionPool\npool = ConnectionPool(['h:1'])\npool.fetch('s', 1)",
     "a ConnectionPool has no attribute 'fetch'"),
    ("from tarantool_pool import ConnectionPool, Mode\npool = ConnectionPool(['h:1'])\n"
     "pool.select('s', 1, 2, mode=Mode.RO)", "too many positional arguments"),
    ("from tarantool_pool import ConnectionPool, Mode\nwith ConnectionPool(['h:1']) as pool:\n"
     "    with pool.session(mode=Mode.RW) as s:\n        s.select('s', 1).rows", "a Response has no attribute 'rows'"),
    ("from tarantool_pool import ConnectionPool\npool = ConnectionPool(['h:1'])\n"
     "print(pool.crud_get('s', 1).row)", "a CrudResult has no attribute 'row'"),
    ("from tarantool_pool.errors import CrudModuleError\ntry:\n    pass\nexcept CrudModuleError as e:\n"
     "    e.extra_info", None),  # an attribute that exists: no problem
    ("from tarantool_pool.errors import CrudModuleError\ntry:\n    pass\nexcept CrudModuleError as e:\n"
     "    e.extra_info_errors", "a CrudModuleError has no attribute 'extra_info_errors'"),
    ("from tarantool_pool import ConnectionPool, Mode\npool = ConnectionPool(['h:1'])\n"
     "pool.crud_select('s', None, {'first': 1}, mode=Mode.RO, max_lag=1, timeout=2)", None),
    ("from tarantool_pool import ConnectionPool\npool = ConnectionPool(['h:1'])\n"
     "rows = pool.crud_iterate('s', None, batchsize=10)", "keyword batchsize is neither its own nor call()'s"),
    ("from tarantool_pool import ConnectionPool\npool = ConnectionPool(['h:1'])\npool.call('f', 1, mode=)",
     "not valid Python"),
]


@pytest.mark.parametrize("code, expected", BAD_SAMPLES)
def test_the_sample_check_finds_a_wrong_name(code: str, expected: str | None) -> None:
    problems = sample_problems(code, "sample")
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0], problems


# -- default modes ------------------------------------------------------------------------------------

def documented_defaults(text: str) -> dict[str, str]:
    """The table under '## Default modes': method name -> 'Mode.X' or 'required'."""
    section = text.split("## Default modes", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    public = [name for name in dir(ConnectionPool) if not name.startswith("_")]
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        default = cells[1].strip("`")
        for pattern in re.findall(r"`([\w*]+)`", cells[0]):
            names = fnmatch.filter(public, pattern)
            assert names, f"{pattern!r} in the default modes table names no ConnectionPool method"
            for name in names:
                defaults[name] = default
    return defaults


class Routed(Exception):
    """Raised by the recorder instead of sending anything."""


def offline_pool() -> ConnectionPool:
    """A pool that never connects (connect_now=False) and records the mode of each request."""
    pool = ConnectionPool([{"host": "127.0.0.1", "port": 9}], connect_now=False)

    def record(mode: Mode, *args: Any, **kwargs: Any) -> Any:
        raise Routed(mode)

    pool._route = record  # type: ignore[method-assign]
    return pool


def dummy_arguments(method: Callable[..., Any]) -> list[Any]:
    """Positional arguments for every required positional parameter ("space" for the first)."""
    required = [parameter for parameter in inspect.signature(method).parameters.values()
                if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
                and parameter.default is parameter.empty]
    return ["space" if index == 0 else [1] for index, _ in enumerate(required)]


def actual_default(pool: ConnectionPool, name: str) -> str:
    """The mode a pool method uses without ``mode=``: 'Mode.X', or 'required' (ValueError)."""
    method = getattr(pool, name)
    if name in ("wait", "session"):  # they send nothing: their signature holds the default
        default = inspect.signature(method).parameters["mode"].default
        return f"Mode.{default.name}"
    try:
        result = method(*dummy_arguments(method))
        if inspect.isgenerator(result):  # iterate, crud_iterate: nothing is sent before next()
            next(result)
    except Routed as routed:
        return f"Mode.{routed.args[0].name}"
    except ValueError as error:
        if "specify 'mode'" in str(error):
            return "required"
        raise
    raise AssertionError(f"{name}() sent nothing")


def takes_a_mode(name: str) -> bool:
    if name.startswith("_"):
        return False
    attribute = getattr(ConnectionPool, name)
    if not callable(attribute) or isinstance(attribute, type):
        return False
    return name.startswith("crud_") or "mode" in inspect.signature(attribute).parameters


def default_mode_problems(documented: dict[str, str]) -> list[str]:
    pool = offline_pool()
    try:
        problems = [f"{name}: the docs say {claimed}, the pool uses {actual_default(pool, name)}"
                    for name, claimed in sorted(documented.items()) if actual_default(pool, name) != claimed]
    finally:
        pool.close()
    missing = sorted(name for name in dir(ConnectionPool) if takes_a_mode(name) and name not in documented)
    problems += [f"{name}: takes a mode, not in the table" for name in missing]
    return problems


def test_the_default_modes_table_is_what_the_pool_does() -> None:
    documented = documented_defaults((DOCS / "modes.md").read_text(encoding="utf-8"))
    assert {"select", "insert", "call", "crud_insert", "crud_select", "session"} <= set(documented)
    assert default_mode_problems(documented) == []


def test_the_default_modes_check_finds_a_wrong_default() -> None:
    table = ("## Default modes\n\n| method | default mode |\n|---|---|\n| `select` | `Mode.RW` |\n"
             "| `ping` | `Mode.ANY` |\n| `crud_*` | `Mode.ANY` |\n\n## Next\n| `insert` | `Mode.RW` |\n")
    documented = documented_defaults(table)
    assert "insert" not in documented and "crud_count" in documented
    problems = default_mode_problems(documented)
    assert "select: the docs say Mode.RW, the pool uses Mode.ANY" in problems
    assert "ping: the docs say Mode.ANY, the pool uses required" in problems
    assert "insert: takes a mode, not in the table" in problems
    assert not [problem for problem in problems if problem.startswith("crud_")]


# -- crud -------------------------------------------------------------------------------------------------

def test_the_crud_page_names_every_crud_method() -> None:
    text = (DOCS / "crud.md").read_text(encoding="utf-8")
    methods = [name for name in dir(ConnectionPool) if name.startswith("crud_")]
    assert len(methods) >= 20
    assert [name for name in methods if not re.search(rf"\b{name}\b", text)] == []
