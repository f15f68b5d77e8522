"""The shape of a job id (`qr-` and 16 lowercase hex digits), shared by the API, which
checks every `{job_id}` before any database read, and the CLI, which checks an id before
putting it in a URL. Standard library only: the CLI imports it."""

from __future__ import annotations

import re
import secrets

JOB_ID_PATTERN = r"^qr-[0-9a-f]{16}$"  # what `new_job_id` makes, e.g. qr-5f3a9c2e1b7d4a60
JOB_ID_FORM = ("a job id is qr- and 16 lowercase hex digits, e.g. qr-5f3a9c2e1b7d4a60 "
               "(`quantray list` shows yours)")
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
_SHOWN_CHARS = 40


def new_job_id() -> str:
    return "qr-" + secrets.token_hex(8)


def job_id_problem(job_id: str) -> str | None:
    """Why `job_id` cannot be a job's id, or None. The API checks it before any database
    read (a NUL byte was a 500 from PostgreSQL; 5,000 characters were echoed back whole),
    the CLI before it builds a URL (`../../v1/jobs`, `?x=1` or `a/b` reached other routes)."""
    if _JOB_ID_RE.fullmatch(job_id):
        return None
    shown = (job_id if len(job_id) <= _SHOWN_CHARS
             else f"{job_id[:_SHOWN_CHARS]}... ({len(job_id)} characters)")  # fmt: skip
    return f"job id {shown!r} is not valid: {JOB_ID_FORM}"
