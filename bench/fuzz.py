"""Fuzz every decoder: random bytes and mutated valid frames in, readings or a typed refusal out.

Run: .venv/bin/python bench/fuzz.py [--inputs 1000000] [--seed 1] [--targets serial,lora.elsys]
     .venv/bin/python bench/fuzz.py --replay TARGET FILE     (run one saved input, with its traceback)

The targets, their seeds and the mutator (bit flips, truncation, insertion of
random bytes or of known troublemakers, splicing of two seeds, format-aware
JSON value swaps) live in tests/fuzz_targets.py, shared with the Hypothesis
tests (tests/test_fuzz.py). Per target it prints inputs, inputs/s and the
unexpected exceptions: anything a decoder raises other than its typed refusal
(docs/architecture.md: every decoder is total). Each distinct one (exception
type and the line that raised it) gets a shrunk reproducer; inputs too long to
print are saved to a file for --replay. Exit status 1 if any was found.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.fuzz_targets
from tests.fuzz_targets import Target, check, mutate, targets

Signature = tuple[str, str]  # exception type, "file:line" that raised it
_PRINTABLE_MAX = 300  # longer reproducers go to a file


@dataclass
class Finding:
    exc: BaseException
    data: bytes
    count: int = 1


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    findings: dict[Signature, Finding] = field(default_factory=dict)

    @property
    def unexpected(self) -> int:
        return sum(f.count for f in self.findings.values())


def signature(exc: BaseException) -> Signature:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return type(exc).__name__, f"{Path(last.filename).name}:{last.lineno}" if last else "?"


def shrink(target: Target, data: bytes, sig: Signature, budget: int = 2000) -> bytes:
    """Greedy chunk deletion while the same exception still comes from the same line."""
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and budget > 0:
        i, progressed = 0, False
        while i < len(data) and budget > 0:
            candidate = data[:i] + data[i + chunk :]
            budget -= 1
            exc = check(target, candidate)
            if exc is not None and signature(exc) == sig:
                data, progressed = candidate, True
            else:
                i += chunk
        if not progressed:
            chunk //= 2
    return data


def fuzz(target: Target, inputs: int, rng: random.Random) -> Report:
    report = Report(target.name, inputs)
    started = time.perf_counter()
    for data in target.seeds:  # the valid inputs must pass first
        _record(report, target, data)
    for _ in range(inputs):
        _record(report, target, mutate(rng, target))
    report.seconds = time.perf_counter() - started
    return report


def _record(report: Report, target: Target, data: bytes) -> None:
    exc = check(target, data)
    if exc is None:
        return
    sig = signature(exc)
    found = report.findings.get(sig)
    if found is None:
        report.findings[sig] = Finding(exc, data)
    else:
        found.count += 1


def reproducer(target: Target, finding: Finding, sig: Signature) -> str:
    data = shrink(target, finding.data, sig)
    if len(repr(data)) <= _PRINTABLE_MAX:
        return f"targets()[{target.name!r}].run({data!r})"
    with tempfile.NamedTemporaryFile(prefix=f"fuzz-{target.name}-", suffix=".bin", delete=False) as f:
        f.write(data)
    return f"{len(data)} bytes in {f.name}: python bench/fuzz.py --replay {target.name} {f.name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (a run is reproducible)")
    parser.add_argument("--targets", default="", help="comma-separated names or prefixes (default: all)")
    parser.add_argument("--replay", nargs=2, metavar=("TARGET", "FILE"), help="run one saved input")
    args = parser.parse_args(argv)

    logging.disable(logging.WARNING)  # decoders log the first problem of each kind; a million inputs have them all
    warnings.simplefilter("ignore")  # e.g. re's FutureWarning on a fuzzed regex pattern in a config
    all_targets = targets()
    if args.replay:
        name, path = args.replay
        all_targets[name].run(Path(path).read_bytes())  # raises with the full traceback if it still fails
        print("no exception")
        return 0

    wanted = [p for p in args.targets.split(",") if p]
    chosen = [t for n, t in all_targets.items() if not wanted or any(n.startswith(p) for p in wanted)]
    if not chosen:
        parser.error(f"no target matches {args.targets!r}; targets: {', '.join(all_targets)}")
    print(f"{'decoder':20} {'inputs':>10} {'inputs/s':>10} {'unexpected':>10}", flush=True)
    total = 0
    for target in chosen:
        report = fuzz(target, args.inputs, random.Random(f"{args.seed}:{target.name}"))
        total += report.unexpected
        rate = report.inputs / report.seconds if report.seconds else 0.0
        print(f"{target.name:20} {report.inputs:>10,} {rate:>10,.0f} {report.unexpected:>10,}", flush=True)
        for sig, finding in report.findings.items():
            print(f"    {finding.count:,} x {sig[0]} at {sig[1]}: {str(finding.exc)[:120]}")
            print(f"      reproducer: {reproducer(target, finding, sig)}", flush=True)
    print(f"{total} unexpected exception(s) in {len(chosen)} decoder(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
