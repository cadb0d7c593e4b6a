"""Single sign-on against a small OpenID Connect provider run by the test on 127.0.0.1: discovery,
authorisation redirect, code exchange, ID-token signature and nonce checks (Authlib), then the
clinalign account of the ``preferred_username`` claim."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from clinalign.settings import Settings
from clinalign.web.app import create_app
from tests.live_server import JsonHandler
from tests.web.conftest import Web

KEY = RSAKey.generate_key(2048, parameters={"kid": "test-key"})  # joserfc: Authlib's own JOSE library


class Provider:
    """Discovery, JWKS and a token endpoint that signs an ID token for whoever ``user`` names."""

    def __init__(self):
        self.user = "clin1"
        self.nonce = None
        provider = self

        class Handler(JsonHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    self._json(
                        {
                            "issuer": provider.issuer,
                            "authorization_endpoint": f"{provider.issuer}/authorize",
                            "token_endpoint": f"{provider.issuer}/token",
                            "jwks_uri": f"{provider.issuer}/jwks",
                            "id_token_signing_alg_values_supported": ["RS256"],
                        }
                    )
                elif self.path == "/jwks":
                    self._json({"keys": [KEY.as_dict(private=False)]})

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                now = int(time.time())
                claims = {
                    "iss": provider.issuer,
                    "aud": "clinalign-test",
                    "sub": "abc",
                    "iat": now,
                    "exp": now + 300,
                    "nonce": provider.nonce,
                    "preferred_username": provider.user,
                }
                token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, KEY)
                self._json({"access_token": "at", "token_type": "Bearer", "id_token": token, "expires_in": 300})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def provider():
    running = Provider()
    yield running
    running.server.shutdown()


def _sign_in(client, provider: Provider):
    start = client.get("/login/oidc", follow_redirects=False)
    assert start.status_code == 302 and start.headers["location"].startswith(f"{provider.issuer}/authorize")
    query = parse_qs(urlparse(start.headers["location"]).query)
    provider.nonce = query["nonce"][0]
    return client.get(f"/login/oidc/callback?code=xyz&state={query['state'][0]}", follow_redirects=False)


def test_single_sign_on_maps_the_claim_to_an_existing_account(web: Web, provider: Provider):
    settings = Settings(
        data_dir=web.data_dir,
        oidc_issuer=provider.issuer,
        oidc_client_id="clinalign-test",
        oidc_client_secret="s3cret",
    )
    web.app = create_app(settings, web.store)
    client = web.client()
    assert "Sign in with your organisation" in client.get("/login").text
    done = _sign_in(client, provider)
    assert done.status_code == 303 and done.headers["location"] == "/work"
    assert client.get("/work").status_code == 200
    [login] = web.events("login")
    assert login.actor == "clin1" and "oidc" in login.payload

    provider.user = "stranger"  # proven by the provider, but no account here
    refused = _sign_in(web.client(), provider)
    assert refused.status_code == 403 and "no active clinalign account" in refused.text

    forged = web.client().get("/login/oidc/callback?code=xyz&state=forged", follow_redirects=False)
    assert forged.status_code == 400 and "please start again" in forged.text
