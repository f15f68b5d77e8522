"""Service settings: one frozen `Settings`, read from `QUANTRAY_*` environment variables.

Pure stdlib at import, so that the CLI loads it cheaply. Bad values raise `SettingsError`
naming the variable and how to fix it; the server refuses to start rather than guessing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PREFIX = "QUANTRAY_"
LOOPBACK_NAMES = ("localhost",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
STORAGE_SCHEMES = ("file", "s3")
DATA_ROOT_SCHEMES = ("file", "s3")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and the fix."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP or a name) only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """Everything the API server, dispatcher and CLI need; see `from_env` for the variables."""

    home: Path
    ray_address: str = ""
    ray_auth_token: str | None = None
    storage_uri: str = ""
    database_url: str = ""
    max_running_jobs: int = 2
    data_roots: tuple[str, ...] = ()
    auth: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1 << 20
    page_size: int = 50
    max_page_size: int = 500
    poll_interval_s: float = 2.0
    ray_timeout_s: float = 10.0
    entrypoint_python: str = "python"
    runtime_env_json: str = ""
    # where `host` came from, as its errors name it: `quantray serve --host` sets it over
    # QUANTRAY_HOST
    host_from: str = "QUANTRAY_HOST"

    def __post_init__(self) -> None:
        if not self.home.is_absolute():
            raise SettingsError(f"QUANTRAY_HOME must be an absolute path, got {self.home}")
        if self.ray_address:
            parts = urlsplit(self.ray_address)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SettingsError(
                    f"QUANTRAY_RAY_ADDRESS={self.ray_address!r} is not the Ray dashboard URL: "
                    "use e.g. http://127.0.0.1:8265 (the Jobs REST API lives there)"
                )
        scheme = urlsplit(self.storage_uri).scheme
        if scheme not in STORAGE_SCHEMES:
            raise SettingsError(
                f"QUANTRAY_STORAGE_URI={self.storage_uri!r}: use file:///abs/dir or "
                "s3://bucket/prefix?endpoint_override=..."
            )
        if scheme == "file":
            _check_file_uri("QUANTRAY_STORAGE_URI=", self.storage_uri)
        if not self.database_url.startswith(("sqlite:", "postgresql")):
            raise SettingsError(
                f"QUANTRAY_DATABASE_URL={self.database_url!r}: use sqlite:///abs/file.db or "
                "postgresql+psycopg://user@host:5432/db"
            )
        for root in self.data_roots:
            if urlsplit(root).scheme not in DATA_ROOT_SCHEMES:
                raise SettingsError(
                    f"QUANTRAY_DATA_ROOTS entry {root!r}: use /abs/dir, file:///abs/dir or "
                    "s3://bucket/prefix"
                )
            if root.startswith("file:"):
                _check_file_uri("QUANTRAY_DATA_ROOTS entry ", root)
        _check_range("QUANTRAY_MAX_RUNNING_JOBS", self.max_running_jobs, 0, 10_000)
        _check_range("QUANTRAY_PORT", self.port, 0, 65_535)
        _check_range("QUANTRAY_MAX_BODY_BYTES", self.max_body_bytes, 1024, 64 << 20)
        _check_range("QUANTRAY_MAX_PAGE_SIZE", self.max_page_size, 1, 10_000)
        _check_range("QUANTRAY_PAGE_SIZE", self.page_size, 1, self.max_page_size)
        if not 0.05 <= self.poll_interval_s <= 3600:
            raise SettingsError("QUANTRAY_POLL_INTERVAL_S must be within [0.05, 3600] seconds")
        if not 0.1 <= self.ray_timeout_s <= 600:
            raise SettingsError("QUANTRAY_RAY_TIMEOUT_S must be within [0.1, 600] seconds")
        if self.runtime_env_json:
            try:
                parsed = json.loads(self.runtime_env_json)
            except ValueError as exc:
                raise SettingsError(f"QUANTRAY_RAY_RUNTIME_ENV is not valid JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise SettingsError("QUANTRAY_RAY_RUNTIME_ENV must be a JSON object")
        if not self.auth and not is_loopback(self.host):
            raise SettingsError(
                f"QUANTRAY_AUTH=off is only allowed when {self.host_from} is a loopback "
                f"address, got {self.host!r}: bind to 127.0.0.1 or turn auth on and create a "
                "key with `quantray keys create --name NAME`"
            )

    @property
    def runtime_env(self) -> dict[str, object]:
        """The Ray runtime_env sent with every submission (`QUANTRAY_RAY_RUNTIME_ENV`)."""
        return json.loads(self.runtime_env_json) if self.runtime_env_json else {}

    def require_ray(self) -> None:
        """Refuse to run a dispatcher that would submit jobs with nowhere to send them."""
        if self.max_running_jobs > 0 and not self.ray_address:
            raise SettingsError(
                "QUANTRAY_RAY_ADDRESS is empty but QUANTRAY_MAX_RUNNING_JOBS > 0: set it to the "
                "Ray dashboard URL (e.g. http://127.0.0.1:8265), let `quantray serve` start a "
                "local Ray head, or set QUANTRAY_MAX_RUNNING_JOBS=0 to only queue jobs"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, cwd: Path | None = None,
                 host_flag: tuple[str, str] | None = None) -> Settings:
        """Build from `env` (default `os.environ`); unset variables take the defaults.
        `host_flag`: (option, value) of a command-line host, over QUANTRAY_HOST."""
        env = os.environ if env is None else env
        cwd = Path.cwd() if cwd is None else cwd

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        home = Path(get("HOME") or cwd / ".quantray").expanduser()
        if not home.is_absolute():
            home = (cwd / home).resolve()
        kwargs: dict[str, object] = {
            "home": home,
            "ray_address": (get("RAY_ADDRESS") or "").rstrip("/"),
            "ray_auth_token": get("RAY_AUTH_TOKEN"),
            "storage_uri": (get("STORAGE_URI") or f"file://{home / 'storage'}").rstrip("/"),
            "database_url": _database_url(get("DATABASE_URL"), home),
            "data_roots": tuple(
                _data_root(r) for r in (get("DATA_ROOTS") or "").split(",") if r.strip()
            ),
            "auth": _bool("QUANTRAY_AUTH", get("AUTH") or "on"),
            "host": get("HOST") or "127.0.0.1",
        }
        if host_flag is not None:
            kwargs["host_from"], kwargs["host"] = host_flag
        ints = {
            "max_running_jobs": "MAX_RUNNING_JOBS",
            "port": "PORT",
            "max_body_bytes": "MAX_BODY_BYTES",
            "page_size": "PAGE_SIZE",
            "max_page_size": "MAX_PAGE_SIZE",
        }
        for attr, name in ints.items():
            if (raw := get(name)) is not None:
                kwargs[attr] = _int(PREFIX + name, raw)
        floats = {"poll_interval_s": "POLL_INTERVAL_S", "ray_timeout_s": "RAY_TIMEOUT_S"}
        for attr, name in floats.items():
            if (raw := get(name)) is not None:
                kwargs[attr] = _float(PREFIX + name, raw)
        if (python := get("ENTRYPOINT_PYTHON")) is not None:
            kwargs["entrypoint_python"] = python
        elif _on_this_host(str(kwargs["ray_address"])):
            # A head on this machine runs the entrypoint with its own PATH, where `python`
            # may well lack quantray: use the interpreter that runs the API.
            kwargs["entrypoint_python"] = sys.executable
        if (runtime_env := get("RAY_RUNTIME_ENV")) is not None:
            kwargs["runtime_env_json"] = runtime_env
        return cls(**kwargs)  # type: ignore[arg-type]


def _data_root(raw: str) -> str:
    root = raw.strip().rstrip("/")
    return f"file://{root}" if root.startswith("/") else root


def _database_url(raw: str | None, home: Path) -> str:
    if raw is None:
        return f"sqlite:///{home / 'quantray.db'}"
    # SQLAlchemy maps a bare postgresql:// to psycopg2, which is not installed; psycopg 3 is.
    for bare in ("postgresql://", "postgres://"):
        if raw.startswith(bare):
            return "postgresql+psycopg://" + raw[len(bare) :]
    return raw


def _check_file_uri(setting: str, uri: str) -> None:
    """Refuse a file: URI the storage layer would refuse (`file://relative/dir` names a
    host), at start rather than at the first request. Only file: URIs: checking them reads
    nothing, while building an S3 filesystem may look its region up on the network (those
    are checked by /readyz)."""
    from data.storage import resolve_uri  # pyarrow: not at import, for the CLI's sake

    try:
        resolve_uri(uri)
    except ValueError as exc:
        raise SettingsError(f"{setting}{uri!r}: {exc}") from None


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range: use an integer in [{low}, {high}]")


def _on_this_host(ray_address: str) -> bool:
    """Whether the Ray dashboard URL is on this machine (or not set: serve starts a head)."""
    if not ray_address:
        return True
    host = urlsplit(ray_address).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r}: use on or off")
