"""The auditor's pages: events with filters and anomaly flags, "who touched this person"
by ID number (a POST form: the number never enters a URL or the log), verification
against stored or uploaded checkpoints, exports and the public key.

Every page calls ``rt.audit_desk`` with the signed-in user's guard, so reading the
log is itself logged, as through the API.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from access_control.actions import Action
from access_control.audit_api import CheckpointIn
from access_control.audit_service import EventFilter
from access_control.deps import get_runtime
from access_control.guard import Guard
from core.errors import InvalidInput, NotFound
from core.fields import check_id_number, local_day_start
from web.pages import LOCAL_TZ, errors_by_field, failed, form_to_nested, render
from web.session import CsrfChecked, FormDep, PageGuard

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
MAX_CHECKPOINT_FILE = 64 * 1024
OUTCOMES = {"allowed": "允许", "denied": "拒绝", "error": "出错"}
FLAG_NAMES = {"bulk_read": "批量读取", "off_hours": "非工作时间读取", "repeated_denials": "多次被拒绝",
              "cross_region": "越权访问辖区外记录"}

# The verifier's findings (access_control.audit.AuditLog.verify), in Chinese.
PROBLEMS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"event (\d+) is missing \(next stored event is (\d+)\)"),
     "第 {0} 条事件缺失（其后存储的是第 {1} 条）"),
    (re.compile(r"prev_hash does not match the previous event's hash"),
     "事件的 prev_hash 与上一条事件的哈希不符（有事件被插入、删除或调换）"),
    (re.compile(r"the event's content does not match its hash"), "事件内容与其哈希不符（事件被改动）"),
    (re.compile(r"the subject index does not match the event"), "当事人索引与事件不符"),
    (re.compile(r"a checkpoint covers (\d+) events but the log holds only (\d+)"),
     "检查点覆盖 {0} 条事件，但日志中只有 {1} 条（日志被截短）"),
    (re.compile(r"the subject index names an event that does not exist"), "当事人索引指向不存在的事件"),
    (re.compile(r"the head row does not match the last event"), "日志头记录与最后一条事件不符"),
    (re.compile(r"a checkpoint uses another hash algorithm"), "检查点使用了不同的哈希算法"),
    (re.compile(r"the Merkle root of the first (\d+) events differs from the signed checkpoint"),
     "前 {0} 条事件的默克尔树根与签名检查点不符"),
    (re.compile(r"the hash of event (\d+) differs from the signed checkpoint"), "第 {0} 条事件的哈希与签名检查点不符"),
    (re.compile(r"a checkpoint signature is malformed"), "检查点签名格式错误"),
    (re.compile(r"the signature of the checkpoint at (\d+) does not verify"), "规模为 {0} 的检查点签名验证失败"),
]


def problem_cn(problem: str | None) -> str:
    if not problem:
        return ""
    for pattern, text in PROBLEMS:
        m = pattern.fullmatch(problem)
        if m:
            return text.format(*m.groups())
    return "日志校验未通过"


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return render(request, template, status_code=status_code, outcomes=OUTCOMES, flag_names=FLAG_NAMES, **context)


def day_start(value: str | None, field: str, *, next_day: bool = False) -> datetime | None:
    """A date typed in a filter as a local-time bound (``to`` includes that whole day)."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput.one(field, "日期格式应为 YYYY-MM-DD", location="query") from None
    try:
        return local_day_start(day, LOCAL_TZ, next_day=next_day)
    except ValueError as exc:
        raise InvalidInput.one(field, str(exc), location="query") from None


def event_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for ev in items:
        row = dict(ev)
        row["details_text"] = json.dumps(ev["details"], ensure_ascii=False, sort_keys=True) if ev["details"] else ""
        rows.append(row)
    return rows


