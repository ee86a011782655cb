"""docs/guarantees.md names the test behind each guarantee: every name must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "guarantees.md").read_text()
REFERENCES = sorted(set(re.findall(r"`(test_\w+\.py(?:::\w+)+)`", PAGE)))


def defined(path: Path) -> set[str]:
    """Every `Class`, `Class::test` and `test` a test file defines."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
    return names


def test_the_page_names_tests() -> None:
    assert len(REFERENCES) > 40


@pytest.mark.parametrize("reference", REFERENCES)
def test_each_named_test_exists(reference: str) -> None:
    module, _, name = reference.partition("::")
    assert name in defined(ROOT / "tests" / module), f"docs/guarantees.md names {reference}, which does not exist"
