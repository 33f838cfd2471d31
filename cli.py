"""The ``shouhu`` command: init, demo, serve, doctor, users, keys."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, make_url, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from access_control.actions import ROLE_LABELS, Action, Role
from access_control.audit import EventDraft
from access_control.guard import Guard
from access_control.identity import (
    Org,
    RoleGrant,
    User,
    create_user,
    generate_password,
    operator_actor,
    revoke_all_tokens,
)
from access_control.policy import (
    TWO_PERSON_MESSAGES,
    holds_admin,
    role_assignment_problem,
    roles_needing_approval,
    two_person_conflict,
)
from access_control.users import active_admin_exists, decide_grant, open_grant, pending_grant, roles_problem
from core import keys as keystore
from core.db import new_id
from core.errors import AuditUnavailable, InvalidInput, ShouhuError
from core.outbox import enqueue
from core.settings import ConfigError, Settings, new_master_key_text, write_key_file
from runtime import Runtime, alembic_config

# Never print local variables in tracebacks: they may hold decrypted case data.
_TYPER = {"no_args_is_help": True, "pretty_exceptions_show_locals": False}
app = typer.Typer(help="Shouhu 守护: encrypted juvenile-protection records.", **_TYPER)
users_app = typer.Typer(help="Manage user accounts.", **_TYPER)
keys_app = typer.Typer(help="Key-encryption keys: rotate, retire, status, shred.", **_TYPER)
audit_app = typer.Typer(help="The access log: verify, checkpoint, export.", **_TYPER)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")

console = Console()
err = Console(stderr=True)


class State:
    data_dir: Path = Path("./var")


state = State()


@app.callback()
def main(
    data_dir: Annotated[Path, typer.Option(envvar="SHOUHU_DATA_DIR", help="Archive folder.")] = Path("./var"),
) -> None:
    state.data_dir = data_dir


def settings() -> Settings:
    return Settings(data_dir=state.data_dir)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]错误：[/red]{message}")
    return typer.Exit(code)


@contextmanager
def runtime(require_schema: bool = True) -> Iterator[Runtime]:
    try:
        rt = Runtime.open(settings(), require_schema=require_schema)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        yield rt
    except AuditUnavailable:
        # Only raised where an event could not be written with its change, which was then
        # rolled back: nothing happened that the log does not show.
        raise fail("访问日志暂时无法写入，操作未执行（没有记录的更改均已撤销）。请检查数据库后重试。") from None
    finally:
        rt.close()


OPERATOR_RULE = "cli:operator"


class Operator:
    """One operator command's entries in the access log, as the CLI's system actor.

    The actor is ``system:cli:<OS user>`` (the account that ran ``shouhu``); a command
    run for a user (``print --as``) is logged with that user as ``on_behalf_of``.

    Whoever runs ``shouhu`` holds the master key and the database, so an operator
    command is allowed by rule ``cli:operator``; what the archive refuses (an unknown
    user, the current KEK, nothing to shred) is logged 'denied', and what fails
    midway 'error', as the API logs its decisions. A change commits its 'allowed'
    event in the change's own transaction (``change``, or the ``on_start`` /
    ``on_commit`` hooks of ``core.keys``), so a crash leaves neither a change
    without its event nor an event without its change.
    """

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.actor = operator_actor()
        self.request_id = new_id("cli")

    @staticmethod
    def draft(action: Action, *, kind: str, rid: str = "", outcome: str = "allowed", reason: str = OPERATOR_RULE,
              details: dict[str, object] | None = None) -> EventDraft:
        return EventDraft(action=action, outcome=outcome, reason=reason, resource_kind=kind, resource_id=rid,
                          details=dict(details or {}))

    def append(self, session: Session, action: Action, **draft: object) -> None:
        """Add an event in the caller's transaction; the caller commits it with its change."""
        try:
            self.rt.audit.append(session, actor=self.actor, request_id=self.request_id, at=self.rt.clock(),
                                 draft=self.draft(action, **draft))  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            raise AuditUnavailable() from exc

    def record(self, action: Action, **draft: object) -> None:
        """An event in a transaction of its own (no other session of this command may be open)."""
        try:
            with self.rt.db.session() as s:
                self.append(s, action, **draft)
                s.commit()
        except SQLAlchemyError as exc:
            raise AuditUnavailable() from exc

    def username_hash(self, username: str) -> str:
        """A username that names no user, as failed sign-ins log it: a keyed hash, not the name."""
        return self.rt.ring.keyed_hash("login-throttle", username.strip().lower())

    def refuse(self, action: Action, message: str, *, kind: str, rid: str = "", reason: str) -> typer.Exit:
        """Log a refusal in its own transaction; the caller raises what this returns."""
        self.record(action, kind=kind, rid=rid, outcome="denied", reason=reason)
        return fail(message)

    def deny(self, g: Guard, action: Action, message: str, *, kind: str, rid: str = "", reason: str,
             details: dict[str, object] | None = None) -> typer.Exit:
        """Inside ``change``: undo what the transaction did, log the refusal, commit it."""
        g.session.rollback()
        g.record(self.draft(action, kind=kind, rid=rid, outcome="denied", reason=reason, details=details))
        g.commit()
        return fail(message)

    def failed(self, action: Action, exc: BaseException, *, kind: str, rid: str = "",
               details: dict[str, object] | None = None) -> None:
        """Log an 'error' event for an operation that stopped; never hides ``exc`` itself."""
        code = exc.code if isinstance(exc, ShouhuError) else type(exc).__name__
        try:
            self.record(action, kind=kind, rid=rid, outcome="error", reason=f"error:{code}", details=details)
        except AuditUnavailable:
            err.print("[red]警告：[/red]访问日志无法写入，本次失败未能记录。")

    @contextmanager
    def change(self) -> Iterator[Guard]:
        """One transaction for a change and its event: ``g.record(...)``, the change, ``g.commit()``.

        Any exception before that commit rolls the change back and logs the recorded
        event again as 'error' (``Guard.fail``), in the same way as an API request.
        """
        with self.rt.db.session() as s:
            g = self.rt.guard(s, self.actor, request_id=self.request_id)
            try:
                yield g
            except BaseException as exc:
                g.fail(exc)
                raise


