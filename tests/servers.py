"""Real servers for tests: Mosquitto and VictoriaMetrics on free loopback ports.

No mocks: each fixture starts the Debian binary in a temporary directory, waits
until it answers, and can stop/restart it (for fault-injection tests) on the
same port and data directory.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing is listening on 127.0.0.1:{port} after {timeout}s")


def find_binary(name: str, *extra: str) -> str:
    for candidate in (name, *extra):
        path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if path:
            return path
    raise FileNotFoundError(f"{name} is not installed: run scripts/test (it installs it) or apt-get install {name}")


class _Server:
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            self._command(), stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = open(workdir / "server.log", "ab")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        self.stop()
        self.log.close()


class Mosquitto(_Server):
    """A Mosquitto broker on 127.0.0.1:<port>, anonymous, with persistence on disk."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = find_binary("mosquitto", "/usr/sbin/mosquitto")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            # Run as root, mosquitto drops to user 'mosquitto', which cannot write the
            # test's directory: persistence then fails silently and sessions die with it.
            f"user {getpass.getuser()}\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "log_type error\nlog_type warning\n"
        )

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]

    @property
    def host(self) -> str:
        return "127.0.0.1"


class VictoriaMetrics(_Server):
    """VictoriaMetrics single-node: accepts the InfluxDB write API at /api/v2/write.

    ``-dedup.minScrapeInterval=1ms`` makes identical (series, timestamp) samples
    collapse into one, which is what InfluxDB does natively; the gateway's
    at-least-once delivery relies on that idempotence (see docs/durability.md).
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = find_binary("victoria-metrics", "victoria-metrics-prod")

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def _wait_ready(self) -> None:
        _wait_for_port(self.port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError("VictoriaMetrics did not become healthy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flush(self) -> None:
        """Make everything ingested so far visible to queries."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()

    def export(self, match: str) -> list[dict[str, object]]:
        """All raw samples of the series matching ``match`` (JSON lines of /api/v1/export)."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as resp:
            return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]


import urllib.parse  # noqa: E402  (kept next to its only user above for readability)


@contextlib.contextmanager
def running(server: _Server) -> Iterator[_Server]:
    server.start()
    try:
        yield server
    finally:
        server.close()
