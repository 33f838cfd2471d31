"""Case-work pages: households, minors, home visits, search and statistics.

Every page calls the same services as the API with the signed-in user's Guard,
so policy and audit apply unchanged: records outside the caller's jurisdiction
answer NotFound (the HTML 404 page), roles without a right get the 403 page.
Forms are validated with the API's Pydantic schemas; a rejected form is shown
again with the values typed and a Chinese message next to each field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from access_control.actions import Action
from access_control.deps import get_runtime
from access_control.guard import Guard
from access_control.policy import Resource, may_issue_document_kind, may_read_document_kind
from access_control.regions import Level, RegionNode
from archive import schemas
from archive.visits import VisitCreate
from core import categories as category_words
from core.errors import Conflict, InvalidInput, field_errors
from doc_templates import kinds as doc_kinds
from web.pages import done, errors_by_field, form_to_nested, render
from web.session import CsrfChecked, FormDep, PageGuard

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 20
MEMBER_ROWS = 6  # blank rows offered on the household form
MAX_MEMBERS = 20  # as HouseholdCreate.members
MEMBER_FIELDS = ("name", "relation", "id_number", "phone", "situation")
CATEGORIES = (1, 2, 3, 4, 5)
RECORD_KIND_LABELS = {"minor": "未成年人", "household": "家庭档案"}

RegionQuery = Annotated[str | None, Query(max_length=12)]
CursorQuery = Annotated[str | None, Query(max_length=200)]
TextQuery = Annotated[str | None, Query(max_length=200)]


# helpers ---------------------------------------------------------------------------------


def _rt(request: Request) -> Any:
    return get_runtime(request)


def _require_role(g: Guard, action: Action, kind: str, record_id: str | None = None) -> None:
    """A form for an action the role never grants: refuse (logged) before reading anything."""
    g.require(action, Resource(kind, record_id[:64] if record_id else None))


def _may(g: Guard, action: Action) -> bool:
    return g.decide(action).allowed


def _issuable(g: Guard, kind: str) -> bool:
    doc = doc_kinds.get(kind)
    return doc is not None and _may(g, Action.DOCUMENT_ISSUE) and may_issue_document_kind(g.actor, doc)


def _region_label(rt: Any, code: str, root: str) -> str:
    """The names from just below ``root`` down to ``code`` (``新安街道 幸福村``)."""
    node = rt.regions.get(code)
    if node is None:
        return code
    if code == root:
        return str(node.name)
    names: list[str] = []
    while node is not None and node.code != root:
        names.append(node.name)
        node = rt.regions.get(node.parent_code) if node.parent_code else None
    return " ".join(reversed(names))


def _region_options(rt: Any, root: str, levels: set[str] | None = None) -> list[tuple[str, str]]:
    nodes: list[RegionNode] = rt.regions.subtree(root)
    return [(n.code, _region_label(rt, n.code, root)) for n in nodes if levels is None or n.level in levels]


def _opt(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _category_param(value: str | None) -> int | None:
    value = _opt(value)
    if value is None:
        return None
    if value not in {str(c) for c in CATEGORIES}:
        raise InvalidInput.one("category", "未知的困境类别", location="query")
    return int(value)


def _typed(form: FormData) -> dict[str, Any]:
    """What the user typed, to show the form again."""
    values: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key != "csrf_token" and isinstance(value, str) and not key.endswith("[]"):
            values[key] = value
    return values


def _check(model: type[BaseModel], data: dict[str, Any], *, required: tuple[str, ...] = (),
           rename: dict[str, str] | None = None) -> BaseModel:
    """Validate with the API's schema; fields in ``required`` must be present (edit forms).
    A failure is one InvalidInput naming every field, renamed to the form's names."""
    problems: list[dict[str, str]] = []
    model_obj: BaseModel | None = None
    try:
        model_obj = model.model_validate(data)
    except ValidationError as exc:
        problems = field_errors(exc.errors(), location="body")
    named = {p["field"] for p in problems}
    problems += [{"field": f, "message": "必填字段"} for f in required if f not in data and f not in named]
    if problems:
        raise InvalidInput([{**p, "field": _rename(p["field"], rename or {})} for p in problems])
    if model_obj is None:
        raise RuntimeError("the form validated without a model")
    return model_obj


