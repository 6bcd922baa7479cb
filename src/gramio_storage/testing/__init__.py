"""The conformance kit every gramio-storage backend runs, shipped for third-party adapters.

Install with ``pip install 'gramio-storage[testing]'`` and, in your adapter's tests::

    import pytest
    from gramio_storage.testing import StorageTests, make_state_machine

    class TestMyStorage(StorageTests):
        supports_atomic = False          # capability flags describe the backend

        @pytest.fixture
        async def storage(self, tmp_path):
            storage = MyStorage(tmp_path)
            yield storage
            await storage.close()

    TestMyStorageMachine = make_state_machine(lambda: MyStorage(...)).TestCase
"""

from .._errors import MissingDependencyError

try:  # the [testing] extra: checked first, so a missing one is named with the pip command
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
    import pytest_asyncio  # noqa: F401
except ImportError as e:  # pragma: no cover - run in a subprocess by tests/test_testing_extra.py
    raise MissingDependencyError(
        f"gramio_storage.testing needs {e.name or 'its test dependencies'} "
        "(hypothesis, pytest, pytest-asyncio): pip install 'gramio-storage[testing]'"
    ) from e

from ._machine import json_values, make_state_machine
from ._suite import NON_WIDENING, ODD_KEYS, Point, Profile, StorageTests

__all__ = [
    "NON_WIDENING",
    "ODD_KEYS",
    "Point",
    "Profile",
    "StorageTests",
    "json_values",
    "make_state_machine",
]
