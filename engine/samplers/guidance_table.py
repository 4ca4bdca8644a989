"""The guidance scale ζ by method and step count: the tuned table and its built-in fallback.

``guidance_defaults.json`` (next to this module) is written by ``benchmarks/tune_guidance.py
--install`` from training-year cases only; :func:`default_guidance_scale` log-interpolates it
in the step count.  ζ is quoted for a 128 x 128 region (:func:`zssd_engine.samplers.guidance.effective_scale`
rescales it to the region's size).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_GUIDANCE", "TUNED_GUIDANCE_FILE", "default_guidance_scale"]

#: Built-in fallbacks (used when no tuned table is installed); keyed by method then step count.
DEFAULT_GUIDANCE: dict[str, dict[int, float]] = {
    "zssd": {20: 10.0, 50: 5.0, 100: 3.0, 250: 1.5, 1000: 0.5},
    "dps": {20: 10.0, 50: 5.0, 100: 3.0, 250: 1.5, 1000: 0.5},
}
#: Tuned table written by ``benchmarks/tune_guidance.py --install`` (training-year cases only).
TUNED_GUIDANCE_FILE = Path(__file__).with_name("guidance_defaults.json")


def _tuned_table() -> tuple[dict[str, dict[int, float]], str]:
    """The tuned table and a description of its source (the built-in one if none is readable)."""
    if TUNED_GUIDANCE_FILE.exists():
        try:
            d = json.loads(TUNED_GUIDANCE_FILE.read_text())
            table = {m: {int(k): float(v) for k, v in tab.items()} for m, tab in d["scales"].items()}
            sha = str(d.get("checkpoint_sha256", "?"))[:12]
            return table, f"tuned ({TUNED_GUIDANCE_FILE.name}, {d.get('date', '?')}, checkpoint {sha})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return DEFAULT_GUIDANCE, "built-in default (untuned)"


def default_guidance_scale(method: str, steps: int, with_source: bool = False) -> float | tuple[float, str]:
    """ζ for ``method`` at ``steps``: from the tuned table, log-interpolated in the step count.

    Parameters
    ----------
    method
        A sampler name of the table (``"zssd"``, ``"dps"``); other names give 0.
    steps
        Number of sampler steps (constant beyond the table's first and last entries).
    with_source
        Also return where ζ came from.

    Returns
    -------
    float or tuple of (float, str)
        ``ζ`` (or ``(ζ, source)`` with ``with_source=True``).
    """
    table, source = _tuned_table()
    tab = table.get(method) or DEFAULT_GUIDANCE.get(method)
    if not tab:
        return (0.0, "n/a") if with_source else 0.0
    ks = sorted(tab)
    if steps <= ks[0]:
        z = tab[ks[0]]
    elif steps >= ks[-1]:
        z = tab[ks[-1]]
    else:
        j = int(np.searchsorted(ks, steps))
        lo, hi = ks[j - 1], ks[j]
        f = (math.log(steps) - math.log(lo)) / (math.log(hi) - math.log(lo))
        z = float(math.exp((1 - f) * math.log(tab[lo]) + f * math.log(tab[hi])))
    return (float(z), source) if with_source else float(z)
