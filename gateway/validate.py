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

from collections.abc import Mapping
from typing import Final

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

    def problem(self, r: Reading, device: str, now_ns: int) -> tuple[str, str] | None:
        ts = r.ts_ns
        if type(ts) is not int or not MIN_TS_NS <= ts <= MAX_TS_NS:
            return TIMESTAMP_OUT_OF_RANGE, f"timestamp {ts!r} is outside 1970..2262 (no store can hold it)"
        if ts > now_ns + self.max_future_ns:
            return TIMESTAMP_IN_FUTURE, (
                f"timestamp {ts} is {(ts - now_ns) / NS / 3600:.1f} h ahead of the gateway clock "
                f"(more than {self.max_future_ns / NS / 3600:g} h: a wrong device clock?)"
            )
        good = self._good
        try:
            # The hot path: names seen before, one set lookup each (this runs for every reading).
            if device in good and r.quantity in good and r.unit in good and r.site in good and r.gateway in good:
                tags = r.tags
                if not tags or self._good_tags.get(id(tags)) is tags:
                    return None
                if all(k in good and v in good for k, v in tags.items()):
                    self._remember_tags(tags)
                    return None
        except TypeError:  # an unhashable name: the checks below say what is wrong
            pass
        return self._names_problem(r, device)

    def _names_problem(self, r: Reading, device: str) -> tuple[str, str] | None:
        good = self._good
        for what, text in (("device", device), ("quantity", r.quantity), ("unit", r.unit), ("site", r.site),
                           ("gateway", r.gateway)):  # fmt: skip
            if type(text) is not str or text not in good:
                why = name_problem(text) or (None if text or what == "unit" else "empty")
                if why is not None:
                    return BAD_NAME, f"{what} {text!r}: {why}"
                self._remember(text)
        if r.tags:
            return self._tags_problem(r.tags)
        return None

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
