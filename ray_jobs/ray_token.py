"""Where a Ray auth token is found (Ray >= 2.59 token auth), for the job entrypoint and
the service alike. No ray import: the service reads it too."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def find_ray_token(env: Mapping[str, str], home: Path) -> str | None:
    """The Ray auth token, first found of: RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH,
    `~/.ray/auth_token` (under `home`); None when there is none. A RAY_AUTH_TOKEN_PATH that
    names no file is a ValueError saying so."""
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip()
    path_env = env.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path_env:
        path = Path(path_env).expanduser()
        if not path.is_file():
            raise ValueError(
                f"RAY_AUTH_TOKEN_PATH={path_env!r} does not exist: fix the path or unset it"
            )
        return path.read_text().strip() or None
    default = home / ".ray" / "auth_token"
    return default.read_text().strip() or None if default.is_file() else None
