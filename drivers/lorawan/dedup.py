"""Drop uplinks delivered twice, without dropping a device that rejoined.

A duplicate is an uplink whose ChirpStack ``deduplicationId`` was seen, or
whose (device, frame counter, payload hash) was seen within ``window_s`` of
the first one, measured on the uplink's own time. After a rejoin the frame
counter restarts from 0, and a parking sensor happily sends the same payload
with the same small counter again: that is new data. So a join event, or a
counter that goes back while the uplink time goes forward, starts a new
"session" for the device, and keys of the old session no longer match. (A
broker redelivering an older message has an *older* time, so it is not taken
for a reset, and it still matches its key.)

The state is an in-memory LRU, not persisted: after a restart the broker
redelivers only messages we had not acknowledged, and a message is acknowledged
only after its readings are committed. A redelivered message whose readings
were committed just before a crash yields readings with identical timestamps
(the uplink's own time), tags and values, which the time-series stores
(InfluxDB, VictoriaMetrics) and the local store treat as the same point.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from gateway.drivers.lorawan.events import Uplink

Key = tuple[str, ...]


@dataclass(slots=True)
class _Session:
    epoch: int = 0
    last_f_cnt: int = -1
    last_time_ns: int = 0


class Deduplicator:
    def __init__(self, *, window_s: float, max_entries: int = 100_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self.max_entries = max_entries
        self._keys: OrderedDict[Key, int] = OrderedDict()  # key -> uplink time
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _session(self, device: str) -> _Session:
        session = self._sessions.get(device)
        if session is None:
            session = self._sessions[device] = _Session()
            if len(self._sessions) > self.max_entries:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(device)
        return session

    def joined(self, device: str) -> None:
        """A (re)join: the device's frame counter restarts, old keys must not match."""
        session = self._session(device)
        session.epoch += 1
        session.last_f_cnt = -1

    def keys(self, uplink: Uplink) -> list[Key]:
        device = uplink.ids.key
        session = self._session(device)
        if uplink.f_cnt < session.last_f_cnt and uplink.time_ns > session.last_time_ns:
            session.epoch += 1  # counter went back while time went forward: a reset
        if uplink.time_ns >= session.last_time_ns:
            session.last_f_cnt, session.last_time_ns = uplink.f_cnt, uplink.time_ns
        digest = hashlib.blake2b(uplink.payload or b"", digest_size=8).hexdigest()
        keys: list[Key] = [("fcnt", device, str(session.epoch), str(uplink.f_cnt), str(uplink.f_port), digest)]
        if uplink.dedup_id:
            keys.append(("id", uplink.dedup_id))
        return keys

    def is_duplicate(self, uplink: Uplink) -> tuple[bool, list[Key]]:
        """(duplicate?, keys). Call ``remember(keys)`` once the uplink is kept."""
        keys = self.keys(uplink)
        for key in keys:
            seen = self._keys.get(key)
            if seen is not None and (key[0] == "id" or abs(uplink.time_ns - seen) <= self.window_ns):
                return True, keys
        return False, keys

    def remember(self, keys: list[Key], time_ns: int) -> None:
        for key in keys:
            self._keys[key] = time_ns
            self._keys.move_to_end(key)
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)

    def forget(self, keys: list[Key]) -> None:
        """Undo ``remember`` when the readings could not be committed (they will be redelivered)."""
        for key in keys:
            self._keys.pop(key, None)
