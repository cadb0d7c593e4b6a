"""Where clinalign keeps its data, and how stage configs are loaded.

Settings come from the environment (``CLINALIGN_DATA_DIR``, ``CLINALIGN_DATABASE_URL`` or
``DATABASE_URL``), so several instances can run side by side on one machine. Stage configs are
pydantic models loaded from YAML plus dotted ``--set key=value`` overrides.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from clinalign.schemas import ClinalignError

# PHI may pass through any process that imports clinalign: never let a library phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLINALIGN_", extra="ignore")

    data_dir: Path = Path("clinalign-data")
    """Folder for the SQLite database and every run's files (``artifacts/<run id>/``)."""

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CLINALIGN_DATABASE_URL", "DATABASE_URL")
    )
    """SQLAlchemy URL; defaults to SQLite at ``<data_dir>/clinalign.db``."""

    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    """Web app: a session unused this long is closed (its holder's claimed items are freed as well)."""

    oidc_issuer: str | None = None
    """Web app: OpenID Connect issuer URL; sign-in through it is offered when set (with the two below)."""

    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_username_claim: str = "preferred_username"
    """The ID-token claim that names the clinalign account (which an admin must have created)."""

    secret_key: str | None = None
    """The site's secret, from which the store derives its keys (``Store.secret``): the audit head's
    signature, record pseudonyms, hashed sign-in names, the OpenID Connect state. Unset, a random key
    is kept in a file beside the SQLite database (or in ``data_dir``); set it when several machines
    share one database."""

    keep_clinician_originals: bool = False
    """Web app: also keep what a clinician typed into a rationale or rewrite before the PHI scrub
    (``Judgement.original``, never shown or exported). Off: only the scrubbed text is stored."""

    trusted_proxies: list[str] = []
    """Web app: addresses of the reverse proxies whose ``X-Forwarded-For``/``-Proto`` headers are
    believed. Empty: the headers are ignored, so a client cannot choose its own address."""

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'clinalign.db').resolve()}"


class StageConfig(BaseModel):
    """Shared pydantic options for every stage's ``Config``: unknown keys are errors; a number given where
    text is expected is taken as text (``--set base=6`` names artifact 6, which YAML reads as a number)."""

    model_config = {"extra": "forbid", "use_attribute_docstrings": True, "coerce_numbers_to_str": True}


C = TypeVar("C", bound=BaseModel)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only: what may go without a key or TLS."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ClinalignError(f"--set {dotted}: '{key}' is not a mapping")
        tree = node
    tree[leaf] = value


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, mapping by mapping."""
    merged = dict(base)
    for key, value in extra.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return merged


def load_config(
    cls: type[C], path: Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> C:
    """Build ``cls`` from ``base`` settings, an optional YAML file over them, and ``key.sub=value``
    overrides over both (values parsed as YAML)."""
    data: dict = {}
    if path is not None:
        if not path.is_file():
            raise ClinalignError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ClinalignError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ClinalignError(f"{path}: a config must be a mapping of keys to values")
        data = loaded or {}
    data = merge(base or {}, data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ClinalignError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ClinalignError(f"--set {key.strip()}: not a valid YAML value ({err.__class__.__name__})") from None
        _set_dotted(data, key.strip(), value)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        where = f"{path}: " if path else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors())
        raise ClinalignError(f"{where}invalid {cls.__module__.rsplit('.', 1)[-1]} config: {problems}") from None
