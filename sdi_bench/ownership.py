"""Who holds a run, and whether its training may still be running: the proof behind every retaken claim.

A process is named by its host, pid and start time (``/proc/<pid>/stat`` with the boot id on Linux),
so a pid reused by another process never passes for the one that held a claim. On its own host a
process is *provably* alive or gone; on another host it cannot be told, and a lease (the claim's) or a
heartbeat (the attempt's) stands in.

Every attempt folder has a gate, ``supervisor.json``, created once with an atomic ``link``: either the
supervisor of the attempt (the ``sdi-bench run`` process, or the Slurm job) takes it before it starts
the training, or a ``run`` that retakes the claim takes it first to mark the attempt abandoned, and the
supervisor then never starts it. The supervisor touches the gate while its training runs (the
heartbeat) and writes ``ended`` once the training process has exited; the training process writes its
own identity to ``training.json`` (see :mod:`.launcher`). :func:`attempt_state` reads the three.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

HOST = socket.gethostname()
GATE = "supervisor.json"
"""Taken once per attempt: the supervisor's identity, or ``{"abandoned_by": owner}``."""
ENDED = "ended"
"""Written by the supervisor after the training process of the attempt has exited."""
TRAINING = "training.json"
"""The training process's identity (written by the launch wrapper when it starts)."""
HEARTBEAT_SECONDS = 2.0
"""How often a supervisor touches its gate while the training runs."""


def _boot_id() -> str:
    try:
        return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "?"


BOOT_ID = _boot_id()


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def end_rest_of_group() -> None:
    """SIGKILL every other process of this process's group, when it leads one (Linux: found in ``/proc``).

    A training leads the group ``sdi-bench run`` made for it; a child it started and did not wait for
    would otherwise outlive it whenever its supervisor cannot end the group itself (killed between the
    training's exit and its own clean-up)."""
    group = os.getpid()
    if os.getpgrp() != group:
        return
    for entry in pathlib.Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None and len(fields) > 2 and fields[2] == str(group) and entry.name != str(group):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def start_time(pid: int) -> str | None:
    """``<boot id>-<start time in clock ticks>`` of a live process of this host (Linux), else None."""
    fields = _stat(pid)
    return None if fields is None or len(fields) < 20 else f"{BOOT_ID}-{fields[19]}"


@dataclass(frozen=True)
class ProcessId:
    """A process: host, pid and start time (None where the platform does not tell it)."""

    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls) -> ProcessId:
        return cls(HOST, os.getpid(), start_time(os.getpid()))

    @classmethod
    def from_dict(cls, data: Any) -> ProcessId | None:
        try:
            return cls(str(data["host"]), int(data["pid"]), data.get("start"))
        except (TypeError, KeyError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def alive(self) -> bool | None:
        """True or False where it can be proven (this host), None where it cannot (another host)."""
        if self.host != HOST:
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        fields = _stat(self.pid)
        if fields is not None and fields[0] in ("Z", "X"):
            return False  # exited, not yet reaped
        now = start_time(self.pid)
        return self.start is None or now is None or now == self.start


def new_owner() -> str:
    """A claim owner id unique to this process: ``host:pid:start:random``."""
    me = ProcessId.current()
    return f"{me.host}:{me.pid}:{me.start or '?'}:{uuid.uuid4().hex[:6]}"


def owner_process(owner: str | None) -> ProcessId | None:
    """The process behind an owner id of :func:`new_owner` (None if it is not one)."""
    parts = (owner or "").rsplit(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return ProcessId(parts[0], int(parts[1]), None if parts[2] == "?" else parts[2])


def read_json(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def take_gate(attempt_dir: pathlib.Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """Create ``attempt_dir/supervisor.json`` holding ``record`` if nobody has: None when taken here,
    else the record already there. The file appears whole or not at all (``link`` of a written file)."""
    attempt_dir.mkdir(parents=True, exist_ok=True)
    gate = attempt_dir / GATE
    temporary = attempt_dir / f".{GATE}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temporary.write_text(json.dumps(record), encoding="utf-8")
    try:
        os.link(temporary, gate)
        return None
    except FileExistsError:
        return read_json(gate) or {}
    finally:
        temporary.unlink(missing_ok=True)


def heartbeat(attempt_dir: pathlib.Path) -> None:
    """The supervisor is alive: touch the gate."""
    try:
        os.utime(attempt_dir / GATE)
    except OSError:
        pass


def mark_ended(attempt_dir: pathlib.Path) -> None:
    """The training process of the attempt has exited."""
    (attempt_dir / ENDED).write_bytes(b"")


def describe(attempt_dir: pathlib.Path) -> str:
    """``pid 123 on host`` of an attempt's supervisor (``?`` where its gate cannot be read)."""
    process = ProcessId.from_dict(read_json(attempt_dir / GATE))
    return "?" if process is None else f"supervisor pid {process.pid} on {process.host}"


AttemptState = Literal["running", "ended", "abandoned"]


def attempt_state(attempt_dir: pathlib.Path, retaker: str | None, stale_seconds: float) -> AttemptState:
    """Whether the training of an attempt whose claim is being retaken may still run.

    ``ended``: its training process has exited (its report, if any, can be recorded). ``abandoned``: it
    never started and never will (the gate was free: ``retaker`` takes it; with None, nothing is
    written and the state is what it would be). ``running``: its supervisor
    is alive (provably on this host; on another host its heartbeat is younger than ``stale_seconds``),
    or its training process still is: the claim must not be retaken yet.
    """
    if (attempt_dir / ENDED).exists():
        return "ended"
    if retaker is None:
        record = read_json(attempt_dir / GATE) if (attempt_dir / GATE).exists() else None
    else:
        record = take_gate(attempt_dir, {"abandoned_by": retaker, "at": time.time()})
    if record is None or "abandoned_by" in record:
        return "abandoned"
    supervisor = ProcessId.from_dict(record)
    alive = None if supervisor is None else supervisor.alive()
    if alive is None:
        try:
            alive = time.time() - (attempt_dir / GATE).stat().st_mtime < stale_seconds
        except OSError:
            alive = False
    if alive:
        return "running"
    training = ProcessId.from_dict(read_json(attempt_dir / TRAINING))
    if training is not None and training.alive():
        return "running"  # its supervisor died a moment ago: the training stops itself (launcher)
    return "ended"
