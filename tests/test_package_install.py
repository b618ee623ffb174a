"""The wheel and the Debian package, built and installed for real (issue 9).

The wheel goes into a fresh venv (no editable install, run from outside the source tree); the Debian package
goes into a throwaway copy of this machine's root (tests/throwaway_root.py) with no network, as a technician
installs it on a site with no package index. Dependencies are fetched once per module into a wheel cache
(the only step that needs PyPI; pip's own cache makes it quick the second time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.throwaway_root import ThrowawayRoot

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
UPGRADE = VERSION + "+upgrade1"  # sorts after VERSION for dpkg
DEFAULT_CONFIG = "/etc/gateway/gateway.toml"
DOC = "/usr/share/doc/urban-sensor-gateway"


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{cmd} exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("package")


@pytest.fixture(scope="module")
def wheel(build_dir: Path) -> Path:
    # --no-build-isolation: the test extra brings setuptools>=77, so no build env is downloaded.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(build_dir / "dist"), str(ROOT)])  # fmt: skip
    (found,) = (build_dir / "dist").glob("urban_sensor_gateway-*.whl")
    return found


@pytest.fixture(scope="module")
def wheelhouse(build_dir: Path, wheel: Path) -> Path:
    house = build_dir / "wheels"
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(house), str(wheel)])
    for ours in house.glob("urban_sensor_gateway-*.whl"):
        ours.unlink()
    return house


@pytest.fixture(scope="module")
def fresh_venv(build_dir: Path, wheel: Path, wheelhouse: Path) -> Path:
    venv = build_dir / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
          "--find-links", str(wheelhouse), str(wheel)])  # fmt: skip
    return venv


# --- the wheel -------------------------------------------------------------------------------------------


def test_wheel_installs_one_top_level_package_and_no_tests(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"gateway", f"urban_sensor_gateway-{VERSION}.dist-info"}
    assert not [n for n in names if "/tests/" in n or "/_template/" in n]
    assert "gateway/py.typed" in names


def test_installed_wheel_finds_every_profile_and_data_file_by_name(fresh_venv: Path, tmp_path: Path) -> None:
    shipped = sorted(p.stem for p in (ROOT / "config" / "profiles").glob("*.toml"))
    code = (
        "from gateway import profiles\n"
        "names = profiles.list_profiles()\n"
        "for n in names: profiles.load_profile(n)\n"
        "print(' '.join(names))\n"
        "print(profiles.SHIPPED_DIR)\n"
    )
    # cwd outside the source tree and no GATEWAY_PROFILES: only what the wheel installed can be found
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_PROFILES"}
    done = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    names, shipped_dir = done.stdout.splitlines()
    assert set(shipped) <= set(names.split())
    assert Path(shipped_dir).is_relative_to(fresh_venv)
    # GATEWAY_PROFILES still adds the site's own profiles to the shipped ones
    (tmp_path / "site-profiles").mkdir()
    (tmp_path / "site-profiles" / "site-meter.toml").write_text((ROOT / "config/profiles/xy-md02.toml").read_text())
    env["GATEWAY_PROFILES"] = str(tmp_path / "site-profiles")
    with_site = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert set(with_site.stdout.splitlines()[0].split()) == set(names.split()) | {"site-meter"}
    site = Path(shipped_dir).parent
    for driver in ("simulated", "modbus", "serial", "lorawan", "loramodem"):
        assert (site / "drivers" / driver / "sample.toml").is_file()
        assert (site / "drivers" / driver / "README.md").is_file()


def test_installed_wheel_commands_run(fresh_venv: Path, tmp_path: Path) -> None:
    gateway = str(fresh_venv / "bin" / "gateway")
    assert VERSION in _run([gateway, "version"], cwd=tmp_path).stdout
    samples = sorted((fresh_venv / "lib").glob("python3*/site-packages/gateway/drivers/*/sample.toml"))
    assert len(samples) == 5
    for config in [ROOT / "config" / "gateway.example.toml", *samples]:
        _run([gateway, "check", "-c", str(config)], cwd=tmp_path)
    demo = _run([gateway, "demo", "--duration", "5"], cwd=tmp_path, timeout=120)
    assert "Traceback" not in demo.stdout + demo.stderr
    assert "latest readings" in demo.stdout


# --- the Debian package ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def debs(build_dir: Path, wheel: Path, wheelhouse: Path) -> Path:
    """Two versions of the package for this machine's architecture, for install and upgrade."""
    out = build_dir / "debs"
    for version in (VERSION, UPGRADE):
        # --fast: gzip -1 instead of xz, the same files
        _run([sys.executable, str(ROOT / "packaging" / "build_deb.py"), "--wheel", str(wheel), "--wheelhouse",
              str(wheelhouse), "--offline", "--fast", "--out", str(out), "--version", version])  # fmt: skip
    return out


