"""The layers hold: the core is pure, and no layer imports one above it.

    cloudqueue/  (entry points: command, server assembly, log tool, public API)
      -> adapters/  (HTTP in and out)  -> engine/runtime/ (IO: log, clock, driver)
                                       -> engine/core/    (pure: facts to state)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "engine" / "core"
FORBIDDEN = {"asyncio", "aiohttp", "os", "time", "random", "uuid", "socket", "threading",
             "subprocess", "io", "pathlib", "shutil", "tempfile", "signal", "select"}
TOP = {p.stem for p in (ROOT / "cloudqueue").glob("*.py")} - {"__init__"}


def _imports(path: Path) -> set[str]:
    """Every module the file imports, by its full dotted name (`from a import b` names `a`
    and `a.b`, since `b` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_nothing_that_does_io_or_reads_clocks(path: Path) -> None:
    assert {name.split(".")[0] for name in _imports(path)} & FORBIDDEN == set()
    outside = {name for name in _imports(path)
               if name.startswith("cloudqueue.") and not name.startswith("cloudqueue.engine.core")}
    assert outside == set()


@pytest.mark.parametrize("path", _files("engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_imports_no_adapter_and_no_entry_point(path: Path) -> None:
    upward = {name for name in _imports(path)
              if name == "cloudqueue" or name.startswith("cloudqueue.adapters")
              or name.split(".")[:2] in (["cloudqueue", top] for top in TOP)}
    assert upward == set()


@pytest.mark.parametrize("path", _files("adapters"), ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_import_no_entry_point(path: Path) -> None:
    upward = {name for name in _imports(path)
              if name == "cloudqueue" or name.split(".")[:2] in (["cloudqueue", t] for t in TOP)}
    assert upward == set()


@pytest.mark.parametrize("path", [*_files("engine"), *_files("adapters"), *_files("cloudqueue")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_imports_the_one_package_name(path: Path) -> None:
    """`engine` and `adapters` are folders, not import names: importing them bare would load a
    second copy of every module beside `cloudqueue.engine`."""
    bare = {name for name in _imports(path) if name.split(".")[0] in ("engine", "adapters")}
    assert bare == set()


def test_the_checks_see_the_modules() -> None:
    assert {"engine.py", "states.py", "options.py"} <= {p.name for p in CORE.rglob("*.py")}
    assert {"cli", "server", "config"} <= TOP
    assert len(_files("adapters")) > 10
