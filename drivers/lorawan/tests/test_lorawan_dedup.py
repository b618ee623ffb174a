"""Duplicates are dropped; a frame-counter reset after a rejoin is not taken for duplicates."""

from __future__ import annotations

from gateway.drivers.lorawan.dedup import Deduplicator
from gateway.drivers.lorawan.events import DeviceIds, Radio, Uplink

S = 1_000_000_000


def up(f_cnt: int, t_s: float, payload: bytes = b"\x01", dedup_id: str | None = None, dev: str = "a1") -> Uplink:
    return Uplink(DeviceIds(dev, "", ""), int(t_s * S), f_cnt, 1, payload, None, dedup_id, Radio())


def accept(d: Deduplicator, u: Uplink) -> bool:
    dup, keys = d.is_duplicate(u)
    if not dup:
        d.remember(keys, u.time_ns)
    return not dup


def test_same_dedup_id_is_a_duplicate_even_with_other_content() -> None:
    d = Deduplicator(window_s=60)
    assert accept(d, up(1, 100, dedup_id="x"))
    assert not accept(d, up(2, 500, b"\x02", dedup_id="x"))


def test_same_device_and_frame_counter_within_window() -> None:
    d = Deduplicator(window_s=60)
    assert accept(d, up(5, 100))
    assert not accept(d, up(5, 100))  # broker redelivery: identical
    assert not accept(d, up(5, 130))  # republished by the server within the window
    assert accept(d, up(5, 100, dev="b2"))  # another device
    assert accept(d, up(6, 160))


def test_redelivery_of_older_message_is_still_a_duplicate() -> None:
    d = Deduplicator(window_s=60)
    for n in range(5):
        assert accept(d, up(n, 100 + n))
    assert not accept(d, up(2, 102))  # an old one comes back after newer ones: not a reset


def test_rejoin_event_resets_counters() -> None:
    d = Deduplicator(window_s=3600)
    assert accept(d, up(0, 100))
    assert accept(d, up(1, 110))
    d.joined("a1")
    assert accept(d, up(0, 120))  # same counter and payload as before, but a new session
    assert accept(d, up(1, 130))
    assert not accept(d, up(1, 130))


def test_counter_going_back_in_later_time_is_a_reset_without_join_event() -> None:
    d = Deduplicator(window_s=3600)
    for n in range(10):
        assert accept(d, up(n, 100 + n))
    assert accept(d, up(0, 200))  # counter back to 0 while time goes forward
    assert accept(d, up(1, 210))
    assert not accept(d, up(1, 210))


def test_outside_window_is_new_and_forget_undoes_remember() -> None:
    d = Deduplicator(window_s=10)
    assert accept(d, up(3, 100))
    assert accept(d, up(3, 200))  # counter wrapped / much later: new data
    _dup, keys = d.is_duplicate(up(4, 210))
    d.remember(keys, up(4, 210).time_ns)
    d.forget(keys)  # emit failed: the redelivery must be accepted
    assert accept(d, up(4, 210))


def test_bounded_memory() -> None:
    d = Deduplicator(window_s=10, max_entries=100)
    for n in range(1000):
        accept(d, up(n, n, dedup_id=str(n)))
    assert len(d) <= 100
