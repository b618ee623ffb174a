"""Another running gateway under this gateway's name: seen on the status topics, latched so it never flaps.

Every gateway publishes its status under ``<prefix>/<site>/<name>/<identity>`` and watches
``<prefix>/<site>/<name>/+``. A status there with another identity that says ``online`` and is recent
is a duplicate: the two boxes' readings land in the same series. The alarm holds until no foreign
``online`` status has been seen for ``hold_s`` (three status intervals), so two boxes that take turns
do not make it blink. It is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("gateway.fleet")


class DuplicateWatch:
    def __init__(self, *, own_id: str, name: str, site: str, hold_s: float) -> None:
        self.own_id = own_id
        self.name = name
        self.site = site
        self.hold_s = hold_s
        self._seen: dict[str, float] = {}  # foreign id -> monotonic time last seen online
        self.since_ns: int | None = None

    def observe(self, doc: Mapping[str, Any], *, retained: bool = False, now: float | None = None) -> None:
        """A status message from a topic under our name: live (proof of life) or retained (maybe old)."""
        other = doc.get("id")
        if not isinstance(other, str) or other == self.own_id:
            return
        now = time.monotonic() if now is None else now
        if doc.get("state") != "online":
            self._seen.pop(other, None)  # it stopped or died: no longer a rival
            return
        updated = doc.get("updated_ns")
        if retained and isinstance(updated, int) and abs(time.time_ns() - updated) > self.hold_s * 1e9:
            return  # an old retained status from a box that vanished without a Will (broker restarted)
        self._seen[other] = now

    def active(self, *, now: float | None = None) -> dict[str, Any] | None:
        """The alarm as it goes into the status (None when there is no duplicate); logs transitions."""
        now = time.monotonic() if now is None else now
        for other, seen in list(self._seen.items()):
            if now - seen > self.hold_s:
                del self._seen[other]
        if self._seen and self.since_ns is None:
            self.since_ns = time.time_ns()
            log.error(
                "ANOTHER GATEWAY IS RUNNING UNDER THIS NAME: site %s, name %s, identity %s (this one is %s). "
                "Their readings mix in the same series. Give each box its own [gateway] name "
                "(a cloned SD-card image keeps the old one)",
                self.site,
                self.name,
                ", ".join(sorted(o[:8] for o in self._seen)),
                self.own_id[:8],
            )
        elif not self._seen and self.since_ns is not None:
            self.since_ns = None
            log.warning("no other gateway runs under the name %s any more", self.name)
        if self.since_ns is None:
            return None
        return {"ids": sorted(o[:8] for o in self._seen), "since_ns": self.since_ns}