def _rename(field: str, rename: dict[str, str]) -> str:
    for old, new in rename.items():
        if field == old or field.startswith(old + "."):
            return new + field[len(old):]
    return field


def _errors(exc: InvalidInput | Conflict) -> dict[str, str]:
    errors = errors_by_field(exc)
    if isinstance(exc, Conflict):
        if "field" not in exc.details or exc.details.get("field") == "expected_version":
            errors["_form"] = exc.message
        if exc.details.get("field") == "expected_version":
            # Saving again would overwrite the other change unseen: offer the current record instead.
            errors["_stale"] = "1"
        if "existing_id" in exc.details:
            errors["_existing"] = str(exc.details["existing_id"])
    elif not errors:
        errors["_form"] = exc.message
    return errors


def _pager(base: str, params: dict[str, Any], next_cursor: str | None, cursor: str | None) -> dict[str, str | None]:
    keep = {k: v for k, v in params.items() if v not in (None, "")}
    return {
        "next": f"{base}?{urlencode({**keep, 'cursor': next_cursor})}" if next_cursor else None,
        "first": (f"{base}?{urlencode(keep)}" if keep else base) if cursor else None,
    }


def mask_id(id_number: str | None) -> str:
    if not id_number:
        return ""
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# households ------------------------------------------------------------------------------


@router.get("/households", response_class=HTMLResponse)
def households(request: Request, g: PageGuard, region: RegionQuery = None, cursor: CursorQuery = None
               ) -> HTMLResponse:
    rt = _rt(request)
    region = _opt(region)
    page = rt.archive.list_households(g, region=region, limit=PAGE_SIZE, cursor=_opt(cursor))
    root = g.actor.region_code
    return render(request, "casework/households.html.j2", title="家庭档案", items=page.items,
                  region=region or "", region_options=_region_options(rt, root),
                  label=lambda code: _region_label(rt, code, root),
                  pager=_pager("/households", {"region": region}, page.next_cursor, _opt(cursor)),
                  may_create=_may(g, Action.HOUSEHOLD_CREATE))


def _household_form(request: Request, g: PageGuard, *, household: schemas.HouseholdPublic | None,
                    values: dict[str, Any], errors: dict[str, str], status_code: int = 200) -> HTMLResponse:
    rt = _rt(request)
    root = g.actor.region_code
    filled = max((int(m.group(1)) + 1 for k in values if (m := re.match(r"members\.(\d+)\.", k))), default=0)
    rows = min(max(MEMBER_ROWS, filled), MAX_MEMBERS)
    title = "修改家庭档案" if household else "新建家庭档案"
    return render(request, "casework/household_form.html.j2", status_code=status_code, title=title,
                  household=household, values=values, errors=errors, rows=rows, member_fields=MEMBER_FIELDS,
                  region_options=_region_options(rt, root, {Level.VILLAGE.value, Level.TOWNSHIP.value}),
                  region_name=_region_label(rt, household.region_code, root) if household else "")


