"""What the configured sources will emit, for routing: resolve ``source`` rules, check rules, audit routes.

A Reading carries no source, so a sink's ``source = "operator-*"`` rule is resolved when the
config is loaded into the devices those sources declare (``Driver.catalogue``). The same
catalogue lets ``gateway check`` refuse a rule that can match nothing and ``gateway routes``
print what each sink will receive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config_messages import ConfigProblem, key_path
from gateway.driver import DeviceCatalogue
from gateway.quantities import QUANTITIES
from gateway.routing import Route, RouteConfig, Rule, glob_matcher, matching

if TYPE_CHECKING:
    from gateway.config import Config, LoadedSink, LoadedSource


@dataclass(frozen=True, slots=True)
class SourceCatalogue:
    """Every source's catalogue; None for a driver that cannot tell its devices.

    Disabled sources are in it too: disabling a source for a while must not make a sink's rules invalid.
    """

    sources: dict[str, DeviceCatalogue | None] = field(default_factory=dict)

    @classmethod
    def of(cls, sources: Iterable[LoadedSource]) -> SourceCatalogue:
        out: dict[str, DeviceCatalogue | None] = {}
        for loaded in sources:
            try:
                out[loaded.config.name] = loaded.driver_class.catalogue(loaded.config)
            except ValueError:
                out[loaded.config.name] = None  # its own validate() has reported the problem
        return cls(out)

    def source_devices(self) -> dict[str, list[str]]:
        """Source -> its device names and name patterns (globs), what a ``source`` rule selects."""
        return {name: [*c.devices, *c.patterns] for name, c in self.sources.items() if c is not None}

    @property
    def closed(self) -> bool:
        """Every device any source can emit is known (names or patterns)."""
        return all(c is not None and not c.open for c in self.sources.values())

    def device_names(self) -> list[str]:
        return [d for c in self.sources.values() if c is not None for d in (*c.devices, *c.patterns)]

    def quantities(self) -> set[str]:
        return {q for c in self.sources.values() if c is not None for qs in c.devices.values() if qs for q in qs}


def build_route(config: RouteConfig, catalogue: SourceCatalogue) -> Route:
    return Route(config, catalogue.source_devices())


def build_routes(config: Config) -> dict[str, Route]:
    """One compiled route per sink name."""
    catalogue = SourceCatalogue.of(config.sources)
    return {s.config.sink_name: build_route(s.config.route, catalogue) for s in config.sinks}


# --- gateway check --------------------------------------------------------------


def _device_can_match(globs: Sequence[str], names: Sequence[str]) -> bool:
    """A device glob can match a known name, or a name made up by a pattern (``node-*``)."""
    matches = glob_matcher(globs)
    return any(matches(n) or ("*" in n and any(globs_overlap(g, n) for g in globs)) for n in names)


def globs_overlap(glob: str, pattern: str) -> bool:
    """Whether two globs may match a common name: the literal prefix of one starts the other's.

    Coarse (suffixes are not compared) but never says no to a glob that can match.
    """
    a, b = (re.split(r"[*?\[]", g, maxsplit=1)[0] for g in (glob, pattern))
    return a.startswith(b) or b.startswith(a)


def rule_problems(sink: LoadedSink, index: int, catalogue: SourceCatalogue) -> list[ConfigProblem]:
    """Rules of one sink that can match nothing (their key paths), and sources that cannot be selected."""
    problems: list[ConfigProblem] = []
    cfg = sink.config
    known_quantities = set(QUANTITIES) | catalogue.quantities()
    for kind, rules in (("include", cfg.include), ("exclude", cfg.exclude)):
        for i, rule in enumerate(rules):
            loc: tuple[int | str, ...] = ("sinks", index, kind, i)
            problems.extend(_rule_problems(rule, loc, catalogue, known_quantities))
    drop = cfg.shape.drop_quantities
    if drop and not matching(drop, known_quantities):
        problems.append(
            ConfigProblem(
                key_path(("sinks", index, "shape", "drop_quantities")),
                f"{drop} matches no known quantity (see docs/data-model.md)",
            )
        )
    return problems


def _rule_problems(
    rule: Rule, loc: tuple[int | str, ...], catalogue: SourceCatalogue, known_quantities: set[str]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if rule.source:
        names = matching(rule.source, catalogue.sources)
        if not names:
            configured = ", ".join(sorted(catalogue.sources)) or "none"
            problems.append(
                ConfigProblem(key_path((*loc, "source")), f"{rule.source} matches no source; sources: {configured}")
            )
        for name in names:
            if catalogue.sources[name] is None:
                problems.append(
                    ConfigProblem(
                        key_path((*loc, "source")),
                        f"source {name!r}: its driver does not say which devices it names, so it cannot be selected "
                        "by source; select its devices with device = [...]",
                    )
                )
    if rule.device and catalogue.closed and not _device_can_match(rule.device, catalogue.device_names()):
        problems.append(
            ConfigProblem(key_path((*loc, "device")), f"{rule.device} matches no device of the configured sources")
        )
    if rule.quantity and not matching(rule.quantity, known_quantities):
        problems.append(
            ConfigProblem(
                key_path((*loc, "quantity")), f"{rule.quantity} matches no known quantity (see docs/data-model.md)"
            )
        )
    return problems


def routing_warnings(sink: LoadedSink, index: int, catalogue: SourceCatalogue) -> list[ConfigProblem]:
    """Source rules on a source that may name devices it does not list (they are not selected by it)."""
    out: list[ConfigProblem] = []
    for kind, rules in (("include", sink.config.include), ("exclude", sink.config.exclude)):
        for i, rule in enumerate(rules):
            for name in matching(rule.source, catalogue.sources) if rule.source else []:
                c = catalogue.sources[name]
                if c is not None and c.open:
                    out.append(
                        ConfigProblem(
                            key_path(("sinks", index, kind, i, "source")),
                            f"source {name!r} also accepts devices it does not list; a source rule covers only "
                            "the listed ones (list the devices, or select them with device = [...])",
                        )
                    )
    return out
