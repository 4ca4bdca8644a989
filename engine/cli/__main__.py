"""``python -m engine.cli …``: the ``zssd`` command (e.g. under ``torchrun`` for ``train``)."""

from engine.cli import main

raise SystemExit(main())
