"""The search bench runs end to end in quick mode and prints its table (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_search_bench_quick_prints_table_and_exits_0():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "search", "--quick", "--docs", "300", "--search-queries", "5",
         "--archive-records", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "search: Search" in out
    for case in ("tokenize · 300 docs", "build · 300 docs", "index size · 300 docs", "name query · 300",
                 "id query · 300", "two words query · 300", "phrase query · 300", "filtered query · 300",
                 "reindex · real archive", "goal · tantivy 100k"):
        assert case in out, case
    for variant in ("tantivy plain", "whoosh plain", "postgres", "blind (HMAC-SHA-256)"):
        assert variant in out, variant
    assert "×" in out  # ratios against the plain baselines
    assert "Traceback" not in done.stderr


def test_search_corpus_is_deterministic_and_valid():
    from archive.schemas import id_check_char
    from bench.bench_search import QUERY_KINDS, case_doc, corpus, queries

    docs = corpus(50)
    assert [d.parts for d in docs] == [case_doc(i).parts for i in range(50)]
    for d in docs:
        assert 200 <= d.chars <= 1500
        text = "".join(d.parts)
        for idn in d.id_numbers:
            assert len(idn) == 18 and idn[-1] == id_check_char(idn[:17]) and idn in text
        assert d.names and all(n in text for n in d.names)
    assert {len(n) for d in docs for n in d.names} >= {2, 3}
    for kind in QUERY_KINDS:
        assert len(queries(docs, kind, 10)) == 10
