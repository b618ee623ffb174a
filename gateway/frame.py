"""Frames: one device, one timestamp, one tag set, N quantity/value pairs.

A poll of a Modbus meter yields dozens of values that share everything but
their quantity, unit and value. Carried as one ``Reading`` each, every stage
paid per value for what is per poll: building an object, looking up its
series, encoding its tags and its name. A ``Frame`` carries them together:
it is decoded in bulk by the driver, validated per schema, committed as one
buffer row and encoded once per sink (a SenML pack, one line-protocol line).

``Reading`` stays the per-value view (``Frame.readings()``) for drivers that
produce one value at a time, for tests and for the CLI; ``frame_of`` turns a
run of readings of one device, time and tag set (``same_frame``) into a frame.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from gateway.model import Quality, Reading, Value, make_reading
from gateway.tags import EMPTY_TAGS

# Distinct (quantity, unit) layouts remembered for sharing; past this many the
# table starts again (instances stay valid, they are only no longer shared).
_INTERN_MAX: Final = 10_000


class FrameFields:
    """The (quantity, unit) of each position of a frame. Interned: every frame
    of one device and tag set shares one instance, so per-layout work (name
    checks, unit conversion plans, encoders' name prefixes) is done once and
    kept in ``memo``, keyed by whoever computed it."""

    __slots__ = ("memo", "quantities", "units")
    _interned: ClassVar[dict[tuple[tuple[str, ...], tuple[str, ...]], FrameFields]] = {}

    def __init__(self, quantities: tuple[str, ...], units: tuple[str, ...]) -> None:
        if len(quantities) != len(units):
            raise ValueError(f"{len(quantities)} quantities but {len(units)} units")
        self.quantities = quantities
        self.units = units
        self.memo: dict[str, Any] = {}

    @classmethod
    def of(cls, quantities: Sequence[str], units: Sequence[str]) -> FrameFields:
        key = (tuple(quantities), tuple(units))
        hit = cls._interned.get(key)
        if hit is None:
            if len(cls._interned) >= _INTERN_MAX:
                cls._interned.clear()
            hit = cls._interned[key] = cls(*key)
        return hit

    def __len__(self) -> int:
        return len(self.quantities)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, FrameFields):
            return NotImplemented
        return self.quantities == other.quantities and self.units == other.units

    def __hash__(self) -> int:
        return hash((self.quantities, self.units))

    def __repr__(self) -> str:
        return f"FrameFields({list(zip(self.quantities, self.units, strict=True))})"


@dataclass(frozen=True, slots=True)
class Frame:
    """Values of one device at one instant with one tag set.

    ``values[i]`` is of quantity ``fields.quantities[i]`` in ``fields.units[i]``.
    ``qualities`` is None when every value is GOOD (the common case, free).
    ``values`` and ``tags`` must not be mutated after construction.
    """

    ts_ns: int
    site: str
    gateway: str
    device: str
    fields: FrameFields
    values: Sequence[Value]
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS, hash=False)
    qualities: tuple[Quality, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.values) != len(self.fields):
            raise ValueError(f"frame of {self.device}: {len(self.values)} values for {len(self.fields)} fields")
        if self.qualities is not None and len(self.qualities) != len(self.values):
            raise ValueError(f"frame of {self.device}: {len(self.qualities)} qualities for {len(self.values)} values")

    def __len__(self) -> int:
        return len(self.values)

    # Equal by content: the values of one frame may be a tuple or an array('d') (``float_array``).
    def __eq__(self, other: object) -> bool:
        if type(other) is not Frame:
            return NotImplemented
        return (
            self.ts_ns == other.ts_ns
            and self.device == other.device
            and self.site == other.site
            and self.gateway == other.gateway
            and self.fields == other.fields
            and (self.values is other.values or tuple(self.values) == tuple(other.values))
            and self.tags == other.tags
            and self.qualities == other.qualities
        )

    def __hash__(self) -> int:
        return hash((self.ts_ns, self.site, self.gateway, self.device, self.fields, tuple(self.values)))

    def quality(self, index: int) -> Quality:
        return Quality.GOOD if self.qualities is None else self.qualities[index]

    def readings(self) -> list[Reading]:
        """The per-value view, in position order."""
        ts, site, gw, dev, tags = self.ts_ns, self.site, self.gateway, self.device, self.tags
        quals = self.qualities or (Quality.GOOD,) * len(self.values)
        return [
            make_reading(ts, site, gw, dev, q, v, u, tags, ql)
            for q, u, v, ql in zip(self.fields.quantities, self.fields.units, self.values, quals, strict=True)
        ]

    def select(self, indexes: Sequence[int]) -> Frame:
        """A frame of the values at ``indexes`` (in that order)."""
        f = self.fields
        return Frame(
            self.ts_ns,
            self.site,
            self.gateway,
            self.device,
            FrameFields.of([f.quantities[i] for i in indexes], [f.units[i] for i in indexes]),
            tuple(self.values[i] for i in indexes),
            self.tags,
            None if self.qualities is None else tuple(self.qualities[i] for i in indexes),
        )

    def slice(self, start: int, stop: int) -> Frame:
        """The values at positions [start, stop)."""
        if start <= 0 and stop >= len(self.values):
            return self
        return self.select(range(max(start, 0), min(stop, len(self.values))))


Item = Reading | Frame  # what drivers emit and the buffer stores

_new = object.__new__
_SETTERS = {name: Frame.__dict__[name].__set__ for name in Frame.__slots__}
_set_ts_ns, _set_site, _set_gateway, _set_device = (_SETTERS[n] for n in ("ts_ns", "site", "gateway", "device"))
_set_fields, _set_values, _set_tags, _set_qualities = (_SETTERS[n] for n in ("fields", "values", "tags", "qualities"))


def make_frame(
    ts_ns: int,
    site: str,
    gateway: str,
    device: str,
    fields: FrameFields,
    values: Sequence[Value],
    tags: Mapping[str, str],
    qualities: tuple[Quality, ...] | None,
) -> Frame:
    """``Frame(...)`` with every field given and already consistent (no length checks), at a fraction of the cost.

    The same idea as ``gateway.model.make_reading``: a frozen dataclass's ``__init__`` plus ``__post_init__``
    cost about 1.5 us per frame, and the poller and the normaliser build one per tag set and poll (one per
    value for a device with a tag per register). Callers guarantee what ``__post_init__`` checks.
    """
    f = _new(Frame)
    _set_ts_ns(f, ts_ns)
    _set_site(f, site)
    _set_gateway(f, gateway)
    _set_device(f, device)
    _set_fields(f, fields)
    _set_values(f, values)
    _set_tags(f, tags)
    _set_qualities(f, qualities)
    return f


def float_array(values: Iterable[float]) -> array[float]:
    """Floats as an ``array('d')``: 8 bytes a value instead of a float object and a tuple slot (32 bytes).

    For the values of a frame that lives a while (buffered, shown on the status page). The caller
    guarantees they are all floats: an int would come back as a float.
    """
    return array("d", values)


def all_floats(values: Sequence[object]) -> bool:
    """Whether every value is a float (not a subclass): what ``float_array`` may hold without a change."""
    return set(map(type, values)) == _FLOAT_ONLY


_FLOAT_ONLY: Final = {float}


def count_values(items: Iterable[Item]) -> int:
    # A loop, not sum() over a generator: 0.2 us instead of 0.4-0.7 for a poll's few frames, on every emit.
    n = 0
    for i in items:
        n += len(i.values) if type(i) is Frame else 1
    return n


def as_readings(items: Iterable[Item]) -> list[Reading]:
    """Every value as a Reading, in order."""
    out: list[Reading] = []
    for item in items:
        if type(item) is Frame:
            out.extend(item.readings())
        else:
            out.append(item)  # type: ignore[arg-type]
    return out


def same_frame(head: Reading, r: Reading) -> bool:
    """Whether ``r`` belongs in the frame of ``head``: same device, timestamp and tag set."""
    return (
        r.ts_ns == head.ts_ns
        and r.device == head.device
        and r.site == head.site
        and r.gateway == head.gateway
        and (r.tags is head.tags or r.tags == head.tags)
    )


def frame_of(run: Sequence[Reading]) -> Frame:
    """The frame of readings that are ``same_frame`` as the first (in their order)."""
    head = run[0]
    quals = tuple(r.quality for r in run)
    return make_frame(
        head.ts_ns,
        head.site,
        head.gateway,
        head.device,
        FrameFields.of([r.quantity for r in run], [r.unit for r in run]),
        tuple(r.value for r in run),
        head.tags,
        None if all(q is Quality.GOOD for q in quals) else quals,
    )
