"""``python -m gramio_storage.cli``: the same as the ``gramio-storage`` console script."""

from . import main

raise SystemExit(main())
