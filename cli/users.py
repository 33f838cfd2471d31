"""``shouhu users``: accounts, their roles and the two-person rule for grants."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from access_control.actions import ROLE_LABELS, Action, Role
from access_control.guard import Guard
from access_control.identity import Org, RoleGrant, User, create_user, generate_password, revoke_all_tokens
from access_control.operator import BOOTSTRAP_RULE, OPERATOR_RULE, Operator
from access_control.policy import TWO_PERSON_MESSAGES, holds_admin, roles_needing_approval, two_person_conflict
from access_control.users import active_admin_exists, decide_grant, open_grant, pending_grant, roles_problem
from cli.common import TYPER_OPTIONS, console, fail, operator, runtime
from core.errors import InvalidInput

users_app = typer.Typer(help="Manage user accounts.", **TYPER_OPTIONS)  # type: ignore[arg-type]


def _operator_target(op: Operator, g: Guard, action: Action, username: str) -> User:
    """The user an operator command acts on; an unknown name is a logged refusal."""
    user = g.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise op.deny(g, action, f"没有用户 {username}", kind="user", reason="record:not_found",
                      details={"username_hash": op.username_hash(username)})
    return user


@users_app.command("add")
def users_add(
    username: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    org: Annotated[str, typer.Option(help="Org id or exact org name.")],
    role: Annotated[list[Role], typer.Option(help="Role; repeat for several (the org type must allow them).")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
) -> None:
    """Create a user. Without --password-stdin a temporary password is printed once.

    Roles must suit the org type (docs/security.md). Admin, security_admin, auditor and custodian are
    each held alone, and wait for a security administrator (`shouhu users approve`), except
    the first administrator of an archive that has none (the bootstrap)."""
    action = Action.USER_CREATE
    with runtime() as rt:
        op = operator(rt)
        password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
        # Refused before the user exists, an event has no user id to name: it holds the
        # username's keyed hash, as a failed sign-in does (events never hold names).
        new_name = {"username_hash": op.username_hash(username)}
        roles = sorted({r.value for r in role})
        with op.change() as g:
            s = g.session
            if password_stdin:
                try:
                    rt.users.check_password(password, context=(username, name))
                except InvalidInput as exc:
                    message = exc.details["fields"][0]["message"]
                    raise op.deny(g, action, message, kind="user", reason="password:too_weak",
                                  details=new_name) from None
            org_row = s.scalar(select(Org).where(or_(Org.id == org, Org.name == org)))
            if org_row is None:
                raise op.deny(g, action, f"没有单位 {org}", kind="user", reason="org:not_found", details=new_name)
            if problem := roles_problem(org_row, roles):
                raise op.deny(g, action, problem.message, kind="user", reason=problem.rule,
                              details={**new_name, "org_id": org_row.id, "roles": roles})
            taken = s.scalar(select(User.id).where(User.username == username))
            if taken:
                raise op.deny(g, action, f"用户名 {username} 已存在", kind="user", rid=taken,
                              reason="user:username_taken")
            added = roles_needing_approval([], roles)
            # The first administrator of an archive with none: nobody could approve it.
            bootstrap = holds_admin(added) and not active_admin_exists(s)
            pending = bool(added) and not bootstrap
            user = create_user(s, rt.passwords, username=username, display_name=name, org=org_row,
                               roles=[] if pending else roles, password=password, now=g.now,
                               must_change_password=not password_stdin, pending_approval=pending)
            try:
                s.flush()
            except IntegrityError:  # taken meanwhile by another process
                raise op.deny(g, action, f"用户名 {username} 已存在", kind="user", reason="user:username_taken",
                              details=new_name) from None
            uid = user.id
            g.record(op.draft(action, kind="user", rid=uid, reason=BOOTSTRAP_RULE if bootstrap else OPERATOR_RULE,
                              details={"org_id": org_row.id, "roles": roles}))
            grant_id = None
            if pending:
                grant = open_grant(s, user=user, roles=roles, added=added, kind="create", requester=op.actor,
                                   now=g.now)
                grant_id = grant.id
                g.record(op.draft(Action.ROLE_GRANT_REQUEST, kind="role_grant", rid=grant.id,
                                  details={"user_id": uid, "roles": roles, "added": added}))
            g.commit()
    console.print(f"已创建用户 {username}（{uid}）。")
    if grant_id:
        console.print(f"{_role_names(added)}角色须由安全保密管理员批准（授权 {grant_id}），批准前该账号不能登录："
                      f"`shouhu users approve {grant_id}`（须由另一操作员运行）或在“系统管理 › 授权审批”中批准。")
    if bootstrap:
        console.print("这是本档案库的第一名系统管理员，无需批准；此后授予管理员、审计员或保管人角色均须第二名管理员批准。")
    if not password_stdin:
        console.print(f"临时密码（只显示这一次）：{password}")


def _role_names(roles: list[str]) -> str:
    return "、".join(f"“{ROLE_LABELS[Role(r)]}”" for r in roles)


@users_app.command("set-roles")
def users_set_roles(
    username: str,
    role: Annotated[list[Role], typer.Option(help="The user's roles after the change; repeat for several.")],
) -> None:
    """Set a user's roles. Adding admin, security_admin, auditor or custodian waits for a security administrator."""
    action = Action.USER_CHANGE_ROLES
    roles = sorted({r.value for r in role})
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            user = _operator_target(op, g, action, username)
            org_row = g.session.get(Org, user.org_id)
            if org_row is None:
                raise RuntimeError("a user's organisation row is missing")
            details: dict[str, object] = {"roles": roles, "before": sorted(user.roles)}
            if problem := roles_problem(org_row, roles):
                raise op.deny(g, action, problem.message, kind="user", rid=user.id, reason=problem.rule,
                              details=details)
            if pending_grant(g.session, user.id) is not None or user.pending_approval:
                raise op.deny(g, action, "该用户有待批准的授权，请先批准或驳回。", kind="user", rid=user.id,
                              reason="grant:already_pending", details=details)
            added = roles_needing_approval(user.roles, roles)
            g.record(op.draft(action, kind="user", rid=user.id, details=details))
            grant_id = None
            if added:
                grant = open_grant(g.session, user=user, roles=roles, added=added, kind="change",
                                   requester=op.actor, now=g.now)
                grant_id = grant.id
                g.record(op.draft(Action.ROLE_GRANT_REQUEST, kind="role_grant", rid=grant.id,
                                  details={"user_id": user.id, "roles": roles, "added": added}))
            else:
                user.roles = roles
            g.commit()
    if grant_id:
        console.print(f"{_role_names(added)}角色须由安全保密管理员批准（授权 {grant_id}）；"
                      f"批准前 {username} 的角色不变。")
    else:
        console.print(f"用户 {username} 的角色已改为 {_role_names(roles)}。")


