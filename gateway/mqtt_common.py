"""What every MQTT client of the gateway shares: topic levels and TLS (the mqtt sink, the fleet agent)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

_TOPIC_LEVEL_BAD = re.compile(r"[/+#\x00]")


def topic_level(value: str) -> str:
    """A name as one topic level: '/', '+', '#' and NUL would change the topic's shape."""
    return _TOPIC_LEVEL_BAD.sub("_", value) or "_"


def tls_context(
    *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None, insecure: bool
) -> ssl.SSLContext:
    """Reads certificate files: call it off the event loop (``asyncio.to_thread``)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
