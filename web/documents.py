"""Official documents in the pages: the list, a form generated from each kind's schema,
draft preview, issue, the document page with its versions, downloads and corrections.

The form for a kind is built from its Pydantic schema (``model_fields`` and their
annotations), so a new kind or field needs no template work: ``str`` is an input
(a textarea above 100 characters), ``date`` a date input, ``int`` a number,
``Literal`` a select, ``bool`` a checkbox, ``list[str]`` several inputs named
``fields.x.0``, ``fields.x.1``…, ``list[Model]`` repeated fieldsets named
``fields.x.0.sub``…; labels are the fields' Chinese titles. Everything goes
through the document services (archive.document_issuing,
archive.document_reading) with the page's guard, so policy and audit apply as for
the API.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from access_control.actions import Action
from access_control.deps import get_runtime
from access_control.guard import Guard
from access_control.identity import Actor
from access_control.policy import (
    Resource,
    may_correct_document,
    may_issue_document_kind,
    may_read_document_kind,
)
from archive.documents import DocumentRequest, VersionRequest
from archive.documents_api import pdf_response
from archive.models import Document, DocumentVersion
from archive.prefill import PARTICULARS, TO_FILL
from core.crypto import sha256_hex
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, field_errors
from doc_templates import kinds as doc_kinds
from web.pages import errors_by_field, form_to_nested, render
from web.session import CsrfChecked, FormDep, PageGuard

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 20
SUBJECT_LABELS = {"household": "家庭档案编号", "minor": "未成年人档案编号", "sealed_request": "查询申请编号",
                  "region": "督查地区", "none": ""}
# Labels for the items of fixed lists whose positions mean something.
ITEM_LABELS: dict[tuple[type[BaseModel], str], list[str]] = {
    (doc_kinds.StatisticsRow, "counts"): [doc_kinds.CATEGORY_SHORT[i] for i in range(1, 6)],
}
_NONE = type(None)


# The form, generated from the schema -------------------------------------------------------


@dataclass
class Spec:
    """One field of a kind's schema, as the form shows it."""

    name: str
    label: str
    widget: str  # text | textarea | date | number | select | checkbox | list | rows
    required: bool
    input_type: str = "text"
    options: list[tuple[str, str]] = field(default_factory=list)
    max_length: int | None = None
    ge: int | None = None
    le: int | None = None
    default: Any = None
    hint: str = ""
    item: Spec | None = None  # list: the spec of each item
    children: list[Spec] = field(default_factory=list)  # rows: the fields of each row
    min_items: int = 0
    max_items: int | None = None
    item_labels: list[str] | None = None


def _unwrap(tp: Any, metadata: list[Any]) -> tuple[Any, bool, dict[str, Any]]:
    """(base type, optional, constraints) through Annotated[...] and ``X | None``."""
    constraints: dict[str, Any] = {}
    optional = False

    def collect(items: Any) -> None:
        for m in items:
            if isinstance(m, FieldInfo):
                collect(m.metadata)
                continue
            for attr in ("min_length", "max_length", "ge", "le", "gt", "lt", "pattern"):
                value = getattr(m, attr, None)
                if value is not None:
                    constraints.setdefault(attr, value)

    collect(metadata)
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            tp = args[0]
            collect(args[1:])
        elif origin in (Union, types.UnionType):
            args = get_args(tp)
            rest = [a for a in args if a is not _NONE]
            optional = optional or len(rest) < len(args)
            if len(rest) != 1:
                break
            tp = rest[0]
        else:
            return tp, optional, constraints
    return tp, optional, constraints


def _literal_options(values: tuple[Any, ...], description: str | None) -> list[tuple[str, str]]:
    """Options of a Literal; ``description`` may name them (``a：甲；b：乙``)."""
    names: dict[str, str] = {}
    for part in (description or "").replace(";", "；").split("；"):
        key, sep, label = part.partition("：")
        if sep and key.strip():
            names[key.strip()] = label.strip()
    return [(str(v), names.get(str(v), str(v))) for v in values]


def _scalar(name: str, label: str, tp: Any, required: bool, c: dict[str, Any], description: str | None) -> Spec:
    spec = Spec(name=name, label=label, widget="text", required=required)
    if tp is bool:
        spec.widget = "checkbox"
    elif tp is int or tp is float:
        spec.widget, spec.input_type, spec.ge, spec.le = "number", "number", c.get("ge"), c.get("le")
        if spec.ge == 1 and spec.le == 5 and "类" in label:  # a category number: name the five categories
            spec.widget = "select"
            spec.options = [(str(i), f"{i}. {doc_kinds.CATEGORY_LABELS[i]}") for i in range(1, 6)]
    elif tp is date:
        spec.widget, spec.input_type = "date", "date"
    elif get_origin(tp) is Literal:
        spec.widget, spec.options = "select", _literal_options(get_args(tp), description)
    else:
        spec.max_length = c.get("max_length")
        if spec.max_length and spec.max_length > 100:
            spec.widget = "textarea"
            spec.hint = f"不超过{spec.max_length}字"
        elif "电话" in label:
            spec.input_type = "tel"
    return spec


