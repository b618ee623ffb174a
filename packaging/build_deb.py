"""Build the Debian package: ``scripts/package [--arch ARCH] [--version V] [--out DIR]``.

One package per architecture (amd64, arm64; armhf only when built on an armhf box, see docs/deploy.md), each
carrying the gateway and every Python dependency compiled for that architecture and Python 3.11 in a
self-contained virtualenv under /opt/gateway/venv. Nothing is fetched at install time, so
``apt install ./urban-sensor-gateway_<version>_<arch>.deb`` works with no network on Debian 12 / Raspberry Pi
OS bookworm. The layout, the maintainer scripts and the default config are in packaging/.

The venv is written by hand rather than by ``python -m venv`` because it is built on another machine (and
maybe for another architecture): it is the target's /usr/bin/python3.11 plus a pyvenv.cfg and our
site-packages, which is all a venv is. Only dpkg-deb (part of dpkg) is needed to build it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
PACKAGE = "urban-sensor-gateway"
PYTHON = "3.11"  # Debian 12 / Raspberry Pi OS bookworm; compiled wheels (pydantic-core...) are per ABI
VENV = Path("opt/gateway/venv")
SITE = VENV / "lib" / f"python{PYTHON}" / "site-packages"
DOC = Path("usr/share/doc") / PACKAGE
# dpkg architecture -> machine name in wheel platform tags
MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l"}
# bookworm has glibc 2.36: every manylinux wheel up to that runs there
MANYLINUX = ["manylinux2014", *(f"manylinux_2_{minor}" for minor in range(17, 37))]
DRIVERS_WITH_SAMPLES = ("simulated", "modbus", "serial", "lorawan", "loramodem")


class BuildError(RuntimeError):
    """The package cannot be built here; the message says why and what to do."""


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def native_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def build_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(ROOT)]
    try:  # with a recent setuptools at hand (the test extra has it) no build env is fetched: offline and fast
        from setuptools import __version__ as setuptools_version

        if int(setuptools_version.split(".")[0]) >= 77:
            cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    _run(cmd)
    (wheel,) = dest.glob("urban_sensor_gateway-*.whl")
    return wheel


def _platform_args(arch: str) -> list[str]:
    """pip arguments that pick wheels for ARCH; none when building on ARCH itself (sdists may be built)."""
    if arch == native_arch():
        return []
    args = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp311"]
    for tag in MANYLINUX:
        args += ["--platform", f"{tag}_{MACHINES[arch]}"]
    return args


def fill_wheelhouse(wheel: Path, wheelhouse: Path, arch: str, *, offline: bool) -> None:
    """Every dependency of WHEEL as a wheel for ARCH in WHEELHOUSE (a cache kept between builds)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if offline:
        return
    pip = [sys.executable, "-m", "pip"]
    if arch == native_arch():  # builds the few that have no wheel for this machine (e.g. aiocsv on armhf)
        _run([*pip, "wheel", "-q", "-w", str(wheelhouse), "--find-links", str(wheelhouse), str(wheel)])
    else:
        _run([*pip, "download", "-q", "-d", str(wheelhouse), *_platform_args(arch), str(wheel)])
    for ours in wheelhouse.glob("urban_sensor_gateway-*.whl"):  # the cache is for dependencies only
        ours.unlink()


def install_site_packages(stage: Path, wheel: Path, wheelhouse: Path, arch: str) -> None:
    site = stage / SITE
    platform = _platform_args(arch) or ["--only-binary=:all:"]
    _run([
        sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-compile", "--no-warn-script-location",
        "--find-links", str(wheelhouse), "--target", str(site), *platform, str(wheel),
    ])  # fmt: skip
    # pip --target writes console scripts with this machine's interpreter in the #! line: ours is below.
    shutil.rmtree(site / "bin", ignore_errors=True)
    python = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which(f"python{PYTHON}")
    if python is None:
        raise BuildError(f"python{PYTHON} is needed to precompile the bytecode for the target's Python {PYTHON}")
    # checked-hash: valid whatever mtimes the files get; the service cannot write bytecode (ProtectSystem=strict).
    _run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "checked-hash", str(site)])


def write_venv(stage: Path) -> None:
    bin_dir = stage / VENV / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (stage / VENV / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {PYTHON}\n", encoding="utf-8"
    )
    (bin_dir / f"python{PYTHON}").symlink_to(f"/usr/bin/python{PYTHON}")
    (bin_dir / "python3").symlink_to(f"python{PYTHON}")
    (bin_dir / "python").symlink_to(f"python{PYTHON}")
    launcher = bin_dir / "gateway"
    launcher.write_text(
        f"#!/{VENV}/bin/python3\nimport sys\n\nfrom gateway.cli import main\n\nsys.exit(main())\n", encoding="utf-8"
    )
    launcher.chmod(0o755)
    usr_bin = stage / "usr/bin"
    usr_bin.mkdir(parents=True, exist_ok=True)
    (usr_bin / "gateway").symlink_to(f"/{VENV}/bin/gateway")  # `gateway` on the PATH


