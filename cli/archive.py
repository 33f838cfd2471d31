"""``shouhu init``, ``shouhu demo`` and ``shouhu print``: making an archive and printing from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from sqlalchemy import func, select

from access_control.actions import Action
from access_control.identity import User
from cli.common import console, fail, operator, runtime, settings
from core.settings import new_master_key_text, write_key_file


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
        op = operator(rt)
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
            renderer = Renderer(rt.settings.font_dir)
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
