"""``gateway fleet``: every gateway's health at a glance, from the retained status topics.

Subscribes to ``<prefix>/#`` on the broker, collects the retained statuses (and any that arrive while
it listens), and prints one row per gateway, problems first. ``--json`` prints the same rows for
scripts. Exit 0 if every gateway is fine, 1 if any has a problem or none answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import aiomqtt

from gateway.fleet.health import SCHEMA, problems
from gateway.fleet.settings import DEFAULT_TOPIC_PREFIX

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
QUIET_S = 0.5  # retained messages come in one burst after subscribing: stop listening this long after the last


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fleet",
        help="show every gateway's health from the broker, problems first",
        description=__doc__,
        epilog="examples:\n  gateway fleet --broker mqtt.city.example\n  gateway fleet -c gateway.toml --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", help="take the broker from this config's [fleet] section")
    p.add_argument("--broker", help="MQTT broker host (default: the config's [fleet] host)")
    p.add_argument("--port", type=int, default=None, help="default 1883")
    p.add_argument("--username", default=None)
    p.add_argument("--topic-prefix", default=None, help=f"default {DEFAULT_TOPIC_PREFIX}")
    p.add_argument("--wait", type=float, default=5.0, help="listen at most this many seconds (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON document: a list of rows, problems first")
    p.set_defaults(func=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    host, port, prefix, username, password = args.broker, args.port, args.topic_prefix, args.username, None
    if args.config:
        from gateway.config import ConfigError, load_config
        from gateway.config_types import SecretError, resolve_secret

        try:
            fleet = load_config(args.config).base.fleet
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        if fleet is None or fleet.host is None:
            print(f"{args.config}: fleet.host: not set; give --broker", file=sys.stderr)
            return EXIT_CONFIG
        host, port = host or fleet.host, port or fleet.port
        prefix, username = prefix or fleet.topic_prefix, username or fleet.username
        try:
            password = resolve_secret(
                value=fleet.password.get_secret_value() if fleet.password else None,
                file=fleet.password_file,
                env=fleet.password_env,
                what="fleet.password",
            )
        except SecretError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
    if not host:
        print("give --broker HOST or -c CONFIG with a [fleet] host", file=sys.stderr)
        return EXIT_CONFIG
    prefix = prefix or DEFAULT_TOPIC_PREFIX
    try:
        docs = asyncio.run(collect(host, port or 1883, prefix, wait_s=args.wait, username=username, password=password))
    except (aiomqtt.MqttError, OSError) as exc:
        print(f"cannot read the fleet status from {host}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    table = rows(docs.values())
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print_table(table)
    return EXIT_OK if table and not any(r["problems"] for r in table) else EXIT_FAILURE


async def collect(
    host: str, port: int, prefix: str, *, wait_s: float, username: str | None = None, password: str | None = None
) -> dict[str, dict[str, Any]]:
    """topic -> status document, for every gateway status retained on (or published to) the broker."""
    docs: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(host, port, username=username, password=password, timeout=10) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        deadline = time.monotonic() + wait_s
        messages = aiter(client.messages)
        while (left := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(min(left, QUIET_S)):
                    message = await anext(messages)
            except TimeoutError:
                if docs:
                    break  # the retained burst is over
                continue
            if not message.payload:
                docs.pop(str(message.topic), None)  # a cleared retained status
                continue
            try:
                doc = json.loads(message.payload if isinstance(message.payload, bytes | str) else b"")
            except (ValueError, TypeError):
                continue
            if isinstance(doc, dict) and doc.get("schema") == SCHEMA:
                docs[str(message.topic)] = doc
    return docs


def rows(docs: Iterable[Mapping[str, Any]], *, now_ns: int | None = None) -> list[dict[str, Any]]:
    """One row per gateway (identity), worst first: problems, then site and name."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    docs = list(docs)
    online_by_name: dict[tuple[Any, Any], set[str]] = defaultdict(set)
    for d in docs:
        if d.get("state") == "online":
            online_by_name[(d.get("site"), d.get("name"))].add(str(d.get("id")))
    out = []
    for d in docs:
        found = list(d.get("problems") or problems(d)) if d.get("state") == "online" else problems(d)
        updated = d.get("updated_ns")
        age = round((now_ns - updated) / 1e9) if isinstance(updated, int) else None
        interval = d.get("status_interval_s") or 30
        if d.get("state") == "online" and age is not None and age > 3 * interval:
            found.insert(0, f"status not updated for {age}s")
        rivals = online_by_name[(d.get("site"), d.get("name"))] - {str(d.get("id"))}
        if d.get("state") == "online" and rivals and not any(p.startswith("another gateway") for p in found):
            found.insert(0, f"another gateway uses this name (id {', '.join(sorted(r[:8] for r in rivals))})")
        buffer = d.get("buffer") or {}
        out.append({
            "site": d.get("site"), "name": d.get("name"), "id": str(d.get("id", ""))[:8], "state": d.get("state"),
            "version": d.get("version"), "updated_age_s": age,
            "uptime_s": round((now_ns - d["started_ns"]) / 1e9) if isinstance(d.get("started_ns"), int) else None,
            "buffer_readings": buffer.get("readings"), "buffer_oldest_age_s": buffer.get("oldest_age_s"),
            "sinks": {n: s.get("state") for n, s in (d.get("sinks") or {}).items()},
            "devices_down": d.get("devices_down", 0), "clock_synchronized": d.get("clock_synchronized"),
            "problems": found,
        })  # fmt: skip

    def severity(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            0 if r["state"] == "offline" else 1 if r["problems"] else 2,
            -len(r["problems"]),
            str(r["site"]),
            str(r["name"]),
        )

    return sorted(out, key=severity)


def print_table(table: list[dict[str, Any]]) -> None:
    if not table:
        print("no gateway status on the broker")
        return
    header = ("SITE", "NAME", "ID", "STATE", "SEEN", "BUFFER", "PROBLEMS")
    lines = [
        (
            str(r["site"]), str(r["name"]), r["id"], str(r["state"]),
            f"{r['updated_age_s']}s ago" if r["updated_age_s"] is not None else "-",
            str(r["buffer_readings"] if r["buffer_readings"] is not None else "-"),
            "; ".join(r["problems"]) or "ok",
        )
        for r in table
    ]  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header[:-1])]
    for line in (header, *lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1])
    bad = sum(1 for r in table if r["problems"])
    print(f"{len(table)} gateway(s), {bad} with problems")
