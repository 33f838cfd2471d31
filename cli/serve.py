"""``shouhu serve``: the API and the pages with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import console, fail, settings
from core.settings import ConfigError


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