def _copy(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def write_system_files(stage: Path) -> None:
    _copy(ROOT / "systemd" / "gateway.service", stage / "lib/systemd/system/gateway.service")
    _copy(PACKAGING / "gateway.toml", stage / "etc/gateway/gateway.toml")
    (stage / "etc/gateway/credentials").mkdir(parents=True)
    (stage / "etc/gateway/credentials").chmod(0o700)
    doc = stage / DOC
    _copy(ROOT / "README.md", doc / "README.md")
    for page in sorted((ROOT / "docs").glob("*.md")):
        _copy(page, doc / page.name)
    _copy(ROOT / "config" / "gateway.example.toml", doc / "gateway.example.toml")
    for driver in DRIVERS_WITH_SAMPLES:
        _copy(ROOT / "drivers" / driver / "sample.toml", doc / "samples" / f"{driver}.toml")
    (doc / "copyright").write_text(
        f"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {PACKAGE}\n\n"
        "Files: *\nLicense: Apache-2.0\n On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n"
        "\nFiles: opt/gateway/venv/lib/*\nLicense: various\n The bundled Python packages carry their licences in"
        " their *.dist-info folders.\n",
        encoding="utf-8",
    )


def _installed_size_kib(stage: Path) -> int:
    total = sum(p.lstat().st_size for p in stage.rglob("*") if not p.is_dir())
    return (total + 1023) // 1024


def write_control(stage: Path, version: str, arch: str) -> None:
    control = stage / "DEBIAN"
    control.mkdir()
    text = (PACKAGING / "debian" / "control.in").read_text(encoding="utf-8")
    fields = {"@VERSION@": version, "@ARCH@": arch, "@INSTALLED_SIZE@": str(_installed_size_kib(stage))}
    for key, value in fields.items():
        text = text.replace(key, value)
    (control / "control").write_text(text, encoding="utf-8")
    _copy(PACKAGING / "debian" / "conffiles", control / "conffiles")
    for script in ("postinst", "prerm", "postrm"):
        _copy(PACKAGING / "debian" / script, control / script, mode=0o755)


def normalise_modes(stage: Path) -> None:
    """Files 0644 (0755 if executable), folders 0755, whatever the umask; the credentials folder stays 0700."""
    for path in stage.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o700 if path.name == "credentials" else 0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)


def build(
    *, arch: str, version: str, out: Path, wheelhouse: Path, wheel: Path | None, offline: bool, fast: bool = False
) -> Path:
    if arch not in MACHINES:
        raise BuildError(f"--arch {arch}: one of {', '.join(MACHINES)}")
    if arch == "armhf" and native_arch() != "armhf":
        raise BuildError("armhf: aiocsv has no armv7l wheel on PyPI; run scripts/package on an armhf box (builds it)")
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb not found: apt-get install dpkg")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gateway-package-") as tmp:
        work = Path(tmp)
        if wheel is None:
            wheel = build_wheel(work / "wheel")
        fill_wheelhouse(wheel, wheelhouse, arch, offline=offline)
        stage = work / "root"
        install_site_packages(stage, wheel, wheelhouse, arch)
        write_venv(stage)
        write_system_files(stage)
        normalise_modes(stage)
        write_control(stage, version, arch)
        deb = out / f"{PACKAGE}_{version}_{arch}.deb"
        # xz: 8 MB instead of 13 MB over a metered link, for 20-30 s more of build time
        compression = ["-Zgzip", "-z1"] if fast else ["-Zxz"]
        _run(
            ["dpkg-deb", "--root-owner-group", *compression, "--build", str(stage), str(deb)], stdout=subprocess.DEVNULL
        )
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default=None, help=f"{', '.join(MACHINES)} (default: this machine's)")
    parser.add_argument("--version", default=None, help="Debian version (default: the one in pyproject.toml)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes (default: dist/)")
    parser.add_argument("--wheelhouse", type=Path, default=None, help="dependency wheel cache (OUT/wheels-ARCH)")
    parser.add_argument("--wheel", type=Path, default=None, help="use this gateway wheel instead of building one")
    parser.add_argument("--offline", action="store_true", help="use only the wheels already in the wheelhouse")
    parser.add_argument("--fast", action="store_true", help="gzip -1 instead of xz: quicker, bigger (for tests)")
    args = parser.parse_args(argv)
    arch = args.arch or native_arch()
    try:
        deb = build(
            arch=arch,
            version=args.version or project_version(),
            out=args.out,
            wheelhouse=args.wheelhouse or args.out / f"wheels-{arch}",
            wheel=args.wheel,
            offline=args.offline,
            fast=args.fast,
        )
    except BuildError as exc:
        print(f"scripts/package: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"scripts/package: {' '.join(map(str, exc.cmd))} failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
