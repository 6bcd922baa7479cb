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