# init / demo / serve ------------------------------------------------------------


@app.command()
def init() -> None:
    """Create the data dir, the master key file (0600), the database schema and the first KEK."""
    s = settings()
    s.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in (s.blob_dir, s.log_dir):  # doctor says `init` creates them
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if s.master_key is None and not s.effective_master_key_file.exists():
        write_key_file(s.effective_master_key_file, new_master_key_text())
        console.print(f"已创建主密钥文件 {s.effective_master_key_file}（权限 0600）。请另行备份，切勿提交到代码库。")
    with runtime(require_schema=False) as rt:
        created = rt.initialize()
        if rt.upgraded:
            console.print(f"已将旧版明文保存的案号与法律依据加密：{rt.upgraded.requests} 件查询申请，"
                          f"{rt.upgraded.records} 条封存登记。")
    console.print("档案库已初始化。" if created else "档案库已是最新，无需初始化。")


@app.command()
def demo(
    if_empty: Annotated[bool, typer.Option(help="Do nothing (exit 0) if the archive has users.")] = False,
    households: Annotated[int, typer.Option(help="How many synthetic households.")] = 200,
) -> None:
    """Load demo data: Lianyungang regions, orgs, the demo users and synthetic households."""
    from archive import demo as demo_data

    with runtime() as rt:
        with rt.db.session() as s:
            has_users = (s.scalar(select(func.count()).select_from(User)) or 0) > 0
        if has_users:
            if if_empty:
                console.print("档案库已有数据，跳过演示数据。")
                return
            raise fail("档案库已有数据；演示数据只能载入空档案库。")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("生成演示家庭", total=households)
            summary = demo_data.load(rt, households=households,
                                     progress=lambda n: progress.update(task, completed=n))
    console.print(
        f"演示数据已载入：{summary['regions']} 个行政区划，{summary['orgs']} 个单位，"
        f"{summary['users']} 个用户，{summary['households']} 户家庭，{summary['minors']} 名未成年人。"
    )
    console.print("演示用户密码取自 SHOUHU_DEMO_PASSWORD（本地默认值见 README）。")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the API (and later the pages) with uvicorn."""
    import uvicorn

    from main import create_app

    try:
        application = create_app(settings())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    console.print(f"Shouhu 正在 http://{host}:{port} 提供服务（API 文档 /docs）。")
    # proxy_headers off: uvicorn would otherwise take X-Forwarded-For from any loopback peer as
    # the client address, letting a local client pick the address sign-in limits count;
    # SHOUHU_TRUSTED_PROXIES says whose header to believe (access_control/addresses.py).
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False)


# search -------------------------------------------------------------------------


@app.command()
def reindex() -> None:
    """Rebuild the search index from the archive, with a progress bar, while the server keeps serving.

    The new index is built aside and replaces the old one in one step; a running `shouhu serve`
    switches to it within about a second. Safe to rerun or to stop midway (the old index stays).
    An index built with another key or backend is replaced the same way."""
    from search.backends import SearchUnavailable

    with runtime() as rt:
        s = rt.settings
        op = Operator(rt)
        # A rebuild spans many transactions and the index files, so it cannot commit its event
        # with the change: the 'allowed' event is committed before the first change (the new
        # generation), and an 'error' event follows if it stops midway. The log then never misses
        # a rebuild that touched the index; if the process is killed midway, 'allowed' without
        # 'error' still says only what happened: a rebuild began (and its generation was not used).
        op.record(Action.REINDEX, kind="search_index", rid=s.search_backend)
        try:
            unusable = not rt.live_index.store.usable()
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("重建搜索索引", total=None)
                total = rt.indexer.reindex(
                    progress=lambda done, total: progress.update(task, completed=done, total=total))
        except BaseException as exc:
            op.failed(Action.REINDEX, exc, kind="search_index", rid=s.search_backend)
            if isinstance(exc, SearchUnavailable):
                raise fail(f"搜索索引未重建：{exc}（原索引保持不变）") from None
            raise
    if unusable:
        console.print("原有搜索索引不能使用（密钥或引擎不同，或已损坏），已删除并重建。")
    console.print(f"搜索索引已重建（{s.search_backend}）：{total} 条记录。")


# doctor -------------------------------------------------------------------------


@app.command()
def doctor() -> None:
    """Check the database, keys, fonts and folders, and say how to fix each problem."""
    s = settings()
    rows: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        rows.append((name, ok, detail))

    try:
        _ = s.master_key_bytes
        check("主密钥 master key", True, "可用")
        key_ok = True
    except ConfigError as exc:
        check("主密钥 master key", False, str(exc))
        key_ok = False

    folders = (("数据目录 data dir", s.data_dir), ("文件目录 blobs", s.blob_dir), ("日志目录 logs", s.log_dir))
    for label, path in folders:
        if path.exists():
            ok = os.access(path, os.W_OK)
            check(label, ok, str(path) if ok else f"{path} 不可写：运行 `chmod u+w {path}` 或以正确用户运行")
        else:
            parent_ok = os.access(path.parent if path.parent.exists() else s.data_dir.parent, os.W_OK)
            check(label, parent_ok, f"{path} 尚未创建（运行 `shouhu init` 会创建）")

    sqlite_file = Path(make_url(s.effective_database_url).database or "") if s.is_sqlite else None
    if key_ok and sqlite_file is not None and not sqlite_file.is_file():
        # Opening it would create an empty database file: a check must not change anything.
        check("数据库 database", False, f"数据库文件 {sqlite_file} 不存在：运行 `shouhu init` 创建")
    elif key_ok:
        try:
            rt = Runtime.open(s, require_schema=False)
            try:
                if not rt.db.has_schema():
                    check("数据库 database", False, "没有数据表：运行 `shouhu init`")
                else:
                    from alembic.runtime.migration import MigrationContext
                    from alembic.script import ScriptDirectory

                    head = ScriptDirectory.from_config(alembic_config(rt.db.url)).get_current_head()
                    with rt.db.engine.connect() as conn:
                        current = MigrationContext.configure(conn).get_current_revision()
                    outdated = f"版本 {current}，最新 {head}：运行 `shouhu init` 升级"
                    check("数据库 database", current == head, f"版本 {current}" if current == head else outdated)
                    try:
                        rt.load()
                        check("密钥环 key ring", True, f"当前密钥 {rt.ring.current_kek_id}")
                    except (ConfigError, Exception) as exc:  # noqa: BLE001
                        check("密钥环 key ring", False, str(exc) or "无可用密钥：运行 `shouhu init`")
                    if current == head:
                        with rt.db.read_session() as rs:
                            held = rs.execute(select(User.username, User.roles, Org.type)
                                              .join(Org, Org.id == User.org_id).where(User.disabled.is_(False))).all()
                        bad = sorted(name for name, roles, org_type in held
                                     if roles and role_assignment_problem(org_type, roles))
                        check("角色与单位类型 roles", not bad, "均符合规则" if not bad else
                              f"{len(bad)} 个用户的角色不符合单位类型或互斥规则（{', '.join(bad[:5])}）："
                              "用 `shouhu users set-roles` 更正或 `shouhu users disable` 停用")
            finally:
                rt.close()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported
            check("数据库 database", False,
                  f"无法连接（{type(exc).__name__}）：检查 SHOUHU_DATABASE_URL 或运行 `shouhu init`")
    else:
        check("数据库 database", False, "先设置主密钥")

    from doc_templates.fonts import REQUIRED_OPEN_FONTS, missing_fonts

    missing = missing_fonts()  # the same check as /readyz
    check("字体 fonts", not missing,
          "已安装 " + "、".join(REQUIRED_OPEN_FONTS) if not missing else
          f"缺少 {'、'.join(missing)}：运行 `apt-get install fonts-noto-cjk fonts-lxgw-wenkai`（或 `make install`）")

    table = Table(title="Shouhu doctor")
    table.add_column("检查项")
    table.add_column("结果")
    table.add_column("说明 / 修复方法")
    for name, ok, detail in rows:
        table.add_row(name, "[green]正常[/green]" if ok else "[red]有问题[/red]", detail)
    console.print(table)
    if not all(ok for _, ok, _ in rows):
        raise typer.Exit(1)


# users --------------------------------------------------------------------------


def _find_user(rt: Runtime, s, username: str) -> User:  # type: ignore[no-untyped-def]
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise fail(f"没有用户 {username}")
    return user


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

    Roles must suit the org type (docs/security.md). Admin, auditor and custodian are
    each held alone, and wait for a second administrator (`shouhu users approve`), except
    the first administrator of an archive that has none (the bootstrap)."""
    action = Action.USER_CREATE
    with runtime() as rt:
        op = Operator(rt)
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
        console.print(f"{_role_names(added)}角色须由另一名管理员批准（授权 {grant_id}），批准前该账号不能登录："
                      f"`shouhu users approve {grant_id}`（须由另一操作员运行）或在“系统管理 › 授权审批”中批准。")
    if bootstrap:
        console.print("这是本档案库的第一名系统管理员，无需批准；此后授予管理员、审计员或保管人角色均须第二名管理员批准。")
    if not password_stdin:
        console.print(f"临时密码（只显示这一次）：{password}")


