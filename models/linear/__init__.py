"""Linear models (ols, ridge, lasso): registry entries, filled by models/linear/*.py."""

from __future__ import annotations

from models.spec import ModelSpec

LINEAR_SPECS: dict[str, ModelSpec] = {}