def _household_data(form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """Form -> schema data; blank member rows dropped. Also the schema's member index ->
    the form's row index, to put each message next to the row it is about."""
    data = form_to_nested(form)
    data.pop("members", None)
    data.pop("expected_version", None)
    members: list[dict[str, str]] = []
    rename: dict[str, str] = {}
    for i in range(MAX_MEMBERS):
        row = {f: v.strip() for f in MEMBER_FIELDS if isinstance(v := form.get(f"members.{i}.{f}"), str) and v.strip()}
        if row:
            rename[f"members.{len(members)}"] = f"members.{i}"
            members.append(row)
    data["members"] = members
    return data, rename


@router.get("/households/new", response_class=HTMLResponse)
def household_new(request: Request, g: PageGuard) -> HTMLResponse:
    _require_role(g, Action.HOUSEHOLD_CREATE, "household")
    return _household_form(request, g, household=None, values={}, errors={})


@router.post("/households/new", dependencies=[CsrfChecked])
def household_create(request: Request, g: PageGuard, form: FormDep) -> Response:
    rt = _rt(request)
    data, rename = _household_data(form)
    try:
        body = _check(schemas.HouseholdCreate, data, rename=rename)
        created = rt.archive.create_household(g, body)
    except (InvalidInput, Conflict) as exc:
        g.fail(exc)
        return _household_form(request, g, household=None, values=_typed(form), errors=_errors(exc),
                               status_code=exc.status)
    return _redirect(done(f"/households/{created.id}", "saved"))


def _household_page(request: Request, g: PageGuard, household_id: str, *, visit_values: dict[str, Any],
                    visit_errors: dict[str, str], status_code: int = 200) -> HTMLResponse:
    rt = _rt(request)
    household = rt.archive.read_household(g, household_id)
    minors = rt.archive.list_minors(g, region=None, category=None, household_id=household.id, limit=200,
                                    cursor=None).items
    visits = rt.visits.list(g, household.id)
    return render(request, "casework/household.html.j2", status_code=status_code, title="家庭档案",
                  household=household, minors=minors, visits=visits,
                  region_name=rt.regions.full_name(household.region_code),
                  visit_values=visit_values, visit_errors=visit_errors, today=schemas.local_date(g.now).isoformat(),
                  may_edit=_may(g, Action.HOUSEHOLD_UPDATE), may_add_minor=_may(g, Action.MINOR_CREATE),
                  may_visit=_may(g, Action.VISIT_CREATE), may_issue=_issuable(g, "household_file"),
                  mask_id=mask_id)


@router.get("/households/{household_id}", response_class=HTMLResponse)
def household_page(request: Request, g: PageGuard, household_id: str) -> HTMLResponse:
    return _household_page(request, g, household_id, visit_values={}, visit_errors={})


@router.get("/households/{household_id}/edit", response_class=HTMLResponse)
def household_edit(request: Request, g: PageGuard, household_id: str) -> HTMLResponse:
    _require_role(g, Action.HOUSEHOLD_UPDATE, "household", household_id)
    household = _rt(request).archive.read_household(g, household_id)
    values: dict[str, Any] = {"address": household.address, "notes": household.notes or "",
                              "expected_version": str(household.version)}
    for i, m in enumerate(household.members):
        for f in MEMBER_FIELDS:
            values[f"members.{i}.{f}"] = getattr(m, f) or ""
    return _household_form(request, g, household=household, values=values, errors={})


@router.post("/households/{household_id}/edit", dependencies=[CsrfChecked])
def household_update(request: Request, g: PageGuard, household_id: str, form: FormDep) -> Response:
    rt = _rt(request)
    data, rename = _household_data(form)
    data.setdefault("notes", None)  # a cleared field is cleared, not kept
    version = form.get("expected_version")
    if isinstance(version, str) and version.isdigit():
        data["expected_version"] = int(version)
    try:
        body = _check(schemas.HouseholdUpdate, data, required=("address",), rename=rename)
        rt.archive.update_household(g, household_id, body)
    except (InvalidInput, Conflict) as exc:
        g.fail(exc)
        household = rt.archive.read_household(g, household_id)  # the typed values are shown, not these
        return _household_form(request, g, household=household, values=_typed(form), errors=_errors(exc),
                               status_code=exc.status)
    return _redirect(done(f"/households/{household_id}", "saved"))


@router.post("/households/{household_id}/visits", dependencies=[CsrfChecked])
def visit_create(request: Request, g: PageGuard, household_id: str, form: FormDep) -> Response:
    rt = _rt(request)
    data = form_to_nested(form)
    try:
        body = _check(VisitCreate, data)
        rt.visits.create(g, household_id, body)
    except InvalidInput as exc:
        g.fail(exc)
        return _household_page(request, g, household_id, visit_values=_typed(form), visit_errors=_errors(exc),
                               status_code=exc.status)
    return _redirect(done(f"/households/{household_id}#visits", "saved"))


# minors ----------------------------------------------------------------------------------


@router.get("/minors", response_class=HTMLResponse)
def minors(request: Request, g: PageGuard, region: RegionQuery = None, category: TextQuery = None,
           cursor: CursorQuery = None) -> HTMLResponse:
    rt = _rt(request)
    region = _opt(region)
    cat = _category_param(category)
    page = rt.archive.list_minors(g, region=region, category=cat, household_id=None, limit=PAGE_SIZE,
                                  cursor=_opt(cursor))
    root = g.actor.region_code
    return render(request, "casework/minors.html.j2", title="未成年人", items=page.items, region=region or "",
                  category=str(cat or ""), region_options=_region_options(rt, root),
                  label=lambda code: _region_label(rt, code, root),
                  pager=_pager("/minors", {"region": region, "category": cat}, page.next_cursor, _opt(cursor)),
                  today=schemas.local_date(g.now), age_on=age_on, mask_id=mask_id)


def _minor_form(request: Request, g: PageGuard, *, minor: schemas.MinorPublic | None, household_id: str,
                household: schemas.HouseholdPublic | None, values: dict[str, Any], errors: dict[str, str],
                status_code: int = 200) -> HTMLResponse:
    return render(request, "casework/minor_form.html.j2", status_code=status_code,
                  title="修改未成年人信息" if minor else "登记未成年人", minor=minor, household_id=household_id,
                  household=household, values=values, errors=errors, categories=CATEGORIES,
                  subtype_options=list(category_words.SUBTYPE_SHORT.items()),
                  today=schemas.local_date(g.now).isoformat(), sex_options=[("male", "男"), ("female", "女")])


def _minor_data(form: FormData) -> tuple[dict[str, Any], list[int], dict[str, str]]:
    """Form -> schema data without categories; the checked categories with their dates
    validated one by one (messages keyed ``cat_found_<n>``)."""
    data = form_to_nested(form)
    for key in [k for k in data if k.startswith(("cat_found_", "cat_subtype_"))] + ["categories", "expected_version"]:
        data.pop(key, None)
    checked = sorted({int(v) for v in form.getlist("categories[]") if isinstance(v, str) and v in
                      {str(c) for c in CATEGORIES}})
    problems: dict[str, str] = {}
    cats: list[dict[str, Any]] = []
    for n in checked:
        item: dict[str, Any] = {"category": n}
        found = form.get(f"cat_found_{n}")
        if isinstance(found, str) and found.strip():
            item["found_on"] = found.strip()
        subtype = form.get(f"cat_subtype_{n}")
        if isinstance(subtype, str) and subtype.strip():
            item["subtype"] = subtype.strip()
        try:
            cats.append(schemas.CategoryIn.model_validate(item).model_dump(exclude_none=True))
        except ValidationError as exc:
            problems[f"cat_found_{n}"] = field_errors(exc.errors(), location="body")[0]["message"]
    data["categories"] = cats
    return data, checked, problems


def _raise_with(problems: dict[str, str], exc: InvalidInput | None = None) -> None:
    fields = list(exc.details.get("fields", [])) if exc else []
    fields += [{"field": f, "message": m} for f, m in problems.items()]
    if fields:
        raise InvalidInput(fields)


@router.get("/minors/new", response_class=HTMLResponse)
def minor_new(request: Request, g: PageGuard, household_id: TextQuery = None) -> HTMLResponse:
    _require_role(g, Action.MINOR_CREATE, "minor")
    household_id = _opt(household_id)
    household = _rt(request).archive.read_household(g, household_id) if household_id else None
    return _minor_form(request, g, minor=None, household_id=household_id or "", household=household, values={},
                       errors={})


@router.post("/minors/new", dependencies=[CsrfChecked])
def minor_create(request: Request, g: PageGuard, form: FormDep) -> Response:
    rt = _rt(request)
    data, checked, problems = _minor_data(form)
    household_id = str(data.get("household_id", ""))
    try:
        try:
            body = _check(schemas.MinorCreate, data)
        except InvalidInput as exc:
            _raise_with(problems, exc)
            raise
        _raise_with(problems)
        created = rt.archive.create_minor(g, body)
    except (InvalidInput, Conflict) as exc:
        g.fail(exc)
        errors = _errors(exc)
        if errors.pop("household_id", None):
            errors["_form"] = "未找到所属家庭档案，请从家庭档案页面登记未成年人。"
        return _minor_form(request, g, minor=None, household_id=household_id, household=None,
                           values={**_typed(form), "categories": [str(c) for c in checked]}, errors=errors,
                           status_code=exc.status)
    return _redirect(done(f"/minors/{created.id}", "saved"))


@router.get("/minors/{minor_id}", response_class=HTMLResponse)
def minor_page(request: Request, g: PageGuard, minor_id: str) -> HTMLResponse:
    rt = _rt(request)
    minor = rt.archive.read_minor(g, minor_id)
    documents = [(k.kind, k.title) for k in doc_kinds.KINDS.values() if k.subject == "minor" and _issuable(g, k.kind)]
    return render(request, "casework/minor.html.j2", title=minor.name, minor=minor,
                  region_name=rt.regions.full_name(minor.region_code),
                  age=age_on(minor.birth_date, schemas.local_date(g.now)), may_edit=_may(g, Action.MINOR_UPDATE),
                  documents=documents)


def _minor_values(minor: schemas.MinorPublic) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": minor.name, "id_number": minor.id_number or "", "birth_date": minor.birth_date.isoformat(),
        "sex": minor.sex, "school": minor.school or "", "guardian": minor.guardian or "",
        "phone": minor.phone or "", "notes": minor.notes or "", "expected_version": str(minor.version),
        "categories": [str(c) for c in minor.categories],
    }
    for rec in minor.category_records:
        if rec.ended_on is None:
            values[f"cat_found_{rec.category}"] = rec.found_on.isoformat()
            if rec.subtype:
                values[f"cat_subtype_{rec.category}"] = rec.subtype
    return values


