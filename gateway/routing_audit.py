"""``gateway routes``: what each sink will receive and in what form, from the config and the profiles.

Computed statically from each source's catalogue (``Driver.catalogue``): a rule on tags, or on
the quantities of a device whose quantities are only known at run time, cannot be decided
here, and is printed as a condition instead of a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import Config, LoadedSink
from gateway.routing import Rule, Shape, glob_matcher
from gateway.routing_catalogue import SourceCatalogue, globs_overlap

# Three-valued: True (selected), False (not), None (depends on tags or on quantities known at run time).
Tri = bool | None


def _rule(rule: Rule, source: str, device: str, quantity: str | None) -> Tri:
    result: Tri = True
    if rule.source and not glob_matcher(rule.source)(source):
        return False
    if rule.device and _is_pattern(device):  # a name made up at run time (``node-*``): may or may not match
        if not any(globs_overlap(g, device) for g in rule.device):
            return False
        result = None
    elif rule.device and not glob_matcher(rule.device)(device):
        return False
    if rule.quantity:
        if quantity is None:
            result = None
        elif not glob_matcher(rule.quantity)(quantity):
            return False
    if rule.tags:
        result = None
    return result


def _is_pattern(device: str) -> bool:
    return "*" in device or "?" in device


def _any(values: Sequence[Tri]) -> Tri:
    if any(v is True for v in values):
        return True
    return False if all(v is False for v in values) else None


def selected(sink: LoadedSink, source: str, device: str, quantity: str | None) -> Tri:
    cfg = sink.config
    included = _any([_rule(r, source, device, quantity) for r in cfg.include]) if cfg.include else True
    excluded = _any([_rule(r, source, device, quantity) for r in cfg.exclude])
    if quantity is not None and cfg.shape.drop_quantities and glob_matcher(cfg.shape.drop_quantities)(quantity):
        return False
    if included is False or excluded is True:
        return False
    return True if (included is True and excluded is False) else None


def _conditions(sink: LoadedSink) -> str:
    cfg = sink.config
    parts = []
    if cfg.include:
        parts.append("include " + " or ".join(_describe_rule(r) for r in cfg.include))
    if cfg.exclude:
        parts.append("exclude " + " or ".join(_describe_rule(r) for r in cfg.exclude))
    if cfg.shape.drop_quantities:
        parts.append(f"drop quantities {', '.join(cfg.shape.drop_quantities)}")
    return "; ".join(parts)


def _describe_rule(rule: Rule) -> str:
    parts = [f"{key} {'|'.join(globs)}" for key, globs in
             (("source", rule.source), ("device", rule.device), ("quantity", rule.quantity)) if globs]  # fmt: skip
    parts += [f"tag {k}={'|'.join(v)}" for k, v in rule.tags.items()]
    return "(" + " and ".join(parts) + ")"


def describe_form(shape: Shape) -> str:
    """The form readings reach the sink in."""
    parts = []
    if shape.keep_tags is not None:
        parts.append(f"only tags {', '.join(shape.keep_tags) or '(none)'} kept")
    if shape.drop_tags:
        parts.append(f"tags {', '.join(shape.drop_tags)} dropped")
    if shape.rename_tags:
        parts.append("tags renamed " + ", ".join(f"{a}->{b}" for a, b in shape.rename_tags.items()))
    if shape.position is not None:
        if shape.position.geohash is not None:
            parts.append(f"position coarsened to a geohash of {shape.position.geohash} characters "
                         "(lat/lon tags -> geohash tag; latitude/longitude readings not sent)")  # fmt: skip
        else:
            parts.append(f"position rounded to {shape.position.decimals} decimal(s)")
    return "; ".join(parts) if parts else "raw"


def describe_routes(config: Config) -> str:
    catalogue = SourceCatalogue.of(config.sources)
    lines: list[str] = []
    for sink in config.sinks:
        cfg = sink.config
        state = "" if cfg.enabled else " [disabled]"
        lines.append(f"sink {cfg.sink_name} ({cfg.type}){state}")
        lines.append(f"  form: {describe_form(cfg.shape)}")
        if cfg.downsample is not None:
            d = cfg.downsample
            lines.append(f"  downsampled: {', '.join(d.stats)} per {d.window:g} s window (aligned), not the readings")
        if not cfg.include and not cfg.exclude and not cfg.shape.drop_quantities:
            lines.append("  receives: every reading of every source")
            continue
        lines.append(f"  rules: {_conditions(sink)}")
        lines.extend(_receives(sink, catalogue))
    return "\n".join(lines)


def _receives(sink: LoadedSink, catalogue: SourceCatalogue) -> list[str]:
    lines: list[str] = []
    for source, cat in catalogue.sources.items():
        if cat is None:
            lines.append(f"  {source}: devices not known before they send; selected by the device rules at run time")
            continue
        devices: list[str] = []
        for device, quantities in [*cat.devices.items(), *((p, None) for p in cat.patterns)]:
            if quantities is None:
                decision = selected(sink, source, device, None)
                if decision is not False:
                    what = "all its quantities" if decision else "the quantities the rules select, known at run time"
                    devices.append(f"{device} ({what})")
                continue
            chosen = sorted(q for q in quantities if selected(sink, source, device, q) is not False)
            maybe = any(selected(sink, source, device, q) is None for q in chosen)
            if chosen:
                devices.append(f"{device}: {', '.join(chosen)}{' (if the tag rules match)' if maybe else ''}")
        cfg = sink.config
        if cat.open and (not cfg.include or any(not r.source for r in cfg.include)):
            devices.append("unlisted devices if a device, quantity or tag rule selects them")
        lines.append(f"  {source}: " + ("; ".join(devices) if devices else "nothing"))
    return lines
