"""A throwaway copy of this machine's root file system, to install the Debian package into for real.

An overlay mount puts a private, writable layer over ``/``: apt, dpkg, useradd and the maintainer scripts run
chrooted in it exactly as on a box, and everything they write lands in the layer (a folder of the test's
tmp_path), never on this machine. Each ``run`` is a new mount namespace with no network (only loopback):
what installs there installs offline. The layer persists between runs, so a test can install, upgrade and
remove in steps. Needs root (CI runs as root) and overlayfs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Runs in a new mount + network namespace: the overlay and the bind mounts vanish when it exits.
_ENTER = r"""
set -eu
layer=$1 pkgdir=$2; shift 2
ip link set lo up
root=$layer/merged
mount -t overlay overlay -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" "$root"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
mkdir -p "$root/mnt/pkg"
mount --bind "$pkgdir" "$root/mnt/pkg"
exec chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive bash -euo pipefail -c "$1"
"""


class ThrowawayRoot:
    """``/`` with a private writable layer in ``layer``; the packages in ``pkgdir`` appear as /mnt/pkg."""

    def __init__(self, layer: Path, pkgdir: Path) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("installing the package into a throwaway root needs root (CI runs as root)")
        self.layer = layer
        self.pkgdir = pkgdir
        for name in ("upper", "work", "merged"):
            (layer / name).mkdir(parents=True, exist_ok=True)

    def run(self, script: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a bash script as root inside the root; stdout and stderr come back as text."""
        done = subprocess.run(
            ["unshare", "--mount", "--net", "--propagation", "private", "bash", "-c", _ENTER, "enter",
             str(self.layer), str(self.pkgdir), script],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"exit {done.returncode} from\n{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        return done
