"""Logging to stderr, journald-friendly: no timestamps when journald adds its own."""

from __future__ import annotations

import logging
import os
import sys
from typing import ClassVar


class _JournalFormatter(logging.Formatter):
    """Prefix lines with the syslog priority (<3> error...) so journald filters by level."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = self.PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter (pymodbus logs every retry at ERROR) stays out unless asked for.
    if level != "debug":
        for noisy in ("pymodbus", "aiomqtt", "influxdb_client"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
