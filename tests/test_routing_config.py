"""Routing keys in a sink's config: refusals with the key path, the audit, and the docs/routing.md example."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import ConfigError, build_config, parse_config
from gateway.model import Reading
from gateway.routing_audit import describe_routes, selected
from gateway.routing_catalogue import SourceCatalogue, build_routes

ROOT = Path(__file__).resolve().parent.parent

SOURCES = """
[[sources]]
driver = "simulated"
name = "city-air"
[[sources.devices]]
name = "aq-1"
kind = "air"
[[sources.devices]]
name = "weather-1"
kind = "weather"

[[sources]]
driver = "simulated"
name = "operator-energy"
[[sources.devices]]
name = "meter-1"
kind = "energy"
"""


def config(sinks: str) -> str:
    return SOURCES + sinks


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="gw.toml", env={})
    return {p.key_path: p.message for p in info.value.problems}


def test_a_rule_naming_an_unknown_key_is_refused_with_its_key_path() -> None:
    found = problems(config('[[sinks]]\ntype = "local"\n[[sinks.include]]\ndevise = "aq-*"\n'))
    assert "sinks[0].include[0].devise" in found


def test_an_empty_rule_is_refused() -> None:
    found = problems(config('[[sinks]]\ntype = "local"\n[[sinks.exclude]]\ntags = {}\n'))
    assert "empty rule" in found["sinks[0].exclude[0]"]


def test_rules_that_can_match_nothing_are_refused_with_their_key_paths() -> None:
    found = problems(
        config("""
[[sinks]]
type = "local"
[[sinks.include]]
source = "operater-*"
[[sinks.include]]
device = "meter-9*"
[[sinks.exclude]]
quantity = "pm25"
[sinks.shape]
drop_quantities = ["rsi"]
""")
    )
    assert "matches no source; sources: city-air, operator-energy" in found["sinks[0].include[0].source"]
    assert "matches no device" in found["sinks[0].include[1].device"]
    assert "matches no known quantity" in found["sinks[0].exclude[0].quantity"]
    assert "matches no known quantity" in found["sinks[0].shape.drop_quantities"]


def test_position_needs_exactly_one_way_of_coarsening() -> None:
    found = problems(config('[[sinks]]\ntype = "local"\n[sinks.shape]\nposition = { decimals = 2, geohash = 5 }\n'))
    assert "exactly one" in found["sinks[0].shape.position"]


def test_valid_rules_load() -> None:
    cfg = parse_config(config("""
[[sinks]]
type = "local"
[[sinks.include]]
source = "operator-*"
[[sinks.include]]
device = "aq-*"
quantity = ["pm*"]
tags = { run = "*" }
"""), env={})  # fmt: skip
    assert [r.source for r in cfg.sinks[0].config.include] == [["operator-*"], []]


def test_routes_prints_what_each_sink_receives_and_in_what_form() -> None:
    cfg = parse_config(config("""
[[sinks]]
type = "local"
name = "city"

[[sinks]]
type = "local"
name = "operator"
[[sinks.include]]
source = "operator-*"