def _decide(grant_id: str, *, approve: bool) -> None:
    action = Action.ROLE_GRANT_APPROVE if approve else Action.ROLE_GRANT_REJECT
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            grant = g.session.get(RoleGrant, grant_id)
            if grant is None:
                raise op.deny(g, action, f"没有授权申请 {grant_id}", kind="role_grant", rid=grant_id[:64],
                              reason="record:not_found")
            details: dict[str, object] = {"user_id": grant.user_id, "roles": list(grant.roles),
                                          "added": list(grant.added), "requested_by": grant.requested_by_name}
            if grant.status != "pending":
                raise op.deny(g, action, f"授权申请 {grant_id} 已处理（{grant.status}）", kind="role_grant",
                              rid=grant.id, reason="grant:not_pending", details=details)
            if approve:
                conflict = two_person_conflict(op.actor, requested_by=grant.requested_by, user_id=grant.user_id)
                if conflict:
                    raise op.deny(g, action, TWO_PERSON_MESSAGES[conflict] + f"（申请人 {grant.requested_by_name}）",
                                  kind="role_grant", rid=grant.id, reason=conflict, details=details)
                user = g.session.get(User, grant.user_id)
                org_row = g.session.get(Org, user.org_id) if user else None
                if org_row is None or roles_problem(org_row, list(grant.roles)):
                    raise op.deny(g, action, "该授权不符合单位类型与角色的对应规则。", kind="role_grant", rid=grant.id,
                                  reason="roles:org_type", details=details)
            g.record(op.draft(action, kind="role_grant", rid=grant.id, details=details))
            if not decide_grant(g.session, grant, approve=approve, decider=op.actor, now=g.now):
                raise op.deny(g, action, f"授权申请 {grant_id} 已处理", kind="role_grant", rid=grant.id,
                              reason="grant:not_pending", details=details)
            g.commit()
    console.print(f"已{'批准' if approve else '驳回'}授权申请 {grant_id}。")


