"""The shape of the package, checked: no private imports from other libraries, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastapi_retry_http"
OTHERS = ("httpx", "httpcore", "aiohttp", "starlette", "fastapi", "hishel")
MODULES = sorted(PACKAGE.rglob("*.py"))


def private_imports(path: Path) -> list[str]:
    """`from httpx._client import X`, `import aiohttp._x`, `from fastapi import _y`: what reaches inside."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            names = [alias.name for alias in node.names]
            if parts[0] in OTHERS and (any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names)):
                found.append(f"from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in OTHERS and any(p.startswith("_") for p in parts):
                    found.append(f"import {alias.name}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_of_other_libraries_are_imported(path: Path) -> None:
    assert private_imports(path) == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from httpx._client import USE_CLIENT_DEFAULT\nimport aiohttp._http_parser\nfrom fastapi import _x\n"
    )
    assert len(private_imports(sample)) == 3


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 300, "split it by job"


def long_functions(path: Path) -> list[str]:
    """Functions over 60 lines of code (their docstring not counted), unless a comment says why."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        doc = node.body[0]
        if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
            assert doc.end_lineno is not None
            length -= doc.end_lineno - doc.lineno + 1
        if length > 60 and "# long:" not in lines[node.lineno - 2]:
            found.append(f"{node.name}: {length} lines")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_stay_short(path: Path) -> None:
    assert long_functions(path) == [], "split it, or say why above it (# long: ...)"


def test_the_client_does_not_depend_on_the_settings() -> None:
    tree = ast.parse((PACKAGE / "_client.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(module and "_config" in module for module in imported)