BOOTSTRAP_RULE = "cli:operator+bootstrap:first_admin"


def _role_names(roles: list[str]) -> str:
    return "、".join(f"“{ROLE_LABELS[Role(r)]}”" for r in roles)


@users_app.command("set-roles")
def users_set_roles(
    username: str,
    role: Annotated[list[Role], typer.Option(help="The user's roles after the change; repeat for several.")],
) -> None:
    """Set a user's roles. Adding admin, auditor or custodian waits for a second administrator."""
    action = Action.USER_CHANGE_ROLES
    roles = sorted({r.value for r in role})
    with runtime() as rt:
        op = Operator(rt)
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
        console.print(f"{_role_names(added)}角色须由另一名管理员批准（授权 {grant_id}）；"
                      f"批准前 {username} 的角色不变。")
    else:
        console.print(f"用户 {username} 的角色已改为 {_role_names(roles)}。")


def _decide(grant_id: str, *, approve: bool) -> None:
    action = Action.ROLE_GRANT_APPROVE if approve else Action.ROLE_GRANT_REJECT
    with runtime() as rt:
        op = Operator(rt)
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
    """Approve a pending grant of admin, auditor or custodian (not by the operator who asked)."""
    _decide(grant_id, approve=True)


@users_app.command("reject")
def users_reject(grant_id: str) -> None:
    """Reject a pending grant (an account created with it stays disabled)."""
    _decide(grant_id, approve=False)


