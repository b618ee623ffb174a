"""Model-based test of the durable buffer: random append / take / take_frames / ack /
dead_letter / set_sinks / crash / reopen sequences against a plain in-memory
model (after Vector's disk_v2 model tests). Appends mix Readings and Frames of
1..50 values (one row each, one id per value), so cursors and acks land inside
frames. Small ``max_bytes`` values make the overflow policies fire.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.buffer import BufferedFrame, DurableBuffer, Overflow, Sync, item_size
from gateway.frame import Frame, FrameFields, Item
from gateway.model import Quality, Reading

SINKS = ("influx", "mqtt", "local")
DEAD_KEPT = 5  # max_dead_letters: small, so that trimming happens

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=12),
)
readings = st.builds(
    Reading,
    ts_ns=st.integers(min_value=0, max_value=2**62),
    site=st.sampled_from(["s1", "s2"]),
    gateway=st.just("gw"),
    device=st.sampled_from(["dev-a", "dev-b", "dév-ç"]),
    quantity=st.sampled_from(["temperature", "sequence", "status"]),
    value=values,
    unit=st.sampled_from(["Cel", "count", "/"]),
    tags=st.sampled_from([{}, {"room": "1"}, {"room": "2", "floor": "0"}]),
    quality=st.sampled_from(list(Quality)),
)

FIELDS = [FrameFields.of([f"q{i}" for i in range(n)], ["V" if i % 2 else "A" for i in range(n)]) for n in range(51)]


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    n = draw(st.integers(1, 50))
    # Mostly homogeneous (the packed float and int64 payloads), sometimes mixed (JSON).
    element = draw(
        st.sampled_from(
            [
                st.floats(allow_nan=True, allow_infinity=True),
                st.integers(min_value=-(2**63), max_value=2**63 - 1),
                values,
            ]
        )
    )
    frame_values = draw(st.lists(element, min_size=n, max_size=n))
    qualities = draw(st.one_of(st.none(), st.lists(st.sampled_from(list(Quality)), min_size=n, max_size=n)))
    return Frame(
        draw(st.integers(min_value=0, max_value=2**62)),
        draw(st.sampled_from(["s1", "s2"])),
        "gw",
        draw(st.sampled_from(["dev-a", "dév-ç"])),
        FIELDS[n],
        tuple(frame_values),
        draw(st.sampled_from([{}, {"room": "1"}])),
        None if qualities is None else tuple(qualities),
    )


items = st.one_of(readings, frames())


def values_of(item: Item) -> list[Reading]:
    return item.readings() if isinstance(item, Frame) else [item]


def key(r: Reading) -> tuple[object, ...]:
    """Exact identity of a reading: type and repr tell 1 from 1.0 from True, -0.0 from 0.0, and NaN equals NaN."""
    v = r.value
    return (
        r.ts_ns,
        r.site,
        r.gateway,
        r.device,
        r.quantity,
        type(v),
        repr(v),
        r.unit,
        sorted(r.tags.items()),
        r.quality,
    )


@dataclass
class Model:
    max_bytes: int
    overflow: Overflow
    rows: list[tuple[int, Item]] = field(default_factory=list)  # (id of its first value, item)
    last_id: int = 0
    cursors: dict[str, int] = field(default_factory=dict)
    dropped_oldest: int = 0
    dropped_newest: int = 0
    # drop_oldest deleted these while the only sink had taken them: dropped only if never acked
    in_flight: set[int] = field(default_factory=set)
    taken: dict[str, int] = field(default_factory=dict)  # per sink: highest id taken since reading from the cursor
    dead: list[tuple[int, str, tuple[object, ...]]] = field(default_factory=list)  # kept dead letters, oldest first
    dead_total: int = 0

    @property
    def bytes(self) -> int:
        return sum(item_size(item) for _, item in self.rows)

    @property
    def values(self) -> list[tuple[int, Reading]]:
        return [(first + i, r) for first, item in self.rows for i, r in enumerate(values_of(item))]

    def append(self, batch: list[Item]) -> tuple[int, int, int]:
        sizes = [item_size(item) for item in batch]
        kept = list(batch)
        dropped_new = dropped_old = 0
        if self.bytes + sum(sizes) > self.max_bytes:
            if self.overflow == "drop_newest":
                room, n = self.max_bytes - self.bytes, 0
                while n < len(sizes) and sizes[n] <= room:
                    room -= sizes[n]
                    n += 1
                dropped_new, kept = sum(len(values_of(i)) for i in batch[n:]), batch[:n]
            else:
                while sum(sizes) > self.max_bytes:  # the batch alone does not fit: its oldest items go
                    sizes.pop(0)
                    dropped_old += len(values_of(kept.pop(0)))
                need = self.bytes + sum(sizes) - self.max_bytes
                floor = min(self.cursors.values()) if self.cursors else -1
                while need > 0:  # whole rows, oldest first
                    first, item = self.rows.pop(0)
                    need -= item_size(item)
                    for row_id in range(first, first + len(values_of(item))):
                        if row_id <= floor:
                            continue  # every sink has it (the acked front of a frame)
                        if len(self.cursors) == 1 and self._held(row_id):
                            self.in_flight.add(row_id)
                        else:
                            dropped_old += 1
        for item in kept:
            self.rows.append((self.last_id + 1, item))
            self.last_id += len(values_of(item))
        self.dropped_oldest += dropped_old
        self.dropped_newest += dropped_new
        return sum(len(values_of(i)) for i in kept), dropped_new, dropped_old

    def _held(self, row_id: int) -> bool:
        ((sink, cursor),) = self.cursors.items()
        return cursor < row_id <= self.taken.get(sink, cursor)

    def settle_all(self) -> None:
        """What the dispatchers held in memory is gone (restart, new set of sinks)."""
        self.dropped_oldest += len(self.in_flight)
        self.in_flight.clear()
        self.taken.clear()

    def collect(self) -> None:
        """Delete the rows whose values every sink has acked (a frame only whole)."""
        if self.cursors:
            floor = min(self.cursors.values())
            self.rows = [(i, item) for i, item in self.rows if i + len(values_of(item)) - 1 > floor]

    def set_sinks(self, names: list[str]) -> list[str]:
        self.settle_all()
        removed = sorted(n for n in self.cursors if n not in names)
        start = self.rows[0][0] - 1 if self.rows else self.last_id
        self.cursors = {n: self.cursors.get(n, start) for n in names}
        self.collect()
        return removed

    def ack(self, sink: str, up_to: int, first: int | None) -> int:
        """Delivered: ids first..up_to. Returns the in-flight readings this settles as dropped."""
        cursor = self.cursors[sink]
        target = min(up_to, self.last_id)
        if target <= cursor:
            return 0
        delivered_from = first if first is not None else cursor + 1
        lost = [i for i in self.in_flight if i <= target and i < delivered_from]
        self.in_flight -= {i for i in self.in_flight if i <= target}
        self.dropped_oldest += len(lost)
        self.cursors[sink] = target
        self.collect()
        return len(lost)

    def _start(self, sink: str, after: int | None) -> int:
        cursor = self.cursors[sink]
        start = max(cursor, after if after is not None else -1)
        if start == cursor:
            self.taken[sink] = cursor
        return start

    def take(self, sink: str, limit: int, after: int | None) -> list[tuple[int, Reading]]:
        start = self._start(sink, after)
        got = [(i, r) for i, r in self.values if i > start][:limit]
        if got:
            self.taken[sink] = max(self.taken.get(sink, start), got[-1][0])
        return got

    def take_frames(self, sink: str, limit: int, after: int | None) -> list[tuple[int, Reading]]:
        """The values take_frames returns: whole items after ``start`` (the first cut
        at it) up to ``limit`` values, at least one item."""
        start = self._start(sink, after)
        got: list[tuple[int, Reading]] = []
        for first, item in self.rows:
            part = [(first + i, r) for i, r in enumerate(values_of(item)) if first + i > start]
            if not part:
                continue
            if got and len(got) + len(part) > limit:
                break
            got.extend(part)
            if len(got) >= limit:
                break
        if got:
            self.taken[sink] = max(self.taken.get(sink, start), got[-1][0])
        return got

    def dead_letter(self, sink: str, got: list[tuple[int, Reading]], keep: int) -> None:
        self.dead.extend((i, sink, key(r)) for i, r in got)
        del self.dead[: max(0, len(self.dead) - keep)]
        self.dead_total += len(got)


def flatten(frames: list[BufferedFrame]) -> list[tuple[int, Reading]]:
    """The values of frames as (id, reading); also checks each frame's ids are its values'."""
    out = [(b.id + i, r) for b in frames for i, r in enumerate(b.frame.readings())]
    assert [i for i, _ in out] == list(range(out[0][0], out[0][0] + len(out))) if out else True
    return out


class BufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-model-"))
        self.generation = 0
        self.seen_ids: list[int] = [0]

    @initialize(
        max_readings=st.sampled_from([6, 25, 200, 10_000]),
        overflow=st.sampled_from(["drop_oldest", "drop_newest"]),
        sync=st.sampled_from(["normal", "normal", "normal", "full"]),  # full costs fsyncs: 1 in 4
        # the in-memory tail of newest values: none, tiny (trimmed all the time), about one frame, default
        tail_max=st.sampled_from([0, 3, 60, 10_000]),
    )
    def start(self, max_readings: int, overflow: Overflow, sync: Sync, tail_max: int) -> None:
        self.options = {
            "max_bytes": max_readings * 90,
            "overflow": overflow,
            "sync": sync,
            "tail_max": tail_max,
            "max_dead_letters": DEAD_KEPT,
        }
        self.model = Model(max_readings * 90, overflow)
        self.buf = DurableBuffer(self.path, **self.options)  # type: ignore[arg-type]

    @property
    def path(self) -> Path:
        return self.dir / f"gen{self.generation}" / "buffer.db"

    @rule(batch=st.lists(items, max_size=12))
    def append(self, batch: list[Item]) -> None:
        result = self.buf.append(batch)
        assert (result.accepted, result.dropped_newest, result.dropped_oldest) == self.model.append(batch)

    @rule(names=st.lists(st.sampled_from(SINKS), unique=True, max_size=3))
    def set_sinks(self, names: list[str]) -> None:
        assert self.buf.set_sinks(names) == self.model.set_sinks(names)

    @precondition(lambda self: self.model.cursors)
    @rule(data=st.data(), limit=st.integers(1, 20), pipelined=st.booleans())
    def take(self, data: st.DataObject, limit: int, pipelined: bool) -> None:
        sink = data.draw(st.sampled_from(sorted(self.model.cursors)))
        after = data.draw(st.sampled_from(self.seen_ids)) if pipelined else None
        got = self.buf.take(sink, limit, after)
        want = self.model.take(sink, limit, after)
        assert [(b.id, key(b.reading)) for b in got] == [(i, key(r)) for i, r in want]
        self.seen_ids.extend(b.id for b in got)

    @precondition(lambda self: self.model.cursors)
    @rule(data=st.data(), limit=st.integers(1, 60), pipelined=st.booleans())
    def take_frames(self, data: st.DataObject, limit: int, pipelined: bool) -> None:
        sink = data.draw(st.sampled_from(sorted(self.model.cursors)))
        after = data.draw(st.sampled_from(self.seen_ids)) if pipelined else None
        got = self.buf.take_frames(sink, limit, after)
        want = self.model.take_frames(sink, limit, after)
        assert [(i, key(r)) for i, r in flatten(got)] == [(i, key(r)) for i, r in want]
        self.seen_ids.extend(b.last_id for b in got)
        self.seen_ids.extend(b.id + len(b.frame) // 2 for b in got)  # acks inside frames

    @precondition(lambda self: self.model.cursors)
    @rule(data=st.data(), limit=st.integers(1, 8))
    def dead_letter(self, data: st.DataObject, limit: int) -> None:
        """What a dispatcher does with values a sink refused for good: copy them, then ack."""
        sink = data.draw(st.sampled_from(sorted(self.model.cursors)))
        got = self.buf.take(sink, limit)
        want = self.model.take(sink, limit, None)
        self.buf.dead_letter(sink, got, "refused")
        self.model.dead_letter(sink, want, DEAD_KEPT)
        if got:
            assert self.buf.ack(sink, got[-1].id) == self.model.ack(sink, want[-1][0], None)

    @precondition(lambda self: self.model.cursors)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        sink = data.draw(st.sampled_from(sorted(self.model.cursors)))
        up_to = data.draw(st.sampled_from([*self.seen_ids, self.model.last_id, self.model.last_id + 5]))
        first = data.draw(st.sampled_from([None, *self.seen_ids]))  # the delivered batch's first id
        assert self.buf.ack(sink, up_to, first) == self.model.ack(sink, up_to, first)

    @rule()
    def crash(self) -> None:
        """State as after kill -9: the files as the last commit left them, no
        checkpoint, no close; the next process opens them and recovers."""
        old = self.path
        self.generation += 1
        self.path.parent.mkdir(parents=True)
        for suffix in ("", "-wal"):
            if Path(f"{old}{suffix}").exists():
                shutil.copyfile(f"{old}{suffix}", f"{self.path}{suffix}")
        self.buf.close()  # the old file is abandoned; closing only releases its lock
        self.buf = DurableBuffer(self.path, **self.options)  # type: ignore[arg-type]
        self.model.settle_all()

    @rule()
    def reopen(self) -> None:
        self.buf.close()
        self.buf = DurableBuffer(self.path, **self.options)  # type: ignore[arg-type]
        self.model.settle_all()

    @invariant()
    def stats_match_the_model(self) -> None:
        if not hasattr(self, "buf"):
            return
        stats = self.buf.stats()
        model = self.model
        assert stats.bytes == model.bytes <= model.max_bytes
        assert (stats.dropped_oldest_total, stats.dropped_newest_total) == (model.dropped_oldest, model.dropped_newest)
        assert stats.oldest_ts_ns == (model.rows[0][1].ts_ns if model.rows else None)
        for name, cursor in model.cursors.items():
            pending = [r for i, r in model.values if i > cursor]
            assert stats.sinks[name].oldest_pending_ts_ns == (pending[0].ts_ns if pending else None)
        assert set(stats.sinks) == set(model.cursors)
        assert stats.readings == len(model.values)
        assert stats.dead_letters_total == model.dead_total
        for name, sink in stats.sinks.items():
            assert sink.acked_id == model.cursors[name]
            assert sink.pending == sum(1 for i, _ in model.values if i > model.cursors[name])
        letters = self.buf.dead_letters(limit=DEAD_KEPT)
        assert [(d.id, d.sink, key(d.reading)) for d in letters] == model.dead[::-1]

    def teardown(self) -> None:
        if hasattr(self, "buf"):
            self.buf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


BufferMachine.TestCase.settings = settings(
    max_examples=90,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBufferModel = BufferMachine.TestCase
