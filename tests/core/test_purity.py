"""The core is pure: no module under engine/core imports IO, clocks or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "engine" / "core"
FORBIDDEN = {"asyncio", "aiohttp", "os", "time", "random", "uuid", "socket", "threading",
             "subprocess", "io", "pathlib", "shutil", "tempfile", "signal", "select"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_nothing_that_does_io_or_reads_clocks(path: Path) -> None:
    assert _imports(path) & FORBIDDEN == set()


def test_the_check_sees_core_modules() -> None:
    assert {"engine.py", "states.py", "options.py"} <= {p.name for p in CORE.glob("*.py")}
