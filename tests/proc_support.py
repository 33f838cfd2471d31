"""Processes as Linux's /proc shows them: children of a process, whether one is alive, what it maps."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` now."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat.parent.name)
        if fields is not None and int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited; only its reaping is left


def cpu_ticks(pid: int) -> int:
    """The CPU time ``pid`` has used, user and system, in clock ticks; 0 if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields is not None else 0


def maps(pid: int) -> str:
    """The files mapped into ``pid`` (shared libraries included); empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""
