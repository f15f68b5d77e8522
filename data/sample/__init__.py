"""Bundled sample datasets, addressed as `sample:NAME` URIs.

The files ship inside the package (see `[tool.setuptools.package-data]`), so a fresh
install can train on `sample:sp500` without any shared checkout. Provenance and licence:
`PROVENANCE.md` beside this file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# name -> file inside this package; a literal table, so `sample:` URIs never import paths.
SAMPLES: dict[str, str] = {
    "sp500": "sp500_sample.parquet",
}


def sample_path(name: str) -> Path:
    """Local path of bundled sample `name` (e.g. "sp500" for `sample:sp500`)."""
    if name not in SAMPLES:
        raise ValueError(
            f"unknown sample dataset {name!r}: available samples are "
            f"{', '.join('sample:' + n for n in sorted(SAMPLES))}"
        )
    path = Path(str(resources.files(__package__).joinpath(SAMPLES[name])))
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled sample file {path} is missing: reinstall quantray, or rebuild it with "
            "`python bench/make_sample.py` from a checkout that has ../shared/data"
        )
    return path
