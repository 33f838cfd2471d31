"""Flags an auditor expects from the access log, with thresholds from settings.

- ``bulk_read``: one user read more records than the threshold within a window
  (a list counts every record it returned).
- ``off_hours``: reads outside working hours or days (local time zone).
- ``repeated_denials``: one user refused at least the threshold within a window.
- ``cross_region``: attempts on records outside the user's jurisdiction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from access_control.audit import AuditEvent, AuditLog, format_time
from core.settings import Settings

READ_VERBS = (":read", ":list", ":export")


@dataclass(frozen=True)
class Thresholds:
    bulk_reads: int
    bulk_window: timedelta
    denials: int
    denial_window: timedelta
    tz: ZoneInfo
    day_start: time
    day_end: time
    working_days: frozenset[int]

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        start, end = s.audit_working_hours.split("-")
        return cls(
            bulk_reads=s.audit_bulk_read_threshold,
            bulk_window=timedelta(seconds=s.audit_bulk_read_window_seconds),
            denials=s.audit_denial_threshold,
            denial_window=timedelta(seconds=s.audit_denial_window_seconds),
            tz=ZoneInfo(s.audit_timezone),
            day_start=time.fromisoformat(start),
            day_end=time.fromisoformat(end),
            working_days=frozenset(int(d) for d in s.audit_working_days),
        )


def _is_read(ev: Mapping[str, Any]) -> bool:
    return ev["outcome"] == "allowed" and ev["action"].endswith(READ_VERBS) and not ev["action"].startswith(
        ("auth:", "identity:me", "identity:region")
    )


def _records(ev: Mapping[str, Any]) -> int:
    count = (ev["details"] or {}).get("count")
    return int(count) if isinstance(count, int) else 1


def _flag(kind: str, events: list[Mapping[str, Any]], count: int, detail: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "actor": events[0]["actor"],
        "actor_id": events[0]["actor_id"],
        "org_id": events[0]["org_id"],
        "from": format_time(events[0]["at"]),
        "to": format_time(events[-1]["at"]),
        "count": count,
        "seqs": [e["seq"] for e in events[:50]],
        "detail": detail,
    }


def _windows(events: list[Mapping[str, Any]], window: timedelta, weight: Any, threshold: int
             ) -> list[tuple[list[Mapping[str, Any]], int]]:
    """Maximal runs where the weighted count within ``window`` reaches ``threshold``."""
    found: list[tuple[list[Mapping[str, Any]], int]] = []
    lo = 0
    total = 0
    run: list[Mapping[str, Any]] | None = None
    run_total = 0
    for hi, ev in enumerate(events):
        total += weight(ev)
        while events[hi]["at"] - events[lo]["at"] > window:
            total -= weight(events[lo])
            lo += 1
        if total >= threshold:
            if run is not None and events[lo]["seq"] <= run[-1]["seq"]:
                run.extend(e for e in events[lo : hi + 1] if e["seq"] > run[-1]["seq"])
                run_total = max(run_total, total)
            else:
                if run is not None:
                    found.append((run, run_total))
                run, run_total = list(events[lo : hi + 1]), total
    if run is not None:
        found.append((run, run_total))
    return found


def detect(session: Session, t: Thresholds, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """All flags for events with ``start <= at < end``."""
    where = (AuditEvent.__table__.c.at >= start, AuditEvent.__table__.c.at < end)
    by_actor: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for ev in AuditLog.iter_events(session, where=where):
        by_actor[ev["actor_id"]].append(ev)
    flags: list[dict[str, Any]] = []
    for events in by_actor.values():
        reads = [e for e in events if _is_read(e)]
        for run, total in _windows(reads, t.bulk_window, _records, t.bulk_reads):
            flags.append(_flag("bulk_read", run, total,
                               f"{total} 条记录在 {int(t.bulk_window.total_seconds() // 60)} 分钟内被读取"))
        off = [e for e in reads if not _working_time(e["at"], t)]
        if off:
            flags.append(_flag("off_hours", off, len(off), "工作时间以外的读取"))
        denied = [e for e in events if e["outcome"] == "denied"]
        for run, total in _windows(denied, t.denial_window, lambda _e: 1, t.denials):
            flags.append(_flag("repeated_denials", run, total,
                               f"{total} 次被拒绝，{int(t.denial_window.total_seconds() // 60)} 分钟内"))
        cross = [e for e in events if e["reason"] == "region:outside_jurisdiction"]
        if cross:
            flags.append(_flag("cross_region", cross, len(cross), "试图访问辖区以外的记录"))
    flags.sort(key=lambda f: (f["from"], f["kind"], f["actor"]))
    return flags


def _working_time(at: datetime, t: Thresholds) -> bool:
    local = at.astimezone(t.tz)
    return local.isoweekday() in t.working_days and t.day_start <= local.time() < t.day_end
