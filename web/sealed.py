"""Sealed juvenile records: applications (requester), the custodian's queue and decisions,
sealing and unsealing, grants and their stamped PDFs, reply letters, the disclosure register.

Every page calls the same services as the API (``rt.sealed``, ``rt.sealing``,
``rt.document_reading``) with the signed-in user's guard, so policy and audit apply
unchanged. Nothing personal goes into a URL: application ids and record ids only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from access_control import legal_bases
from access_control.actions import Action
from access_control.deps import get_runtime
from access_control.guard import Guard
from access_control.identity import Org, User
from access_control.policy import Resource, is_custodian
from access_control.sealed import Decision, Revocation, SealedRequestCreate
from archive.documents_api import pdf_response
from archive.sealing import UNSEAL_CAUSES, SealBody, UnsealBody
from core.crypto import sha256_hex
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, ShouhuError
from core.fields import local_day_start
from doc_templates.kinds import KINDS
from web.pages import LOCAL_TZ, done, errors_by_field, failed, form_to_nested, render, validate
from web.session import CsrfChecked, FormDep, PageGuard

router = APIRouter(include_in_schema=False)

STATUS_NAMES = {"pending": "待审批", "overdue": "已逾期", "approved": "已批准", "expired": "授权已到期",
                "denied": "不予批准", "revoked": "已撤销"}
DECISION_NAMES = {"approve": "批准", "deny": "不予批准"}
FORM_ERRORS = (InvalidInput, Conflict, Forbidden, NotFound)


def refused_outright(exc: ShouhuError) -> bool:
    """No such application, or no role for the action: an error page, not a form message."""
    return isinstance(exc, NotFound) or (isinstance(exc, Forbidden) and exc.rule.startswith("role:"))


def require(g: Guard, action: Action, resource: Resource) -> None:
    """A form page for an action the user may not take: refused (and logged) like the action."""
    g.require(action, resource)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    # The legal bases are picked from the fixed list, never typed (access_control.legal_bases).
    return render(request, template, status_code=status_code, status_names=STATUS_NAMES,
                  decision_names=DECISION_NAMES, legal_bases=legal_bases.choices(legal_bases.APPLY),
                  seal_bases=legal_bases.choices(legal_bases.SEAL),
                  unseal_bases=legal_bases.choices(legal_bases.UNSEAL), **context)


def parse_local_date(value: str | None, field: str) -> datetime | None:
    """A date typed in the form: the grant lasts through that whole day (local time)."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidInput.one(field, "日期格式应为 YYYY-MM-DD") from None
    try:
        return local_day_start(day, LOCAL_TZ, next_day=True)
    except ValueError as exc:
        raise InvalidInput.one(field, str(exc)) from None


