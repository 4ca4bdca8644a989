"""The guidance scale ζ by prior, input domain, method and step count: the tuned tables and the fallback.

ζ balances the prior against the data, so it belongs to a prior: a retrained network wants its own.
It also depends on how far the inputs lie from what the prior learned, so a prior may carry two
tables, one tuned on demo-world cases and one on real weather:

* ``domain="demo"``: ``benchmarks/tune_guidance.py --install`` on training-year demo cases;
* ``domain="real"``: ``benchmarks/tune_guidance.py --real era5-x20 --install`` on the real week's four
  tuning times (:data:`zssd_engine.evaluate.REAL_TUNING_TIMES`, never scored).

``guidance_defaults.json`` (next to this module) lists the tables, each keyed by the checkpoint's
sha256 and the domain; its ``default_checkpoint_sha256`` names the shipped prior's.
:func:`default_guidance_scale` picks the table of the prior and domain asked for, falling back
(and saying so in its source text) to the same prior's demo table, then to the shipped prior's
tables, then to any other prior's (a method not tuned for this prior), then to
:data:`DEFAULT_GUIDANCE`; within a table it log-interpolates in the step count.
ζ is quoted for a 128 x 128 region (:func:`zssd_engine.samplers.guidance.effective_scale` rescales
it to the region's size).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_GUIDANCE", "DOMAINS", "TUNED_GUIDANCE_FILE", "TunedSource", "default_guidance_scale", "lookup",
           "tuned_tables", "install_tuned_table"]

#: Built-in fallbacks (used when no tuned table is installed); keyed by method then step count.
DEFAULT_GUIDANCE: dict[str, dict[int, float]] = {
    "zssd": {20: 10.0, 50: 5.0, 100: 3.0, 250: 1.5, 1000: 0.5},
    "dps": {20: 10.0, 50: 5.0, 100: 3.0, 250: 1.5, 1000: 0.5},
}
#: Input domains a table can be tuned on: the synthetic demo world, or real weather.
DOMAINS = ("demo", "real")
#: Tuned tables written by ``benchmarks/tune_guidance.py --install``.
TUNED_GUIDANCE_FILE = Path(__file__).with_name("guidance_defaults.json")


def _read(path: Path) -> dict[str, Any]:
    """The file as ``{"default_checkpoint_sha256", "tables": [...]}``; a one-table file of the earlier
    layout (top-level ``scales``) reads as the demo table of its checkpoint."""
    d = json.loads(path.read_text())
    if "tables" not in d:
        d = {"default_checkpoint_sha256": d.get("checkpoint_sha256"), "tables": [{**d, "domain": "demo"}]}
    return d


def tuned_tables(path: Path | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The readable tuned tables (``scales`` keyed by method then int step count) and the shipped prior's
    sha256; ``([], None)`` when the file is missing or unreadable."""
    try:
        d = _read(Path(path or TUNED_GUIDANCE_FILE))
        tables = []
        for t in d["tables"]:
            scales = {m: {int(k): float(v) for k, v in tab.items()} for m, tab in t["scales"].items()}
            tables.append({**t, "scales": scales, "domain": str(t.get("domain", "demo"))})
        return tables, d.get("default_checkpoint_sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [], None


@dataclass(frozen=True)
class TunedSource:
    """Where a tuned ζ came from: the table's checkpoint, domain and tuning date, and whether that table is
    another prior's (``other_prior``) or another domain's (``other_domain``) than the one asked for."""

    checkpoint_sha256: str
    domain: str
    date: str
    asked_prior: str
    asked_domain: str

    @property
    def other_prior(self) -> bool:
        return self.checkpoint_sha256 != self.asked_prior

    @property
    def other_domain(self) -> bool:
        return self.domain != self.asked_domain

    def __str__(self) -> str:
        src = (f"tuned ({TUNED_GUIDANCE_FILE.name}, {self.domain} cases, {self.date}, "
               f"checkpoint {str(self.checkpoint_sha256)[:12]}")
        if self.other_prior:
            src += f"; not tuned for this prior {str(self.asked_prior)[:12]}"
        if self.other_domain:
            src += f"; no table tuned on {self.asked_domain} cases"
        return src + ")"


def _pick(method: str, prior_sha256: str | None, domain: str) -> tuple[dict[int, float], TunedSource | None]:
    """The table of ``method`` to use and where it came from (``None``: the built-in fallback)."""
    tables, shipped = tuned_tables()
    own = prior_sha256 or shipped
    others = [t.get("checkpoint_sha256") for t in tables if t.get("checkpoint_sha256") not in (own, shipped)]
    chain = [(sha, dom) for sha in dict.fromkeys([own, shipped, *others]) for dom in dict.fromkeys([domain, "demo"])]
    for sha, dom in chain:
        for t in tables:
            if t.get("checkpoint_sha256") == sha and t["domain"] == dom and method in t["scales"]:
                date = next((r.get("date") for r in t.get("runs", ()) if method in r.get("methods", ())),
                            t.get("date", "?"))
                return t["scales"][method], TunedSource(sha, dom, str(date), str(own), domain)
    return DEFAULT_GUIDANCE.get(method, {}), None


def lookup(method: str, steps: int, prior_sha256: str | None = None,
           domain: str = "demo") -> tuple[float, TunedSource | None]:
    """ζ for ``method`` at ``steps`` and its :class:`TunedSource` (``None`` for the built-in fallback); the
    core of :func:`default_guidance_scale`, whose parameters these are."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown guidance domain {domain!r}; choose from {', '.join(DOMAINS)}")
    tab, source = _pick(method, prior_sha256, domain)
    if not tab:
        return 0.0, None
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
    return float(z), source


def default_guidance_scale(method: str, steps: int, with_source: bool = False, *, prior_sha256: str | None = None,
                           domain: str = "demo") -> float | tuple[float, str]:
    """ζ for ``method`` at ``steps``: from the tuned table of the prior and domain, log-interpolated in steps.

    Parameters
    ----------
    method
        A sampler name of the table (``"zssd"``, ``"dps"``); other names give 0.
    steps
        Number of sampler steps (constant beyond the table's first and last entries).
    with_source
        Also return where ζ came from, in words (:class:`TunedSource`; :func:`lookup` gives the record).
    prior_sha256
        The prior's checkpoint sha256 (:attr:`Prior.sha256`); ``None``: the shipped prior.
    domain
        ``"demo"`` (demo-world inputs) or ``"real"`` (real weather, real GCM files, a user's files).

    Returns
    -------
    float or tuple of (float, str)
        ``ζ`` (or ``(ζ, source)`` with ``with_source=True``).
    """
    z, source = lookup(method, steps, prior_sha256, domain)
    if not with_source:
        return z
    if source is None:
        return z, ("built-in default (untuned)" if method in DEFAULT_GUIDANCE else "n/a")
    return z, str(source)


def install_tuned_table(table: dict[str, Any], path: Path | None = None, default: bool = False) -> Path:
    """Add ``table`` (``checkpoint_sha256``, ``domain``, ``scales``, provenance …) to the tuned file.

    The methods in ``table["scales"]`` replace those of the existing table of the same checkpoint and
    domain, which keeps its other methods (tuned by another run); each run's provenance (every key but
    the checkpoint, domain and scales, plus the methods it tuned) is kept in the table's ``runs``.
    ``default=True`` also names the checkpoint the shipped prior's.  Written atomically; an unreadable
    existing file raises instead of being overwritten.
    """
    path = Path(path or TUNED_GUIDANCE_FILE)
    if table.get("domain") not in DOMAINS or not table.get("checkpoint_sha256") or not table.get("scales"):
        raise ValueError("a tuned table needs checkpoint_sha256, a domain in "
                         f"{DOMAINS} and scales; got keys {sorted(table)}")
    d = _read(path) if path.exists() else {"default_checkpoint_sha256": None, "tables": []}
    key = (table["checkpoint_sha256"], table["domain"])
    old = [t for t in d["tables"] if (t.get("checkpoint_sha256"), t.get("domain", "demo")) == key]
    run = {k: v for k, v in table.items() if k not in ("checkpoint_sha256", "domain", "scales", "runs")}
    run["methods"] = sorted(table["scales"])
    runs = []
    for r in old[0].get("runs", []) if old else []:  # earlier runs, for the methods this one does not replace
        kept = [m for m in r.get("methods", ()) if m not in run["methods"]]
        if kept:
            runs.append({**r, "methods": kept})
    merged = {"checkpoint_sha256": key[0], "domain": key[1],
              "scales": {**(old[0]["scales"] if old else {}), **table["scales"]}, "runs": runs + [run]}
    d["tables"] = [t for t in d["tables"] if (t.get("checkpoint_sha256"), t.get("domain", "demo")) != key] + [merged]
    if default or not d.get("default_checkpoint_sha256"):
        d["default_checkpoint_sha256"] = table["checkpoint_sha256"]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(d, indent=1) + "\n")
    tmp.replace(path)
    return path