@users_app.command("grants")
def users_grants(
    status: Annotated[str, typer.Option(help="pending, approved or rejected.")] = "pending",
) -> None:
    """List grants of admin, auditor or custodian (the two-person rule)."""
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
        op = Operator(rt)
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
        op = Operator(rt)
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


# keys ---------------------------------------------------------------------------


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new KEK current and re-wrap every data key under it (payloads untouched)."""
    with runtime() as rt:
        op = Operator(rt)
        # Rotation is many transactions: one makes the new KEK current, then batches re-wrap the
        # data keys under it. The 'allowed' event is committed with the first of them, the new
        # KEK (the change that matters: from then on new records are wrapped under it), so the
        # KEK never exists without its event and the event never without the KEK. If the
        # re-wrapping stops midway, an 'error' event says how far it got; every record still
        # reads (stragglers stay under the old KEK, which `keys retire` re-wraps first).
        # An error before the KEK committed leaves the 'error' event alone: nothing changed.
        where = {"kek": "", "rewrapped": 0}

        def started(session: Session, kek_id: str, live: int) -> None:
            where["kek"] = kek_id
            op.append(session, Action.KEY_ROTATE, kind="kek", rid=kek_id, details={"data_keys": live})

        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("重新包裹数据密钥", total=None)

                def rewrapped(done: int, total: int) -> None:
                    where["rewrapped"] = done
                    progress.update(task, completed=done, total=total)

                result = keystore.rotate(rt.db, rt.ring, progress=rewrapped, on_start=started)
        except BaseException as exc:
            op.failed(Action.KEY_ROTATE, exc, kind="kek", rid=str(where["kek"]),
                      details={"rewrapped": where["rewrapped"]})
            err.print(f"[red]密钥轮换未完成[/red]（已重新包裹 {where['rewrapped']} 个数据密钥），所有记录仍可读取。"
                      "运行 `shouhu keys status` 查看，再运行 `shouhu keys rotate` 重试，"
                      "或用 `shouhu keys retire <旧密钥>` 把其余数据密钥重新包裹到当前密钥下。")
            raise
    console.print(f"新的密钥加密密钥 {result.new_kek} 已启用；重新包裹了 {result.rewrapped} 个数据密钥。")
    console.print("运行中的服务会在几秒内使用新密钥；确认无误后可用 `shouhu keys retire <旧密钥>` 销毁旧密钥。")


@keys_app.command("retire")
def keys_retire(kek_id: str) -> None:
    """Destroy an old KEK's material once nothing is wrapped under it."""
    action = Action.KEY_RETIRE
    with runtime() as rt:
        op = Operator(rt)

        def retiring(session: Session, moved: int) -> None:  # in the retiring transaction
            op.append(session, action, kind="kek", rid=kek_id, details={"rewrapped": moved})

        try:
            moved = keystore.retire(rt.db, rt.ring, kek_id, on_commit=retiring)
        except keystore.KekInUse:
            raise op.refuse(action, f"{kek_id} 是当前使用的密钥，请先运行 `shouhu keys rotate`。",
                            kind="kek", rid=kek_id, reason="kek:current") from None
        except KeyError:
            raise op.refuse(action, f"没有可退役的密钥 {kek_id}", kind="kek", rid=kek_id,
                            reason="kek:not_found_or_retired") from None
        except BaseException as exc:
            op.failed(action, exc, kind="kek", rid=kek_id)
            raise
    console.print(f"密钥 {kek_id} 已退役并销毁（另重新包裹了 {moved} 个数据密钥）。")


