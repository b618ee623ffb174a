"""Request coalescing: read a device's fields with the fewest requests.

Constraints (docs/modbus.md has the argument why the greedy pass is optimal):
* one request reads one table (coil, discrete, holding, input);
* a request is one contiguous address range of at most ``max_registers``
  registers (``max_bits`` for coil/discrete);
* a field is never split across requests;
* inside a request, no run of unused addresses between two fields is longer
  than ``max_gap`` (some devices answer "illegal address" for holes, and a
  long hole wastes bus time).

Fields that overlap (bits of one status register, two views of the same
words) are merged into one cluster that is read as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TABLE_ORDER = ("coil", "discrete", "holding", "input")


@dataclass(frozen=True, slots=True)
class Span:
    """Where one field lives: ``count`` registers (or bits) from ``address`` in ``table``."""

    table: str
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: str
    address: int
    count: int
    fields: tuple[int, ...]  # indices into the spans passed to plan_requests

    @property
    def end(self) -> int:
        return self.address + self.count


class PlanError(ValueError):
    pass


@dataclass(slots=True)
class _Cluster:
    start: int
    end: int
    fields: list[int]


def _clusters(spans: Sequence[Span], indices: list[int]) -> list[_Cluster]:
    ordered = sorted(indices, key=lambda i: (spans[i].address, spans[i].count))
    out: list[_Cluster] = []
    for i in ordered:
        s = spans[i]
        if out and s.address < out[-1].end:  # overlaps the previous cluster
            out[-1].end = max(out[-1].end, s.address + s.count)
            out[-1].fields.append(i)
        else:
            out.append(_Cluster(s.address, s.address + s.count, [i]))
    return out


def plan_requests(
    spans: Sequence[Span], *, max_registers: int = 125, max_bits: int = 2000, max_gap: int = 0
) -> list[ReadRequest]:
    """The fewest requests that read every span under the constraints above."""
    requests: list[ReadRequest] = []
    for table in TABLE_ORDER:
        indices = [i for i, s in enumerate(spans) if s.table == table]
        if not indices:
            continue
        limit = max_bits if table in ("coil", "discrete") else max_registers
        group: _Cluster | None = None
        for c in _clusters(spans, indices):
            if c.end - c.start > limit:
                raise PlanError(
                    f"{table} {c.start}..{c.end - 1} is {c.end - c.start} long, more than the {limit} one read allows"
                )
            # Greedy: extend the current request while the next cluster fits.
            if group is not None and c.start - group.end <= max_gap and c.end - group.start <= limit:
                group.end = c.end
                group.fields.extend(c.fields)
                continue
            if group is not None:
                requests.append(ReadRequest(table, group.start, group.end - group.start, tuple(group.fields)))
            group = _Cluster(c.start, c.end, list(c.fields))
        assert group is not None
        requests.append(ReadRequest(table, group.start, group.end - group.start, tuple(group.fields)))
    return requests


def split_request(request: ReadRequest, spans: Sequence[Span]) -> list[ReadRequest]:
    """One request per cluster of ``request`` (used when a device refuses a coalesced read)."""
    return [
        ReadRequest(request.table, c.start, c.end - c.start, tuple(c.fields))
        for c in _clusters(spans, list(request.fields))
    ]