# events and anomalies ---------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def events(request: Request, g: PageGuard, actor: str | None = None, action: str | None = None,
           outcome: str | None = None, to: str | None = None, cursor: str | None = None) -> HTMLResponse:
    rt = get_runtime(request)
    start = request.query_params.get("from")  # a Python keyword: read from the query string
    values = {"actor": (actor or "").strip()[:80], "action": (action or "").strip()[:64],
              "outcome": outcome if outcome in OUTCOMES else "", "from": (start or "").strip()[:10],
              "to": (to or "").strip()[:10]}
    errors: dict[str, str] = {}
    bounds: dict[str, datetime | None] = {"from": None, "to": None}
    for name in ("from", "to"):
        try:
            bounds[name] = day_start(values[name], name, next_day=name == "to")
        except InvalidInput as exc:
            errors.update(errors_by_field(exc))
    if not errors and bounds["from"] and bounds["to"] and bounds["from"] >= bounds["to"]:
        errors["to"] = "结束日期不能早于开始日期"
    if errors:
        bounds = {"from": None, "to": None}
    f = EventFilter(actor=values["actor"] or None, action=values["action"] or None,
                    outcome=values["outcome"] or None, start=bounds["from"], end=bounds["to"])
    try:
        result = rt.audit_desk.events(g, f, limit=PAGE_SIZE, cursor=(cursor or "")[:100] or None)
    except InvalidInput as exc:  # a bad cursor: start from the newest events
        errors.update(failed(g, exc))
        result = rt.audit_desk.events(g, f, limit=PAGE_SIZE, cursor=None)
    flags = rt.audit_desk.anomalies(g, start=bounds["from"], end=bounds["to"])
    query = {k: v for k, v in values.items() if v}
    return page(request, "audit/events.html.j2", status_code=422 if errors else 200, title="访问日志",
                values=values, errors=errors, items=event_rows(result["items"]), next_cursor=result["next_cursor"],
                paged=bool(cursor), query=query, flags=flags, actions=sorted(a.value for a in Action))


# who touched this person -------------------------------------------------------------------


def _subject_page(request: Request, *, status_code: int = 200, id_number: str = "",
                  errors: dict[str, str] | None = None, result: dict[str, Any] | None = None,
                  paged: bool = False) -> HTMLResponse:
    return page(request, "audit/subject.html.j2", status_code=status_code, title="按身份证号查询访问记录",
                id_number=id_number, errors=errors or {}, result=result, paged=paged,
                items=event_rows(result["items"]) if result else [])


@router.get("/audit/subject", response_class=HTMLResponse)
def subject_form(request: Request, g: PageGuard) -> HTMLResponse:
    g.require(Action.AUDIT_EVENTS_READ)
    return _subject_page(request)


