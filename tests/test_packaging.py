"""The wheel ships what users import: the kit, the type marker, every backend module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_the_kit_and_py_typed(tmp_path: Path) -> None:
    """`from gramio_storage.testing import ...` works from a built wheel, and types are shipped."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("gramio_storage-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "gramio_storage/__init__.py",
        "gramio_storage/py.typed",
        "gramio_storage/memory.py",
        "gramio_storage/testing/__init__.py",
        "gramio_storage/testing/_suite.py",
        "gramio_storage/testing/_machine.py",
    ):
        assert required in names, required
    assert not any(n.startswith(("tests/", "bench/", "examples/")) for n in names)
    # Installed from the wheel alone (no source tree on the path), the kit imports.
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import gramio_storage, gramio_storage.testing as t; "
        "assert gramio_storage.__file__.startswith(sys.argv[1]), gramio_storage.__file__; "
        "print(t.StorageTests.__name__, t.make_state_machine.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.split() == ["StorageTests", "make_state_machine"]
