"""Layering of the run path: cluster.py (the Dask executor) never imports run.py (the cycle
check of the whole package is in test_house.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fastsam_geo"


def _module_imports(path: Path) -> set[str]:
    """The fastsam_geo modules ``path`` imports at module level (outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastsam_geo."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("fastsam_geo."))
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return found


def _all_imports(path: Path) -> set[str]:
    """The fastsam_geo modules ``path`` imports anywhere, inside functions too (not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastsam_geo."):
            found.add(node.module.split(".")[1])
    return found


def test_the_dask_executor_never_imports_the_local_run() -> None:
    """run.py picks the executor (it imports cluster.py when given a client); cluster.py builds its
    segmenters from segmenters.py, as run.py does, and never imports run.py, even lazily."""
    assert "run" not in _all_imports(PKG / "cluster.py")
    assert "segmenters" in _module_imports(PKG / "cluster.py") and "segmenters" in _module_imports(PKG / "run.py")
