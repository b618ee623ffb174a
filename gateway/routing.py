"""Per-sink routing: which readings a sink receives (selection) and in what form (shaping).

Evaluated by the sink's dispatcher on what it takes from the buffer (gateway.dispatch): the
buffer keeps one copy of every reading, each sink's cursor moves past the readings its rules
do not select, and a sink never sees an unselected reading, in a retry, a split or a dead
letter. Vocabulary and the mapping to Telegraf's filters: docs/routing.md.

A Reading carries no source: a ``source`` glob is resolved when the config is loaded into the
devices that the matching sources declare (``gateway.routing_catalogue``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gateway.buffer_types import BufferedReading
from gateway.config_types import ConfigValueError
from gateway.model import Reading, make_reading
from gateway.validate import name_problem

POSITION_TAGS = ("lat", "lon")  # what drivers stamp on a reading (drivers/serial/position.py)
POSITION_QUANTITIES = ("latitude", "longitude")
GEOHASH_TAG = "geohash"


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Globs = Annotated[list[str], BeforeValidator(_one_or_many)]
"""One glob (``"pm*"``) or a list of them; a value matches if any of them matches."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """One include/exclude rule: every key given must match (AND); a key's globs are alternatives (OR)."""

    source: Globs = Field(default_factory=list, description="source names (resolved to their devices at load)")
    device: Globs = Field(default_factory=list)
    quantity: Globs = Field(default_factory=list)
    tags: dict[str, Globs] = Field(
        default_factory=dict, description="tag key -> globs of its value; a reading without the tag does not match"
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Rule:
        if not (self.source or self.device or self.quantity or self.tags):
            raise ValueError("an empty rule matches every reading; give source, device, quantity or tags")
        return self


class Position(_Strict):
    """Coarsen a position: round it to ``decimals`` places, or replace it by a geohash of ``geohash`` characters."""

    decimals: int | None = Field(default=None, ge=0, le=6, description="2 ~ 1 km, 3 ~ 100 m")
    geohash: int | None = Field(default=None, ge=1, le=12, description="6 ~ 1.2 km x 0.6 km, 7 ~ 150 m")

    @model_validator(mode="after")
    def _exactly_one(self) -> Position:
        if (self.decimals is None) == (self.geohash is None):
            raise ValueError("set exactly one of decimals or geohash")
        return self


class Shape(_Strict):
    """Modifiers: change the readings a sink selected (drop/rename tags, drop quantities, coarsen a position)."""

    drop_tags: Globs = Field(default_factory=list, description="tag keys removed (Telegraf tagexclude)")
    keep_tags: Globs | None = Field(default=None, description="only these tag keys are kept (Telegraf taginclude)")
    rename_tags: dict[str, str] = Field(default_factory=dict, description="old key -> new key, after drop/keep")
    drop_quantities: Globs = Field(default_factory=list, description="readings of these quantities are not sent")
    position: Position | None = None

    @model_validator(mode="after")
    def _renames_are_tag_keys(self) -> Shape:
        for old, new in self.rename_tags.items():
            why = name_problem(new) or ("empty" if not new else None)
            if why is not None:
                raise ConfigValueError(("rename_tags", old), f"{new!r} is not a tag key: {why}")
        targets = list(self.rename_tags.values())
        if len(set(targets)) != len(targets):
            raise ConfigValueError(("rename_tags",), "two tags renamed to one key: one would overwrite the other")
        return self

    @property
    def is_identity(self) -> bool:
        return not (self.drop_tags or self.keep_tags is not None or self.rename_tags or self.drop_quantities
                    or self.position)  # fmt: skip


class RouteConfig(_Strict):
    """The routing keys of a sink's config section (mixed into ``gateway.sink.SinkConfig``)."""

    include: list[Rule] = Field(default_factory=list, description="selectors; none: every reading is selected")
    exclude: list[Rule] = Field(default_factory=list, description="selectors; a matching reading is not selected")
    shape: Shape = Field(default_factory=Shape)

    @property
    def is_identity(self) -> bool:
        return not self.include and not self.exclude and self.shape.is_identity


# --- compiled form ------------------------------------------------------------


def glob_matcher(globs: Sequence[str]) -> Callable[[str], bool]:
    """One regex for a list of globs (case-sensitive, like device and quantity names)."""
    pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
    return lambda value: pattern.match(value) is not None


def _tag_matcher(key: str, globs: Sequence[str]) -> Callable[[Reading], bool]:
    matches = glob_matcher(globs)

    def test(r: Reading) -> bool:
        value = r.tags.get(key)
        return value is not None and matches(value)

    return test


def compile_rule(rule: Rule, source_devices: Mapping[str, Collection[str]]) -> Callable[[Reading], bool]:
    """``source_devices``: the devices of each configured source (see gateway.routing_catalogue)."""
    tests: list[Callable[[Reading], bool]] = []
    if rule.source:
        source_matches = glob_matcher(rule.source)
        devices = frozenset(d for s, devs in source_devices.items() if source_matches(s) for d in devs)
        tests.append(lambda r: r.device in devices)
    if rule.device:
        device_matches = glob_matcher(rule.device)
        tests.append(lambda r: device_matches(r.device))
    if rule.quantity:
        quantity_matches = glob_matcher(rule.quantity)
        tests.append(lambda r: quantity_matches(r.quantity))
    tests.extend(_tag_matcher(k, g) for k, g in rule.tags.items())
    return lambda r: all(test(r) for test in tests)


class Route:
    """A sink's compiled rules: ``apply`` turns a batch taken from the buffer into what the sink may see."""

    def __init__(self, config: RouteConfig, source_devices: Mapping[str, Collection[str]]) -> None:
        self.config = config
        self.is_identity = config.is_identity
        includes = [compile_rule(r, source_devices) for r in config.include]
        excludes = [compile_rule(r, source_devices) for r in config.exclude]
        shape = config.shape
        drop_quantity = glob_matcher(shape.drop_quantities) if shape.drop_quantities else None
        if shape.position is not None and shape.position.geohash is not None:
            # A latitude alone cannot become a geohash: position readings are not sent in that mode.
            dropped = glob_matcher(POSITION_QUANTITIES)
            drop_quantity = dropped if drop_quantity is None else _either(drop_quantity, dropped)
        self._drop_quantity = drop_quantity
        self._shape_tags = _tag_shaper(shape)
        self._decimals = shape.position.decimals if shape.position is not None else None
        self._uses_tags = any(r.tags for r in (*config.include, *config.exclude))
        self._includes = includes
        self._excludes = excludes
        self._decisions: dict[tuple[str, str], bool] = {}
        self._shaped_tags: dict[int, tuple[Mapping[str, str], Mapping[str, str] | None]] = {}

    def selects(self, r: Reading) -> bool:
        """The selectors (include/exclude) and the quantities the shape drops."""
        if self._uses_tags:
            return self._decide(r)
        key = (r.device, r.quantity)
        decision = self._decisions.get(key)
        if decision is None:
            if len(self._decisions) > 100_000:  # device names are bounded in practice; memory is not
                self._decisions.clear()
            decision = self._decisions[key] = self._decide(r)
        return decision

    def _decide(self, r: Reading) -> bool:
        if self._includes and not any(test(r) for test in self._includes):
            return False
        if any(test(r) for test in self._excludes):
            return False
        return self._drop_quantity is None or not self._drop_quantity(r.quantity)

    def shape(self, r: Reading) -> Reading:
        tags = r.tags
        if self._shape_tags is not None and tags:
            # Readings of one series share one tags object (the buffer's series cache): shape it once.
            hit = self._shaped_tags.get(id(tags))
            if hit is not None and hit[0] is tags:
                new_tags = hit[1]
            else:
                if len(self._shaped_tags) > 10_000:
                    self._shaped_tags.clear()
                new_tags = self._shape_tags(tags)
                self._shaped_tags[id(tags)] = (tags, new_tags)  # holds ``tags``: its id is not reused meanwhile
            if new_tags is not None:
                tags = new_tags
        value = r.value
        if self._decimals is not None and r.quantity in POSITION_QUANTITIES and r.is_numeric:
            value = round(float(value), self._decimals)
        if tags is r.tags and value is r.value:
            return r
        return make_reading(r.ts_ns, r.site, r.gateway, r.device, r.quantity, value, r.unit, tags, r.quality)

    def apply(self, batch: list[BufferedReading]) -> list[BufferedReading]:
        """The selected readings of ``batch``, shaped, with their buffer ids."""
        if self.is_identity:
            return batch
        selects, shape = self.selects, self.shape
        return [BufferedReading(item.id, shape(item.reading)) for item in batch if selects(item.reading)]


def _either(a: Callable[[str], bool], b: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: a(value) or b(value)


def _tag_shaper(shape: Shape) -> Callable[[Mapping[str, str]], dict[str, str] | None] | None:
    """A function of a reading's tags -> its new tags, or None if they stay as they are."""
    drop = glob_matcher(shape.drop_tags) if shape.drop_tags else None
    keep = glob_matcher(shape.keep_tags) if shape.keep_tags is not None else None
    if shape.keep_tags is not None and not shape.keep_tags:
        keep = lambda key: False  # noqa: E731 - keep_tags = [] removes every tag
    rename = shape.rename_tags
    position = shape.position
    if drop is None and keep is None and not rename and position is None:
        return None

    def shaped(tags: Mapping[str, str]) -> dict[str, str] | None:
        out = {k: v for k, v in tags.items() if (keep is None or keep(k)) and (drop is None or not drop(k))}
        if position is not None:
            _coarsen(out, position)
        if rename:
            out = {rename.get(k, k): v for k, v in out.items()}
        return None if out == tags else out

    return shaped


def _coarsen(tags: dict[str, str], position: Position) -> None:
    if not any(k in tags for k in POSITION_TAGS):
        return
    lat, lon = (_float(tags.pop(k, None)) for k in POSITION_TAGS)
    if lat is None or lon is None:
        return  # half a position or not a number: dropped, never passed on precise
    if position.geohash is not None:
        tags[GEOHASH_TAG] = geohash(lat, lon, position.geohash)
    else:
        decimals = position.decimals or 0
        tags["lat"], tags["lon"] = f"{lat:.{decimals}f}", f"{lon:.{decimals}f}"


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


def geohash(latitude: float, longitude: float, length: int) -> str:
    """The standard geohash (Niemeyer, 2008) of a point, ``length`` characters.

    Twenty lines here rather than a dependency: the PyPI packages that do it are
    either unmaintained or pull in a compiled extension for the same loop.
    """
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    latitude, longitude = min(max(latitude, -90.0), 90.0), min(max(longitude, -180.0), 180.0)
    out: list[str] = []
    bits, ch, even = 0, 0, True
    while len(out) < length:
        if even:
            mid = (lon_lo + lon_hi) / 2
            ch = (ch << 1) | (longitude >= mid)
            lon_lo, lon_hi = (mid, lon_hi) if longitude >= mid else (lon_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            ch = (ch << 1) | (latitude >= mid)
            lat_lo, lat_hi = (mid, lat_hi) if latitude >= mid else (lat_lo, mid)
        even = not even
        bits += 1
        if bits == 5:
            out.append(_BASE32[ch])
            bits, ch = 0, 0
    return "".join(out)


def identity_route() -> Route:
    return Route(RouteConfig(), {})


def matching(globs: Sequence[str], names: Iterable[str]) -> list[str]:
    matches = glob_matcher(globs)
    return [n for n in names if matches(n)]
