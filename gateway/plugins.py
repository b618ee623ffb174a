"""Entry-point discovery. The core knows no driver, sink, codec or simulator by name.

Groups:
- ``gateway.drivers``: name -> Driver subclass (``PolledDriver`` or ``PushDriver``)
- ``gateway.sinks``: name -> Sink subclass
- ``gateway.codecs``: name -> payload codec (see drivers/lorawan)
- ``gateway.simulators``: name -> module with ``add_arguments(parser)`` and ``main(args) -> int``
- ``gateway.cli``: name -> ``register(subparsers)`` adding field tools (probe, scan...)
- ``gateway.demos``: name -> ``DemoPart`` factory contributing sources to ``gateway demo``
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger(__name__)

DRIVERS = "gateway.drivers"
SINKS = "gateway.sinks"
CODECS = "gateway.codecs"
SIMULATORS = "gateway.simulators"
CLI = "gateway.cli"
DEMOS = "gateway.demos"


class PluginError(LookupError):
    def __init__(self, group: str, name: str, available: list[str], cause: str = "") -> None:
        self.group, self.name, self.available = group, name, available
        kind = group.split(".", 1)[1].rstrip("s")
        msg = f"unknown {kind} {name!r}; available: {', '.join(available) or 'none'}"
        if cause:
            msg = f"{kind} {name!r} failed to load: {cause}"
        super().__init__(msg)


@functools.cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    return sorted(_entry_points(group))


@functools.cache
def load(group: str, name: str) -> Any:
    eps = _entry_points(group)
    if name not in eps:
        raise PluginError(group, name, sorted(eps))
    try:
        return eps[name].load()
    except Exception as exc:  # a broken third-party plugin must not hide the others
        log.exception("cannot load %s plugin %r", group, name)
        raise PluginError(group, name, sorted(eps), cause=f"{type(exc).__name__}: {exc}") from exc


def load_all(group: str) -> dict[str, Any]:
    loaded = {}
    for name in names(group):
        try:
            loaded[name] = load(group, name)
        except PluginError:
            continue
    return loaded
