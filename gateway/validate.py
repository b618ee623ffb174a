"""Is a reading storable? Checked per reading before the shared group commit.

Readings of every source are committed together, so a single reading the
buffer cannot store (a timestamp past SQLite's 64-bit INTEGER, dated 2300 by a
broken device clock) used to fail the whole commit, and every source with it.
A reading a sink can never carry (a device name with a newline: no line
protocol can escape it) used to be dead-lettered at the other end, one ERROR
line per reading. Both are refused here instead, one reading at a time, and
counted in ``gateway_readings_refused{driver,source,reason}``.

The clock-skew policy is in docs/data-model.md ("Timestamps and clock skew").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from gateway.frame import Frame, FrameFields
from gateway.model import Reading

NS: Final = 1_000_000_000
# Past SQLite's INTEGER (and InfluxDB's int64 nanoseconds): nothing can store it.
MAX_TS_NS: Final = 2**63 - 1
MIN_TS_NS: Final = 0  # before 1970: no device of ours was measuring; negative times break stores
# A reading dated further ahead of the gateway's clock than this comes from a wrong device clock.
MAX_FUTURE_S: Final = 24 * 3600
MAX_NAME_LEN: Final = 256

TIMESTAMP_OUT_OF_RANGE: Final = "timestamp_out_of_range"
TIMESTAMP_IN_FUTURE: Final = "timestamp_in_future"
BAD_NAME: Final = "bad_name"
BAD_TAG: Final = "bad_tag"
_LAYOUT_MEMO: Final = "validate.names"  # FrameFields.memo key: each position's quantity/unit problem, or None

Problem = tuple[str, str]  # (reason, detail)


def name_problem(text: object) -> str | None:
    """Why a device, quantity, unit, site, gateway name or tag cannot be stored everywhere, or None."""
    if not isinstance(text, str):
        return f"not a string: {type(text).__name__}"
    if len(text) > MAX_NAME_LEN:
        return f"longer than {MAX_NAME_LEN} characters"
    if not text.isprintable():
        # Newlines, tabs, other control and format characters: line protocol
        # cannot escape a newline, and the rest are invisible in dashboards.
        return "contains control characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 (lone surrogate)"
    return None


class ReadingValidator:
    """``problem(reading, now_ns)`` -> (reason, detail) or None. Remembers names it has accepted."""

    def __init__(self, *, max_future_s: float = MAX_FUTURE_S) -> None:
        self.max_future_ns = int(max_future_s * NS)
        self._good: set[str] = set()  # names already accepted: one set lookup per name per reading
        # Tag sets already accepted, by identity: readings of one series share one (interned, immutable)
        # mapping, so one dict lookup replaces a check of every key and value per reading.
        self._good_tags: dict[int, Mapping[str, str]] = {}

    def _ts_problem(self, ts: object, now_ns: int) -> Problem | None:
        if type(ts) is not int or not MIN_TS_NS <= ts <= MAX_TS_NS:
            return TIMESTAMP_OUT_OF_RANGE, f"timestamp {ts!r} is outside 1970..2262 (no store can hold it)"
        if ts > now_ns + self.max_future_ns:
            return TIMESTAMP_IN_FUTURE, (
                f"timestamp {ts} is {(ts - now_ns) / NS / 3600:.1f} h ahead of the gateway clock "
                f"(more than {self.max_future_ns / NS / 3600:g} h: a wrong device clock?)"
            )
        return None

    def problem(self, r: Reading, device: str, now_ns: int) -> Problem | None:
        ts = r.ts_ns
        if type(ts) is not int or not MIN_TS_NS <= ts <= now_ns + self.max_future_ns:
            return self._ts_problem(ts, now_ns)
        good = self._good
        try:
            # The hot path: names seen before, one set lookup each (this runs for every reading).
            # "" is a valid unit but not a valid tag: it is never in `good` (so a tag key "" is never accepted)
            unit_ok = r.unit in good or r.unit == ""
            if (
                device in good
                and r.quantity in good
                and unit_ok
                and r.site in good
                and r.gateway in good
                and self._known_tags(r.tags)
            ):
                return None
        except TypeError:  # an unhashable name: the checks below say what is wrong
            pass
        return self._names_problem(r, device)

    def _known_tags(self, tags: Mapping[str, str]) -> bool:
        """True if every key and value was accepted before (the set is then remembered by identity).
        May raise TypeError for an unhashable tag: the callers' slow path says what is wrong."""
        if not tags or self._good_tags.get(id(tags)) is tags:
            return True
        good = self._good
        if all(k in good and v in good for k, v in tags.items()):
            self._remember_tags(tags)
            return True
        return False

    def _names_problem(self, r: Reading, device: str) -> Problem | None:
        for what, text in (("device", device), ("quantity", r.quantity), ("unit", r.unit), ("site", r.site),
                           ("gateway", r.gateway)):  # fmt: skip
            problem = self._name_problem(what, text)
            if problem is not None:
                return problem
        if r.tags:
            return self._tags_problem(r.tags)
        return None

    def _name_problem(self, what: str, text: object) -> Problem | None:
        if type(text) is not str or text not in self._good:
            why = name_problem(text) or (None if text or what == "unit" else "empty")
            if why is not None:
                return BAD_NAME, f"{what} {text!r}: {why}"
            if text:  # an accepted empty unit must not make an empty tag key acceptable
                self._remember(text)  # type: ignore[arg-type]  # a str: name_problem said so
        return None

    def frame_problems(self, frame: Frame, device: str, now_ns: int) -> Sequence[Problem | None] | None:
        """None if every value of the frame is storable, else each position's problem (None: storable).

        The same checks, in the same order, as ``problem`` for each value's Reading; the timestamp, the device,
        site, gateway and tags are checked once per frame, the quantities and units once per layout."""
        ts = frame.ts_ns
        if type(ts) is not int or not MIN_TS_NS <= ts <= now_ns + self.max_future_ns:
            return [self._ts_problem(ts, now_ns)] * len(frame.values)
        memo = frame.fields.memo
        layout = memo[_LAYOUT_MEMO] if _LAYOUT_MEMO in memo else _layout_problems(frame.fields)
        good = self._good
        try:
            if (
                layout is None
                and device in good
                and frame.site in good
                and frame.gateway in good
                and self._known_tags(frame.tags)
            ):
                return None
        except TypeError:  # an unhashable name: the checks below say what is wrong
            pass
        n = len(frame.values)
        problem = self._name_problem("device", device)
        if problem is not None:
            return [problem] * n
        rest = self._name_problem("site", frame.site) or self._name_problem("gateway", frame.gateway)
        if rest is None and frame.tags:
            rest = self._tags_problem(frame.tags)
        if layout is None:
            return None if rest is None else [rest] * n
        return [mine or rest for mine in layout]

    def _tags_problem(self, tags: Mapping[str, str]) -> tuple[str, str] | None:
        good = self._good
        for key, value in tags.items():
            for what, text in (("key", key), ("value", value)):
                if type(text) is not str or text not in good:
                    why = name_problem(text) or (None if text else "empty")
                    if why is not None:
                        return BAD_TAG, f"tag {what} {text!r}: {why}"
                    self._remember(text)
        self._remember_tags(tags)
        return None

    def _remember_tags(self, tags: Mapping[str, str]) -> None:
        # Only immutable mappings: a dict could be changed after it was checked.
        if not isinstance(tags, dict):
            if len(self._good_tags) >= 10_000:
                self._good_tags.clear()
            self._good_tags[id(tags)] = tags  # the reference keeps the id from being reused

    def _remember(self, text: str) -> None:
        if len(self._good) >= 50_000:  # tags with unbounded values: stay bounded
            self._good.clear()
        self._good.add(text)


def _layout_problems(fields: FrameFields) -> tuple[Problem | None, ...] | None:
    """Each position's quantity (then unit) problem, or None if all are storable; once per layout."""
    try:
        return fields.memo[_LAYOUT_MEMO]  # type: ignore[no-any-return]
    except KeyError:
        pass
    found: list[Problem | None] = []
    for quantity, unit in zip(fields.quantities, fields.units, strict=True):
        why = name_problem(quantity) or (None if quantity else "empty")
        if why is not None:
            found.append((BAD_NAME, f"quantity {quantity!r}: {why}"))
            continue
        why = name_problem(unit)
        found.append(None if why is None else (BAD_NAME, f"unit {unit!r}: {why}"))
    result = tuple(found) if any(found) else None
    fields.memo[_LAYOUT_MEMO] = result
    return result
