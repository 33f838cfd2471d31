"""A batch issue in the render workers (RenderPool.issue_many): every document its own signed file, in order.

Real workers (spawned processes), real PAdES signatures checked with pyHanko against a CA made for the run,
real PDFs read back with pypdf.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime

import pypdf

from bench.bench_documents import bench_signer
from doc_templates import signing
from doc_templates.kinds import KINDS
from doc_templates.pool import RenderPool, chunks
from doc_templates.render import DocumentMeta

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # bench_signer's certificates start then


def meta(n: int) -> DocumentMeta:
    kind = KINDS["sealed_query_reply"]
    return DocumentMeta(kind=kind.kind, kind_title=kind.title, issuer="连云港市人民检察院",
                        doc_number=f"连检〔2026〕{n}号", issued_on=date(2026, 11, 28), created_at=NOW,
                        verification_code=f"7K3M-Q9TX-R{n:03d}", mark="specimen")


def test_chunks_keep_every_item_once_in_order() -> None:
    for n in (1, 2, 3, 7, 8, 9, 100, 101):
        for workers in (1, 2, 3):
            parts = chunks(list(range(n)), workers)
            assert [x for part in parts for x in part] == list(range(n))
            assert all(parts) and len(parts) <= max(1, workers * 4)


def test_issue_many_signs_each_document_as_its_own_file_in_order() -> None:
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    key = bench_signer()  # an org key under a CA made for the run
    kind = KINDS["sealed_query_reply"]
    items = [(kind.kind, dict(kind.example), meta(n)) for n in range(1, 8)]
    pool = RenderPool(2)
    try:
        pdfs = pool.issue_many(items, signer=key)
    finally:
        pool.shutdown()
    assert len(pdfs) == len(items)
    for n, pdf in enumerate(pdfs, start=1):
        reader = pypdf.PdfReader(io.BytesIO(pdf))
        text = "".join(page.extract_text() or "" for page in reader.pages).replace(" ", "").replace("\n", "")
        assert f"连检〔2026〕{n}号" in text and f"R{n:03d}" in text, n
        check = signing.check(pdf, key.ca_der)
        assert check.ok and check.signed_at == NOW, (n, check)
        tampered = bytearray(pdf)
        tampered[len(pdf) // 3] ^= 0x01
        assert not signing.check(bytes(tampered), key.ca_der).ok