@router.post("/audit/subject", response_class=HTMLResponse, dependencies=[CsrfChecked])
def subject_search(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    rt = get_runtime(request)
    g.require(Action.AUDIT_EVENTS_READ)
    data = form_to_nested(form)
    typed = str(data.get("id_number", ""))[:32]
    cursor = str(data.get("cursor", ""))[:100] or None
    try:
        if not typed:
            raise InvalidInput.one("id_number", "必填字段")
        try:
            id_number = check_id_number(typed)
        except ValueError as exc:
            raise InvalidInput.one("id_number", str(exc)) from None
        result = rt.audit_desk.events(g, EventFilter(subject=id_number), limit=PAGE_SIZE, cursor=cursor)
    except InvalidInput as exc:
        return _subject_page(request, status_code=422, id_number=typed, errors=failed(g, exc))
    return _subject_page(request, id_number=id_number, result=result, paged=bool(cursor))


# verification and checkpoints ---------------------------------------------------------------


def _verify_page(request: Request, g: Guard, *, status_code: int = 200, result: dict[str, Any] | None = None,
                 against: str | None = None, created: dict[str, Any] | None = None,
                 errors: dict[str, str] | None = None) -> HTMLResponse:
    rt = get_runtime(request)
    info = rt.audit_desk.checkpoints(g)
    checkpoints = info["items"]
    if result is not None:
        result = {**result, "problem_cn": problem_cn(result.get("problem"))}
    return page(request, "audit/verify.html.j2", status_code=status_code, title="校验访问日志",
                latest=checkpoints[-1] if checkpoints else None, checkpoints=checkpoints[-10:][::-1],
                public_key=info["public_key"], result=result, against=against, created=created,
                errors=errors or {})


def _require_verify(g: Guard) -> None:
    g.require(Action.AUDIT_VERIFY)


@router.get("/audit/verify", response_class=HTMLResponse)
def verify_page(request: Request, g: PageGuard) -> HTMLResponse:
    _require_verify(g)
    return _verify_page(request, g)


@router.post("/audit/verify", response_class=HTMLResponse, dependencies=[CsrfChecked])
def verify_latest(request: Request, g: PageGuard) -> HTMLResponse:
    """Re-hash the whole log and check it against the latest stored checkpoint (and every other)."""
    rt = get_runtime(request)
    _require_verify(g)
    stored = rt.audit_desk.checkpoints(g)["items"]
    latest = stored[-1] if stored else None
    result = rt.audit_desk.verify(g, checkpoint=latest)
    against = f"最近的检查点（{latest['size']} 条）" if latest else "（尚无检查点，仅校验哈希链）"
    return _verify_page(request, g, result=result, against=against)


@router.post("/audit/checkpoints", response_class=HTMLResponse, dependencies=[CsrfChecked])
def make_checkpoint(request: Request, g: PageGuard) -> HTMLResponse:
    rt = get_runtime(request)
    cp = rt.audit_desk.create_checkpoint(g)
    return _verify_page(request, g, created=cp)


def _read_checkpoint(upload: Any) -> dict[str, Any]:
    """The uploaded file as a checkpoint; a file saved from the API's POST /verify body works too."""
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidInput.one("checkpoint", "请选择检查点文件（JSON）")
    raw = upload.file.read(MAX_CHECKPOINT_FILE + 1)
    if len(raw) > MAX_CHECKPOINT_FILE:
        raise InvalidInput.one("checkpoint", "文件过大，检查点文件应小于 64 KB")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput.one("checkpoint", "文件不是有效的 JSON") from None
    if isinstance(data, dict) and isinstance(data.get("checkpoint"), dict):
        data = data["checkpoint"]
    if not isinstance(data, dict):
        raise InvalidInput.one("checkpoint", "文件内容应为一个检查点对象")
    try:
        return CheckpointIn.model_validate(data).model_dump()
    except ValidationError as exc:
        names = sorted({".".join(str(p) for p in e["loc"]) or "?" for e in exc.errors()})
        raise InvalidInput.one("checkpoint", "检查点字段缺失或无效：" + "、".join(names)) from None


@router.post("/audit/verify/upload", response_class=HTMLResponse, dependencies=[CsrfChecked])
def verify_uploaded(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    rt = get_runtime(request)
    _require_verify(g)
    try:
        cp = _read_checkpoint(form.get("checkpoint"))
    except InvalidInput as exc:
        return _verify_page(request, g, status_code=422, errors=failed(g, exc))
    result = rt.audit_desk.verify(g, checkpoint=cp)
    name = form.get("checkpoint")
    filename = name.filename if isinstance(name, UploadFile) else ""
    return _verify_page(request, g, result=result, against=f"上传的检查点 {filename}（{cp['size']} 条）")


@router.get("/audit/checkpoints/{size}.json")
def checkpoint_file(request: Request, g: PageGuard, size: int) -> Response:
    """One stored checkpoint as a file, to keep outside Shouhu and upload later."""
    rt = get_runtime(request)
    for cp in rt.audit_desk.checkpoints(g)["items"]:
        if cp["size"] == size:
            body = json.dumps(cp, ensure_ascii=False, indent=2) + "\n"
            return Response(body, media_type="application/json",
                            headers={"Content-Disposition": f'attachment; filename="shouhu-checkpoint-{size}.json"'})
    raise NotFound("没有该规模的检查点。")


# export and public key ---------------------------------------------------------------------


@router.get("/audit/export", response_class=HTMLResponse)
def export_page(request: Request, g: PageGuard) -> HTMLResponse:
    rt = get_runtime(request)
    g.require(Action.AUDIT_EVENTS_EXPORT)
    info = rt.audit_desk.checkpoints(g)
    checkpoints = info["items"]
    return page(request, "audit/export.html.j2", title="导出访问日志", public_key=info["public_key"],
                latest=checkpoints[-1] if checkpoints else None)


def _export(request: Request, g: Guard, fmt: str, upto: str | None) -> StreamingResponse:
    rt = get_runtime(request)
    limit = int(upto) if upto and upto.isdigit() else None
    stream = rt.audit_desk.export(g, fmt=fmt, start=None, end=None, upto=limit)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    suffix = f"-upto-{limit}" if limit is not None else ""
    return StreamingResponse(stream, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="shouhu-audit{suffix}.{fmt}"'})


@router.get("/audit/export.jsonl")
def export_jsonl(request: Request, g: PageGuard, upto: str | None = None) -> StreamingResponse:
    return _export(request, g, "jsonl", upto)


@router.get("/audit/export.csv")
def export_csv(request: Request, g: PageGuard, upto: str | None = None) -> StreamingResponse:
    return _export(request, g, "csv", upto)