def _spec(model: type[BaseModel], name: str, info: FieldInfo) -> Spec:
    label = info.title or name
    tp, optional, c = _unwrap(info.annotation, list(info.metadata))
    required = info.is_required() and not optional
    default = None if info.is_required() or info.default_factory is not None else info.default
    if get_origin(tp) is list:
        (item_tp,) = get_args(tp)
        min_items, max_items = c.get("min_length") or 0, c.get("max_length")
        hint = f"最多{max_items}项" if max_items and max_items != min_items else ""
        item_tp, _item_optional, ic = _unwrap(item_tp, [])
        if isinstance(item_tp, type) and issubclass(item_tp, BaseModel):
            return Spec(name=name, label=label, widget="rows", required=required, min_items=min_items,
                        max_items=max_items, hint=hint, children=form_spec(item_tp, own_first=False))
        item = _scalar(name, label, item_tp, False, ic, info.description)
        return Spec(name=name, label=label, widget="list", required=required, item=item, min_items=min_items,
                    max_items=max_items, hint=hint, item_labels=ITEM_LABELS.get((model, name)))
    spec = _scalar(name, label, tp, required, c, info.description)
    spec.default = default
    return spec


def form_spec(schema: type[BaseModel], *, own_first: bool = True) -> list[Spec]:
    """The form of a schema; fields every letter shares (抄送, 附注) come after the kind's own."""
    inherited: set[str] = set()
    if own_first:
        for base in schema.__mro__[1:]:
            if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
                inherited |= set(base.model_fields)
    names = [n for n in schema.model_fields if n not in inherited] + [n for n in schema.model_fields if n in inherited]
    return [_spec(schema, n, schema.model_fields[n]) for n in names]


