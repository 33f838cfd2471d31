"""The public verification page: ``/verify/{code}`` (where a printed QR code's reader lands).

It shows what ``GET /api/v1/verify/{code}`` answers (authentic or not, the issuer, the number,
the signature: signer, certificate serial, signing time, valid or revoked) and takes a copy of
the PDF to check: its hash against the stored one and its signature against the deployment's CA.
Anonymous, rate-limited and logged exactly like the API (it calls the same service); nothing
personal is shown. The upload is refused above ``PAGE_MAX_BYTES`` before it is parsed, so the
form parser keeps it in memory (never a temporary file on disk).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from archive.documents_api import _verify_in_turn, verify_rate_limit
from core.crypto import sha256_hex
from core.errors import NotFound, ShouhuError
from web.pages import render

router = APIRouter(include_in_schema=False)

PAGE_MAX_BYTES = 1_000_000  # under the form parser's in-memory limit (1 MiB)
STATUS_CN = {"valid": "有效", "revoked": "证书已吊销", "unsigned": "无数字签名（签名功能启用前出具）"}


def _page(request: Request, code: str, *, result: dict[str, Any] | None = None, problem: str = "",
          uploaded: bool = False, status_code: int = 200) -> HTMLResponse:
    return render(request, "verify.html.j2", status_code=status_code, title="公文核验", code=code[:40],
                  result=result, problem=problem, uploaded=uploaded, status_cn=STATUS_CN)


async def _check(request: Request, code: str, sha256: str | None = None, pdf: bytes | None = None
                 ) -> tuple[dict[str, Any] | None, str, int]:
    try:
        return await _verify_in_turn(request, code, sha256, pdf), "", 200
    except NotFound as exc:
        return None, exc.message, 404
    except ShouhuError as exc:
        return None, exc.message, exc.status


@router.get("/verify/{code}", response_class=HTMLResponse, dependencies=[Depends(verify_rate_limit)])
async def verify_page(request: Request, code: str) -> HTMLResponse:
    result, problem, status = await _check(request, code)
    return _page(request, code, result=result, problem=problem, status_code=status)


@router.post("/verify/{code}", response_class=HTMLResponse, dependencies=[Depends(verify_rate_limit)])
async def verify_upload(request: Request, code: str) -> HTMLResponse:
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > PAGE_MAX_BYTES:
        return _page(request, code, problem=f"请上传不超过 {PAGE_MAX_BYTES // 1000} KB 的 PDF 文件。",
                     status_code=413)
    form = await request.form(max_files=1, max_fields=1)
    upload = form.get("file")
    data = await upload.read() if upload is not None and not isinstance(upload, str) else b""
    await form.close()
    if not data:
        return _page(request, code, problem="请选择要核验的 PDF 文件。", status_code=422)
    result, problem, status = await _check(request, code, sha256_hex(data), data)
    return _page(request, code, result=result, problem=problem, uploaded=True, status_code=status)
