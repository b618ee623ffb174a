"""Model-based test of the durable buffer: random append / take / ack / set_sinks /
crash / reopen sequences against a plain in-memory model (after Vector's
disk_v2 model tests). Small ``max_bytes`` values make the overflow policies fire.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.buffer import DurableBuffer, Overflow, Sync, logical_size
from gateway.model import Quality, Reading

SINKS = ("influx", "mqtt", "local")

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
    rows: list[tuple[int, Reading]] = field(default_factory=list)
    last_id: int = 0
    cursors: dict[str, int] = field(default_factory=dict)
    dropped_oldest: int = 0
    dropped_newest: int = 0
    # drop_oldest deleted these while the only sink had taken them: dropped only if never acked
    in_flight: set[int] = field(default_factory=set)
    taken: dict[str, int] = field(default_factory=dict)  # per sink: highest id taken since reading from the cursor

    @property
    def bytes(self) -> int:
        return sum(logical_size(r) for _, r in self.rows)

    def append(self, batch: list[Reading]) -> tuple[int, int, int]:
        sizes = [logical_size(r) for r in batch]
        kept = list(batch)
        dropped_new = dropped_old = 0
        if self.bytes + sum(sizes) > self.max_bytes:
            if self.overflow == "drop_newest":
                room, n = self.max_bytes - self.bytes, 0
                while n < len(sizes) and sizes[n] <= room:
                    room -= sizes[n]
                    n += 1
                dropped_new, kept = len(batch) - n, batch[:n]
            else:
                while sum(sizes) > self.max_bytes:
                    sizes.pop(0)
                    kept.pop(0)
                    dropped_old += 1
                need = self.bytes + sum(sizes) - self.max_bytes
                while need > 0:
                    row_id, r = self.rows.pop(0)
                    need -= logical_size(r)
                    if len(self.cursors) == 1 and self._held(row_id):
                        self.in_flight.add(row_id)
                    else:
                        dropped_old += 1
        for r in kept:
            self.last_id += 1
            self.rows.append((self.last_id, r))
        self.dropped_oldest += dropped_old
        self.dropped_newest += dropped_new
        return len(kept), dropped_new, dropped_old

    def _held(self, row_id: int) -> bool:
        ((sink, cursor),) = self.cursors.items()
        return cursor < row_id <= self.taken.get(sink, cursor)

    def settle_all(self) -> None:
        """What the dispatchers held in memory is gone (restart, new set of sinks)."""
        self.dropped_oldest += len(self.in_flight)
        self.in_flight.clear()
        self.taken.clear()

    def collect(self) -> None:
        if self.cursors:
            floor = min(self.cursors.values())
            self.rows = [(i, r) for i, r in self.rows if i > floor]

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

    def take(self, sink: str, limit: int, after: int | None) -> list[tuple[int, Reading]]:
        cursor = self.cursors[sink]
        start = max(cursor, after if after is not None else -1)
        if start == cursor:
            self.taken[sink] = cursor
        got = [(i, r) for i, r in self.rows if i > start][:limit]
        if got:
            self.taken[sink] = max(self.taken.get(sink, start), got[-1][0])
        return got


class BufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-model-"))
        self.generation = 0
        self.seen_ids: list[int] = [0]

    @initialize(
        max_readings=st.sampled_from([6, 25, 10_000]),
        overflow=st.sampled_from(["drop_oldest", "drop_newest"]),
        sync=st.sampled_from(["normal", "normal", "normal", "full"]),  # full costs fsyncs: 1 in 4
        # the in-memory tail of newest readings: none, tiny (trimmed all the time), default
        tail_max=st.sampled_from([0, 3, 10_000]),
    )
    def start(self, max_readings: int, overflow: Overflow, sync: Sync, tail_max: int) -> None:
        self.options = {"max_bytes": max_readings * 90, "overflow": overflow, "sync": sync, "tail_max": tail_max}
        self.model = Model(max_readings * 90, overflow)
        self.buf = DurableBuffer(self.path, **self.options)  # type: ignore[arg-type]

    @property
    def path(self) -> Path:
        return self.dir / f"gen{self.generation}" / "buffer.db"

    @rule(batch=st.lists(readings, max_size=12))
    def append(self, batch: list[Reading]) -> None:
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
        assert stats.readings == len(model.rows)
        assert stats.bytes == model.bytes <= model.max_bytes
        assert (stats.dropped_oldest_total, stats.dropped_newest_total) == (model.dropped_oldest, model.dropped_newest)
        assert stats.oldest_ts_ns == (model.rows[0][1].ts_ns if model.rows else None)
        assert set(stats.sinks) == set(model.cursors)
        for name, sink in stats.sinks.items():
            assert sink.acked_id == model.cursors[name]
            assert sink.pending == sum(1 for i, _ in model.rows if i > model.cursors[name])

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