@keys_app.command("status")
def keys_status() -> None:
    """List KEKs and how many data keys each wraps."""
    with runtime() as rt:
        table = Table()
        for col in ("密钥", "版本", "状态", "创建时间", "退役时间", "数据密钥数"):
            table.add_column(col)
        for k in keystore.status(rt.db):
            table.add_row(k["id"], str(k["version"]), k["state"], k["created_at"], k["retired_at"] or "",
                          str(k["data_keys"]))
        console.print(table)
        console.print(f"当前密钥：{rt.ring.current_kek_id}；加密套件：{rt.ring.suite.name}")


@keys_app.command("shred")
def keys_shred(
    record_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the record becomes unreadable for good.")] = False,
) -> None:
    """Destroy a record's data key: the live archive can never open it again (older database
    backups still can, until they expire)."""
    if not yes:
        raise fail("销毁不可恢复：确认请加 --yes")
    with runtime() as rt:
        op = Operator(rt)
        with op.change() as g:
            count = keystore.Vault.shred(g.session, owner_id=record_id)
            if not count:
                raise op.deny(g, Action.KEY_SHRED, f"没有记录 {record_id} 的可销毁密钥", kind="record",
                              rid=record_id, reason="record:no_live_data_key")
            g.record(op.draft(Action.KEY_SHRED, kind="record", rid=record_id, details={"data_keys": count}))
            kind = {"mn": "minor", "hh": "household", "doc": "document"}.get(record_id.split("_", 1)[0])
            if kind:
                enqueue(g.session, kind, record_id)  # the indexer drops what can no longer be read
            g.commit()
    console.print(f"记录 {record_id} 的数据密钥已销毁，内容不可再读取。")


