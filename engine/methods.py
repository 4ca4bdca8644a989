"""The downscaling methods, by name: one registry the engine asks instead of literal tuples.

Each :class:`Method` says what kind of method it is (classical or zero-shot diffusion), whether
it takes a guidance scale ζ, whether it needs a paired (GCM, reference) training history, which
diffusion sampler it runs (:data:`zssd_engine.samplers.SAMPLERS`), and its label.  The order of
:data:`METHODS` is the order methods are listed in messages and tables.

>>> METHODS["zssd-bc"].sampler, METHODS["zssd-bc"].guided, METHODS["zssd-bc"].paired_training
('zssd', True, True)
>>> method_names(kind=CLASSICAL)
('bilinear', 'lapse', 'bcsd')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "METHODS", "CLASSICAL", "DIFFUSION", "KINDS", "get_method", "method_names", "is_guided",
           "sampler_name"]

#: Kinds of method.
CLASSICAL = "classical"
DIFFUSION = "zero-shot diffusion"
KINDS: tuple[str, ...] = (CLASSICAL, DIFFUSION)


@dataclass(frozen=True)
class Method:
    """One downscaling method.

    Attributes
    ----------
    name
        The name used on the command line, in batch specs and in outputs (``downscaling_method``).
    label
        Human-readable name (tables, the app).
    kind
        :data:`CLASSICAL` (interpolation, statistics) or :data:`DIFFUSION` (posterior sampling
        with the prior, no paired training of the network).
    guided
        Takes a guidance scale ζ (DPS-style gradient guidance).
    paired_training
        Needs a historical GCM run paired with the reference to train on (BCSD's quantile maps,
        zssd-bc's bias correction); refused for unpaired sources.
    sampler
        The :data:`zssd_engine.samplers.SAMPLERS` key it runs, and the key of its ζ in the tuned
        table (``None`` for a classical method).
    bias_corrected
        The GCM field is bias-corrected (:mod:`zssd_engine.bias_correction`) before the sampler runs.
    summary
        One line on what it does.
    """

    name: str
    label: str
    kind: str
    guided: bool = False
    paired_training: bool = False
    sampler: str | None = None
    bias_corrected: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.sampler is None) != (self.kind == CLASSICAL):
            raise ValueError(f"method {self.name!r}: a diffusion method names its sampler, a classical one none")

    @property
    def classical(self) -> bool:
        """Whether this is a classical (non-diffusion) method."""
        return self.kind == CLASSICAL

    @property
    def diffusion(self) -> bool:
        """Whether this method samples the diffusion prior."""
        return self.kind == DIFFUSION


_ALL = (
    Method("bilinear", "Bilinear", CLASSICAL, summary="NaN-aware bilinear interpolation"),
    Method("lapse", "Bilinear + lapse", CLASSICAL,
           summary="bilinear plus -6.5 K/km times the elevation detail for t2m"),
    Method("bcsd", "BCSD", CLASSICAL, paired_training=True,
           summary="bias correction (monthly quantile mapping) and spatial disaggregation"),
    Method("zssd", "ZSSD", DIFFUSION, guided=True, sampler="zssd",
           summary="diffusion posterior sampling with Unified Coordinate Guidance"),
    Method("zssd-bc", "ZSSD-BC", DIFFUSION, guided=True, paired_training=True, sampler="zssd", bias_corrected=True,
           summary="ZSSD toward the GCM field quantile-mapped on its own grid (BCSD's BC step), "
                   "guided on 5° unified cells, or 2.5° where its training years favour it"),
    Method("dps", "DPS", DIFFUSION, guided=True, sampler="dps",
           summary="vanilla DPS with the GCM grid's block averaging"),
    Method("ddrm", "DDRM", DIFFUSION, sampler="ddrm",
           summary="DDRM: spectral projection onto the GCM cell means"),
)

#: Every downscaling method by name (insertion order: classical first, then diffusion).
METHODS: dict[str, Method] = {m.name: m for m in _ALL}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name`` (``ValueError`` naming the choices otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def method_names(*, kind: str | None = None, guided: bool | None = None, paired_training: bool | None = None,
                 bias_corrected: bool | None = None) -> tuple[str, ...]:
    """Names of the methods matching every given property, in registry order.

    >>> method_names(guided=True)
    ('zssd', 'zssd-bc', 'dps')
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return tuple(m.name for m in _ALL
                 if (kind is None or m.kind == kind) and (guided is None or m.guided == guided)
                 and (paired_training is None or m.paired_training == paired_training)
                 and (bias_corrected is None or m.bias_corrected == bias_corrected))


def is_guided(name: str) -> bool:
    """Whether ``name`` is a registered method that takes a guidance scale (``False`` for any other name)."""
    m = METHODS.get(name)
    return m is not None and m.guided


def sampler_name(name: str) -> str:
    """The sampler a method runs and whose tuned ζ it uses (``zssd-bc`` → ``zssd``); other names unchanged."""
    m = METHODS.get(name)
    return m.sampler if m is not None and m.sampler is not None else name
