"""The model catalog served by `GET /v1/models`: every registered model with its kind,
input, hooks, resolved default config per preset, and search space.

The API process never imports torch, so the catalog is generated here and committed as
`ray_jobs/model_catalog.json`; a test fails when it drifts from the registry.
Regenerate: `python -m ray_jobs.catalog`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("model_catalog.json")


def build_catalog() -> dict[str, Any]:
    from models.registry import REGISTRY, resolve
    from models.spec import PRESETS

    models: list[dict[str, Any]] = []
    for name, spec in sorted(REGISTRY.items()):
        presets: dict[str, Any] = {}
        for preset in PRESETS:
            if spec.kind == "deep":
                presets[preset] = resolve(name, preset).to_dict()
            else:
                presets[preset] = dataclasses.asdict(
                    spec.config_cls(**spec.presets[preset].get("model", {}))
                )
        models.append({
            "name": name, "kind": spec.kind, "input": spec.input,
            "description": spec.description, "hooks": list(spec.hooks),
            "presets": presets, "search_space": spec.search_space,
        })  # fmt: skip
    return {"models": models}


def render() -> str:
    return json.dumps(build_catalog(), indent=1, sort_keys=True, default=list) + "\n"


def main() -> int:
    CATALOG_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {CATALOG_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