@router.get("/minors/{minor_id}/edit", response_class=HTMLResponse)
def minor_edit(request: Request, g: PageGuard, minor_id: str) -> HTMLResponse:
    _require_role(g, Action.MINOR_UPDATE, "minor", minor_id)
    minor = _rt(request).archive.read_minor(g, minor_id)
    return _minor_form(request, g, minor=minor, household_id=minor.household_id, household=None,
                       values=_minor_values(minor), errors={})


@router.post("/minors/{minor_id}/edit", dependencies=[CsrfChecked])
def minor_update(request: Request, g: PageGuard, minor_id: str, form: FormDep) -> Response:
    rt = _rt(request)
    data, checked, problems = _minor_data(form)
    data.pop("household_id", None)
    for optional in ("id_number", "school", "guardian", "phone", "notes"):
        data.setdefault(optional, None)  # a cleared field is cleared, not kept
    version = form.get("expected_version")
    if isinstance(version, str) and version.isdigit():
        data["expected_version"] = int(version)
    try:
        try:
            body = _check(schemas.MinorUpdate, data, required=("name", "birth_date", "sex", "categories"))
        except InvalidInput as exc:
            _raise_with(problems, exc)
            raise
        _raise_with(problems)
        rt.archive.update_minor(g, minor_id, body)
    except (InvalidInput, Conflict) as exc:
        g.fail(exc)
        minor = rt.archive.read_minor(g, minor_id)
        return _minor_form(request, g, minor=minor, household_id=minor.household_id, household=None,
                           values={**_typed(form), "categories": [str(c) for c in checked]}, errors=_errors(exc),
                           status_code=exc.status)
    return _redirect(done(f"/minors/{minor_id}", "saved"))


