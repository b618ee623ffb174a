"""The docs stay true: links and paths exist, citations resolve, alert rules and file names match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.buffer_sqlite import DurableBuffer
from gateway.config import build_config
from gateway.metrics import Metrics
from tests.test_metrics import snapshot

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "dist", "build", "node_modules", "__pycache__"}
TOP_LEVEL = ("docs", "config", "drivers", "simulators", "gateway", "tests", "scripts", "systemd", "packaging", "bench")
PLACEHOLDER = re.compile(r"[<>*{}$…]|\.\.\.")


def _files(*suffixes: str) -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*")
        if p.suffix in suffixes and p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
    )


DOCS = _files(".md")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def _rel(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


def test_slug_matches_githubs_rule() -> None:
    assert slug("6a. Eastron SDM630 and SDM120 energy meters") == "6a-eastron-sdm630-and-sdm120-energy-meters"
    assert slug("4. Serial LoRa modems (P2P)") == "4-serial-lora-modems-p2p"
    assert slug("Why one package per architecture") == "why-one-package-per-architecture"


def test_docs_were_found() -> None:
    names = {_rel(d) for d in DOCS}
    assert {"README.md", "docs/deploy.md", "docs/protocols.md", "drivers/serial/README.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:, file:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_repository_paths_named_exist(doc: Path) -> None:
    # A "Sources" section names files of other repositories, not of this one.
    text = doc.read_text(encoding="utf-8").split("\n## Sources\n", 1)[0]
    # (not after a quote: a JSON string such as a series id "gateway/buffer/buffer_depth" is no path)
    pattern = r"(?<![\w/.~\"-])((?:" + "|".join(TOP_LEVEL) + r")/[\w./-]*)"
    missing = set()
    for m in re.finditer(pattern, text):
        name = m.group(1).rstrip(".,:;")
        end = m.end()
        if PLACEHOLDER.search(text[end : end + 1]) or name.endswith("-"):
            continue  # a pattern such as drivers/<family>/ or buffer_*.py, not one path
        if not (ROOT / name).exists() and not (doc.parent / name).exists():
            missing.add(name)
    assert sorted(missing) == []


def test_protocol_citations_point_at_docs_protocols_with_a_known_section() -> None:
    known = anchors(ROOT / "docs" / "protocols.md")
    wrong = []
    for path in _files(".py", ".toml", ".md"):
        if path in (ROOT / "docs" / "protocols.md", Path(__file__).resolve()):
            continue
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"docs/protocols\.md#([\w-]+)", text):
            if m.group(1) not in known:
                wrong.append(f"{_rel(path)}: #{m.group(1)} is not a section of docs/protocols.md")
        rest = re.sub(r"docs/protocols\.md#[\w-]+|\[docs/protocols\.md\]", "", text)
        if "protocols.md" in rest or "/work/shared" in rest:
            wrong.append(f"{_rel(path)}: cites protocols.md without docs/ and a #section")
        if "docs/serial.md" in text:
            wrong.append(f"{_rel(path)}: docs/serial.md does not exist")
    assert wrong == []


def test_protocols_doc_links_nothing_outside_the_repository() -> None:
    assert "http" not in (ROOT / "docs" / "protocols.md").read_text(encoding="utf-8")


def _exposed_names() -> set[str]:
    """Every sample name the endpoint can serve, from the registry's families and their types."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"]}
    metrics = Metrics()
    metrics.buffer_collector.stats = snapshot()  # the buffer and sink gauges exist once stats are known
    names = set()
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, [""]):
            names.add(family.name + suffix)
    return names


def test_alert_rules_use_names_the_endpoint_exposes() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    rules = doc.split("## What to alert on", 1)[1]
    used = set(re.findall(r"\bgateway_[a-z0-9_]+", " ".join(re.findall(r"`([^`]+)`", rules))))
    assert len(used) >= 5
    exposed = _exposed_names()
    assert "gateway_driver_restarts_total" in exposed  # a counter: the exposition adds _total
    assert sorted(used - exposed) == []


def test_durability_doc_names_the_files_the_buffer_writes(tmp_path: Path) -> None:
    config = build_config({"gateway": {"site": "s", "state_dir": str(tmp_path)}}, source="<test>")
    buffer = DurableBuffer(config.buffer_path, max_bytes=64 * 1024**2)
    try:
        written = {p.name for p in tmp_path.iterdir()}
    finally:
        buffer.close()
    doc = (ROOT / "docs" / "durability.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(buffer\.[\w.-]+)`", doc))
    assert named, "durability.md names no buffer file"
    assert sorted(named - written) == []