def defaults(specs: list[Spec]) -> dict[str, Any]:
    return {s.name: s.default for s in specs if s.default is not None}


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class FormView:
    """Concrete widgets (names, values, messages) for a form; remembers which errors it placed."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        self.placed: set[str] = set()

    def error(self, path: str) -> str:
        self.placed.add(path)
        return self.errors.get(path, "")

    def widgets(self, specs: list[Spec], values: Any, path: str = "", *, in_use: bool = True) -> list[dict[str, Any]]:
        values = values if isinstance(values, dict) else {}
        return [self.widget(s, values.get(s.name), f"{path}{s.name}", in_use=in_use) for s in specs]

    def scalar(self, spec: Spec, value: Any, path: str, *, label: str, required: bool) -> dict[str, Any]:
        return {
            "widget": spec.widget, "name": f"fields.{path}", "label": label, "required": required,
            "type": spec.input_type, "value": _text(value), "checked": value is True or value == "true",
            "options": spec.options, "maxlength": spec.max_length, "min": spec.ge, "max": spec.le,
            "lines": 8 if (spec.max_length or 0) > 500 else 3, "hint": spec.hint, "error": self.error(path),
        }

    def widget(self, spec: Spec, value: Any, path: str, *, in_use: bool) -> dict[str, Any]:
        if spec.widget == "list":
            if spec.item is None:
                raise RuntimeError("a list widget without an item spec")
            items = value if isinstance(value, list) else []
            count = self._count(spec, len(items), extra=2)
            labels = spec.item_labels or []
            return {
                "widget": "list", "name": f"fields.{path}", "label": spec.label, "required": spec.required,
                "hint": spec.hint, "error": self.error(path), "items": [
                    self.scalar(spec.item, items[i] if i < len(items) else None, f"{path}.{i}",
                                label=labels[i] if i < len(labels) else f"{spec.label}（{i + 1}）",
                                required=in_use and i < spec.min_items)
                    for i in range(count)],
            }
        if spec.widget == "rows":
            rows = value if isinstance(value, list) else []
            count = self._count(spec, len(rows), extra=1)
            return {
                "widget": "rows", "name": f"fields.{path}", "label": spec.label, "required": spec.required,
                "hint": spec.hint, "error": self.error(path), "rows": [
                    {"legend": f"{spec.label}（{i + 1}）", "error": self.error(f"{path}.{i}"),
                     "widgets": self.widgets(spec.children, rows[i] if i < len(rows) else None, f"{path}.{i}.",
                                             in_use=in_use and i < max(spec.min_items, len(rows)))}
                    for i in range(count)],
            }
        return self.scalar(spec, value, path, label=spec.label, required=in_use and spec.required)

    @staticmethod
    def _count(spec: Spec, filled: int, *, extra: int) -> int:
        if spec.max_items is not None and spec.max_items == spec.min_items:
            return max(filled, spec.min_items)
        # rows: the rows needed, then a blank one; items: what is there, then two blanks
        base = max(filled, spec.min_items) if spec.widget == "rows" else filled
        count = max(base + extra, spec.min_items)
        if spec.max_items is not None:
            count = max(min(count, spec.max_items), filled)
        return count

    def leftover(self) -> dict[str, str]:
        return {k: v for k, v in self.errors.items() if k not in self.placed}


def with_unchecked(specs: list[Spec], data: dict[str, Any]) -> dict[str, Any]:
    """An unchecked box sends nothing: it means False."""
    for s in specs:
        if s.widget == "checkbox":
            data[s.name] = data.get(s.name) == "true"
        elif s.widget == "rows" and isinstance(data.get(s.name), list):
            for row in data[s.name]:
                if isinstance(row, dict):
                    with_unchecked(s.children, row)
    return data


# helpers -----------------------------------------------------------------------------------------


def issuable(actor: Actor) -> list[doc_kinds.DocKind]:
    return [k for k in doc_kinds.KINDS.values() if may_issue_document_kind(actor, k)]


def readable(actor: Actor) -> list[doc_kinds.DocKind]:
    return [k for k in doc_kinds.KINDS.values() if may_read_document_kind(actor, k)]


def _kind_or_404(name: str) -> doc_kinds.DocKind:
    kind = doc_kinds.get(name)
    if kind is None:
        raise NotFound("未知的公文种类。")
    return kind


def _kind_for(g: Guard, name: str) -> doc_kinds.DocKind:
    """A kind the caller may issue; otherwise a refusal, logged like the service's own gate."""
    kind = _kind_or_404(name)
    if kind not in issuable(g.actor):
        g.authorize(Action.DOCUMENT_PREFILL, Resource("document", None, None, existing=False,
                                                      required_roles=kind.issuer_roles), details={"kind": kind.kind})
        raise Forbidden(f"role:not_for_{kind.kind}")  # not reached: the policy refuses first
    return kind


def _region_options(request: Request, actor: Actor) -> list[tuple[str, str]]:
    regions = get_runtime(request).regions
    root = regions.get(actor.region_code)
    if root is None:
        return []
    base = root.path.count("/")
    return [(n.code, "　" * (n.path.count("/") - base) + n.name) for n in regions.subtree(actor.region_code)]


def _statistics(request: Request, g: Guard, region: str) -> list[dict[str, Any]]:
    stats = get_runtime(request).visits.statistics(g, region=region)
    return [{"region": row["name"], "persons": row["persons"], "counts": row["counts"]} for row in stats["rows"]]


def _prefill(request: Request, g: Guard, kind: doc_kinds.DocKind, subject_id: str | None) -> dict[str, Any]:
    runtime = get_runtime(request)
    if kind.subject in ("household", "minor") and subject_id:
        return dict(runtime.document_issuing.prefill(g, kind.kind, subject_id)["fields"])
    if kind.kind == "inspection_report":
        return {"statistics": _statistics(request, g, subject_id or g.actor.region_code)}
    return {}


def _form_page(request: Request, kind: doc_kinds.DocKind, *, subject_id: str | None, values: dict[str, Any],
               errors: dict[str, str], status_code: int = 200, subject_error: str = "",
               notice: str = "") -> HTMLResponse:
    actor: Actor = request.state.actor
    specs = form_spec(kind.schema)
    view = FormView(errors)
    widgets = view.widgets(specs, values)
    subject_error = subject_error or errors.get("subject_id", "")
    leftover = {k: v for k, v in view.leftover().items() if k != "subject_id"}
    return render(
        request, "documents/new.html.j2", status_code=status_code, title=f"签发：{kind.title}",
        kinds=issuable(actor), kind=kind, subject_id=subject_id or "", subject_label=SUBJECT_LABELS[kind.subject],
        subject_error=subject_error, region_options=_region_options(request, actor) if kind.subject == "region" else [],
        widgets=widgets, errors=errors, leftover=leftover, notice=notice,
        demo_mode=get_runtime(request).settings.demo_mode,
    )


