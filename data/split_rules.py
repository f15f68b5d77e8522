"""Split and window rules in pure Python, shared by `data.prepare.PrepareConfig`, the job
spec (`ray_jobs/spec.py`, which must not import numpy or pandas, nor the model zoo: the
API loads it) and `quantray train`."""

from __future__ import annotations

from data.wording import counted

# The window a job's sequence models may read (features.seq_len; quantray train --seq-len).
MIN_SEQ_LEN, MAX_SEQ_LEN = 5, 512
# The window when none is given: a job's features.seq_len and quantray train's --seq-len
# (one default, so both paths prepare the same samples from the same data).
DEFAULT_SEQ_LEN = 60


def leaky_gap_problem(purge: int | str, embargo: int, longest_horizon: int) -> str | None:
    """Why purge + embargo below the longest horizon is refused (a split's last labels,
    h bars ahead, would reach into the next split's samples), or None when the gap holds
    (purge "auto" is the longest horizon)."""
    if purge == "auto" or purge + embargo >= longest_horizon:
        return None
    return (f"purge {purge} + embargo {embargo} = {counted(purge + embargo, 'bar')} between "
            f"splits, but the longest horizon is {counted(longest_horizon, 'bar')}: the last "
            "training labels would "
            f"overlap the next split; use purge: auto (= the longest horizon) or a purge of "
            f"at least {longest_horizon - embargo}")
