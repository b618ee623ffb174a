"""Per-sink routing through the real buffer and dispatcher: exactly the selected readings, shaped, nothing more."""

from __future__ import annotations

import asyncio
import fnmatch
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.buffer import AsyncBuffer
from gateway.dispatch import SinkDispatcher
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.routing import Position, Route, RouteConfig, Rule, Shape, geohash
from gateway.scheduling import Backoff
from gateway.sink import Outcome, SendResult, Sink, SinkConfig

T0 = 1_700_000_000_000_000_000
SOURCES = {"city": ["aq-1", "aq-2"], "operator": ["bay-1", "bay-2"]}


def reading(i: int, device: str = "aq-1", quantity: str = "pm2_5", tags: dict[str, str] | None = None) -> Reading:
    return Reading(ts_ns=T0 + i, site="s", gateway="g", device=device, quantity=quantity, value=i, unit="ug/m3",
                   tags=tags or {})  # fmt: skip


class RecordingSink(Sink):
    """Records every reading of every send call; refuses readings whose value is in ``poison``."""

    config_model = SinkConfig

    def __init__(self, name: str, *, poison: frozenset[int] = frozenset(), flaky: bool = False) -> None:
        super().__init__(SinkConfig(type="recording", name=name, batch_size=7), site="s", gateway="g")
        self.poison = poison
        self.flaky = flaky
        self.seen: list[Reading] = []  # everything ever handed to send, retries and splits included
        self.stored: list[Reading] = []

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        self.seen.extend(batch)
        if self.flaky and len(self.seen) % 3 == 1:
            return SendResult(Outcome.RETRY, "flaky")
        if any(r.value in self.poison for r in batch):
            return SendResult(Outcome.REJECTED, "poison")
        self.stored.extend(batch)
        return SendResult.ok()


def fast() -> Backoff:
    return Backoff(initial_s=0.001, cap_s=0.002)


async def deliver(
    tmp: Path, items: list[Reading], sinks: dict[str, tuple[RecordingSink, Route]], metrics: Metrics | None = None
) -> AsyncBuffer:
    """Append ``items``, run a dispatcher per sink until every cursor is at the end; returns the open buffer."""
    buffer = await AsyncBuffer.open(tmp / "buffer.sqlite")
    await buffer.set_sinks(list(sinks))
    await buffer.append(items)
    dispatchers = [SinkDispatcher(s, buffer, backoff=fast(), route=r, metrics=metrics) for s, r in sinks.values()]
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    try:
        async with asyncio.timeout(30):
            while (await buffer.stats()).readings:
                await asyncio.sleep(0.005)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return buffer


def route(include: list[Rule] = [], exclude: list[Rule] = [], shape: Shape | None = None) -> Route:  # noqa: B006
    return Route(RouteConfig(include=include, exclude=exclude, shape=shape or Shape()), SOURCES)


# --- the dispatcher ---------------------------------------------------------------


async def test_unselected_readings_never_reach_the_sink_not_in_retries_splits_or_dead_letters(tmp_path: Path) -> None:
    items = [reading(i, device=["aq-1", "bay-1"][i % 2]) for i in range(60)]
    operator = RecordingSink("operator", poison=frozenset({5, 7}), flaky=True)  # 5, 7: bay-1 readings
    city = RecordingSink("city")
    metrics = Metrics()
    buffer = await deliver(tmp_path, items, {
        "operator": (operator, route(include=[Rule(source=["operator"])])),
        "city": (city, route()),
    }, metrics)  # fmt: skip
    try:
        assert {r.device for r in operator.seen} == {"bay-1"}  # a split and retries happened, only bay-1 in them
        assert [r.value for r in operator.stored] == [i for i in range(1, 60, 2) if i not in (5, 7)]
        dead = await buffer.dead_letters("operator")
        assert sorted(d.reading.value for d in dead) == [5, 7]
        assert [r.value for r in city.stored] == list(range(60))  # one copy in the buffer serves both
        stats = await buffer.stats()
        assert stats.readings == 0 and stats.sinks["operator"].pending == 0
        assert metrics.sink_selected.labels("operator")._value.get() == 30
        assert metrics.sink_filtered.labels("operator")._value.get() == 30
        assert metrics.sink_filtered.labels("city")._value.get() == 0
    finally:
        await buffer.close()


async def test_a_sink_that_selects_nothing_still_moves_its_cursor_so_the_buffer_drains(tmp_path: Path) -> None:
    sink = RecordingSink("portal")
    buffer = await deliver(tmp_path, [reading(i) for i in range(20)],
                           {"portal": (sink, route(include=[Rule(quantity=["no2"])]))})  # fmt: skip
    try:
        assert sink.seen == []
        assert (await buffer.stats()).sinks["portal"].acked_id == 20
    finally:
        await buffer.close()


# --- shaping ----------------------------------------------------------------------