# search ----------------------------------------------------------------------------------

_SAFE_SNIPPET = re.compile(r"(?:[^<>]|<mark>|</mark>)*")


def safe_snippet(snippet: str) -> Markup:
    """The service's snippets are HTML-escaped text with <mark> around matches: pass them
    through only if that is all they hold; anything else is shown as text."""
    if _SAFE_SNIPPET.fullmatch(snippet) and snippet.count("<mark>") == snippet.count("</mark>"):
        return Markup(snippet)  # noqa: S704 - checked: escaped text and <mark> tags only
    return escape(snippet)


def _kind_options(rt: Any, g: Guard) -> list[tuple[str, str]]:
    options = list(RECORD_KIND_LABELS.items()) if _may(g, Action.MINOR_LIST) else []
    if _may(g, Action.DOCUMENT_LIST):
        options += [(k.kind, k.title) for k in doc_kinds.KINDS.values() if may_read_document_kind(g.actor, k)]
    return options


def _hit_url(hit: dict[str, Any]) -> str:
    if hit["kind"] == "minor":
        return f"/minors/{hit['id']}"
    if hit["kind"] == "household":
        return f"/households/{hit['id']}"
    return f"/documents/{hit['id']}"


def _search(request: Request, g: PageGuard, form: Mapping[str, Any] | None, *, fragment: bool) -> HTMLResponse:
    """The search page; ``form`` is what was posted (None: the empty form).

    Search terms are names, ID numbers and addresses: they travel only in POST bodies,
    never in a URL (browser history, proxy logs, the sign-in redirect), as the
    auditor's ID-number lookup does.
    """
    rt = _rt(request)
    kind_options = _kind_options(rt, g)
    data = {k: str(v)[:200] for k, v in form_to_nested(form or {}).items()}
    q = data.get("q", "") if form is not None else None
    kind, category, cursor = _opt(data.get("kind")), _opt(data.get("category")), _opt(data.get("cursor"))
    values = {"q": q or "", "kind": kind or "", "category": category or ""}
    errors: dict[str, str] = {}
    result: dict[str, Any] | None = None
    if q is not None:
        try:
            if len(q.strip()) > 100:
                raise InvalidInput.one("q", "长度不能超过100个字符")
            result = rt.search.search(g, q=q, kind=kind, region=None, category=_category_param(category),
                                      date_from=None, date_to=None, limit=PAGE_SIZE, cursor=cursor)
        except InvalidInput as exc:
            g.fail(exc)
            errors = _errors(exc)
    hits = [{**h, "url": _hit_url(h), "snippet": safe_snippet(h["snippet"]),
             "kind_label": RECORD_KIND_LABELS.get(h["kind"]) or (doc_kinds.KINDS[h["kind"]].title
                                                                 if h["kind"] in doc_kinds.KINDS
                                                                  else h["kind"])}
            for h in (result or {}).get("hits", [])]
    pager = {"next": (result or {}).get("next_cursor"), "first": bool(cursor)}
    context: dict[str, Any] = dict(
        title="检索", values={**values, "q": (q or "").strip()} if result else values, errors=errors,
                   result=result, hits=hits, pager=pager, kind_options=kind_options, categories=CATEGORIES)
    if fragment:  # htmx swaps only 2xx answers: the messages come back with 200
        return render(request, "casework/search_results.html.j2", **context)
    return render(request, "casework/search.html.j2", status_code=422 if errors else 200, **context)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, g: PageGuard) -> HTMLResponse:
    return _search(request, g, None, fragment=False)


