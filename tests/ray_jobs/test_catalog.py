"""The committed model catalog (served by the API without torch) matches the registry."""

from __future__ import annotations

import json

from ray_jobs.catalog import CATALOG_PATH, build_catalog, render
from ray_jobs.spec import LINEAR_MODELS, MODEL_NAMES


def test_committed_catalog_matches_registry() -> None:
    assert CATALOG_PATH.read_text(encoding="utf-8") == render(), (
        "ray_jobs/model_catalog.json is stale: run `python -m ray_jobs.catalog`"
    )


def test_catalog_lists_every_model_with_presets_and_space() -> None:
    models = {m["name"]: m for m in build_catalog()["models"]}
    assert sorted(models) == sorted(MODEL_NAMES)
    for name, entry in models.items():
        assert entry["kind"] == ("linear" if name in LINEAR_MODELS else "deep")
        assert set(entry["presets"]) == {"fast", "balanced", "quality"}
        if name != "ols":  # OLS has no hyperparameter to search
            assert entry["search_space"], name
    assert models["lstm"]["presets"]["fast"]["train"]["epochs"] >= 1
    json.dumps(models)  # JSON-ready