def with_deadline(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The request with the days left before (or past) its decision deadline."""
    out = dict(item)
    out["days_left"] = None
    if item["status"] in ("pending", "overdue"):
        out["days_left"] = (item["due_by"] - now).total_seconds() / 86400
    return out


# lists ------------------------------------------------------------------------------------


@router.get("/sealed", response_class=HTMLResponse)
def sealed_list(request: Request, g: PageGuard, status: str | None = None) -> HTMLResponse:  # noqa: A002
    rt = get_runtime(request)
    status = status if status in STATUS_NAMES else None
    items = rt.sealed.list(g, status=status)["items"]
    custodian = is_custodian(g.actor)
    org_ids = {i["requester_org_id"] for i in items if "requester_org_id" in i}
    orgs = {o.id: o.name for o in g.session.scalars(select(Org).where(Org.id.in_(org_ids)))} if org_ids else {}
    return page(request, "sealed/list.html.j2", title="封存记录查询", custodian=custodian, orgs=orgs,
                items=[with_deadline(i, g.now) for i in items], status=status or "",
                can_apply=g.decide(Action.SEALED_APPLY).allowed, can_seal=g.decide(Action.RECORD_SEAL).allowed,
                can_disclosures=g.decide(Action.DISCLOSURE_LIST).allowed)


# applying ---------------------------------------------------------------------------------


def _apply_resource() -> Resource:
    return Resource("sealed_request", existing=False)


@router.get("/sealed/new", response_class=HTMLResponse)
def apply_form(request: Request, g: PageGuard) -> HTMLResponse:
    require(g, Action.SEALED_APPLY, _apply_resource())
    return page(request, "sealed/new.html.j2", title="申请查询封存记录", values={"subject": {}}, errors={})


@router.post("/sealed/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
def apply_submit(request: Request, g: PageGuard, form: FormDep) -> Response:
    rt = get_runtime(request)
    require(g, Action.SEALED_APPLY, _apply_resource())
    data = form_to_nested(form)
    try:
        body = validate(SealedRequestCreate, data)
        if not isinstance(body, SealedRequestCreate):
            raise TypeError("validate() returned no SealedRequestCreate")
        created = rt.sealed.apply(g, body)
    except FORM_ERRORS as exc:
        values = {**data, "subject": data.get("subject") or {}}
        return page(request, "sealed/new.html.j2", status_code=exc.status, title="申请查询封存记录", values=values,
                    errors=failed(g, exc))
    return RedirectResponse(done(f"/sealed/{created['id']}", "applied"), status_code=303)


# sealing and unsealing (custodians; courts may seal) ---------------------------------------

SEAL_FIELDS = ("record_id", "legal_basis", "case_number")


def _seal_page(request: Request, g: Guard, *, status_code: int = 200, seal: dict[str, Any] | None = None,
               seal_errors: dict[str, str] | None = None, unseal: dict[str, Any] | None = None,
               unseal_errors: dict[str, str] | None = None, done: dict[str, Any] | None = None) -> HTMLResponse:
    return page(request, "sealed/seal.html.j2", status_code=status_code, title="封存与解除封存",
                seal=seal or {}, seal_errors=seal_errors or {}, unseal=unseal or {},
                unseal_errors=unseal_errors or {}, done=done, unseal_causes=UNSEAL_CAUSES,
                can_unseal=g.decide(Action.RECORD_UNSEAL).allowed)


@router.get("/sealed/seal", response_class=HTMLResponse)
def seal_form(request: Request, g: PageGuard) -> HTMLResponse:
    require(g, Action.RECORD_SEAL, Resource("record"))
    return _seal_page(request, g)


def _record_id(data: dict[str, Any], field: str) -> str:
    value = data.get("record_id")
    if not isinstance(value, str) or not value:
        raise InvalidInput.one(field, "必填字段")
    if len(value) > 40:
        raise InvalidInput.one(field, "长度不能超过40个字符")
    return value


def _record_form(data: dict[str, Any], model: type[SealBody] | type[UnsealBody]) -> tuple[str, Any]:
    """The record id and the body, with every invalid field named at once."""
    fields: list[dict[str, str]] = []
    record_id, body = "", None
    try:
        record_id = _record_id(data, "record_id")
    except InvalidInput as exc:
        fields += exc.details["fields"]
    try:
        body = validate(model, {k: v for k, v in data.items() if k != "record_id"})
    except InvalidInput as exc:
        fields += exc.details["fields"]
    if fields:
        raise InvalidInput(fields)
    return record_id, body


def _not_found_at(exc: ShouhuError, field: str) -> ShouhuError:
    """'No such record' belongs next to the record id."""
    if isinstance(exc, NotFound):
        return InvalidInput.one(field, exc.message)
    return exc


def _record_errors(g: Guard, exc: ShouhuError) -> tuple[ShouhuError, dict[str, str]]:
    """The error to show for a seal or unseal form, and its messages by field (a missing record at record_id)."""
    errors = failed(g, exc)
    shown = _not_found_at(exc, "record_id")
    if shown is not exc:
        errors = errors_by_field(shown)
    return shown, errors


@router.post("/sealed/seal", response_class=HTMLResponse, dependencies=[CsrfChecked])
def seal_submit(request: Request, g: PageGuard, form: FormDep) -> Response:
    rt = get_runtime(request)
    require(g, Action.RECORD_SEAL, Resource("record"))
    data = form_to_nested(form)
    data = {k: data[k] for k in SEAL_FIELDS if k in data}
    try:
        record_id, body = _record_form(data, SealBody)
        sealed = rt.sealing.seal(g, record_id, body)
    except FORM_ERRORS as exc:
        shown, errors = _record_errors(g, exc)
        return _seal_page(request, g, status_code=shown.status, seal=data, seal_errors=errors)
    return _seal_page(request, g, done={"action": "seal", **sealed})


@router.post("/sealed/unseal", response_class=HTMLResponse, dependencies=[CsrfChecked])
def unseal_submit(request: Request, g: PageGuard, form: FormDep) -> Response:
    rt = get_runtime(request)
    require(g, Action.RECORD_UNSEAL, Resource("record"))
    data = form_to_nested(form).get("unseal") or {}
    data = {k: data[k] for k in ("record_id", "cause", "legal_basis", "reason") if k in data}
    try:
        record_id, body = _record_form(data, UnsealBody)  # empty fields were dropped: "必填字段"
        unsealed = rt.sealing.unseal(g, record_id, body)
    except FORM_ERRORS as exc:
        shown, errors = _record_errors(g, exc)
        errors = {k if k == "_form" else f"unseal.{k}": v for k, v in errors.items()}
        return _seal_page(request, g, status_code=shown.status, unseal=data, unseal_errors=errors)
    return _seal_page(request, g, done={"action": "unseal", **unsealed})


# the disclosure register -----------------------------------------------------------------


@router.get("/sealed/disclosures", response_class=HTMLResponse)
def disclosures(request: Request, g: PageGuard, request_id: str | None = None) -> HTMLResponse:
    rt = get_runtime(request)
    request_id = (request_id or "").strip()[:40] or None
    items = rt.sealing.disclosures(g, request_id=request_id)["items"]
    users = {u.id: u.display_name for u in g.session.scalars(
        select(User).where(User.id.in_({d["requester_id"] for d in items})))} if items else {}
    orgs = {o.id: o.name for o in g.session.scalars(
        select(Org).where(Org.id.in_({d["requester_org_id"] for d in items})))} if items else {}
    return page(request, "sealed/disclosures.html.j2", title="封存记录提供登记", items=items, users=users, orgs=orgs,
                request_id=request_id or "")


# one application ---------------------------------------------------------------------------


def _detail(request: Request, g: Guard, rid: str, *, status_code: int = 200, errors: dict[str, str] | None = None,
            form: str | None = None, values: dict[str, Any] | None = None) -> HTMLResponse:
    rt = get_runtime(request)
    req = rt.sealed.get(g, rid)
    full = "requester_id" in req  # a custodian's view
    own = not full or req["requester_id"] == g.actor.user_id
    granted = None
    if own and req["status"] == "approved" and g.decide(Action.SEALED_RECORDS).allowed:
        granted = rt.sealing.granted(g, rid)
        for item in granted["items"]:
            kind = KINDS.get(item["kind"])
            item["title"] = kind.title if kind else item["kind"]
    requester = org = None
    if full:
        user = g.session.get(User, req["requester_id"])
        org_row = g.session.get(Org, req["requester_org_id"])
        requester = user.display_name if user else req["requester_id"]
        org = org_row.name if org_row else req["requester_org_id"]
    custodian = is_custodian(g.actor)
    return page(
        request, "sealed/detail.html.j2", status_code=status_code, title=f"申请 {req['id']}",
        req=with_deadline(req, g.now), full=full, own=own, granted=granted, requester=requester, org=org,
        can_decide=custodian and req["status"] in ("pending", "overdue"),
        can_revoke=custodian and req["status"] == "approved",
        can_reply=custodian and req["status"] not in ("pending", "overdue") and not req["reply_document_id"],
        errors=errors or {}, form=form, values=values or {},
    )


@router.get("/sealed/{rid}", response_class=HTMLResponse)
def detail(request: Request, g: PageGuard, rid: str) -> HTMLResponse:
    return _detail(request, g, rid)


def _request_form(request: Request, g: Guard, rid: str, form: FormDep, *, fields: tuple[str, ...], form_name: str,
                  outcome: str, act: Callable[[dict[str, Any]], None]) -> Response:
    """A custodian's form on a request's page: ``act`` on its ``fields``; on a form error the page again."""
    data = form_to_nested(form)
    data = {k: data[k] for k in fields if k in data}
    try:
        act(data)
    except FORM_ERRORS as exc:
        if refused_outright(exc):
            raise
        errors = failed(g, exc)
        return _detail(request, g, rid, status_code=exc.status, errors=errors, form=form_name, values=data)
    return RedirectResponse(done(f"/sealed/{rid}", outcome), status_code=303)


@router.post("/sealed/{rid}/decision", response_class=HTMLResponse, dependencies=[CsrfChecked])
def decide(request: Request, g: PageGuard, rid: str, form: FormDep) -> Response:
    rt = get_runtime(request)

    def act(data: dict[str, Any]) -> None:
        expires = parse_local_date(data.get("expires_at"), "expires_at")
        body = validate(Decision, {**data, "expires_at": expires})
        if not isinstance(body, Decision):
            raise TypeError("validate() returned no Decision")
        rt.sealed.decide(g, rid, body)

    return _request_form(request, g, rid, form, fields=("decision", "reason", "expires_at"), form_name="decision",
                         outcome="decided", act=act)


@router.post("/sealed/{rid}/revoke", response_class=HTMLResponse, dependencies=[CsrfChecked])
def revoke(request: Request, g: PageGuard, rid: str, form: FormDep) -> Response:
    rt = get_runtime(request)

    def act(data: dict[str, Any]) -> None:
        body = validate(Revocation, data)
        if not isinstance(body, Revocation):
            raise TypeError("validate() returned no Revocation")
        rt.sealed.revoke(g, rid, body)

    return _request_form(request, g, rid, form, fields=("reason",), form_name="revoke", outcome="revoked", act=act)


@router.post("/sealed/{rid}/reply", response_class=HTMLResponse, dependencies=[CsrfChecked])
def issue_reply(request: Request, g: PageGuard, rid: str) -> Response:
    rt = get_runtime(request)
    try:
        rt.sealing.reply(g, rid)
    except (Conflict, InvalidInput) as exc:
        errors = failed(g, exc)
        return _detail(request, g, rid, status_code=exc.status, errors={"_form": exc.message, **errors},
                       form="reply")
    return RedirectResponse(done(f"/sealed/{rid}", "replied"), status_code=303)


@router.get("/sealed/{rid}/reply.pdf")
def reply_pdf(request: Request, g: PageGuard, rid: str) -> Response:
    rt = get_runtime(request)
    data, v = rt.sealing.reply_pdf(g, rid)
    return pdf_response(data, f"{v.document_id}-v{v.version}.pdf", sha256=v.sha256)


@router.get("/sealed/{rid}/records/{doc_id}/pdf")
def granted_pdf(request: Request, g: PageGuard, rid: str, doc_id: str) -> Response:
    """A granted record, stamped for its requester (the copy enters the disclosure register)."""
    rt = get_runtime(request)
    data, v = rt.document_reading.pdf(g, doc_id)
    return pdf_response(data, f"{doc_id}-v{v.version}.pdf", sha256=sha256_hex(data))
