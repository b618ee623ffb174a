"""Every decoder is total: any bytes in give readings or its typed refusal, nothing else raised.

One Hypothesis property per decoder (targets in tests/fuzz_targets.py: Modbus
registers, each serial framer and line parser, NMEA, every LoRa codec,
ChirpStack and TTS events, modem lines, config loading), and a short run of
bench/fuzz.py so that the long-run script keeps working.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import check, mutate, targets

ROOT = Path(__file__).resolve().parent.parent
NAMES = sorted(targets())


def test_every_decoder_family_has_a_target() -> None:
    families = {name.split(".")[0] for name in NAMES}
    assert families == {"modbus", "serial", "nmea", "lora", "lorawan", "loramodem", "config"}
    assert {"lora.cayenne", "lora.dragino", "lora.elsys", "lora.decentlab"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoder_is_total(name: str, data: st.DataObject) -> None:
    target = targets()[name]
    raw = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(target.seeds),
            st.randoms(use_true_random=False).map(lambda rng: mutate(rng, target)),
        ),
        label="input",
    )
    exc = check(target, raw)
    if exc is not None:
        raise AssertionError(f"{name} raised {type(exc).__name__} instead of a refusal on {raw[:300]!r}") from exc


def test_the_fuzz_bench_finds_nothing_in_a_short_run() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--inputs", "2000", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:-1] if not line.startswith(" ")]
    assert sorted(row[0] for row in rows) == NAMES
    assert {(row[1], row[3]) for row in rows} == {("2,000", "0")}
    assert result.stdout.splitlines()[-1] == f"0 unexpected exception(s) in {len(NAMES)} decoder(s)"
