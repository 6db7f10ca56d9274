"""Budget periods: when a budget's spend starts counting from zero again (contract 3).

A ``reset_duration`` is ``<count><unit>``: a positive integer and one of ``s`` second, ``m`` minute,
``h`` hour, ``d`` day, ``w`` week, ``M`` month, ``Y`` year. Case matters (``m`` minute, ``M`` month).
``30s``, ``5m``, ``1h``, ``1d``, ``1w``, ``1M``, ``3M``, ``1Y``. Durations longer than 100 years are
refused.

A `Period` is a duration, a time zone and an alignment. Its **boundaries** are a set of instants;
the period containing an instant ``t`` runs from the last boundary at or before ``t`` (`Period.start`)
to the first boundary after it (`Period.end`, the reset time). So ``start(t) <= t < end(t)`` and
``start(end(t)) == end(t)`` always hold, whatever the zone does.

Calendar-aligned periods (the default) are defined on the **local wall clock** of the zone. Each
unit names a grid of local wall times; every grid time becomes one boundary, the instant zoneinfo
gives for it with ``fold=0``:

- ``Ns``, ``Nm``, ``Nh``: multiples of N seconds / minutes / hours since local midnight. ``30s`` is
  :00 and :30 of every minute, ``5m`` is :00, :05, ..., ``6h`` is 00:00, 06:00, 12:00, 18:00 local.
  When N does not divide the day the grid restarts at each midnight (``5h``: 00, 05, 10, 15, 20, and
  the day's last period is 4 h). A step of a day or more counts from 1970-01-01 00:00 local instead
  (``48h`` is the same as ``2d``).
- ``1d``: local midnight; ``Nd``: the local date's day number since 1970-01-01 floored to N.
- ``1w``: Monday 00:00 local; ``Nw``: blocks of N weeks counted from Monday 1970-01-05.
- ``1M``: the 1st of the month 00:00 local; ``NM``: months since January of year 0 floored to N,
  so ``3M`` is calendar quarters (Jan, Apr, Jul, Oct) and ``6M`` halves.
- ``1Y``: January 1st 00:00 local; ``NY``: the year floored to N (``2Y`` starts in even years).

Daylight-saving time, the ``fold=0`` rule:

- A local time that does not exist (the clock jumps forward over it) resolves with the offset in
  force before the jump, i.e. to the instant the wall clock shows that time plus the jump. Europe/
  Berlin on 2026-03-29 jumps from 02:00 to 03:00: the ``1h`` boundaries are 01:00 CET (00:00Z) and
  02:00 -> 03:00 CEST (01:00Z), so no period is lost; a midnight that does not exist (zones that
  jump at 00:00) resolves to the moment of the jump.
- A local time that happens twice (the clock falls back) is a boundary at its **first** occurrence
  only. New York on 2026-11-01 repeats 01:00-02:00: the ``1h`` period from 01:00 EDT (05:00Z) runs
  to 02:00 EST (07:00Z), two hours; a ``30s`` or ``5m`` period that starts just before the repeat
  lasts through the repeated hour (01:59:30 EDT to 02:00 EST is 1 h 30 s).
- So on a DST day, the ``1d`` period is 23 h or 25 h, the ``Nh`` period containing the change is
  shorter or longer (New York ``6h`` 00:00-06:00 is 5 h on 2026-03-08 and 7 h on 2026-11-01),
  and ``end`` (the next reset) is always the next boundary as the zone's clock shows it.

Rolling periods (``calendar_aligned=False``) start at ``anchor`` (default 1970-01-01 00:00 in the
zone) and advance by the duration; they extend backwards too, so an event before the anchor
belongs to an earlier period of the same series.

- ``s``, ``m``, ``h``: fixed elapsed time: ``anchor + k * N units``. No time zone is involved.
- ``d``, ``w``: local calendar days: the anchor's local wall time every N days / weeks (a ``1d``
  budget anchored at 09:00 resets at 09:00 local every day, across DST; 09:00 that does not exist or
  repeats follows the ``fold=0`` rule above).
- ``M``, ``Y``: calendar months / years from the anchor, on the anchor's day of the month clamped
  to the month's last day, at the anchor's local time of day: anchored Jan 31 -> Feb 28 (29 in leap
  years) -> Mar 31 -> Apr 30.

The anchor is taken to the whole second (microseconds dropped), so boundaries are whole seconds.

`Period.starts_ms` is the vectorised `Period.start` over int64 epoch milliseconds, and the two give
the same answer for every timestamp (`start` is `starts_ms` on one value: one engine). The engine
works in whole seconds: it floors the timestamp to the second, reads the zone's UTC-offset history
(probed once per zone and UTC year from zoneinfo at 6-hour steps and bisected to the second, then
cached), and for each timestamp takes the last boundary of its offset interval, looking into earlier
intervals only where the grid has no boundary yet (e.g. a month that began before the spring
change). A zone with no change in the batch's years (UTC, Asia/Kolkata) is plain numpy arithmetic.
Two offset changes less than 6 hours apart that cancel each other would be missed; the tz database
has no two changes of any zone that close together since 1970. Offset history outside the years 1900-2200 is taken as constant.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

UNITS: dict[str, str] = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "M": "month", "Y": "year"}
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DURATION_GRAMMAR = "<count><unit> with unit s, m, h, d, w, M or Y (e.g. 30s, 1d, 1M)"
MAX_SECONDS = 100 * 366 * 86_400  # durations are refused past 100 years
MAX_MONTHS = 1200

DAY = 86_400
_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GOOD = re.compile(r"([0-9]+)([smhdwMY])")
_WORDS = {"sec": "s", "second": "s", "min": "m", "minute": "m", "hr": "h", "hour": "h", "day": "d", "week": "w",
          "wk": "w", "mo": "M", "mon": "M", "month": "M", "yr": "Y", "year": "Y"}  # fmt: skip
_LOOSE = re.compile(r"([0-9]+(?:[.,][0-9]*)?)(\s*)([A-Za-z]+)")


@dataclass(frozen=True)
class Duration:
    count: int
    unit: str  # "s" "m" "h" "d" "w" "M" "Y"

    def __post_init__(self) -> None:
        if self.unit not in UNITS or type(self.count) is not int or self.count < 1:
            raise ValueError(
                f"Duration: got count={self.count!r} unit={self.unit!r}, expected a count >= 1 and a unit in "
                + ", ".join(UNITS)
            )

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def words(self) -> str:
        """How a person reads it after "per": ``1M`` month, ``1d`` day, ``3M`` 3 months, ``30m``
        30 minutes. (``1M`` alone reads as "a million" to most people.)"""
        name = UNITS[self.unit]
        return name if self.count == 1 else f"{self.count} {name}s"

    @property
    def seconds(self) -> int | None:
        """The fixed length for s, m, h, d, w (a local day may still be 23 or 25 h); None for M, Y."""
        unit = UNIT_SECONDS.get(self.unit)
        return None if unit is None else self.count * unit

    @property
    def months(self) -> int | None:
        """The length in months for M and Y; None otherwise."""
        return {"M": self.count, "Y": 12 * self.count}.get(self.unit)


def duration_problem(text: object) -> str | None:
    """None when ``text`` is a good reset_duration, else "got ..., expected ..." (one line)."""
    reason = ""
    if isinstance(text, str):
        good = _GOOD.fullmatch(text)
        if good:
            count, unit = int(good[1]), good[2]
            if count == 0:
                reason = "the count must be at least 1"
            elif count * UNIT_SECONDS.get(unit, 0) > MAX_SECONDS or count * {"M": 1, "Y": 12}.get(unit, 0) > MAX_MONTHS:
                reason = "at most 100 years"
            else:
                return None
        elif not text.strip():
            reason = "it is empty"
        elif loose := _LOOSE.fullmatch(text.strip()):
            number, space, unit = loose.groups()
            if not number.isdigit():
                reason = "the count must be a whole number"
            elif unit in UNITS:
                reason = "no spaces" if space or text != text.strip() else ""
            elif unit.lower() in UNITS or unit.upper() in UNITS:
                reason = f"{unit!r} is not a unit; units are case-sensitive (m minute, M month, d day, Y year)"
            elif unit.lower().rstrip("s") in _WORDS:
                reason = f"{unit!r} is not a unit, write {number}{_WORDS[unit.lower().rstrip('s')]}"
            else:
                reason = f"{unit!r} is not a unit"
    else:
        reason = "it must be a string"
    return f"got {text!r}, expected {DURATION_GRAMMAR}" + (f"; {reason}" if reason else "")


def period_words(text: str) -> str:
    """``reset_duration`` text as words after "per" ("month", "day", "3 months"); text that does
    not parse is returned as it is."""
    try:
        return parse_duration(text).words
    except ValueError:
        return text


def parse_duration(text: str) -> Duration:
    """``"30s"`` -> Duration(30, "s"). Raises ValueError with one readable line."""
    problem = duration_problem(text)
    if problem is not None:
        raise ValueError(f"reset_duration: {problem}")
    good = _GOOD.fullmatch(text)
    assert good is not None
    return Duration(int(good[1]), good[2])


# ---------------------------------------------------------------------------------------------
# Calendar arithmetic on int64 arrays (proleptic Gregorian; H. Hinnant's days_from_civil)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_from_days(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = z + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    y = yoe + era * 400 + (m <= 2)
    return y, m, d


def _month_start_day(mi: np.ndarray) -> np.ndarray:
    """Day number (since 1970-01-01) of the 1st of month index mi = year * 12 + month - 1."""
    y = mi // 12
    return _days_from_civil(y, mi - y * 12 + 1, np.ones_like(mi))


# ---------------------------------------------------------------------------------------------
# Grids of wall times (int64 seconds since 1970-01-01 00:00 on the local wall clock)


class _Grid(Protocol):
    reach: int  # upper bound of the distance between consecutive grid times, in seconds

    def floor(self, v: np.ndarray) -> np.ndarray: ...  # largest grid time <= v

    def ceil(self, v: np.ndarray) -> np.ndarray: ...  # smallest grid time >= v


class _Affine:
    """origin + k * step."""

    def __init__(self, origin: int, step: int) -> None:
        self.origin, self.step, self.reach = origin, step, step

    def floor(self, v: np.ndarray) -> np.ndarray:
        if self.origin == 0:
            return v - v % self.step
        return self.origin + (v - self.origin) // self.step * self.step

    def ceil(self, v: np.ndarray) -> np.ndarray:
        return self.origin - (self.origin - v) // self.step * self.step


class _WithinDay:
    """Multiples of step since each midnight, for steps under a day that do not divide it."""

    def __init__(self, step: int) -> None:
        self.step, self.reach = step, step

    def floor(self, v: np.ndarray) -> np.ndarray:
        midnight = v - v % DAY
        return midnight + (v - midnight) // self.step * self.step

    def ceil(self, v: np.ndarray) -> np.ndarray:
        f = self.floor(v)
        return np.where(f == v, v, np.minimum(f + self.step, v - v % DAY + DAY))


class _Months:
    """Every n months from month index ``mi0`` (year * 12 + month - 1), on day ``day`` clamped to the
    month's length, at ``tod`` seconds after midnight. Aligned grids use mi0 = 0, day 1, tod 0."""

    def __init__(self, n: int, mi0: int = 0, day: int = 1, tod: int = 0) -> None:
        self.n, self.mi0, self.day, self.tod = n, mi0, day, tod
        self.reach = n * 31 * DAY
        self.simple = day == 1 and tod == 0

    def _time(self, k: np.ndarray) -> np.ndarray:
        mi = self.mi0 + k * self.n
        first = _month_start_day(mi)
        if self.day == 1:
            return first * DAY + self.tod
        length = _month_start_day(mi + 1) - first
        return (first + np.minimum(self.day, length) - 1) * DAY + self.tod

    def _floor_k(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, m, _ = _civil_from_days(v // DAY)
        k = (y * 12 + m - 1 - self.mi0) // self.n
        t = self._time(k)
        if not self.simple:
            late = t > v
            if late.any():
                k = np.where(late, k - 1, k)
                t = np.where(late, self._time(k), t)
        return k, t

    def floor(self, v: np.ndarray) -> np.ndarray:
        day = v // DAY
        if len(v) == 0:
            return v.copy()
        lo, hi = int(day.min()), int(day.max())
        if hi - lo > len(v) // 4 + 64:
            return self._floor_k(v)[1]
        # Few distinct days (a batch): the calendar work once per day of the span, then a gather.
        days = np.arange(lo, hi + 1, dtype=np.int64)
        y, m, _ = _civil_from_days(days)
        k = (y * 12 + m - 1 - self.mi0) // self.n
        at = day - lo
        t = self._time(k)[at]
        if self.simple:
            return t
        prev = self._time(k - 1)[at]
        return np.where(t > v, prev, t)

    def ceil(self, v: np.ndarray) -> np.ndarray:
        k, t = self._floor_k(v)
        return np.where(t == v, v, self._time(k + 1))


# ---------------------------------------------------------------------------------------------
# UTC-offset history of a zone, probed from zoneinfo


_PROBE = 6 * 3600
_YEAR_LO, _YEAR_HI = 1900, 2200


def _year_start(year: int) -> int:
    return int(_days_from_civil(np.array([year]), np.array([1]), np.array([1]))[0]) * DAY


class _Offsets:
    """Transitions T (first second of each new offset) and offsets O (O[0] before T[0], O[i+1]
    from T[i]) for a contiguous range of UTC years, grown on demand."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.lock = threading.Lock()
        self.years: tuple[int, int] | None = None  # covered [first, last] UTC years
        self.state: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.zeros(1, np.int64))

    def offset(self, s: int) -> int:
        off = datetime.fromtimestamp(s, self.tz).utcoffset()
        assert off is not None
        return int(off.total_seconds())

    def _probe(self, a: int, b: int) -> tuple[list[int], list[int]]:
        """Transitions in (a, b] and the offsets after each."""
        times: list[int] = []
        offs: list[int] = []
        prev_s, prev_o = a, self.offset(a)
        s = a
        while s < b:
            s = min(s + _PROBE, b)
            o = self.offset(s)
            while o != prev_o:  # one or more changes in (prev_s, s]
                lo, hi = prev_s, s
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.offset(mid) == prev_o:
                        lo = mid
                    else:
                        hi = mid
                prev_s, prev_o = hi, self.offset(hi)
                times.append(hi)
                offs.append(prev_o)
            prev_s = s
        return times, offs

    def covering(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        y_lo = max(_YEAR_LO, min(_YEAR_HI, datetime.fromtimestamp(max(lo, -2**35), UTC).year))
        y_hi = max(_YEAR_LO, min(_YEAR_HI, datetime.fromtimestamp(min(hi, 2**37), UTC).year))
        years = self.years
        if years is not None and years[0] <= y_lo and y_hi <= years[1]:
            return self.state
        with self.lock:
            if self.years is None:
                a = _year_start(y_lo)
                times, offs = self._probe(a, _year_start(y_hi + 1))
                self.state = (np.array(times, np.int64), np.array([self.offset(a), *offs], np.int64))
                self.years = (y_lo, y_hi)
            else:
                first, last = self.years
                T, O = self.state
                if y_lo < first:
                    a = _year_start(y_lo)
                    times, offs = self._probe(a, _year_start(first))
                    T = np.concatenate([np.array(times, np.int64), T])
                    O = np.concatenate([np.array([self.offset(a), *offs], np.int64), O[1:]])
                    first = y_lo
                if y_hi > last:
                    times, offs = self._probe(_year_start(last + 1), _year_start(y_hi + 1))
                    T = np.concatenate([T, np.array(times, np.int64)])
                    O = np.concatenate([O, np.array(offs, np.int64)])
                    last = y_hi
                self.state = (T, O)
                self.years = (first, last)
            return self.state


@lru_cache(maxsize=None)
def _offsets(tz: tzinfo) -> _Offsets:
    return _Offsets(tz)


_NO_CHANGES = (np.empty(0, np.int64), np.zeros(1, np.int64))


# ---------------------------------------------------------------------------------------------
# The engine: boundaries = {g - off0(g) : g in grid}, where off0 is the fold=0 offset of wall time g.
# Offset interval r (between transitions T[r-1] and T[r]) has offset O[r]; zoneinfo's fold=0 rule
# gives it the wall times [W0[r], W0[r+1]) with W0[r] = T[r-1] + max(O[r-1], O[r]). Its boundaries
# lie in instants [W0[r] - O[r], W0[r+1] - O[r]): they overlap the next interval's by the jump after
# a spring-forward gap, and leave out the repeated instants after a fall-back.


def _regions(T: np.ndarray, O: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(T)
    W0 = np.empty(n + 1, np.int64)
    W0[0] = _I64_MIN
    W0[1:] = T + np.maximum(O[:-1], O[1:])
    Wend = np.empty(n + 1, np.int64)
    Wend[:-1] = W0[1:]
    Wend[-1] = _I64_MAX
    Rstart = np.empty(n + 1, np.int64)  # instant where interval r's boundaries may begin
    Rstart[0] = _I64_MIN
    Rstart[1:] = T + np.maximum(0, O[:-1] - O[1:])
    Rend = np.empty(n + 1, np.int64)  # instant before which they end
    Rend[:-1] = T + np.maximum(0, O[1:] - O[:-1])
    Rend[-1] = _I64_MAX
    return W0, Wend, Rstart, Rend


def _region_of(s: np.ndarray, T: np.ndarray) -> tuple[int, int, np.ndarray | None]:
    """The offset intervals the seconds s fall in: (first, last, per-row index or None if one)."""
    r_lo = int(np.searchsorted(T, s.min(), side="right"))
    r_hi = int(np.searchsorted(T, s.max(), side="right"))
    if r_lo == r_hi:
        return r_lo, r_hi, None
    k = np.full(len(s), r_lo, np.int64)
    for t in T[r_lo:r_hi]:  # the few changes inside the batch
        k += s >= t
    return r_lo, r_hi, k


def _starts(s: np.ndarray, grid: _Grid, T: np.ndarray, O: np.ndarray) -> np.ndarray:
    """Last boundary <= s, for int64 seconds s."""
    if len(T) == 0:
        o = int(O[0])
        return grid.floor(s + o) - o
    W0, Wend, _, Rend = _regions(T, O)
    r_lo, r_hi, k = _region_of(s, T)
    best = np.full(len(s), _I64_MIN, np.int64)
    # (rows or None for all, interval, whether the rows' own interval): interval by interval, each
    # with scalar offsets; rows without a boundary yet (or just after a gap) look one interval back.
    work: list[tuple[np.ndarray | None, int, bool]] = []
    for r in range(r_lo, r_hi + 1):
        work.append((None if k is None else np.flatnonzero(k == r), r, True))
    while work:
        rows, r, own = work.pop()
        if rows is not None and rows.size == 0:
            continue
        sj = s if rows is None else s[rows]
        o = int(O[r])
        w = sj + o if own else np.minimum(sj + o, Wend[r] - 1)
        g = grid.floor(w)
        c = g - o
        b = best if rows is None else best[rows]
        if r > 0:
            b = np.where((g >= W0[r]) & (c > b), c, b)
        else:
            b = np.maximum(c, b)
        if rows is None:
            best = b
        else:
            best[rows] = b
        if r > 0:
            more = b < Rend[r - 1]
            if more.any():
                idx = np.flatnonzero(more)
                work.append((idx if rows is None else rows[idx], r - 1, False))
    return best


def _ends(s: np.ndarray, grid: _Grid, T: np.ndarray, O: np.ndarray) -> np.ndarray:
    """First boundary > s, for int64 seconds s."""
    if len(T) == 0:
        o = O[0]
        return grid.ceil(s + 1 + o) - o
    W0, Wend, Rstart, _ = _regions(T, O)
    n = len(T)
    j = np.maximum(np.searchsorted(T, s, side="right") - 1, 0)
    best = np.full(len(s), _I64_MAX, np.int64)
    rows = np.arange(len(s))
    while rows.size:
        sj = s[rows]
        o = O[j]
        g = grid.ceil(np.maximum(sj + 1 + o, W0[j]))
        c = g - o
        b = best[rows]
        b = np.where((g < Wend[j]) & (c < b), c, b)
        best[rows] = b
        more = (j < n) & (b > Rstart[np.minimum(j + 1, n)])
        rows, j = rows[more], j[more] + 1
    return best


# ---------------------------------------------------------------------------------------------


def _to_seconds(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"expected an aware datetime (with a time zone), got {at!r}")
    return (at - _EPOCH) // timedelta(seconds=1)


def _wall_seconds(dt: datetime) -> int:
    """Seconds since 1970-01-01 00:00 on dt's own wall clock (naive fields)."""
    return (dt.replace(tzinfo=None, microsecond=0) - datetime(1970, 1, 1)) // timedelta(seconds=1)


def _from_seconds(s: int) -> datetime:
    return _EPOCH + timedelta(seconds=s)


@dataclass(frozen=True)
class Period:
    duration: Duration
    tz: ZoneInfo
    calendar_aligned: bool = True
    anchor: datetime | None = None  # rolling periods start here (aware); default 1970-01-01T00:00 in tz
    _grid: _Grid = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]
    _elapsed: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        if not isinstance(self.duration, Duration):
            raise TypeError(f"duration: expected a Duration, got {self.duration!r}")
        if not isinstance(self.tz, tzinfo):
            raise TypeError(f"tz: expected a zoneinfo.ZoneInfo, got {self.tz!r}")
        if self.anchor is not None:
            if self.calendar_aligned:
                raise ValueError("anchor: only rolling periods (calendar_aligned=False) have an anchor")
            if self.anchor.tzinfo is None or self.anchor.utcoffset() is None:
                raise ValueError(f"anchor: expected an aware datetime, got {self.anchor!r}")
        d = self.duration
        n, unit = d.count, d.unit
        grid: _Grid
        elapsed = False
        if self.calendar_aligned:
            if unit in "smh":
                step = n * UNIT_SECONDS[unit]
                grid = _WithinDay(step) if step < DAY and DAY % step else _Affine(0, step)
            elif unit == "d":
                grid = _Affine(0, n * DAY)
            elif unit == "w":
                grid = _Affine(4 * DAY, n * 7 * DAY)  # 1970-01-05 was a Monday
            else:
                months = d.months
                assert months is not None
                grid = _Months(months)
        else:
            anchor = self.anchor if self.anchor is not None else datetime(1970, 1, 1, tzinfo=self.tz)
            if unit in "smh":
                elapsed = True
                grid = _Affine(_to_seconds(anchor.replace(microsecond=0)), n * UNIT_SECONDS[unit])
            else:
                local = anchor.astimezone(self.tz)
                wall = _wall_seconds(local)
                if unit in "dw":
                    days = n * (7 if unit == "w" else 1)
                    grid = _Affine(wall, days * DAY)
                else:
                    months = d.months
                    assert months is not None
                    grid = _Months(months, local.year * 12 + local.month - 1, local.day, wall % DAY)
        object.__setattr__(self, "_grid", grid)
        object.__setattr__(self, "_elapsed", elapsed)

    def _table(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        if self._elapsed:
            return _NO_CHANGES
        margin = self._grid.reach + 3 * DAY
        return _offsets(self.tz).covering(lo - margin, hi + margin)

    def _starts_s(self, s: np.ndarray) -> np.ndarray:
        if len(s) == 0:
            return s.copy()
        T, O = self._table(int(s.min()), int(s.max()))
        return _starts(s, self._grid, T, O)

    def _ends_s(self, s: np.ndarray) -> np.ndarray:
        if len(s) == 0:
            return s.copy()
        T, O = self._table(int(s.min()), int(s.max()))
        return _ends(s, self._grid, T, O)

    def start(self, at: datetime) -> datetime:
        """The start of the period containing ``at`` (aware), as a UTC datetime."""
        return _from_seconds(int(self._starts_s(np.array([_to_seconds(at)], np.int64))[0]))

    def end(self, at: datetime) -> datetime:
        """The next reset: the start of the period after the one containing ``at`` (UTC)."""
        return _from_seconds(int(self._ends_s(np.array([_to_seconds(at)], np.int64))[0]))

    def starts_ms(self, ts_ms: np.ndarray) -> np.ndarray:
        """Period starts (int64 epoch ms) of int64 epoch-ms timestamps; equal to `start` for each."""
        s = np.floor_divide(np.asarray(ts_ms, dtype=np.int64), 1000)
        return self._starts_s(s) * 1000

    def ends_ms(self, ts_ms: np.ndarray) -> np.ndarray:
        """Reset times (int64 epoch ms) of int64 epoch-ms timestamps; equal to `end` for each."""
        s = np.floor_divide(np.asarray(ts_ms, dtype=np.int64), 1000)
        return self._ends_s(s) * 1000

    def __str__(self) -> str:
        since = self.anchor.isoformat() if self.anchor else "1970-01-01"
        how = "calendar" if self.calendar_aligned else f"rolling from {since}"
        return f"{self.duration} ({how}, {getattr(self.tz, 'key', self.tz)})"


def period(
    reset_duration: str | Duration,
    tz: str | ZoneInfo = "UTC",
    calendar_aligned: bool = True,
    anchor: datetime | None = None,
) -> Period:
    """Convenience: ``period("1M", "Europe/Berlin")``."""
    d = reset_duration if isinstance(reset_duration, Duration) else parse_duration(reset_duration)
    return Period(d, ZoneInfo(tz) if isinstance(tz, str) else tz, calendar_aligned, anchor)


__all__: list[str] = [
    "DURATION_GRAMMAR", "Duration", "Period", "UNITS", "duration_problem", "parse_duration", "period_words",
    "period",
]  # fmt: skip
