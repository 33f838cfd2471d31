"""The audit bench runs end to end with its smallest options and prints its table (figures are not checked).

SQLite only, a handful of reads, one worker process for half a second and the
smallest log size the bench builds (2,000 events): about 10 s.
"""

from __future__ import annotations

import pytest

from tests.bench import run_bench_clean


@pytest.mark.slow
def test_audit_bench_quick_prints_table_and_exits_0():
    done = run_bench_clean("audit", "--quick", "--audit-backends", "sqlite", "--audit-reads", "5",
                           "--audit-workers", "1", "--audit-seconds", "0.5", "--audit-events", "2000", timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = " ".join(done.stdout.split())  # the table wraps long cells onto a second line
    assert "audit: Audit log" in out
    assert "failed" not in out and "Traceback" not in done.stdout + done.stderr
    for case in ("read minor · sqlite", "read minor · sqlite · 1", "audit log 2,000 events ·",
                 "generate audit events (setup)"):
        assert case in out, case
    for variant in ("unaudited (bench-only)", "audited (service)", "scan (iter_events only)", "verify",
                    "checkpoint from scratch", "checkpoint +1 % (incremental)"):
        assert variant in out, variant
    assert "postgres" not in out.split("ratio = ")[0]  # only the backend asked for
    assert "×" in out  # ratios against the baselines
