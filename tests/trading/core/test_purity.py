"""The core stays pure: the import-linter contract holds, and no core module imports Django, asyncio or sockets."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "trading" / "core"
FORBIDDEN_ROOTS = frozenset({"django", "asyncio", "socket"})


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


CORE_MODULES = sorted(CORE.rglob("*.py"))


def test_the_import_linter_contract_holds() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")

    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "trading.core is pure" in result.stdout


def test_the_core_has_modules_to_check() -> None:
    names = {p.stem for p in CORE_MODULES}

    assert {"engine", "gates", "fsm", "book", "pnl", "selfcheck", "classifier", "events"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_core_module_imports_django_asyncio_or_socket(path: Path) -> None:
    roots = _imported_roots(path)

    assert roots & FORBIDDEN_ROOTS == set()


def test_the_import_scan_would_see_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text("import os\nfrom django.db import models\nimport asyncio.tasks\n")

    roots = _imported_roots(module)

    assert roots & FORBIDDEN_ROOTS == {"django", "asyncio"}
