"""Split rules in pure Python, shared by `data.prepare.PrepareConfig` and the job spec
(`ray_jobs/spec.py`, which must not import numpy or pandas)."""

from __future__ import annotations


def leaky_gap_message(purge: int, embargo: int, longest_horizon: int) -> str:
    """Why purge + embargo below the longest horizon is refused: a split's last labels
    (h bars ahead) would reach into the next split's samples."""
    return (f"purge {purge} + embargo {embargo} = {purge + embargo} bars between splits, but "
            f"the longest horizon is {longest_horizon} bars: the last training labels would "
            f"overlap the next split; use purge: auto (= the longest horizon) or a purge of "
            f"at least {longest_horizon - embargo}")
