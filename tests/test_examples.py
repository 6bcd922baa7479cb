"""The README's example programs run and say what the docs claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tour_runs_on_memory() -> None:
    """The tour completes and shows typed keys, atomic counters, TTL expiry and views."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "get('user:1') -> User(name='Alice', language='ru', visits=0)" in out
    assert "DecodeError: Cannot decode the value stored under key 'user:2' as User" in out
    assert "50 concurrent update() calls -> visits = 50" in out
    assert "100 concurrent incr() calls -> 100" in out
    assert "add('lock', ...) twice -> True, False" in out
    assert "after 0.6 s: get('otp:42') -> None" in out
    assert "scenes untouched: {'scene': 'checkout', 'step': 2}" in out


def _readme_snippet() -> str:
    """The README's first Python block, as written: a complete script."""
    text = (ROOT / "README.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_runs_and_type_checks(tmp_path: Path) -> None:
    """The README's first example works as written (on a SQLite file) and passes mypy --strict."""
    script = tmp_path / "readme_example.py"
    script.write_text(_readme_snippet())
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "User(name='Alice', visits=1) 1"
    assert (tmp_path / "bot.db").exists()
    typed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert typed.returncode == 0, typed.stdout