def _request_from(form: Any) -> tuple[dict[str, Any], str, str | None]:
    data = form_to_nested(form)
    kind_name = str(data.get("kind") or "")
    subject = data.get("subject_id")
    subject_id = subject if isinstance(subject, str) else None
    given = data.get("fields")
    fields: dict[str, Any] = given if isinstance(given, dict) else {}
    return fields, kind_name, subject_id


def _document_request(kind: doc_kinds.DocKind, subject_id: str | None, fields: dict[str, Any]) -> DocumentRequest:
    try:
        return DocumentRequest(kind=kind.kind, subject_id=subject_id, fields=fields)
    except ValidationError as exc:
        raise InvalidInput([{"field": e["field"], "message": e["message"]}
                            for e in _errors(exc)]) from None


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return field_errors(exc.errors(), location="body")


# list --------------------------------------------------------------------------------------------


@router.get("/documents", response_class=HTMLResponse)
def document_list(
    request: Request, g: PageGuard,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    subject_id: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    runtime = get_runtime(request)
    page = runtime.document_reading.page(g, kind=kind or None, subject_id=subject_id or None, region=None,
                                          limit=PAGE_SIZE, cursor=cursor or None)
    return render(request, "documents/list.html.j2", title="公文", items=page["items"],
                  next_cursor=page["next_cursor"], kind=kind or "", subject_id=subject_id or "",
                  cursor=cursor or "", kinds=readable(g.actor), can_issue=bool(issuable(g.actor)))


# new: choose, prefill, preview, issue ----------------------------------------------------------------


@router.get("/documents/new", response_class=HTMLResponse)
def document_new(
    request: Request, g: PageGuard,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    subject_id: Annotated[str | None, Query(max_length=40)] = None,
    example: Annotated[int, Query(ge=0, le=1)] = 0,
) -> HTMLResponse:
    if example and not get_runtime(request).settings.demo_mode:
        # Sample facts in a real child's letter: only where every child is invented (SHOUHU_DEMO_MODE).
        raise InvalidInput([{"field": "example", "location": "query", "message": "示例内容仅在演示环境中可用"}],
                           "示例内容仅在演示环境中可用。")
    if not kind:
        kinds = issuable(g.actor)
        if not kinds:
            g.authorize(Action.DOCUMENT_PREVIEW, Resource("document", existing=False))
            raise Forbidden("role:none_issues_documents")
        return render(request, "documents/choose.html.j2", title="签发公文", kinds=kinds,
                      subject_labels=SUBJECT_LABELS, retention_labels=doc_kinds.RETENTION)
    doc_kind = _kind_for(g, kind)
    subject_id = subject_id or None
    values = defaults(form_spec(doc_kind.schema))
    subject_error, status_code = "", 200
    try:
        filled = _prefill(request, g, doc_kind, subject_id)
    except InvalidInput as exc:
        g.fail(exc)
        filled, status_code = {}, 422
        subject_error = next(iter(errors_by_field(exc).values()), exc.message)
    if example:
        values.update(doc_kind.example)
        own = PARTICULARS.get(doc_kind.kind, {})  # the record's, even where it says nothing
        values.update({k: v for k, v in filled.items() if k in own or v not in (None, "", [], TO_FILL)})
    else:
        values.update(filled)
    return _form_page(request, doc_kind, subject_id=subject_id, values=values, errors={},
                      status_code=status_code, subject_error=subject_error)


def _failed(request: Request, g: Guard, exc: InvalidInput | Conflict, kind: doc_kinds.DocKind, subject_id: str | None,
            fields: dict[str, Any]) -> HTMLResponse:
    g.fail(exc)
    errors = errors_by_field(exc, prefix="fields.")
    return _form_page(request, kind, subject_id=subject_id, values=fields, errors=errors, status_code=exc.status)


def _from_document_form(request: Request, g: Guard, form: Any,
                        act: Callable[[DocumentRequest], Response]) -> Response:
    """``act`` on the document request a form asks for; on its errors, the form again."""
    fields, kind_name, subject_id = _request_from(form)
    kind = _kind_or_404(kind_name)  # the service decides who may issue it
    fields = with_unchecked(form_spec(kind.schema), fields)
    try:
        return act(_document_request(kind, subject_id, fields))
    except (InvalidInput, Conflict) as exc:
        return _failed(request, g, exc, kind, subject_id, fields)


@router.post("/documents/preview", dependencies=[CsrfChecked])
def document_preview(request: Request, g: PageGuard, form: FormDep) -> Response:
    def act(req: DocumentRequest) -> Response:
        return pdf_response(get_runtime(request).document_issuing.preview(g, req), "preview.pdf")

    return _from_document_form(request, g, form, act)


@router.post("/documents/new", dependencies=[CsrfChecked])
def document_issue(request: Request, g: PageGuard, form: FormDep) -> Response:
    def act(req: DocumentRequest) -> Response:
        issued = get_runtime(request).document_issuing.issue(g, req)
        return RedirectResponse(f"/documents/{issued.id}?issued=1", status_code=303)

    return _from_document_form(request, g, form, act)


# one document ------------------------------------------------------------------------------------------


def _may_correct(g: Guard, kind: doc_kinds.DocKind, issuer_org_id: str) -> bool:
    return may_correct_document(g.actor, kind, issuer_org_id)


def _detail_page(request: Request, g: Guard, doc_id: str, *, values: dict[str, Any] | None = None,
                 errors: dict[str, str] | None = None, reason: str = "", status_code: int = 200,
                 notice: str = "") -> HTMLResponse:
    runtime = get_runtime(request)
    doc = runtime.document_reading.read(g, doc_id)
    kind = doc_kinds.KINDS[doc.kind]
    correction = None
    if _may_correct(g, kind, doc.issuer["org_id"]):
        row = g.session.get(Document, doc.id)
        if row is not None and not row.sealed:
            if values is None:
                version = g.session.get(DocumentVersion, (row.id, row.current_version))
                if version is None:
                    raise RuntimeError("a document's current version row is missing")
                values = runtime.document_reading.fields_of(g, row, version)
            view = FormView(errors or {})
            widgets = view.widgets(form_spec(kind.schema), values)
            correction = {"widgets": widgets, "reason": reason, "open": bool(errors),
                          "reason_error": (errors or {}).get("reason", ""),
                          "leftover": {k: v for k, v in view.leftover().items() if k != "reason"}}
    problem = "；".join(dict.fromkeys((errors or {}).values())) if errors and correction is None else ""
    current = next(v for v in doc.versions if v.version == doc.version)
    return render(request, "documents/detail.html.j2", status_code=status_code, title=doc.doc_number, doc=doc,
                  kind=kind, current=current, correction=correction, notice=notice, problem=problem,
                  verify_base=f"{runtime.settings.printed_public_url or ''}/api/v1/verify/",
                  retention=doc_kinds.RETENTION[kind.retention], subject_label=SUBJECT_LABELS[kind.subject])


@router.get("/documents/{doc_id}", response_class=HTMLResponse)
def document_detail(
    request: Request, g: PageGuard, doc_id: str,
    issued: Annotated[int, Query(ge=0, le=1)] = 0,
    corrected: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> HTMLResponse:
    notice = "公文已签发。" if issued else (f"已生成第{corrected}版。" if corrected else "")
    return _detail_page(request, g, doc_id[:64], notice=notice)


@router.get("/documents/{doc_id}/pdf")
def document_pdf(
    request: Request, g: PageGuard, doc_id: str,
    version: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> Response:
    data, v = get_runtime(request).document_reading.pdf(g, doc_id[:64], version)
    return pdf_response(data, f"{doc_id[:64]}-v{v.version}.pdf", sha256=sha256_hex(data))


@router.post("/documents/{doc_id}/versions", dependencies=[CsrfChecked])
def document_correct(request: Request, g: PageGuard, form: FormDep, doc_id: str) -> Response:
    data = form_to_nested(form)
    given, typed = data.get("fields"), data.get("reason")
    fields: dict[str, Any] = given if isinstance(given, dict) else {}
    reason = typed if isinstance(typed, str) else ""
    runtime = get_runtime(request)
    doc_id = doc_id[:64]
    try:
        row = g.session.get(Document, doc_id)
        kind = doc_kinds.get(row.kind) if row is not None else None
        if kind is not None:
            fields = with_unchecked(form_spec(kind.schema), fields)
        try:
            body = VersionRequest.model_validate({"fields": fields, **({"reason": reason} if reason else {})})
        except ValidationError as exc:
            raise InvalidInput([{"field": e["field"], "message": e["message"]} for e in _errors(exc)]) from None
        issued = runtime.document_issuing.new_version(g, doc_id, body)
    except (InvalidInput, Conflict) as exc:
        g.fail(exc)
        errors = errors_by_field(exc, prefix="fields.")
        return _detail_page(request, g, doc_id, values=fields, errors=errors, reason=reason,
                            status_code=exc.status)
    return RedirectResponse(f"/documents/{issued.id}?corrected={issued.version}", status_code=303)

