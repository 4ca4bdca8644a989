"""Shared exception types for data problems.

Every reader, baseline and metric raises :class:`DataError` for input that
cannot be used as given.  Messages are meant to be shown to a user verbatim,
so they name the file, the variable, the unit and the expected range where
these apply (see :func:`data_error`).
"""

from __future__ import annotations

__all__ = ["DataError", "data_error"]


class DataError(ValueError):
    """Input data that cannot be used: unreadable file, wrong unit, out-of-range values, …

    A subclass of :class:`ValueError` so callers that only know the built-in
    exception still catch it.
    """


def data_error(message: str, *, file: object | None = None, variable: str | None = None,
               units: str | None = None, expected: str | None = None) -> DataError:
    """Build a :class:`DataError` whose message names the context.

    Parameters
    ----------
    message
        What is wrong, e.g. ``"values outside the physical range"``.
    file, variable, units, expected
        Optional context appended as ``file 'x.nc', variable 'tas', units 'K',
        expected 150–350 K``.

    Returns
    -------
    DataError
        The exception (to be raised by the caller: ``raise data_error(...)``).
    """
    ctx = []
    if file is not None:
        ctx.append(f"file {str(file)!r}")
    if variable is not None:
        ctx.append(f"variable {variable!r}")
    if units is not None:
        ctx.append(f"units {units!r}")
    if expected is not None:
        ctx.append(f"expected {expected}")
    return DataError(f"{message} ({', '.join(ctx)})" if ctx else message)
