"""One policy module: no role name or org type is compared outside access_control/policy.py.

An AST walk over the application's modules (not tests, migrations or benchmarks) finds

- a comparison (``==``, ``!=``, ``in``, ``not in``, ``is``) with a role name or an org-type
  value on either side, as a string, as ``Role.X``/``OrgType.X``, or inside a literal set,
  tuple or list;
- a comparison or a set operation (``&``, ``|``, ``-``, ``^``) on an actor's ``.roles`` or
  ``.org_type`` (also through ``set(x.roles)`` or a local name assigned from one).

Such rules belong in ``access_control.policy`` as named predicates (``is_custodian``,
``holds_any_role``, ``sees_page``...), which the callers use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from access_control import policy
from access_control.actions import Role
from access_control.identity import Actor, OrgType

ROOT = Path(__file__).resolve().parents[2]
POLICY = "access_control/policy.py"
SKIP_DIRS = {"tests", "migrations", "bench", "docs", "var", "node_modules", "build", "dist"}


ROLE_NAMES = frozenset(r.value for r in Role)
ORG_TYPES = frozenset(t.value for t in OrgType)
ENUMS = {"Role", "OrgType"}
ROLE_ATTRS = {"roles", "org_type"}
SET_OPS = (ast.BitAnd, ast.BitOr, ast.Sub, ast.BitXor)


def app_modules() -> list[Path]:
    """Every .py file of the application (top-level modules and packages)."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        out.append(path)
    return out


def _names_a_role(node: ast.AST) -> bool:
    """A role name or org-type value: a string, ``Role.X``/``OrgType.X``, or a literal holding one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in ROLE_NAMES or node.value in ORG_TYPES
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ENUMS:
        return True
    if isinstance(node, ast.Attribute) and node.attr == "value":  # Role.X.value
        return _names_a_role(node.value)
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return any(_names_a_role(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"set", "frozenset"}:
        return any(_names_a_role(a) for a in node.args)
    return False


def _reads_roles(node: ast.AST, tainted: set[str]) -> bool:
    """An actor's roles or org type: ``x.roles``, ``x.org_type``, ``set(x.roles)``, or a name bound to one."""
    if isinstance(node, ast.Attribute) and node.attr in ROLE_ATTRS:
        return True
    if isinstance(node, ast.Name) and node.id in tainted:
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"set", "frozenset"}:
        return any(_reads_roles(a, tainted) for a in node.args)
    return False


def offences(source: str) -> list[tuple[int, str]]:
    """(line, source) of every role or org-type comparison in ``source``."""
    tree = ast.parse(source)
    tainted = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _reads_roles(node.value, set()):
            tainted |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_names_a_role(s) or _reads_roles(s, tainted) for s in sides):
                found.append((node.lineno, ast.get_source_segment(source, node) or ""))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, SET_OPS):
            sides = [node.left, node.right]
            if any(_reads_roles(s, tainted) or _names_a_role(s) for s in sides):
                found.append((node.lineno, ast.get_source_segment(source, node) or ""))
    return found


def test_the_walk_covers_the_application() -> None:
    seen = {p.relative_to(ROOT).as_posix() for p in app_modules()}
    assert POLICY in seen
    assert {"web/app.py", "archive/sealing.py", "access_control/sealed.py", "search/query.py"} <= seen
    assert not any(s.startswith(("tests/", "migrations/", "bench/")) for s in seen)


@pytest.mark.parametrize("snippet", [
    'x = "custodian" in g.actor.roles',
    "x = Role.ADMIN.value in roles_of_user",
    'x = roles & {"caseworker", "supervisor"}',
    "x = set(actor.roles) & kind.issuer_roles",
    "roles = set(g.actor.roles)\nok = roles & who",
    "x = g.actor.org_type in entitled",
    'x = org.type == "court"',
    "x = actor.org_type == OrgType.COURT",
    'x = role != "auditor"',
])
def test_the_walk_finds_role_comparisons(snippet: str) -> None:
    assert offences(snippet), snippet


@pytest.mark.parametrize("snippet", [
    'x = panel == "stats"',
    'ROLE_NAMES = {"caseworker": "专干"}',
    'ISSUERS = frozenset({"caseworker"})',
    "x = holds_any_role(g.actor, kind.issuer_roles)",
    'x = hit["kind"] == "minor"',
])
def test_the_walk_lets_other_code_be(snippet: str) -> None:
    assert not offences(snippet), snippet


def test_no_role_or_org_type_compared_outside_policy() -> None:
    bad = []
    for path in app_modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel == POLICY:
            continue
        bad += [f"{rel}:{line}: {code}" for line, code in offences(path.read_text(encoding="utf-8"))]
    assert not bad, "role or org-type rules outside access_control/policy.py:\n" + "\n".join(bad)


def _actor(*roles: str, org_type: str = "civil_affairs") -> Actor:
    return Actor(user_id="u1", username="u1", display_name="", org_id="o1", org_name="", org_type=org_type,
                 roles=roles, region_code="320700")


def test_the_named_rules() -> None:
    caseworker, custodian, admin = _actor("caseworker"), _actor("custodian"), _actor("admin")
    assert policy.is_custodian(custodian) and not policy.is_custodian(caseworker)
    assert policy.home_panel(caseworker) == "stats" and policy.home_panel(custodian) == "requests"
    assert policy.home_panel(_actor("auditor")) == "audit" and policy.home_panel(admin) == "accounts"
    assert policy.home_panel(_actor()) is None
    assert policy.sees_page(caseworker, "/households") and not policy.sees_page(admin, "/households")
    assert policy.sees_page(admin, "/") and not policy.sees_page(_actor(), "/")
    assert policy.holds_any_role(custodian, {"custodian", "auditor"}) and not policy.holds_any_role(custodian, ())
    assert policy.holds_admin(["caseworker", "admin"]) and not policy.holds_admin(None)
    court = _actor("requester", org_type="court")
    assert policy.org_type_entitled(court, frozenset({"court"})) and not policy.org_type_entitled(court, frozenset())
