"""The scaler (data/scaling.py): a feature (numerically) constant on the training rows is
centred and divided by 1, so a later value that moves is not blown up by 1e8; non-finite
training values are refused."""

from __future__ import annotations

import numpy as np
import pytest

from data.scaling import MIN_STD, fit_scaler


def test_a_feature_constant_on_train_is_centred_not_blown_up() -> None:
    rng = np.random.default_rng(0)
    train = np.column_stack([
        1.0 + 1e-12 * rng.standard_normal(100),  # constant up to rounding: std ~1e-12
        np.full(100, 0.1),                       # constant
        rng.standard_normal(100),                # a real feature
    ])
    s = fit_scaler(train)
    assert s.std[0] == 1.0 and s.std[1] == 1.0 and s.std[2] != 1.0
    assert (s.std >= MIN_STD).all()
    # a later, non-constant value moves by its distance from the training mean, not 1e8x
    later = s.transform(np.array([[1.5, 0.3, 0.0]]))
    np.testing.assert_allclose(later[0, :2], [0.5, 0.2], atol=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        fit_scaler(np.array([[1.0, np.nan], [2.0, 3.0]]))
