"""The server's own output holds no personal data, however it is started.

``shouhu serve`` writes its own redacted request log; an operator may also start
Shouhu as ``uvicorn main:app``, whose access log is on by default and would print
every path and query string. Requests carrying an ID number in the path and a name
in the query go to both; neither output may hold them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.cli_support import SHOUHU, cli_env, run_cli, serving
from tests.conftest import make_id_number

NAME = "龘靐齉鱻"
ID_NUMBER = make_id_number("320706", "20141129")


@pytest.mark.slow
@pytest.mark.parametrize("command", [(SHOUHU, "serve"), (sys.executable, "-m", "uvicorn", "main:app")],
                         ids=["shouhu-serve", "uvicorn"])
def test_request_lines_hold_no_personal_data(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = cli_env(tmp_path / "var")
    run_cli(env, "init")
    log = tmp_path / "server.out"
    with serving(env, log, command=command) as server, server.client() as http:
        assert http.get(f"/api/v1/minors/{ID_NUMBER}", params={"q": NAME}).status_code == 401
        assert http.get("/api/v1/search", params={"q": NAME}).status_code == 401
        assert http.get("/search", params={"q": NAME}).status_code == 303  # to the sign-in page
        r = http.get("/login", params={"next": f"/minors?household_id={ID_NUMBER}"})
        assert r.status_code == 200 and ID_NUMBER not in r.text
        assert http.get("/healthz", params={"probe": "line"}).status_code == 200
    out = server.output() + (tmp_path / "var" / "logs" / "shouhu.log").read_text(encoding="utf-8")
    for value in (NAME, ID_NUMBER, ID_NUMBER[:17]):
        assert value not in out, value
    for encoded in ("%E9%BE%98", "%e9%be%98"):  # the name's first character, URL-encoded
        assert encoded not in out
    if "uvicorn" in command:  # the access log is on, and was redacted rather than silenced
        assert '"GET /api/v1/minors/~redacted~ HTTP/1.1" 401' in out, out[-2000:]
        assert '"GET /healthz HTTP/1.1" 200' in out
