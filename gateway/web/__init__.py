"""The status page a technician opens on site: ``[web]`` in the config, docs/web.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import WebSection


def describe(web: WebSection) -> str:
    """One line for ``gateway check``: where the page is and who may read it."""
    if not web.enabled:
        return "off"
    host, _, port = web.listen.rpartition(":")
    url = f"http://{host or '0.0.0.0'}:{port}/"
    return f"{url} (password required, from {web.password_file})" if web.password_file else f"{url} (no password)"
