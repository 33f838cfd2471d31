"""``shouhu reindex``: rebuild the search index while the server keeps serving."""

from __future__ import annotations

from rich.progress import Progress

from access_control.actions import Action
from cli.common import console, fail, operator, runtime


def reindex() -> None:
    """Rebuild the search index from the archive, with a progress bar, while the server keeps serving.

    The new index is built aside and replaces the old one in one step; a running `shouhu serve`
    switches to it within about a second. Safe to rerun or to stop midway (the old index stays).
    An index built with another key or backend is replaced the same way."""
    from search.backends import SearchUnavailable

    with runtime() as rt:
        s = rt.settings
        op = operator(rt)
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