def _deb(version: str) -> str:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout
    return f"/mnt/pkg/urban-sensor-gateway_{version}_{arch.strip()}.deb"


@pytest.fixture(scope="module")
def installed(debs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayRoot]:
    root = ThrowawayRoot(tmp_path_factory.mktemp("root"), debs)
    root.run(f"apt-get install -y -q {_deb(VERSION)}")  # no network in there: an offline install
    yield root


def test_package_creates_user_folders_and_enables_the_unit(installed: ThrowawayRoot) -> None:
    facts = installed.run(
        "id -nG gateway; getent passwd gateway | cut -d: -f6,7; command -v gateway;"
        " stat -c '%a %U %G' /etc/gateway/credentials /var/lib/gateway /etc/gateway/gateway.toml;"
        " readlink /etc/systemd/system/multi-user.target.wants/gateway.service;"
        " dpkg-query -W -f='${Conffiles}\\n' urban-sensor-gateway;"
        " sed -n 's|^Documentation=file:||p' /lib/systemd/system/gateway.service | xargs ls"
    ).stdout.splitlines()
    groups, home_shell, on_path, credentials, state, config, wanted, conffiles, doc = (f.strip() for f in facts)
    assert set(groups.split()) == {"gateway", "dialout"}
    assert home_shell == "/var/lib/gateway:/usr/sbin/nologin"
    assert on_path == "/usr/bin/gateway"
    assert credentials == "700 root root"
    assert state == "750 gateway gateway"
    assert config == "644 root root"
    assert wanted == "/lib/systemd/system/gateway.service"
    assert conffiles.startswith(DEFAULT_CONFIG + " ")
    assert doc == f"{DOC}/deploy.md"  # the unit's Documentation= is installed


def test_installed_unit_passes_systemd_analyze(installed: ThrowawayRoot) -> None:
    unit = "/lib/systemd/system/gateway.service"
    verify = installed.run(f"systemd-analyze verify {unit} 2>&1")
    assert verify.stdout == ""
    # --threshold is exposure x10: 20 means "2.0"; the exit status says whether it is exceeded
    installed.run(f"systemd-analyze security --offline=true --threshold=20 {unit}")


def test_installed_commands_run_as_the_service_user(installed: ThrowawayRoot) -> None:
    as_gateway = "cd / && runuser -u gateway --"
    version = installed.run(f"{as_gateway} gateway version").stdout
    assert version.startswith(f"gateway {VERSION}")
    configs = [DEFAULT_CONFIG, f"{DOC}/gateway.example.toml"] + [
        f"{DOC}/samples/{d}.toml" for d in ("simulated", "modbus", "serial", "lorawan", "loramodem")
    ]
    for config in configs:
        installed.run(f"{as_gateway} gateway check -c {config}")
    demo = installed.run(f"{as_gateway} gateway demo --duration 5 2>&1")
    assert "Traceback" not in demo.stdout
    assert "latest readings" in demo.stdout


# A stand-in for systemctl: no systemd runs in the throwaway root, so this records what the maintainer
# scripts ask of it (through deb-systemd-invoke, which needs /run/systemd/system and no policy-rc.d veto).
# It replaces /usr/bin/systemctl in the root's private layer only: apt runs maintainer scripts with
# PATH=/usr/sbin:/usr/bin:/sbin:/bin (DPkg::Path), so an earlier PATH entry would not be seen.
_SYSTEMCTL_RECORDER = r"""
mkdir -p /run/systemd/system
rm -f /usr/sbin/policy-rc.d
cat >/usr/bin/systemctl <<'SH'
#!/bin/sh
echo "$*" >>/var/log/systemctl-calls
case "$*" in *is-enabled*) echo enabled ;; esac
exit 0
SH
"""

