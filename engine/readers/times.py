"""Picking one time step of a dataset in any calendar (:func:`select_time`): monthly means by month,
otherwise the nearest step within a tolerance.
"""

from __future__ import annotations

import re
from datetime import timedelta

import cftime
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError

__all__ = ["select_time"]

_ISO = re.compile(r"^\s*(-?\d{1,5})-(\d{1,2})(?:-(\d{1,2}))?"
                  r"(?:[T ](\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}(?:\.\d*)?))?)?\s*(?:Z|[+-]00:?00)?\s*$")


def _time_parts(t) -> tuple[int, int, int, int, int, float]:
    """(year, month, day, hour, minute, second) of an ISO string or any datetime-like."""
    if isinstance(t, str):
        m = _ISO.match(t)
        if m is None:
            raise DataError(f"cannot parse time {t!r}; use ISO 'YYYY-MM-DD[THH[:MM[:SS]]]' or 'YYYY-MM'")
        y, mo, d, h, mi, s = m.groups()
        return int(y), int(mo), int(d or 1), int(h or 0), int(mi or 0), float(s or 0)
    if isinstance(t, np.datetime64):
        t = pd.Timestamp(t)
    if all(hasattr(t, a) for a in ("year", "month", "day")):
        return (int(t.year), int(t.month), int(t.day), int(getattr(t, "hour", 0)), int(getattr(t, "minute", 0)),
                float(getattr(t, "second", 0)) + float(getattr(t, "microsecond", 0)) / 1e6)
    raise DataError(f"cannot interpret time {t!r}")


def _seconds(values: np.ndarray, calendar: str | None) -> np.ndarray:
    """Times as float seconds since 1970-01-01 in their own calendar."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]").astype(np.int64) / 1e9
    return np.asarray(cftime.date2num(list(values.ravel()), "seconds since 1970-01-01 00:00:00",
                                      calendar=calendar), dtype=np.float64).reshape(values.shape)


def _to_seconds_tolerance(tol) -> float:
    """A tolerance (``"3h"``, a timedelta, or seconds) in seconds."""
    if isinstance(tol, (int, float, np.integer, np.floating)):
        return float(tol)  # seconds
    try:
        return pd.Timedelta(tol).total_seconds()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot interpret tolerance {tol!r} (use e.g. '3h', a timedelta or seconds)") from exc


def _fmt(t) -> str:
    """A time (numpy, pandas or cftime) as ISO text for messages."""
    if isinstance(t, np.datetime64):
        return str(pd.Timestamp(t))
    if hasattr(t, "isoformat"):
        return t.isoformat()
    return str(t)


def select_time(ds: xr.Dataset | xr.DataArray, time, tolerance=None) -> xr.Dataset | xr.DataArray:
    """Pick one time step of ``ds`` for a requested time.

    Parameters
    ----------
    ds
        Dataset or DataArray with a ``time`` dimension (numpy datetime64 or
        cftime values in any calendar).
    time
        ISO string (``"2005-02-30"`` is valid in a ``360_day`` file),
        ``"YYYY-MM"``, ``datetime``/``pd.Timestamp``/``np.datetime64``/cftime.
    tolerance
        For sub-monthly data: the largest allowed distance to the nearest
        step (``"3h"``, ``timedelta``, or seconds); default half the median
        time step.  Ignored for monthly data.

    Returns
    -------
    Same type as ``ds`` with the time dimension removed (a scalar ``time``
    coordinate records the step taken).

    Notes
    -----
    Monthly means (``frequency`` attribute starting with ``mon`` or a median
    spacing of at least 28 days) are matched by calendar month: the step
    whose year and month equal the requested ones.  Otherwise the nearest
    step within ``tolerance`` is taken.

    Raises
    ------
    DataError
        Invalid date for the file's calendar, a time outside the file's time
        range (the message names the range), or no step within tolerance.
    """
    src = ds.attrs.get("source_file", getattr(ds, "name", None) or "<dataset>")
    if "time" not in ds.dims:
        raise DataError(f"{src}: no time dimension to select from")
    tv = np.asarray(ds["time"].values)
    n = tv.size
    if n == 0:
        raise DataError(f"{src}: empty time axis")
    is_cf = tv.dtype.kind == "O"
    calendar = getattr(tv[0], "calendar", None) if is_cf else "proleptic_gregorian"
    y, mo, d, h, mi, s = _time_parts(time)
    try:
        if is_cf:
            target = cftime.datetime(y, mo, d, h, mi, int(s), int(round((s % 1) * 1e6)), calendar=calendar,
                                     has_year_zero=getattr(tv[0], "has_year_zero", None))
        else:
            target = np.datetime64(pd.Timestamp(year=y, month=mo, day=d, hour=h, minute=mi)
                                   + pd.Timedelta(seconds=s))
    except (ValueError, OverflowError) as exc:
        raise DataError(f"{time!r} is not a valid date in the {calendar} calendar of {src}") from exc
    rng = f"{_fmt(tv[0])} … {_fmt(tv[-1])} ({n} steps, calendar {calendar})"
    secs = _seconds(tv, calendar)
    tsec = float(_seconds(np.asarray([target], dtype=object if is_cf else tv.dtype), calendar)[0])
    step = float(np.median(np.diff(secs))) if n > 1 else 0.0
    freq = str(ds.attrs.get("frequency", "")).lower()
    if freq.startswith("mon") or (n > 1 and step >= 28 * 86400.0):  # monthly means: match the calendar month
        i = _month_index(tv, y, mo, f"the time range of {src}: {rng}")
        out = ds.isel(time=i)
        out.attrs = {**ds.attrs, "time_mean": "month"}  # a monthly mean, not an instantaneous state
        return out
    else:
        tol = 0.5 * step if tolerance is None else _to_seconds_tolerance(tolerance)
        if tsec < secs.min() - tol or tsec > secs.max() + tol:
            raise DataError(f"time {_fmt(target)} is outside the time range of {src}: {rng}")
        dist = np.abs(secs - tsec)
        i = int(np.argmin(dist))
        if dist[i] > tol + 1e-6:
            raise DataError(f"no time step of {src} within {timedelta(seconds=tol)} of {_fmt(target)} "
                            f"(nearest {_fmt(tv[i])}); range {rng}")
    return ds.isel(time=i)


def _month_index(tv: np.ndarray, y: int, mo: int, where_text: str) -> int:
    """Index of the first step of ``tv`` in year ``y``, month ``mo`` (``DataError`` naming ``where_text``)."""
    is_cf = tv.dtype.kind == "O"
    ym = np.array([(t.year * 12 + t.month) if is_cf else (pd.Timestamp(t).year * 12 + pd.Timestamp(t).month)
                   for t in tv])
    want = y * 12 + mo
    hit = np.nonzero(ym == want)[0]
    if hit.size == 0:
        where = "outside" if (want < ym.min() or want > ym.max()) else "missing from"
        raise DataError(f"month {y:04d}-{mo:02d} is {where} {where_text}")
    return int(hit[0])