# documents --------------------------------------------------------------------------


@app.command("print")
def print_documents(
    kind: Annotated[str, typer.Option(help="household_file or minor_file (any kind about a household or minor).")],
    region: Annotated[str, typer.Option(help="Region code: every subject in its subtree is printed.")],
    out: Annotated[Path, typer.Option(help="The PDF to write.")],
    as_user: Annotated[str, typer.Option(
        "--as", help="The user printing for: policy applies to them; the log names the operator "
        "(system:cli:<OS user>) acting on their behalf.")],
    issue: Annotated[bool, typer.Option(help="Issue each as a numbered official document (stored).")] = False,
) -> None:
    """Print many documents as one PDF, rendered in one pass, with a progress bar."""
    from access_control.identity import actor_for
    from core.errors import ShouhuError
    from doc_templates.render import Renderer

    with runtime() as rt:
        op = Operator(rt)
        with rt.db.session() as s:
            user = s.scalar(select(User).where(User.username == as_user))
            actor = actor_for(s, user) if user is not None and not user.disabled else None
        if actor is None:
            # Refused before anything is read; the log names the operator and, as for an
            # unknown sign-in name, only a keyed hash of the name typed.
            op.record(Action.DOCUMENT_PRINT, kind="user", rid=user.id if user else "", outcome="denied",
                      reason="user:disabled" if user else "record:not_found",
                      details={} if user else {"username_hash": op.username_hash(as_user)})
            raise fail(f"用户 {as_user} 已停用" if user else f"没有用户 {as_user}")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("排版", total=None)
            renderer = Renderer()
            try:
                with rt.db.session() as s:
                    g = rt.guard(s, actor, operator=op.actor, request_id=op.request_id)
                    try:
                        pdf, issued = rt.document_batch.print_batch(
                            g, kind, region=region, issue=issue, renderer=renderer,
                            progress=lambda done, total: progress.update(task, completed=done, total=total))
                    except Exception as exc:
                        g.fail(exc)
                        raise
            except ShouhuError as exc:
                detail = "; ".join(f"{f['field']}: {f['message']}" for f in exc.details.get("fields", []))
                raise fail(f"{exc.message}{'（' + detail + '）' if detail else ''}") from None
        out.write_bytes(pdf)
    what = f"已签发 {len(issued)} 份公文，" if issue else ""
    console.print(f"{what}已写入 {out}（{len(pdf) // 1024} KB）。")


