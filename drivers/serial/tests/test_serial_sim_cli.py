"""The standalone simulator, as a technician runs it: gateway sim serial --device ... --link ..."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import serial
from gateway.drivers.serial.particulates import decode_sds011, sds011_framer


def test_sim_serial_cli_serves_frames_on_the_link(tmp_path: Path) -> None:
    link = tmp_path / "ttySDS"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "serial", "--device", "sds011", "--link", str(link), "--rate", "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not link.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the simulator did not create its link"
            time.sleep(0.05)
        with serial.Serial(str(link), 9600, timeout=0.5) as port:
            data = b""
            while len(data) < 60 and time.monotonic() < deadline:
                data += port.read(60)
        framed = sds011_framer().feed(data, 0.0)
        assert len(framed.frames) >= 4
        assert {m.quantity for f in framed.frames for m in decode_sds011(f)} == {"pm2_5", "pm10"}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "simulating sds011" in out and "frames" in out
    assert not link.exists()  # the link is removed on exit


def test_sim_serial_rejects_bad_probability(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.simulators.serial.cli",
            "--device",
            "nmea",
            "--link",
            str(tmp_path / "x"),
            "--noise",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--noise must be a probability" in result.stderr
