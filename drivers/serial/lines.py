"""Text-line decoders: regex, CSV, JSON lines, key=value. Pure functions of one line.

Each splits a line into raw fields (``parse_*``), then ``map_fields`` turns the
configured keys into canonical measurements (value * scale + offset). A line
that cannot be parsed raises ``LineError`` with the counter kind; a single bad
or missing field loses that field only.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.quantities import convert_to_canonical

from .config import CSVDecoder, FieldSpec, JSONDecoder, KeyValueDecoder, RegexDecoder
from .measurement import Measurement

RawFields = Mapping[str, Any]
LineParser = Callable[[str], RawFields]


class LineError(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def regex_parser(pattern: str) -> LineParser:
    compiled = re.compile(pattern)

    def parse(line: str) -> RawFields:
        m = compiled.search(line)
        if m is None:
            raise LineError("malformed_line", f"no match: {line[:60]!r}")
        return {k: v for k, v in m.groupdict().items() if v is not None}

    return parse


def csv_parser(columns: list[str], delimiter: str) -> LineParser:
    def parse(line: str) -> RawFields:
        # The csv module handles quoting; one line is one record. It refuses a
        # stray carriage return inside a field (b"\r,\n" on a noisy line) and
        # over-long fields with csv.Error, which is a malformed line like any other.
        try:
            row = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error as exc:
            raise LineError("malformed_line", f"{exc}: {line[:60]!r}") from exc
        if len(row) != len(columns):
            raise LineError("malformed_line", f"{len(row)} columns, expected {len(columns)}: {line[:60]!r}")
        return {name: cell.strip() for name, cell in zip(columns, row, strict=True) if name}

    return parse


def json_parser() -> LineParser:
    def parse(line: str) -> RawFields:
        try:
            doc = json.loads(line)
            flat = _flatten(doc) if isinstance(doc, dict) else None
        except RecursionError as exc:  # b"[" * 5000 fits in a long max_line_length
            raise LineError("malformed_json", f"nested too deeply: {line[:60]!r}") from exc
        except ValueError as exc:  # also an integer of more than 4300 digits
            raise LineError("malformed_json", f"{exc}: {line[:60]!r}") from exc
        if flat is None:
            raise LineError("malformed_json", f"not a JSON object: {line[:60]!r}")
        return flat

    return parse


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


_DEFAULT_PAIRS = re.compile(r"[\s,;]+")


def keyvalue_parser(pair_separator: str | None, kv_separator: str) -> LineParser:
    def parse(line: str) -> RawFields:
        pairs = _DEFAULT_PAIRS.split(line) if pair_separator is None else line.split(pair_separator)
        out: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition(kv_separator)
            if sep and key.strip():
                out[key.strip()] = value.strip()
        if not out:
            raise LineError("malformed_line", f"no key{kv_separator}value pairs: {line[:60]!r}")
        return out

    return parse


def make_parser(decoder: RegexDecoder | CSVDecoder | JSONDecoder | KeyValueDecoder) -> LineParser:
    if isinstance(decoder, RegexDecoder):
        return regex_parser(decoder.pattern)
    if isinstance(decoder, CSVDecoder):
        return csv_parser(decoder.columns, decoder.delimiter)
    if isinstance(decoder, JSONDecoder):
        return json_parser()
    return keyvalue_parser(decoder.pair_separator, decoder.kv_separator)


def map_fields(raw: RawFields, fields: list[FieldSpec]) -> tuple[list[Measurement], list[str]]:
    """Configured fields -> measurements in canonical units, plus error kinds for lost fields."""
    out: list[Measurement] = []
    errors: list[str] = []
    for spec in fields:
        if spec.key not in raw:
            errors.append("missing_field")
            continue
        value = _number(raw[spec.key])
        if value is None:
            errors.append("bad_value")
            continue
        scaled = value * spec.scale + spec.offset
        if not math.isfinite(scaled):  # 1e308 * scale: no store can hold it
            errors.append("bad_value")
            continue
        assert spec.unit is not None  # filled in by FieldSpec validation
        converted = convert_to_canonical(spec.quantity, scaled, spec.unit)
        if converted is None:  # excluded by FieldSpec validation; kept as a guard
            errors.append("bad_unit")
            continue
        out.append(Measurement(spec.quantity, converted[0], converted[1]))
    return out, errors


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        if isinstance(value, int | float | str):
            number = float(value)  # an int beyond float range (400 digits) raises OverflowError
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
