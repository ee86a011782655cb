"""
The docs run: every ```python block of README.md and docs/*.md, and every console block that
sets environment variables.

Conventions, so that the docs stay written for people:

- A Python block runs as written, as a script in a fresh interpreter (a block defining
  `test_*` functions runs under pytest, as the reader would run it). A block that is only
  part of a program carries `<!-- excerpt -->` on the line before its fence: it must still
  parse, but is not run.
- The upstream the docs talk to, `https://billing.internal` (and `shipping.internal`), is a
  loopback server here: the test substitutes its URL, and sets the `HTTP_CLIENTS__...`
  variables the docs' console blocks set, to it.
- A block defining a FastAPI `app` is also started and stopped (its lifespan runs, so a
  client name the routes ask for but nobody configured fails here).
- A console block that sets environment variables (`VAR=value command`, or `export`) runs
  in bash, with its command replaced by `fastapi-retry-http check`, which loads the settings
  the way an app does and fails on any variable that does not parse.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import Upstream

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXCERPT = "<!-- excerpt -->"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CHECK = "fastapi-retry-http check"

#: Appended to a block that defines a FastAPI `app`: start it and stop it.
START_APP = """

if isinstance(globals().get("app"), __import__("fastapi").FastAPI):
    from fastapi.testclient import TestClient as _DocsTestClient

    with _DocsTestClient(app):
        pass
"""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    excerpt: bool

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(lang: str) -> list[Block]:
    found: list[Block] = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            fence = FENCE.match(lines[index])
            if fence is None:
                index += 1
                continue
            indent, start = len(fence["indent"]), index
            index += 1
            body: list[str] = []
            while lines[index].strip() != "```":
                body.append(lines[index][indent:])
                index += 1
            index += 1
            if fence["lang"] == lang:
                excerpt = start > 0 and lines[start - 1].strip() == EXCERPT
                found.append(Block(page, start + 1, lang, "\n".join(body) + "\n", excerpt))
    return found


PYTHON = blocks("python")


def _sets_env(line: str) -> bool:
    line = line.strip()
    return line.startswith("export ") or bool(ASSIGNMENT.match(line))


CONSOLE = [b for b in blocks("console") if any(_sets_env(line) for line in b.code.splitlines())]


def _environment(upstream: Upstream) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HTTP_CLIENTS__")}
    env["HTTP_CLIENTS__BILLING__BASE_URL"] = f"{upstream.url}/billing/"
    env["HTTP_CLIENTS__SHIPPING__BASE_URL"] = f"{upstream.url}/shipping/"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _loopback(code: str, upstream: Upstream) -> str:
    return re.sub(r"https://(billing|shipping)\.internal", rf"{upstream.url}/\1", code)


def test_the_docs_have_blocks_of_each_kind() -> None:
    assert len([b for b in PYTHON if not b.excerpt]) >= 10
    assert len(CONSOLE) >= 2


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block(block: Block, upstream: Upstream, tmp_path: Path) -> None:
    ast.parse(block.code, filename=block.id, feature_version=(3, 11))
    if block.excerpt:
        return
    code = _loopback(block.code, upstream)
    env = _environment(upstream)
    if re.search(r"^(async )?def test_", code, re.MULTILINE):
        script = tmp_path / "test_snippet.py"
        script.write_text(code, encoding="utf-8")
        (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n", encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini", script.name]
    else:
        script = tmp_path / "snippet.py"
        script.write_text(code + START_APP, encoding="utf-8")
        command = [sys.executable, "-W", "error", script.name]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"
    # Warnings raised where they cannot propagate (a coroutine never awaited, an unclosed
    # client) are only printed: they fail the block too.
    for sign in ("Traceback", "Exception ignored", "Warning"):
        assert sign not in result.stderr, f"{block.id}:\n{result.stderr}"


def test_the_readme_first_example_shows_a_retry(tmp_path: Path) -> None:
    first = PYTHON[0]
    assert first.page.name == "README.md"
    assert not first.excerpt
    script = tmp_path / "first.py"
    script.write_text(first.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout == "200 {'id': 42} after 2 attempts\n"
    assert result.stderr.startswith(
        "INFO fastapi_retry_http: billing: GET https://billing.internal/api/invoices/42 failed (503) on attempt 1/3; "
        "retrying in "
    )


def _as_check(code: str) -> str:
    """The console block with each command that gets variables replaced by the CLI's `check`."""
    out: list[str] = []
    for line in code.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith(("export ", CHECK)):
            out.append(stripped)
            continue
        words = shlex.split(stripped, comments=True)
        assignments = [w for w in words if ASSIGNMENT.match(w)]
        if assignments and words[: len(assignments)] == assignments:
            quoted = [f"{name}={shlex.quote(value)}" for name, _, value in (a.partition("=") for a in assignments)]
            out.append(f"{' '.join(quoted)} {CHECK}")
    return "set -euo pipefail\n" + "\n".join(out) + f"\n{CHECK}\n"


@pytest.mark.parametrize("block", CONSOLE, ids=[b.id for b in CONSOLE])
def test_console_block_setting_variables(block: Block, upstream: Upstream) -> None:
    script = _as_check(block.code)
    env = {k: v for k, v in _environment(upstream).items() if not k.startswith("HTTP_CLIENTS__")}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{block.id} failed:\n{script}\n{result.stdout}\n{result.stderr}"
    assert "all valid" in result.stdout


def test_console_commands_are_rewritten_to_check() -> None:
    assert _as_check("A=1 B='{\"x\": 1}' uvicorn app:app  # run it\n# note\n\nuv run x\n") == (
        f"set -euo pipefail\nA=1 B='{{\"x\": 1}}' {CHECK}\n{CHECK}\n"
    )
    assert _as_check("export A=1 \\\n  B=2\nfastapi-retry-http check\n") == (
        f"set -euo pipefail\nexport A=1    B=2\n{CHECK}\n{CHECK}\n"
    )
