"""Spec and split-rule edges: the leaky-gap
rule's exact boundary (checked against the split geometry itself, in the job spec and in
PrepareConfig)."""

from __future__ import annotations

import numpy as np
import pytest

from data.prepare import PrepareConfig
from data.split_rules import leaky_gap_problem
from data.splits import holdout_split, walk_forward_splits
from ray_jobs.spec import JobSpec, SpecError
from tests.ray_jobs._jobs import tiny_spec


def _labels_reach_next_split(folds: list[dict[str, np.ndarray]], longest: int) -> bool:
    """Whether some sample's label window (t, t + longest] reaches the next split's first
    sample, at any boundary of any fold."""
    for f in folds:
        for early, late in (("train", "val"), ("val", "test")):
            if f[early][-1] + longest >= f[late][0]:
                return True
    return False


@pytest.mark.parametrize("longest", [5, 20])
@pytest.mark.parametrize("embargo", [0, 2])
def test_the_leaky_gap_rule_refuses_exactly_the_leaking_gaps(longest: int, embargo: int):
    """purge + embargo = longest - 1 leaks one label bar into the next split and is
    refused; = longest does not leak and is accepted, by the rule, PrepareConfig and the
    job spec alike."""
    for purge in (longest - embargo - 1, longest - embargo):
        folds = [holdout_split(600, 0.6, 0.2, 0.2, purge, embargo)]
        folds += walk_forward_splits(600, 3, 0.5, 0.15, purge, embargo)
        leaks = _labels_reach_next_split(folds, longest)
        assert leaks == (purge + embargo < longest)  # the geometry the rule stands for
        assert (leaky_gap_problem(purge, embargo, longest) is not None) == leaks
        horizons = (1, longest)
        if leaks:
            with pytest.raises(ValueError, match="overlap the next split"):
                PrepareConfig(horizons=horizons, purge=purge, embargo=embargo)
            with pytest.raises(SpecError, match="overlap the next split"):
                JobSpec.from_dict(tiny_spec(
                    "gap", ["ols"], target={"kind": "direction", "horizons": list(horizons)},
                    split={"method": "holdout", "purge": purge, "embargo": embargo}))
        else:
            PrepareConfig(horizons=horizons, purge=purge, embargo=embargo)
            spec = JobSpec.from_dict(tiny_spec(
                "gap", ["ols"], target={"kind": "direction", "horizons": list(horizons)},
                split={"method": "holdout", "purge": purge, "embargo": embargo}))
            assert spec.split.purge == purge


@pytest.mark.parametrize("fractions,bad", [
    ({"train": 0.85, "val": 0, "test": 0.15}, ["split.val"]),
    ({"train": 0.7, "val": 0.3, "test": 0.0}, ["split.test"]),
    ({"train": 1, "val": 0, "test": 0}, ["split.train", "split.val", "split.test"]),
])
def test_a_split_fraction_of_0_or_1_is_refused_with_its_field(fractions: dict, bad: list):
    """A split with no validation (or test) samples sums to 1 but leaves nothing to select
    alpha or early-stop on (or to score): refused at the edge, each field named."""
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(tiny_spec("frac", ["ols"], split={"method": "holdout", **fractions}))
    assert [path for path, _ in info.value.errors] == bad
    assert all("use a fraction in (0, 1)" in msg for _, msg in info.value.errors)
