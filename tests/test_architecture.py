"""Import rules between the packages, checked on the source (an ast walk)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package → packages it must never import
FORBIDDEN = {
    "channels": ("engine", "designer", "flask"),
    "engine": ("designer", "flask"),
    "engine/spec": ("engine.store", "engine.runner", "engine.runtime", "sqlalchemy"),
    "engine/runtime": ("engine.store", "engine.runner", "sqlalchemy"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            for banned in FORBIDDEN[package]:
                if name == banned or name.startswith(banned + "."):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_rules_see_real_imports() -> None:
    """The walk finds imports at all (a rule that checks nothing would always pass)."""
    assert "engine.spec.conditions" in _imports(ROOT / "engine" / "runtime" / "interpreter.py")
