"""The ``gramio-storage`` command line: inspect, edit, export, import and migrate any storage.

Run ``gramio-storage --help``; see ``docs/cli.md``. The console script calls :func:`main`,
which returns the process exit code. Tables and progress bars use rich, from the ``[cli]``
extra, imported only when something is drawn.
"""

from ._app import main

__all__ = ["main"]
