"""foldflow uses only the public interfaces of Prefect, the standard library and its other
dependencies: a Prefect patch release must not break it silently.

A static check of every module of `flows/` and `tasks/`: no `_private` attribute of another
object is read or set, no private name is imported, no class of a library is subclassed to
override or touch its private parts, and no library attribute is replaced (monkeypatched).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted([*ROOT.glob("flows/*.py"), *ROOT.glob("tasks/**/*.py")])
# Documented public functions whose names start with an underscore.
ALLOWED = {"os._exit"}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def dotted(node: ast.AST) -> str:
    """'a.b.c' for a chain of names and attributes, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def own_class_names(tree: ast.Module) -> set[str]:
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def library_subclasses(tree: ast.Module) -> list[ast.ClassDef]:
    """Classes of the module that derive from a class it imported (a library's)."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(
            ("flows", "tasks")
        ):
            imported |= {alias.asname or alias.name for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {dotted(base).split(".")[0] for base in node.bases}
            if bases & imported - {"BaseModel", "Exception", "Enum", "Protocol"}:
                found.append(node)
    return found


def private_attribute(node: ast.AST) -> str | None:
    """`x._name` where x is not self/cls: another object's private attribute."""
    if isinstance(node, ast.Attribute) and is_private(node.attr):
        owner = dotted(node.value)
        if owner not in ("self", "cls") and f"{owner}.{node.attr}" not in ALLOWED:
            return f"{owner or '<expr>'}.{node.attr}"
    return None


def private_import(node: ast.AST) -> str | None:
    """`from a._b import c` or `from a import _c`."""
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        for alias in node.names:
            if is_private(alias.name) or any(map(is_private, module.split("."))):
                return f"import {module}.{alias.name}"
    return None


def imported_names(tree: ast.Module) -> set[str]:
    """Every name an import statement binds in the module (modules, classes, functions)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def replaced_attributes(tree: ast.Module) -> list[tuple[int, str]]:
    """`module.name = ...` on an imported module or class: a library patched at run time."""
    imported, found = imported_names(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for name in map(dotted, targets):
                if "." in name and name.split(".")[0] in imported:
                    found.append((node.lineno, f"replaces {name}"))
    return found


def subclass_internals(cls: ast.ClassDef) -> list[str]:
    """A library class's private methods overridden, or its private attributes touched."""
    found = []
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef) and is_private(node.name):
            found.append(f"{cls.name} overrides {node.name}")
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            found.append(f"{cls.name} touches self.{node.attr}")
    return found


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """Every use of a private interface in one module, as 'file:line: what'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root)
    found = [
        f"{where}:{node.lineno}: {what}"
        for node in ast.walk(tree)
        for check in (private_attribute, private_import)
        if (what := check(node))
    ]
    found += [f"{where}:{line}: {what}" for line, what in replaced_attributes(tree)]
    for cls in library_subclasses(tree):
        found += [f"{where}:{cls.lineno}: {what}" for what in subclass_internals(cls)]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_interface_of_a_library_is_used(path):
    assert violations(path) == []


def test_the_check_finds_what_the_old_code_did(tmp_path):
    """The patterns issue 18 found in flows/process.py and flows/fanout.py are all caught."""
    sample = tmp_path / "flows" / "old.py"
    sample.parent.mkdir()
    sample.write_text(
        "import subprocess\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "from prefect.task_runners import ProcessPoolTaskRunner\n"
        "class Tied(SubprocessASGIServer):\n"
        "    def _run_uvicorn_command(self):\n"
        "        return None\n"
        "class Pool(ProcessPoolTaskRunner):\n"
        "    def __enter__(self):\n"
        "        self._executor.submit(int)\n"
        "subprocess.Popen = print\n"
        "pids = SubprocessASGIServer._instances\n"
        "procs = pool._processes\n"
    )
    text = "\n".join(violations(sample, tmp_path))
    for what in ("overrides _run_uvicorn_command", "touches self._executor",
                 "replaces subprocess.Popen", "SubprocessASGIServer._instances",
                 "pool._processes"):  # fmt: skip
        assert what in text, text