@router.post("/search", response_class=HTMLResponse, dependencies=[CsrfChecked])
def search_submit(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    return _search(request, g, form, fragment=False)


@router.post("/search/results", response_class=HTMLResponse, dependencies=[CsrfChecked])
def search_results(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    # htmx asks for the results alone; anyone else (no JS) gets the whole page.
    return _search(request, g, form, fragment=request.headers.get("HX-Request") == "true")


# statistics ------------------------------------------------------------------------------


@router.get("/statistics", response_class=HTMLResponse)
def statistics(request: Request, g: PageGuard, region: RegionQuery = None) -> HTMLResponse:
    rt = _rt(request)
    root = g.actor.region_code
    stats = rt.visits.statistics(g, region=_opt(region))
    subtree = rt.regions.subtree(root)
    parents = {n.parent_code for n in subtree}
    # Regions with regions below them (a village has no rows of its own to show).
    options = [(n.code, _region_label(rt, n.code, root)) for n in subtree if n.code in parents or n.code == root]
    drill = {r["region"] for r in stats["rows"] if r["region"] in parents}
    node = rt.regions.get(stats["region"])
    parent = node.parent_code if node and node.code != root and node.parent_code else None
    return render(request, "casework/statistics.html.j2", title="督查统计", stats=stats, region=stats["region"],
                  region_options=options, drill=drill, parent=parent, categories=CATEGORIES,
                  labels=[doc_kinds.CATEGORY_SHORT[c] for c in CATEGORIES],
                  region_name=rt.regions.full_name(stats["region"]), today=schemas.local_date(g.now),
                  may_report=_issuable(g, "inspection_report"))
