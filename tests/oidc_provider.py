"""A small OpenID Connect provider for the tests, on 127.0.0.1 in a thread (Starlette + uvicorn).

It is not the thing under test: it stands in for the government's unified identity platform.
Its own RSA key (joserfc, the JOSE library Authlib is built on), a discovery document, JWKS,
an authorization endpoint that signs in ``subject`` at once, and a token endpoint that
refuses a code used twice and a code whose PKCE verifier is missing or wrong. The test can
make it mint a bad id_token: another issuer, another audience, an expired one.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "shouhu-test"
CLIENT_SECRET = "provider-client-secret-7f3a9c"  # noqa: S105 - the test provider's own client secret


@dataclass
class Pending:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str | None
    method: str | None


@dataclass
class Provider:
    base_url: str = ""
    subject: str = "staff-0001"
    # What the next id_tokens look like (the tests change these and put them back).
    iss: str | None = None
    aud: str | None = None
    exp_seconds: int = 300
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig",
                                                                                      "alg": "RS256"}))
    codes: dict[str, Pending] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def reset(self) -> None:
        self.iss, self.aud, self.exp_seconds, self.subject = None, None, 300, "staff-0001"

    # endpoints ------------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        b = self.base_url
        return JSONResponse({
            "issuer": b, "authorization_endpoint": f"{b}/authorize", "token_endpoint": f"{b}/token",
            "jwks_uri": f"{b}/jwks", "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        })

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code" or not q.get("redirect_uri"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = Pending(client_id=CLIENT_ID, redirect_uri=q["redirect_uri"], nonce=q.get("nonce", ""),
                                   challenge=q.get("code_challenge"), method=q.get("code_challenge_method"))
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}",
                                status_code=302)

    async def token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append({k: v for k, v in form.items() if k in ("grant_type", "code_verifier")})
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {basic}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        pending = self.codes.pop(form.get("code", ""), None)  # a code works once
        if pending is None or form.get("grant_type") != "authorization_code" \
                or form.get("redirect_uri") != pending.redirect_uri:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if pending.challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                return JSONResponse({"error": "invalid_grant", "error_description": "code_verifier missing"},
                                    status_code=400)
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if digest != pending.challenge:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"iss": self.iss or self.base_url, "sub": self.subject, "aud": self.aud or CLIENT_ID, "iat": now,
                  "exp": now + self.exp_seconds, "nonce": pending.nonce}
        id_token = jwt.encode({"alg": "RS256", "kid": "test-1"}, claims, self.key)
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                             "id_token": id_token})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/jwks", self.jwks),
            Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]),
        ])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_provider() -> Iterator[Provider]:
    """The provider served on a free loopback port until the block ends."""
    provider = Provider()
    port = _free_port()
    provider.base_url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(provider.app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="oidc-provider", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test OIDC provider did not start")
        time.sleep(0.02)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def settings_for(provider: Provider) -> dict[str, Any]:
    """The Shouhu settings that point at ``provider``."""
    from pydantic import SecretStr

    return {"oidc_issuer": provider.base_url, "oidc_client_id": CLIENT_ID,
            "oidc_client_secret": SecretStr(CLIENT_SECRET)}
