"""The checks ``shouhu doctor`` prints and ``GET /readyz`` serves: one list, named results.

``readiness(rt)`` is what a running server needs (database, key ring, blob store, search
index, fonts); ``diagnose(settings)`` is the operator's fuller list (master key, folders,
schema version, users' roles ...), and reuses the same checks where they overlap. Like
``runtime``, this module looks across the packages; what it needs from them is imported
where it is used, so that importing ``core`` stays cheap and free of cycles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import make_url, text

from core.settings import ConfigError, Settings

if TYPE_CHECKING:
    from runtime import Runtime


@dataclass(frozen=True)
class Check:
    """One check's result: ``name`` as /readyz reports it, ``label`` and ``detail`` as doctor prints them.

    ``detail`` says what was found or how to fix it (user-facing, Chinese); ``reason`` is the
    short cause /readyz gives (an exception's type name: never a value that could be personal).
    """

    name: str
    label: str
    ok: bool
    detail: str
    reason: str = ""

    @property
    def status(self) -> str:
        return "ok" if self.ok else f"failed: {self.reason}"


def _failed(exc: BaseException) -> str:
    return type(exc).__name__


# Shared by both lists ----------------------------------------------------------------


def _unreachable(exc: BaseException) -> Check:
    return Check("database", "数据库 database", False,
                 f"无法连接（{type(exc).__name__}）：检查 SHOUHU_DATABASE_URL 或运行 `shouhu init`", _failed(exc))


def database(rt: Runtime) -> Check:
    """The database answers a read (a read session: never waits for the write lock)."""
    try:
        with rt.db.read_session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - report any failure as not ready
        return _unreachable(exc)
    return Check("database", "数据库 database", True, "可用")


def key_ring(rt: Runtime, *, load: bool = False) -> Check:
    """The key ring reads and has a current KEK; ``load`` also loads what a fresh runtime has not."""
    label = "密钥环 key ring"
    try:
        if load:
            rt.load()
        else:
            rt.ring.refresh()
        current = rt.ring.current_kek_id
    except Exception as exc:  # noqa: BLE001
        return Check("key_ring", label, False, str(exc) or "无可用密钥：运行 `shouhu init`", _failed(exc))
    return Check("key_ring", label, True, f"当前密钥 {current}")


def fonts(settings: Settings) -> Check:
    """The open CJK fonts documents are set in are installed; names the licensed ones found in the font folder."""
    from doc_templates.fonts import REQUIRED_OPEN_FONTS, licensed_faces, missing_fonts

    missing = missing_fonts()
    if missing:
        return Check("fonts", "字体 fonts", False,
                     f"缺少 {'、'.join(missing)}：以 root 运行 `make fonts`（FandolFang）和 "
                     "`apt-get install fonts-noto-cjk fonts-lxgw-wenkai`（或 `make install`）",
                     "missing " + ", ".join(missing))
    licensed = [family for family, _path in licensed_faces(settings.font_dir)]
    return Check("fonts", "字体 fonts", True, "已安装 " + "、".join(REQUIRED_OPEN_FONTS)
                 + (f"；字体目录中的授权字体：{'、'.join(licensed)}" if licensed else ""))


# What a running server needs -----------------------------------------------------------


def blob_store(rt: Runtime) -> Check:
    try:
        rt.blobs.check()
    except Exception as exc:  # noqa: BLE001
        return Check("blob_store", "文件存储 blob store", False, f"不可用（{type(exc).__name__}）", _failed(exc))
    return Check("blob_store", "文件存储 blob store", True, "可用")


def search_index(rt: Runtime) -> Check:
    """The live index opens: refused if it was built with another key, or is broken."""
    try:
        rt.search_backend  # noqa: B018 - opened once
    except Exception as exc:  # noqa: BLE001
        return Check("search_index", "搜索索引 search index", False,
                     f"不可用（{type(exc).__name__}）：运行 `shouhu reindex`", _failed(exc))
    return Check("search_index", "搜索索引 search index", True, "可用")


def readiness(rt: Runtime) -> list[Check]:
    """What ``GET /readyz`` answers from: may the server take requests?"""
    return [database(rt), key_ring(rt), blob_store(rt), search_index(rt), fonts(rt.settings)]


# The operator's fuller list ------------------------------------------------------------


def master_key(settings: Settings) -> Check:
    try:
        _ = settings.master_key_bytes
    except ConfigError as exc:
        return Check("master_key", "主密钥 master key", False, str(exc), _failed(exc))
    return Check("master_key", "主密钥 master key", True, "可用")


def folders(settings: Settings) -> list[Check]:
    """The data, blob and log folders are writable, or can be made by ``shouhu init``."""
    checks = []
    for name, label, path in (("data_dir", "数据目录 data dir", settings.data_dir),
                              ("blob_dir", "文件目录 blobs", settings.blob_dir),
                              ("log_dir", "日志目录 logs", settings.log_dir)):
        if path.exists():
            ok = os.access(path, os.W_OK)
            detail = str(path) if ok else f"{path} 不可写：运行 `chmod u+w {path}` 或以正确用户运行"
        else:
            ok = os.access(path.parent if path.parent.exists() else settings.data_dir.parent, os.W_OK)
            detail = f"{path} 尚未创建（运行 `shouhu init` 会创建）"
        checks.append(Check(name, label, ok, detail, "" if ok else "not_writable"))
    return checks


def schema(rt: Runtime) -> Check:
    """The database has the schema, at the newest migration."""
    from runtime import current_revisions, head_revisions

    label = "数据库 database"
    if not rt.db.has_schema():
        return Check("schema", label, False, "没有数据表：运行 `shouhu init`", "no_schema")
    head = ", ".join(sorted(head_revisions()))
    current = ", ".join(sorted(current_revisions(rt.db))) or None
    if current != head:
        return Check("schema", label, False, f"版本 {current}，最新 {head}：运行 `shouhu init` 升级", "outdated")
    return Check("schema", label, True, f"版本 {current}")


def role_rules(rt: Runtime) -> Check:
    """Every enabled user's roles suit their org type (users made before the rules may not)."""
    from sqlalchemy import select

    from access_control.identity import Org, User
    from access_control.policy import role_assignment_problem

    with rt.db.read_session() as rs:
        held = rs.execute(select(User.username, User.roles, Org.type)
                          .join(Org, Org.id == User.org_id).where(User.disabled.is_(False))).all()
    bad = sorted(name for name, roles, org_type in held if roles and role_assignment_problem(org_type, roles))
    if bad:
        return Check("role_rules", "角色与单位类型 roles", False,
                     f"{len(bad)} 个用户的角色不符合单位类型或互斥规则（{', '.join(bad[:5])}）："
                     "用 `shouhu users set-roles` 更正或 `shouhu users disable` 停用", "roles_break_rules")
    return Check("role_rules", "角色与单位类型 roles", True, "均符合规则")


def diagnose(settings: Settings) -> list[Check]:
    """What ``shouhu doctor`` prints. Changes nothing: a missing SQLite file is not created."""
    from runtime import Runtime

    checks = [master_key(settings), *folders(settings)]
    key_ok = checks[0].ok
    sqlite_file = Path(make_url(settings.effective_database_url).database or "") if settings.is_sqlite else None
    if not key_ok:
        checks.append(Check("database", "数据库 database", False, "先设置主密钥", "no_master_key"))
    elif sqlite_file is not None and not sqlite_file.is_file():
        # Opening it would create an empty database file: a check must not change anything.
        checks.append(Check("database", "数据库 database", False,
                            f"数据库文件 {sqlite_file} 不存在：运行 `shouhu init` 创建", "no_database_file"))
    else:
        try:
            rt = Runtime.open(settings, require_schema=False)
            try:
                reachable = database(rt)
                version = schema(rt) if reachable.ok else reachable
                checks.append(version)
                if version.ok or version.reason == "outdated":
                    checks.append(key_ring(rt, load=True))
                if version.ok:
                    checks.append(role_rules(rt))
            finally:
                rt.close()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported
            checks.append(_unreachable(exc))
    checks.append(fonts(settings))
    return checks
