"""ZSSD Explorer engine: pure computation (grids, operators, readers, demo world, prior, samplers,
baselines, metrics, CLI).  Never imports panel/bokeh/holoviews.

Importing the package asks OpenMP to sleep rather than spin while waiting (``OMP_WAIT_POLICY=PASSIVE``)
unless the caller chose otherwise: on a small shared CPU, spinning torch threads collapse throughput
by an order of magnitude when another process competes for a core.  It only takes effect when
``engine`` is imported before torch.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
