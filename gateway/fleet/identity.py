"""A gateway's identity: generated at first start, kept in the state dir, renewed on a cloned image.

The display name (``[gateway] name``) is chosen by people and defaults to the host name, so two boxes
made from one SD-card image share it. The identity is what tells them apart: a random id made at first
start and stored next to the buffer, together with the machine-id it was made on. A state dir that
turns up on another machine (a cloned image: systemd gives every installed system its own
``/etc/machine-id`` at first boot) gets a new id, and the log says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("gateway.identity")

IDENTITY_FILE = "identity.json"
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


@dataclass(frozen=True, slots=True)
class Identity:
    id: str  # 32 lowercase hex digits (a UUID4 without dashes)
    machine_id: str  # the machine-id it was made on; "" when the system has none
    created_ns: int
    renewed_from: str | None = None  # the id found in a state dir copied from another machine

    @property
    def short(self) -> str:
        """Eight hex digits: enough to tell a fleet's gateways apart in a client id or a table."""
        return self.id[:8]

    def phase(self) -> float:
        """A fraction in [0, 1) fixed for this gateway: where in each interval it polls (docs/fleet.md)."""
        return int(self.id[8:16], 16) / 2**32


def machine_id(files: tuple[Path, ...] = MACHINE_ID_FILES) -> str:
    for path in files:
        try:
            value = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return ""


def stored_identity(state_dir: Path) -> Identity | None:
    """The identity kept in ``state_dir``, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((state_dir / IDENTITY_FILE).read_text(encoding="utf-8"))
        ident = Identity(
            id=str(data["id"]),
            machine_id=str(data.get("machine_id", "")),
            created_ns=int(data["created_ns"]),
            renewed_from=data.get("renewed_from"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(ident.id) != 32 or any(c not in "0123456789abcdef" for c in ident.id):
        return None
    return ident


def load_identity(state_dir: Path, *, current_machine_id: str | None = None) -> Identity:
    """This gateway's identity: the stored one, or a new one (first start, unreadable file, cloned image)."""
    here = machine_id() if current_machine_id is None else current_machine_id
    found = stored_identity(state_dir)
    if found is not None and (not found.machine_id or not here or found.machine_id == here):
        return found
    path = state_dir / IDENTITY_FILE
    renewed_from = None
    if found is not None:
        renewed_from = found.id
        log.warning(
            "the state dir %s holds gateway identity %s made on another machine (machine-id %s, this one is %s): "
            "this looks like a cloned SD-card image. Made a new identity; give this gateway its own [gateway] name",
            state_dir,
            found.short,
            found.machine_id[:8],
            here[:8],
        )
    elif path.exists():
        log.warning("%s is unreadable; made a new gateway identity", path)
    ident = Identity(id=uuid.uuid4().hex, machine_id=here, created_ns=time.time_ns(), renewed_from=renewed_from)
    _write_atomically(path, json.dumps(asdict(ident), indent=2) + "\n")
    if renewed_from is None:
        log.info("new gateway identity %s", ident.short)
    return ident


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # an identity lost on power cut would make a new one, and look like a clone
    os.replace(tmp, path)
