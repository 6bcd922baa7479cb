"""The static types of typed keys, checked by running mypy over tests/typing/reveal_keys.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = Path(__file__).parent / "typing" / "reveal_keys.py"


@pytest.fixture(scope="module")
def mypy_output() -> dict[int, list[str]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--hide-error-context",
            "--no-error-summary",
            "--show-error-codes",
            str(CHECKS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    by_line: dict[int, list[str]] = {}
    for line in result.stdout.splitlines():
        m = re.match(r".*reveal_keys\.py:(\d+): (.*)$", line)
        if m:
            by_line.setdefault(int(m.group(1)), []).append(m.group(2))
    return by_line


def _expectations(tag: str) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(CHECKS.read_text().splitlines(), start=1):
        m = re.search(rf"# {tag}: (.*)$", line)
        if m:
            out.append((n, m.group(1).strip()))
    return out


@pytest.mark.typing
@pytest.mark.parametrize(("line", "expected"), _expectations("R"), ids=lambda v: str(v)[:40])
def test_revealed_type(mypy_output: dict[int, list[str]], line: int, expected: str) -> None:
    """mypy infers the documented type for each typed-key call."""
    notes = [m for m in mypy_output.get(line, []) if "Revealed type" in m]
    assert notes, f"line {line}: no reveal_type output; mypy said {mypy_output.get(line)}"
    revealed = re.search(r'Revealed type is "(.*)"', notes[0])
    assert revealed is not None
    assert revealed.group(1) == expected


@pytest.mark.typing
@pytest.mark.parametrize(("line", "code"), _expectations("E"), ids=lambda v: str(v)[:40])
def test_rejected(mypy_output: dict[int, list[str]], line: int, code: str) -> None:
    """mypy rejects a value of the wrong type for a typed key (it cannot solve T)."""
    errors = [m for m in mypy_output.get(line, []) if m.startswith("error:")]
    assert any(f"[{code}]" in e for e in errors), f"line {line}: {mypy_output.get(line)}"


@pytest.mark.typing
def test_no_unexpected_errors(mypy_output: dict[int, list[str]]) -> None:
    """Every other line type-checks cleanly."""
    expected = {n for n, _ in _expectations("E")}
    unexpected = {
        n: msgs
        for n, msgs in mypy_output.items()
        if n not in expected and any(m.startswith("error:") for m in msgs)
    }
    assert unexpected == {}
