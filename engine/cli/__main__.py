"""``python -m zssd_engine.cli …``: the ``zssd`` command (e.g. under ``torchrun`` for ``train``)."""

from zssd_engine.cli import main

raise SystemExit(main())