@users_app.command("approve")
def users_approve(grant_id: str) -> None:
    """Approve a pending grant of admin, security_admin, auditor or custodian (not by the operator who asked)."""
    _decide(grant_id, approve=True)


@users_app.command("reject")
def users_reject(grant_id: str) -> None:
    """Reject a pending grant (an account created with it stays disabled)."""
    _decide(grant_id, approve=False)


@users_app.command("grants")
def users_grants(
    status: Annotated[str, typer.Option(help="pending, approved or rejected.")] = "pending",
) -> None:
    """List grants of admin, security_admin, auditor or custodian (the two-person rule)."""
    if status not in ("pending", "approved", "rejected"):
        raise fail("--status 只能是 pending、approved 或 rejected")
    with runtime() as rt, rt.db.read_session() as s:
        table = Table()
        for col in ("授权", "用户名", "类型", "申请后的角色", "须批准", "申请人", "申请时间", "处理人"):
            table.add_column(col)
        rows = s.execute(select(RoleGrant, User.username).join(User, User.id == RoleGrant.user_id)
                         .where(RoleGrant.status == status).order_by(RoleGrant.requested_at))
        for grant, username in rows:
            table.add_row(grant.id, username, grant.kind, ",".join(grant.roles), ",".join(grant.added),
                          grant.requested_by_name, grant.requested_at.isoformat(timespec="seconds"),
                          grant.decided_by_name or "")
        console.print(table)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a user and revoke their tokens."""
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            user = _operator_target(op, g, Action.USER_DISABLE, username)
            g.record(op.draft(Action.USER_DISABLE, kind="user", rid=user.id))
            user.disabled = True
            revoke_all_tokens(g.session, user.id, now=g.now)
            g.commit()
    console.print(f"已停用用户 {username}。")


@users_app.command("reset-password")
def users_reset_password(username: str) -> None:
    """Give a user a new temporary password (printed once) and revoke their tokens."""
    with runtime() as rt:
        op = operator(rt)
        password = generate_password()
        with op.change() as g:
            user = _operator_target(op, g, Action.USER_RESET_PASSWORD, username)
            g.record(op.draft(Action.USER_RESET_PASSWORD, kind="user", rid=user.id))
            user.password_hash = rt.passwords.hash(password)
            user.must_change_password = True
            user.password_changed_at = g.now
            revoke_all_tokens(g.session, user.id, now=g.now)
            g.commit()
    console.print(f"用户 {username} 的临时密码（只显示这一次）：{password}")


@users_app.command("reset-second-factor")
def users_reset_second_factor(username: str) -> None:
    """Remove a user's second factor (TOTP and recovery codes) and revoke their tokens; they enrol
    again at their next sign-in (for a lost phone and lost recovery codes)."""
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            user = _operator_target(op, g, Action.MFA_RESET, username)
            g.record(op.draft(Action.MFA_RESET, kind="user", rid=user.id))
            removed = rt.second_factor.remove(g.session, user.id)
            revoke_all_tokens(g.session, user.id, now=g.now)
            g.commit()
    console.print(f"已清除用户 {username} 的动态口令和恢复码，该用户下次登录时须重新绑定。" if removed
                  else f"用户 {username} 没有绑定动态口令；其登录会话已结束。")


@users_app.command("list")
def users_list() -> None:
    """List users with their org and roles."""
    with runtime() as rt, rt.db.session() as s:
        table = Table()
        for col in ("用户名", "姓名", "单位", "角色", "区划", "状态"):
            table.add_column(col)
        rows = s.execute(select(User, Org.name).join(Org, Org.id == User.org_id).order_by(User.username))
        for user, org_name in rows:
            state = "停用" if user.disabled else "待批准" if user.pending_approval else "启用"
            table.add_row(user.username, user.display_name, org_name, ",".join(user.roles), user.region_code, state)
        console.print(table)