[[sinks]]
type = "local"
name = "portal"
[[sinks.include]]
quantity = "pm*"
[sinks.shape]
drop_tags = ["run"]
position = { decimals = 2 }
"""), env={})  # fmt: skip
    text = describe_routes(cfg)
    city, operator, portal = text.split("sink ")[1:]
    assert "every reading of every source" in city and "form: raw" in city
    assert "city-air: nothing" in operator
    assert "operator-energy: meter-1: active_power, current, energy_import, voltage" in operator
    assert "city-air: aq-1: pm10, pm2_5\n" in portal and "operator-energy: nothing" in portal
    assert "tags run dropped; position rounded to 2 decimal(s)" in portal


def _doc_example(tmp_path: Path) -> Path:
    text = (ROOT / "docs" / "routing.md").read_text(encoding="utf-8")
    match = re.search(r"```toml\n(\[gateway\].*?)```", text, re.S)
    assert match is not None
    path = tmp_path / "gateway.toml"
    path.write_text(match.group(1), encoding="utf-8")
    return path


def test_the_three_owner_example_of_the_docs_is_valid_and_routes_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _doc_example(tmp_path)
    assert main(["check", "-c", str(path)]) == 0
    checked = capsys.readouterr().out
    assert "city-store (influxdb), operator (mqtt, routed), open-data (mqtt, routed)" in checked
    assert main(["routes", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    city, operator, portal = out.split("sink ")[1:]
    assert "every reading of every source" in city
    assert "operator-parking: parking-bay-1" in operator and "parking-bay-2" in operator
    assert "city-energy: nothing" in operator and "air: nothing" in operator
    assert "tags owner dropped" in operator
    assert "air: air (the quantities the rules select" in portal
    assert "operator-parking: nothing" in portal and "city-energy: nothing" in portal
    assert "geohash of 6 characters" in portal
    assert "downsampled: mean per 900 s window" in portal


def test_routes_reports_a_bad_config_like_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(config('[[sinks]]\ntype = "local"\n[[sinks.include]]\nsource = "nope"\n'), encoding="utf-8")
    assert main(["routes", "-c", str(path)]) == 2
    assert "sinks[0].include[0].source" in capsys.readouterr().err


def test_status_shows_per_sink_how_many_readings_the_rules_filtered_out() -> None:
    import io

    from gateway.cli_data import print_status

    status = {
        "gateway": "gw-1", "site": "market", "version": "0.1.0", "clock_synchronized": True,
        "buffer": {"readings": 0, "bytes": 0, "oldest_ts_ns": None, "dropped_oldest_total": 0,
                   "dropped_newest_total": 0, "sinks": {"portal": {"pending": 0}}},
        "sources": {},
        "sinks": {"portal": {"type": "mqtt", "state": "ok", "sent": 120, "selected": 120, "filtered": 4380,
                             "dead_lettered": 0, "error": None}},
    }  # fmt: skip
    out = io.StringIO()
    print_status(status, age_s=1.0, out=out)
    header, row = [line.split() for line in out.getvalue().splitlines()[-2:]]
    assert dict(zip(header, row, strict=False))["filtered"] == "4380"


def test_tags_renamed_to_an_unusable_key_or_onto_one_key_are_refused() -> None:
    found = problems(config('[[sinks]]\ntype = "local"\n[sinks.shape]\nrename_tags = { mount = "a\\nb" }\n'))
    assert "not a tag key: contains control characters" in found["sinks[0].shape.rename_tags.mount"]
    found = problems(config('[[sinks]]\ntype = "local"\n[sinks.shape]\nrename_tags = { a = "x", b = "x" }\n'))
    assert "one would overwrite the other" in found["sinks[0].shape.rename_tags"]


LORA_NODES = """
[[sources]]
driver = "loramodem"
name = "p2p"
modem = "rn2483"
port = "/dev/ttyUSB0"
profile = "lorawan-dragino-lht65"
device = "bin"
address_bytes = 2
"""


def test_a_device_rule_on_devices_named_at_run_time_is_accepted_and_audited() -> None:
    cfg = parse_config(LORA_NODES + '[[sinks]]\ntype = "local"\n[[sinks.include]]\ndevice = "bin-00*"\n', env={})
    assert "p2p: bin-* (the quantities the rules select, known at run time)" in describe_routes(cfg)
    found = problems(LORA_NODES + '[[sinks]]\ntype = "local"\n[[sinks.include]]\ndevice = "pump-*"\n')
    assert "matches no device" in found["sinks[0].include[0].device"]


DEVICE_GLOBS = ["aq-*", "weather-1", "meter-?", "*-1", "nothing"]
QUANTITY_GLOBS = ["pm*", "temperature", "*_power", "voltage", "p*"]


RULE_FIELDS = st.tuples(
    st.sampled_from(["", "city-air", "operator-*"]),
    st.sampled_from(["", *DEVICE_GLOBS]),
    st.sampled_from(["", *QUANTITY_GLOBS]),
)


@settings(max_examples=60, deadline=None)
@given(
    include=st.lists(RULE_FIELDS, max_size=2),
    exclude=st.lists(RULE_FIELDS, max_size=2),
    drop=st.lists(st.sampled_from(QUANTITY_GLOBS), max_size=1),
)
def test_what_routes_prints_is_what_the_dispatcher_selects(
    include: list[tuple[str, str, str]], exclude: list[tuple[str, str, str]], drop: list[str]
) -> None:
    def rules(drawn: list[tuple[str, str, str]]) -> list[dict[str, str]]:
        keyed = [dict(zip(("source", "device", "quantity"), fields, strict=True)) for fields in drawn]
        return [r for r in ({k: v for k, v in rule.items() if v} for rule in keyed) if r]

    sink = {"type": "local", "include": rules(include), "exclude": rules(exclude), "shape": {"drop_quantities": drop}}
    raw = tomllib.loads(SOURCES)
    try:
        cfg = build_config({**raw, "sinks": [sink]}, env={})
    except ConfigError:
        return  # a rule that can match nothing: refused, nothing to compare
    loaded = cfg.sinks[0]
    route = build_routes(cfg)[loaded.config.sink_name]
    catalogue = SourceCatalogue.of(cfg.sources)
    for source, cat in catalogue.sources.items():
        assert cat is not None
        for device, quantities in cat.devices.items():
            for quantity in quantities or ():
                r = Reading(ts_ns=1, site="s", gateway="g", device=device, quantity=quantity, value=1.0, unit="")
                assert selected(loaded, source, device, quantity) is route.selects(r), (source, device, quantity)


def test_a_rule_on_a_disabled_source_stays_valid() -> None:
    text = SOURCES.replace('name = "operator-energy"', 'name = "operator-energy"\nenabled = false')
    cfg = parse_config(text + '[[sinks]]\ntype = "local"\n[[sinks.include]]\nsource = "operator-*"\n', env={})
    assert "operator-energy: meter-1" in describe_routes(cfg)
