"""systemd/gateway.service: required directives, and systemd's own verdict on it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.cli import EXIT_CONFIG
from gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "gateway.service"
EXAMPLE = ROOT / "config" / "gateway.example.toml"
EXEC_START = "/opt/gateway/venv/bin/gateway run -c /etc/gateway/gateway.toml"

# Keys systemd accepts several times (list-valued); any other key set twice is a
# mistake, because the last one silently wins.
MULTI_VALUED = {
    "After", "Wants", "Requires", "Documentation", "DeviceAllow", "LoadCredential",
    "SupplementaryGroups", "SystemCallFilter", "RestrictAddressFamilies", "WantedBy", "Environment",
}  # fmt: skip

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """systemd.syntax(7) subset: sections, Key=Value, comments, backslash continuations.

    configparser does not fit: it rejects or merges repeated keys, and repeated
    keys (DeviceAllow=, LoadCredential=) are how systemd spells lists.
    """
    unit: Unit = defaultdict(lambda: defaultdict(list))
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert section, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=Value line: {line!r}"
        unit[section][key.strip()].append(value.strip())
    return unit


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def words(unit: Unit, section: str, key: str) -> list[str]:
    return [w for v in unit[section].get(key, []) for w in v.split()]


def test_parser_handles_lists_continuations_and_comments() -> None:
    parsed = parse_unit("[A]\n# c\n; c\nX=1\nX=2\nY=a \\\n  b\n[B]\nZ=\n")
    assert parsed["A"]["X"] == ["1", "2"]
    assert parsed["A"]["Y"] == ["a b"]
    assert parsed["B"]["Z"] == [""]


def test_no_single_valued_key_is_set_twice(unit: Unit) -> None:
    repeated = [(s, k) for s, keys in unit.items() for k, v in keys.items() if len(v) > 1 and k not in MULTI_VALUED]
    assert repeated == []


def test_lifecycle(unit: Unit) -> None:
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "ExecStart") == EXEC_START
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "WatchdogSec") == "30"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec") == "5"
    # A config error is not retried for ever; the code must be what `gateway run` returns.
    assert one(unit, "Service", "RestartPreventExitStatus") == str(EXIT_CONFIG)
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # The daemon must start with the uplink down and buffer meanwhile.
    assert "network-online.target" not in words(unit, "Unit", "Wants")


def test_identity_state_and_credentials(unit: Unit) -> None:
    assert one(unit, "Service", "User") == "gateway"
    assert "dialout" in words(unit, "Service", "SupplementaryGroups")
    assert one(unit, "Service", "StateDirectory") == "gateway"
    assert one(unit, "Service", "UMask") == "0077"
    creds = dict(v.split(":", 1) for v in unit["Service"]["LoadCredential"])
    assert creds == {
        "influx-token": "/etc/gateway/credentials/influx-token",
        "mqtt-password": "/etc/gateway/credentials/mqtt-password",
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "no"),  # serial ports must stay visible
        ("DevicePolicy", "closed"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_hardening(unit: Unit, key: str, value: str) -> None:
    assert one(unit, "Service", key) == value


def test_serial_devices_allowed(unit: Unit) -> None:
    allowed = {tuple(v.split()) for v in unit["Service"]["DeviceAllow"]}
    assert {("char-ttyUSB", "rw"), ("char-ttyACM", "rw"), ("char-ttyAMA", "rw"), ("char-ttyS", "rw")} <= allowed


def test_network_and_syscalls(unit: Unit) -> None:
    assert sorted(words(unit, "Service", "RestrictAddressFamilies")) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"  # the allow list must come first
    assert all(f.startswith("~") for f in filters[1:])


def _bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", size)
    assert m, f"unexpected size {size!r}"
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]


def test_memory_limit_fits_a_pi(unit: Unit) -> None:
    limit = _bytes(one(unit, "Service", "MemoryMax"))
    assert 128 * 1024**2 <= limit <= 512 * 1024**2
    assert _bytes(one(unit, "Service", "MemoryHigh")) < limit


def test_example_config_matches_the_unit(unit: Unit) -> None:
    """The credential names and state dir the example config uses are the unit's."""
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    base = GatewayConfig.model_validate(raw)  # the core sections validate for real
    assert base.gateway.state_dir == Path("/var/lib") / one(unit, "Service", "StateDirectory")
    creds = {v.split(":", 1)[0] for v in unit["Service"]["LoadCredential"]}
    secret_files = {
        s.get("token_file") or s.get("password_file") for s in raw["sinks"] if s["type"] in ("influxdb", "mqtt")
    }
    assert secret_files == creds
    assert EXEC_START.endswith(" -c /etc/gateway/gateway.toml")


def _verifiable_copy(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists; the real path exists only on a box.
    text = UNIT.read_text(encoding="utf-8").replace("/opt/gateway/venv/bin/gateway", sys.executable)
    copy = tmp_path / "gateway.service"
    copy.write_text(text, encoding="utf-8")
    return copy


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze not found: apt-get install systemd"
    return found


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # Works offline (no running systemd needed). An unknown key or a bad value
    # only warns on stderr with exit 0, so stderr must be empty too.
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    # --threshold is exposure x10: 20 means "2.0", systemd's "OK" band.
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", "--threshold=20", str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


# --- docs/deploy.md must match the unit and the CLI ------------------------------

DEPLOY = ROOT / "docs" / "deploy.md"
CLI_COMMANDS = {
    "run", "check", "demo", "query", "tail", "buffer stats", "buffer dead-letters",
    "status", "version", "probe", "scan", "sim",
}  # fmt: skip


def _shell_lines(markdown: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


def test_deploy_guide_commands_exist() -> None:
    used = set()
    for line in _shell_lines(DEPLOY.read_text(encoding="utf-8")):
        line = line.replace("sudo -u gateway ", "")  # the user, not the program
        for m in re.finditer(r"(?:^|\s)gateway ((?:buffer )?[a-z][a-z-]*)", line):
            used.add(m.group(1))
    assert used, "no gateway command found in the guide's shell blocks"
    assert used <= CLI_COMMANDS, f"not a gateway command: {sorted(used - CLI_COMMANDS)}"


def test_deploy_guide_paths_match_the_unit(unit: Unit) -> None:
    text = DEPLOY.read_text(encoding="utf-8")
    exec_start = one(unit, "Service", "ExecStart")
    binary, config = exec_start.split()[0], exec_start.split()[-1]
    assert binary.removesuffix("/bin/gateway") in text  # the venv the guide creates
    assert config in text
    for cred in unit["Service"]["LoadCredential"]:
        assert cred.split(":", 1)[1] in text
    assert "/var/lib/" + one(unit, "Service", "StateDirectory") in text
    assert "useradd --system" in text and one(unit, "Service", "User") in text