# audit ------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint JSON saved earlier, to verify against.")] = None,
) -> None:
    """Re-hash the whole log, follow the chain, check every stored (and the given) checkpoint."""
    import json

    extra = []
    if checkpoint is not None:
        try:
            extra.append(json.loads(checkpoint.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise fail(f"无法读取检查点文件 {checkpoint}：{type(exc).__name__}") from None
    with runtime() as rt:
        op = Operator(rt)
        size = extra[0].get("size") if extra and isinstance(extra[0], dict) else None
        details: dict[str, object] = {"against_checkpoint": size if isinstance(size, int) else None}
        # A check of the log, not a change: its event follows the check, so that it is not
        # part of what was checked (the first bad position reported is the log's, not moved
        # by the check's own entry), and it carries the result.
        try:
            with rt.db.read_session() as s:
                result = rt.audit.verify(s, checkpoints=extra)
        except BaseException as exc:
            op.failed(Action.AUDIT_VERIFY, exc, kind="audit_log", details=details)
            raise
        op.record(Action.AUDIT_VERIFY, kind="audit_log", details={**details, "ok": result.ok, "length": result.length})
    if result.ok:
        console.print(f"访问日志完整：{result.length} 条事件，校验了 {result.checkpoints_checked} 个检查点；"
                      f"末条哈希 {result.head_hash}")
        return
    err.print(f"[red]访问日志校验失败[/red]：第 {result.first_bad_seq} 条起有问题（{result.problem}）。")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path | None, typer.Option(help="Also write the signed checkpoint to this file.")] = None,
) -> None:
    """Sign a checkpoint of the log now and print it (JSON)."""
    import json

    from access_control.audit import AuditTampered

    action = Action.AUDIT_CHECKPOINT_CREATE
    with runtime() as rt:
        op = Operator(rt)
        # As in the API: the request is logged and committed first, so the checkpoint it asks
        # for covers it; signing re-hashes the log outside the write lock (appends are not held
        # up), so it cannot share the event's transaction. A refusal to sign (the log does not
        # verify) or any other failure adds an 'error' event.
        op.record(action, kind="audit_log")
        try:
            cp = rt.audit.sign_checkpoint(rt.db, now=rt.clock())
        except AuditTampered as exc:
            op.failed(action, exc, kind="audit_log")
            raise fail(f"日志校验未通过，未签署检查点：{exc}") from None
        except BaseException as exc:
            op.failed(action, exc, kind="audit_log")
            raise
        cp = {**cp, "public_key": rt.audit_desk.public_key()["public_key"]}
    text = json.dumps(cp, ensure_ascii=False, indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    console.print_json(text)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="File to write.")],
    format: Annotated[str, typer.Option(help="jsonl or csv.")] = "jsonl",  # noqa: A002
    upto: Annotated[int | None, typer.Option(help="Last seq to include (e.g. a checkpoint size).")] = None,
) -> None:
    """Write the events in canonical form (docs/audit-format.md)."""
    from access_control.audit import AuditLog, export_csv_header, export_csv_row, export_jsonl_line

    if format not in ("jsonl", "csv"):
        raise fail("--format 只能是 jsonl 或 csv")
    action = Action.AUDIT_EVENTS_EXPORT
    with runtime() as rt:
        op = Operator(rt)
        with rt.db.read_session() as s:
            limit = upto if upto is not None else AuditLog.size(s)
        details: dict[str, object] = {"format": format, "upto": limit}
        # A read, logged as the API logs reads: the event is committed before anything is
        # written out (fail closed), an 'error' event follows if the export stops.
        op.record(action, kind="audit_log", details=details)
        count = 0
        try:
            with rt.db.read_session() as s, out.open("wb") as fh:
                if format == "csv":
                    fh.write(export_csv_header())
                for ev in AuditLog.iter_events(s, upto=limit):
                    fh.write(export_csv_row(ev) if format == "csv" else export_jsonl_line(ev))
                    count += 1
        except BaseException as exc:
            op.failed(action, exc, kind="audit_log", details=details)
            raise
    console.print(f"已导出 {count} 条事件到 {out}。")


if __name__ == "__main__":
    app()
