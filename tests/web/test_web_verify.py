"""The public verification page: the stored document's signature, and a copy uploaded by hand."""

from __future__ import annotations

import pytest

from tests.archive.test_document_signature import HAIZHOU_ORG, flipped, issue, org_serial


@pytest.mark.slow
def test_verify_page_shows_the_signature_and_checks_an_uploaded_copy(client, tokens, rt):
    issued = issue(client, tokens)
    code, pdf = issued["verification_code"], issued["pdf"]
    anonymous = {"Cookie": ""}
    page = client.get(f"/verify/{code}", headers=anonymous)
    assert page.status_code == 200
    assert "该核验码对应一份本系统出具的公文" in page.text and HAIZHOU_ORG in page.text
    assert org_serial(rt, HAIZHOU_ORG) in page.text and "有效" in page.text

    good = client.post(f"/verify/{code}", files={"file": ("copy.pdf", pdf, "application/pdf")})
    assert good.status_code == 200 and "完全一致，数字签名有效" in good.text
    bad = client.post(f"/verify/{code}", files={"file": ("copy.pdf", flipped(pdf, len(pdf) // 2), "application/pdf")})
    assert bad.status_code == 200 and "未通过核验" in bad.text and "数字签名无效" in bad.text
    assert "完全一致" not in bad.text
    unknown = client.get("/verify/0000-0000-0000")
    assert unknown.status_code == 404 and "核验码无效" in unknown.text