# Start the daemon as the service user and wait (deadline 60 s) until the local store has a reading.
_FIRST_READING = r"""
cd /
runuser -u gateway -- gateway run -c /etc/gateway/gateway.toml >/tmp/daemon.log 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true' EXIT  # never leave it running, even when a step fails
start=$(date +%s%N)
for _ in $(seq 600); do
    if runuser -u gateway -- gateway query -c /etc/gateway/gateway.toml --latest 2>/dev/null | grep -q selftest-weather
    then break; fi
    sleep 0.1
done
echo "first reading after $(( ($(date +%s%N) - start) / 1000000 )) ms"
kill -TERM $daemon; wait $daemon || true
runuser -u gateway -- gateway query -c /etc/gateway/gateway.toml --latest
"""


def test_upgrade_keeps_config_credentials_and_buffer_remove_keeps_data_purge_deletes_it(
    debs: Path, tmp_path: Path
) -> None:
    root = ThrowawayRoot(tmp_path / "root", debs)
    root.run(f"apt-get install -y -q {_deb(VERSION)}")
    first = root.run(_FIRST_READING).stdout
    assert "selftest-weather" in first, first
    root.run(
        f"echo '# edited on site' >>{DEFAULT_CONFIG}; echo s3cret >/etc/gateway/credentials/influx-token;"
        " ls /var/lib/gateway/buffer.sqlite /var/lib/gateway/local.sqlite"
    )

    upgraded = root.run(
        _SYSTEMCTL_RECORDER + f"apt-get install -y -q {_deb(UPGRADE)};"
        " dpkg-query -W -f='${Version}\\n' urban-sensor-gateway;"
        f" tail -n 1 {DEFAULT_CONFIG}; cat /etc/gateway/credentials/influx-token;"
        " cd / && runuser -u gateway -- gateway query -c /etc/gateway/gateway.toml --device selftest-weather;"
        " echo '--- systemctl'; cat /var/log/systemctl-calls"
    ).stdout
    assert f"\n{UPGRADE}\n# edited on site\ns3cret\n" in upgraded, upgraded
    assert "selftest-weather" in upgraded.split("--- systemctl")[0]  # readings stored before the upgrade
    assert "restart gateway.service" in upgraded.split("--- systemctl")[1]

    removed = root.run(
        _SYSTEMCTL_RECORDER + "apt-get remove -y -q urban-sensor-gateway >/dev/null;"
        f" ls {DEFAULT_CONFIG} /etc/gateway/credentials/influx-token /var/lib/gateway/buffer.sqlite;"
        " test ! -e /opt/gateway/venv/bin/gateway && test ! -e /usr/bin/gateway && echo program-gone;"
        " cat /var/log/systemctl-calls"
    ).stdout
    assert "program-gone" in removed
    assert "stop gateway.service" in removed

    purged = root.run(
        "dpkg --purge urban-sensor-gateway >/dev/null;"
        " for p in /etc/gateway /var/lib/gateway; do test -e $p || echo $p gone; done"
    ).stdout
    assert purged.splitlines() == ["/etc/gateway gone", "/var/lib/gateway gone"]


def test_arm64_package_carries_only_arm64_binaries(build_dir: Path, wheel: Path) -> None:
    # Cross-built here with the aarch64 wheels from PyPI (a Raspberry Pi with the 64-bit OS).
    out = build_dir / "arm64"
    _run([sys.executable, str(ROOT / "packaging" / "build_deb.py"), "--arch", "arm64", "--wheel", str(wheel),
          "--wheelhouse", str(out / "wheels"), "--fast", "--out", str(out)])  # fmt: skip
    deb = out / f"urban-sensor-gateway_{VERSION}_arm64.deb"
    assert "Architecture: arm64" in _run(["dpkg-deb", "--info", str(deb)]).stdout
    listing = _run(["dpkg-deb", "--contents", str(deb)]).stdout
    libraries = [line.split()[-1] for line in listing.splitlines() if line.endswith(".so")]
    assert any("pydantic_core" in lib for lib in libraries)
    assert libraries and all("aarch64-linux-gnu" in lib for lib in libraries), libraries
