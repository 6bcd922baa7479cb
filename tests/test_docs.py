"""Every Python block in README.md and docs/**/*.md runs as written, unless marked a fragment.

The conventions (docs/CONTRIBUTING.md says the same, for writers):

* A page's ```` ```python ```` blocks run in order, in one namespace, like the cells of a
  notebook: a block may use what an earlier block on the same page defined. Top-level ``await``
  is allowed; a block may also call ``asyncio.run`` itself. Each page runs in an empty
  temporary directory, so ``sqlite:///bot.db`` is a fresh file.
* ``<!-- fragment -->`` (or ``<!-- fragment: why -->``) on the line right before the fence: the
  block is an excerpt (a signature listing, a handler that needs a framework's router, code that
  needs credentials or a Cloudflare Worker) and is not run. It must still compile, unless it has
  ``*,`` or ``...`` in it (a signature listing, an elided body).
* ``<!-- needs: redis -->`` before the fence: the block talks to a Redis server; the test starts
  one and runs the block with ``redis://localhost:6379/0`` replaced by that server's URL.
* Storages the blocks left open are closed after the page, so examples need not show
  ``close()`` every time.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
import sys
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _redis_server import redis_server_session, redis_url  # noqa: F401 (fixtures)
from gramio_storage import BaseStorage

ROOT = Path(__file__).resolve().parent.parent

# Pages whose blocks are not run yet, each with the reason. Empty it when the page is ready.
SKIP: dict[str, str] = {}

# Placeholder URL in a `needs:` block -> the fixture that gives the real one.
SERVERS: dict[str, tuple[str, str]] = {
    "redis": ("redis://localhost:6379/0", "redis_url"),
}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*(fragment(?::[^>]*)?|needs:\s*[\w, ]+?)\s*-->")


class Block:
    """One ```python block: where it is, its code, and its marker (if any)."""

    def __init__(self, page: str, line: int, code: str, marker: str | None) -> None:
        self.page, self.line, self.code, self.marker = page, line, code, marker

    @property
    def fragment(self) -> bool:
        return self.marker is not None and self.marker.startswith("fragment")

    @property
    def needs(self) -> list[str]:
        if self.marker is None or not self.marker.startswith("needs:"):
            return []
        return [n.strip() for n in self.marker.removeprefix("needs:").split(",") if n.strip()]

    def __repr__(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[str]:
    """README.md and every Markdown page under docs/, as paths relative to the repository."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p.relative_to(ROOT).as_posix() for p in found]


def blocks(page: str, root: Path = ROOT) -> list[Block]:
    """The page's Python blocks, in order, each with the marker on the line before its fence."""
    text = (root / page).read_text(encoding="utf-8")
    result = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 2  # the first line of code
        result.append(Block(page, line, match.group(1), marker and marker.group(1)))
    return result


def _compile(block: Block, code: str, root: Path = ROOT) -> Any:
    # Padded so that line numbers in tracebacks point into the Markdown page.
    padded = "\n" * (block.line - 1) + code
    return compile(padded, str(root / block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@contextlib.contextmanager
def _registered(module: types.ModuleType) -> Iterator[None]:
    sys.modules[module.__name__] = module
    try:
        yield
    finally:
        del sys.modules[module.__name__]


async def _close_storages(namespace: dict[str, Any]) -> None:
    for value in list(namespace.values()):
        if isinstance(value, BaseStorage):
            await value.close()


def run_blocks(found: list[Block], request: pytest.FixtureRequest, root: Path = ROOT) -> int:
    """Run the runnable blocks in order in one namespace and one event loop; return how many."""
    # A real module, so that dataclasses (which look the module up) find it in sys.modules.
    module = types.ModuleType("_docs_page")
    namespace = module.__dict__
    ran = 0
    with asyncio.Runner() as runner, _registered(module):
        try:
            for block in found:
                if block.fragment:
                    continue
                code = block.code
                for server in block.needs:
                    placeholder, fixture = SERVERS[server]
                    assert placeholder in code, f"{block}: no {placeholder} to replace"
                    code = code.replace(placeholder, request.getfixturevalue(fixture))
                result = eval(_compile(block, code, root), namespace)
                if asyncio.iscoroutine(result):  # the block has a top-level await
                    runner.run(result)
                ran += 1
        finally:
            runner.run(_close_storages(namespace))
    return ran


@pytest.mark.parametrize("page", [p for p in pages() if p not in SKIP])
def test_page_blocks_run(
    page: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The page's runnable Python blocks run in order without an error."""
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks(page), request)


@pytest.mark.parametrize("page", [p for p in pages() if p not in SKIP])
def test_markers_are_well_formed_and_fragments_parse(page: str) -> None:
    """Markers are spelled right, and a fragment compiles unless it is a signature listing."""
    text = (ROOT / page).read_text(encoding="utf-8")
    for comment in re.findall(r"<!--.*?-->", text, re.DOTALL):
        if any(word in comment for word in ("fragment", "needs")):
            assert _MARKER.fullmatch(comment.strip()), f"{page}: malformed marker {comment!r}"
    for block in blocks(page):
        for server in block.needs:
            assert server in SERVERS, f"{block}: unknown server {server!r}"
        if block.fragment and "*," not in block.code and "..." not in block.code:
            _compile(block, block.code)  # raises SyntaxError with the page's line number


def test_the_skip_list_names_real_pages() -> None:
    """Every skipped page exists and has blocks (so an entry cannot outlive its page)."""
    for page in SKIP:
        assert page in pages() and blocks(page), page


def test_a_failing_block_fails_the_page_at_its_line(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The runner really runs blocks, in one namespace, skipping fragments."""
    page = tmp_path / "docs" / "broken.md"
    page.parent.mkdir()
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- fragment -->\n```python\nraise SystemExit\n```\n"
        "\n```python\nawait asyncio.sleep(0)\nassert x == 2, 'ran'\n```\n",
        encoding="utf-8",
    )
    found = blocks("docs/broken.md", root=tmp_path)
    assert [(b.line, b.fragment) for b in found] == [(4, False), (9, True), (13, False)]
    found[2].code = "import asyncio\n" + found[2].code
    found[2].line -= 1
    with pytest.raises(AssertionError, match="ran") as info:
        run_blocks(found, request, root=tmp_path)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert (frames[-1].filename, frames[-1].lineno) == (str(page), 14)
