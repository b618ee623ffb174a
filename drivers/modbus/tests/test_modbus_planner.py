"""Request coalescing: the greedy planner against brute force on random register maps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from gateway.drivers.modbus.devices import load_profile_model
from gateway.drivers.modbus.planner import PlanError, Span, plan_requests, split_request
from hypothesis import given, settings
from hypothesis import strategies as st


def set_partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def feasible(group: Sequence[Span], limit: int, max_gap: int) -> bool:
    """One request reading exactly these fields: contiguous range within the limit, no hole > max_gap."""
    ordered = sorted(group, key=lambda s: s.address)
    if max(s.address + s.count for s in ordered) - ordered[0].address > limit:
        return False
    covered_to = ordered[0].address + ordered[0].count
    for s in ordered[1:]:
        if s.address - covered_to > max_gap:
            return False
        covered_to = max(covered_to, s.address + s.count)
    return True


def brute_force(spans: list[Span], max_registers: int, max_bits: int, max_gap: int) -> int:
    total = 0
    for table in {s.table for s in spans}:
        idx = [i for i, s in enumerate(spans) if s.table == table]
        limit = max_bits if table in ("coil", "discrete") else max_registers
        total += min(
            len(p)
            for p in set_partitions(idx)
            if all(feasible([spans[i] for i in block], limit, max_gap) for block in p)
        )
    return total


@st.composite
def register_maps(draw: st.DrawFn) -> list[Span]:
    """Up to 7 non-overlapping fields over two tables (identical bit-field spans allowed)."""
    spans: list[Span] = []
    for table in draw(st.lists(st.sampled_from(["holding", "input", "coil"]), min_size=1, max_size=2, unique=True)):
        address = draw(st.integers(0, 5))
        for _ in range(draw(st.integers(1, 4))):
            count = 1 if table == "coil" else draw(st.sampled_from([1, 1, 2, 4]))
            if spans and spans[-1].table == table and draw(st.booleans()) and spans[-1].count == 1 and count == 1:
                spans.append(Span(table, spans[-1].address, 1))  # two bit fields of one register
                continue
            spans.append(Span(table, address, count))
            address += count + draw(st.integers(0, 12))
    return spans


@settings(max_examples=300, deadline=None)
@given(spans=register_maps(), max_registers=st.integers(4, 20), max_bits=st.integers(1, 20), max_gap=st.integers(0, 6))
def test_greedy_matches_brute_force(spans: list[Span], max_registers: int, max_bits: int, max_gap: int) -> None:
    if any(s.count > max_registers for s in spans):
        with pytest.raises(PlanError):
            plan_requests(spans, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
        return
    plan = plan_requests(spans, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    # every field read exactly once, by a request that is valid on its own
    assert sorted(i for r in plan for i in r.fields) == list(range(len(spans)))
    for r in plan:
        group = [spans[i] for i in r.fields]
        assert all(s.table == r.table for s in group)
        assert r.address == min(s.address for s in group)
        assert r.end == max(s.address + s.count for s in group)
        limit = max_bits if r.table in ("coil", "discrete") else max_registers
        assert feasible(group, limit, max_gap)
    assert len(plan) == brute_force(spans, max_registers, max_bits, max_gap)


def test_split_request_gives_one_request_per_field() -> None:
    spans = [Span("input", 0, 2), Span("input", 4, 2), Span("input", 6, 1), Span("input", 6, 1)]
    (req,) = plan_requests(spans, max_gap=4)
    parts = split_request(req, spans)
    assert [(p.address, p.count, p.fields) for p in parts] == [(0, 2, (0,)), (4, 2, (1,)), (6, 1, (2, 3))]


@pytest.mark.parametrize(
    ("profile", "fields", "requests"),
    [("eastron-sdm630", 21, 4), ("eastron-sdm120", 13, 3), ("xy-md02", 2, 1)],
)
def test_shipped_profiles_requests_per_poll(profile: str, fields: int, requests: int) -> None:
    _, model = load_profile_model(profile)
    spans = [Span(f.table, f.address, f.span) for f in model.registers]
    plan = plan_requests(spans, max_registers=model.max_registers_per_read or 125, max_gap=8)
    assert (len(spans), len(plan)) == (fields, requests)
    assert all(r.count <= (model.max_registers_per_read or 125) for r in plan)
