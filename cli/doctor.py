"""``shouhu doctor``: check what the archive needs and say how to fix each problem."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import make_url, select

from access_control.identity import Org, User
from access_control.policy import role_assignment_problem
from cli.common import console, settings
from core.settings import ConfigError
from runtime import Runtime, alembic_config


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
