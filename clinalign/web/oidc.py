"""Optional sign-in through the site's OpenID Connect provider (Authlib's Starlette client).

Switched on by ``CLINALIGN_OIDC_ISSUER``, ``CLINALIGN_OIDC_CLIENT_ID`` and
``CLINALIGN_OIDC_CLIENT_SECRET``. Authlib checks the state, nonce and ID-token signature; clinalign
then maps the configured claim (``preferred_username`` by default) to an account an admin created
here, so the provider proves who someone is and clinalign still decides their role.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request

from clinalign.settings import Settings


def enabled(request: Request) -> bool:
    return getattr(request.app.state, "oidc", None) is not None


def install(app: FastAPI, settings: Settings) -> None:
    if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret):
        app.state.oidc = None
        return
    import secrets

    from authlib.integrations.starlette_client import OAuth
    from starlette.middleware.sessions import SessionMiddleware

    oauth = OAuth()
    oauth.register(
        "site",
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        client_kwargs={"scope": "openid profile email"},
    )
    # Authlib keeps the short-lived state and nonce in a signed cookie of its own.
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key or secrets.token_hex(32),
        session_cookie="clinalign_oidc",
        max_age=600,
        same_site="lax",  # the provider's redirect back is a cross-site navigation
        https_only=False,
    )
    app.state.oidc = oauth.site


async def redirect(request: Request):
    return await request.app.state.oidc.authorize_redirect(request, str(request.url_for("oidc_callback")))


async def username(request: Request) -> str:
    from authlib.integrations.base_client.errors import OAuthError

    claim = request.app.state.settings.oidc_username_claim
    try:
        token = await request.app.state.oidc.authorize_access_token(request)
    except OAuthError as err:
        raise HTTPException(
            status_code=400, detail=f"Single sign-on failed ({err.error}); please start again."
        ) from None
    value = (token.get("userinfo") or {}).get(claim)
    if not value:
        raise HTTPException(status_code=400, detail=f"The identity provider sent no '{claim}' claim.")
    return str(value)
