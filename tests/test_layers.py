"""The floors, checked from the imports: each imports only from the floors below it.

From the bottom: ``core`` (the base errors, the configuration's values, fault plans, progress,
logging: everyone may import it), ``reading`` (judging a package, writing nothing), ``storing``
(keeping what was judged: the importer, the backends, the ledger, the folders), ``config``
(loading the configuration, the backends' tables among it), ``operations`` (the operator's
tools: status, the page, metrics, notifications, retention, retry, check), ``daemon`` (the
pipeline: watching, readiness, claiming, filing, the scheduler, recovery), ``training`` (the
training server's side: pack), ``pushing`` (delivering a package and learning its verdict)
and the command line on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ymir_dropbox"
ORDER = (
    "core", "reading", "storing", "config", "operations", "daemon", "training", "pushing", "cli",
)  # fmt: skip
# What writing a file looks like in Python source; none of it belongs in the reading layer.
WRITES = {
    "unlink", "rmtree", "mkdir", "makedirs", "write_text", "write_bytes", "mkstemp",
    "NamedTemporaryFile", "TemporaryFile", "fsync", "chmod", "fchmod", "symlink_to", "touch",
}  # fmt: skip
OS_WRITES = {"rename", "replace", "link", "symlink", "truncate", "ftruncate", "remove", "write"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "ymir_dropbox", module
    if len(parts) == 1 or parts[1] in {"__main__"}:
        return "cli"
    assert parts[1] in ORDER, f"{module} is on no floor"
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name.split(".")[0] == "ymir_dropbox"]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    layers = {layer_of(module_name(path)) for path in SOURCES}
    assert layers == set(ORDER)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: module_name(path))
def test_imports_run_one_way_only(path: Path) -> None:
    own = ORDER.index(layer_of(module_name(path)))
    upward = [
        name
        for name in imports(path)
        if name != "ymir_dropbox" and ORDER.index(layer_of(name)) > own
    ]
    assert upward == [], f"{module_name(path)} imports from a layer above it: {upward}"


@pytest.mark.parametrize(
    "path",
    [path for path in SOURCES if layer_of(module_name(path)) == "reading"],
    ids=lambda path: module_name(path),
)
def test_the_reading_layer_writes_nothing(path: Path) -> None:
    tree = ast.parse(path.read_text())
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    os_calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in {"os", "shutil"}
    }
    modes = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in {"w", "wb", "a", "ab", "x", "r+b"}
    }
    assert calls & WRITES == set()
    assert os_calls & OS_WRITES == set()
    assert modes == set(), f"a file opened for writing in {path.name}"


MAX_MODULES = 12


@pytest.mark.parametrize(
    "folder",
    sorted({path.parent for path in SOURCES}),
    ids=lambda folder: str(folder.relative_to(PACKAGE.parent)),
)
def test_no_folder_holds_more_than_twelve_modules(folder: Path) -> None:
    modules = [path for path in folder.glob("*.py") if path.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES, f"{folder.name}: {len(modules)} modules"


def test_no_module_imports_itself_back() -> None:
    """No import cycle, inside a floor either (function-level imports included)."""
    names = {module_name(path) for path in SOURCES}
    graph = {
        module_name(path): {name for name in imports(path) if name in names} - {module_name(path)}
        for path in SOURCES
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path, module])
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