def test_geohash_matches_the_reference_encoding() -> None:
    # The example of the geohash article (Wikipedia, "Geohash"), and a point south-west.
    assert geohash(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert geohash(-25.382708, -49.265506, 8) == "6gkzwgjz"


def test_shape_drops_keeps_and_renames_tags_and_coarsens_positions() -> None:
    tags = {"lat": "48.856613", "lon": "2.352222", "serial": "X1", "owner": "city", "mount": "pole"}
    r = reading(1, tags=tags)
    rounded = route(shape=Shape(drop_tags=["serial"], rename_tags={"mount": "site_type"},
                                position=Position(decimals=2))).shape(r)  # fmt: skip
    assert dict(rounded.tags) == {"lat": "48.86", "lon": "2.35", "owner": "city", "site_type": "pole"}
    hashed = route(shape=Shape(keep_tags=["lat", "lon"], position=Position(geohash=5))).shape(r)
    assert dict(hashed.tags) == {"geohash": "u09tv"}
    half = route(shape=Shape(position=Position(geohash=5))).shape(reading(1, tags={"lat": "48.8"}))
    assert dict(half.tags) == {}  # half a position is removed, never passed on precise


def test_position_readings_are_rounded_or_not_selected_under_a_geohash() -> None:
    lat = reading(1, quantity="latitude").with_changes(value=48.856613, unit="lat")
    assert route(shape=Shape(position=Position(decimals=3))).shape(lat).value == 48.857
    geo = route(shape=Shape(position=Position(geohash=6)))
    assert not geo.selects(lat) and geo.selects(reading(2))


# --- the property: exactly what a plain reference filter computes -----------------

DEVICES = ["aq-1", "aq-2", "bay-1", "bay-2", "other"]
QUANTITIES = ["pm2_5", "pm10", "latitude", "rssi"]
rules = (
    st.fixed_dictionaries(
        {
            "source": st.lists(st.sampled_from(["city", "oper*", "nobody"]), max_size=1),
            "device": st.lists(st.sampled_from(["aq-*", "bay-?", "*-1", "other"]), max_size=2),
            "quantity": st.lists(st.sampled_from(["pm*", "rssi", "latitude"]), max_size=2),
            "tags": st.dictionaries(
                st.sampled_from(["owner", "mount"]),
                st.lists(st.sampled_from(["city", "p*"]), min_size=1, max_size=1),
                max_size=1,
            ),
        }
    )
    .filter(lambda fields: any(fields.values()))
    .map(lambda fields: Rule(**fields))
)
readings_st = st.lists(
    st.builds(
        lambda d, q, tags: (d, q, tags),
        st.sampled_from(DEVICES),
        st.sampled_from(QUANTITIES),
        st.dictionaries(
            st.sampled_from(["owner", "mount", "serial"]), st.sampled_from(["city", "pole", "op"]), max_size=3
        ),
    ),
    max_size=40,
)


def reference_match(rule: Rule, r: Reading) -> bool:
    """The plain reading of the docs: every key given matches, any of its globs."""

    def any_glob(globs: list[str], value: str) -> bool:
        return any(fnmatch.fnmatchcase(value, g) for g in globs)

    if rule.source and not any(r.device in devs for s, devs in SOURCES.items() if any_glob(rule.source, s)):
        return False
    if rule.device and not any_glob(rule.device, r.device):
        return False
    if rule.quantity and not any_glob(rule.quantity, r.quantity):
        return False
    return all(k in r.tags and any_glob(g, r.tags[k]) for k, g in rule.tags.items())


def reference(config: RouteConfig, r: Reading) -> Reading | None:
    if config.include and not any(reference_match(rule, r) for rule in config.include):
        return None
    if any(reference_match(rule, r) for rule in config.exclude):
        return None
    if any(fnmatch.fnmatchcase(r.quantity, g) for g in config.shape.drop_quantities):
        return None
    tags = {k: v for k, v in r.tags.items() if not any(fnmatch.fnmatchcase(k, g) for g in config.shape.drop_tags)}
    tags = {config.shape.rename_tags.get(k, k): v for k, v in tags.items()}
    return r.with_changes(tags=tags)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=readings_st,
    configs=st.lists(
        st.builds(
            RouteConfig,
            include=st.lists(rules, max_size=2),
            exclude=st.lists(rules, max_size=2),
            shape=st.builds(
                Shape,
                drop_tags=st.lists(st.sampled_from(["serial", "o*"]), max_size=1),
                rename_tags=st.dictionaries(st.sampled_from(["mount"]), st.sampled_from(["site_type"]), max_size=1),
                drop_quantities=st.lists(st.sampled_from(["rssi", "lat*"]), max_size=1),
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    poison=st.frozensets(st.integers(0, 39), max_size=3),
)
def test_each_sink_receives_exactly_what_the_reference_filter_selects(
    drawn: list[tuple[str, str, dict[str, str]]], configs: list[RouteConfig], poison: frozenset[int]
) -> None:
    items = [reading(i, d, q, tags) for i, (d, q, tags) in enumerate(drawn)]
    sinks = {f"s{i}": (RecordingSink(f"s{i}", poison=poison), Route(c, SOURCES)) for i, c in enumerate(configs)}

    async def run() -> dict[str, list[Reading]]:
        with tempfile.TemporaryDirectory() as tmp:
            buffer = await deliver(Path(tmp), items, sinks)
            try:
                return {name: [d.reading for d in await buffer.dead_letters(name, 1000)] for name in sinks}
            finally:
                await buffer.close()

    dead = asyncio.run(run())
    for (name, (sink, _)), config in zip(sinks.items(), configs, strict=True):
        expected = [e for r in items if (e := reference(config, r)) is not None]
        # Everything the sink was ever handed (retries, split halves) is among the expected readings...
        assert all(r in expected and dict(r.tags) == dict(expected[expected.index(r)].tags) for r in sink.seen)
        # ...and it stored exactly the expected ones but the poisoned, in order; those are its dead letters.
        assert sink.stored == [e for e in expected if e.value not in poison]
        assert sorted(r.value for r in dead[name]) == sorted(e.value for e in expected if e.value in poison)  # type: ignore[type-var]
