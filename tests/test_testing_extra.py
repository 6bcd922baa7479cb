"""The conformance kit without its extra: a MissingDependencyError with the pip command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Runs in a fresh interpreter: hide one module (None in sys.modules makes `import` fail the way
# an uninstalled package does), import the kit, report what was raised.
_PROBE = """
import json, sys
sys.modules[sys.argv[1]] = None
try:
    import {target}
except BaseException as e:
    from gramio_storage import MissingDependencyError
    print(json.dumps({{
        "type": type(e).__name__,
        "missing_dependency": isinstance(e, MissingDependencyError),
        "import_error": isinstance(e, ImportError),
        "message": str(e),
        "cause": type(e.__cause__).__name__,
    }}))
else:
    print(json.dumps(None))
"""


def _import_without(module: str, target: str) -> dict[str, object] | None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(target=target), module],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("module", ["hypothesis", "pytest", "pytest_asyncio"])
def test_kit_without_its_extra_names_the_pip_command(module: str) -> None:
    """Each missing test dependency raises MissingDependencyError naming it and the extra."""
    error = _import_without(module, "gramio_storage.testing")
    assert error is not None
    assert error["type"] == "MissingDependencyError"
    assert error["missing_dependency"] and error["import_error"]
    assert error["cause"] == "ModuleNotFoundError"
    message = str(error["message"])
    assert f"needs {module} " in message
    assert message.endswith("pip install 'gramio-storage[testing]'")


def test_kit_hint_has_the_same_form_as_another_extra() -> None:
    """The kit's hint is worded like a backend's: the module, then `pip install '...[extra]'`."""
    kit = _import_without("hypothesis", "gramio_storage.testing")
    redis = _import_without("redis", "gramio_storage.redis")
    assert kit is not None and redis is not None
    assert str(redis["message"]).startswith("gramio_storage.redis needs ")
    assert str(redis["message"]).endswith(": pip install 'gramio-storage[redis]'")
    assert str(kit["message"]).startswith("gramio_storage.testing needs ")


def test_kit_imports_when_the_extra_is_installed() -> None:
    """With everything installed the import succeeds (the probe itself is sound)."""
    assert _import_without("a_module_nobody_imports", "gramio_storage.testing") is None
