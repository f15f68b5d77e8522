"""Turning a request body into a validated `JobSpec`: content type, parsing (JSON or YAML,
no aliases), the spec's own checks, allowed dataset locations, and a fail-fast read of the
dataset's symbol column.

Raises `InputError` (a domain error); the HTTP layer maps its `kind` to 400/415/422.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import yaml

from data.storage import resolve_uri
from ray_jobs.spec import JobSpec, SpecError
from ray_jobs.spec_text import DuplicateKey, UniqueKeyLoader, loads_json
from service.dataset_probe import DatasetProbe

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


@dataclass
class InputError(ValueError):
    """Bad input. kind: malformed (400), unsupported_media (415), invalid (422)."""

    kind: str
    message: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


class _NoAliasLoader(UniqueKeyLoader):
    """SafeLoader that refuses anchors/aliases: a spec never needs them, and aliases are
    how a few hundred bytes of YAML expand into gigabytes ("billion laughs"); a key given
    twice is refused too (`UniqueKeyLoader`)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(
                f"YAML aliases (*name) are not allowed in a job spec (line {mark.line + 1})"
            )
        return super().compose_node(parent, index)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Decode `body` as JSON or YAML according to its Content-Type."""
    kind = media_type(content_type)
    if kind not in JSON_TYPES + YAML_TYPES:
        raise InputError(
            "unsupported_media",
            f"Content-Type {kind or '(missing)'!r} is not supported: send the spec as "
            "application/json or application/yaml",
        )
    if not body.strip():
        raise InputError("malformed", "request body is empty: send a job spec")
    try:
        text = body.decode("utf-8-sig")  # a BOM (Windows editors) is not content
    except UnicodeDecodeError as exc:
        raise InputError("malformed", f"request body is not UTF-8 ({exc.reason})") from None
    if kind in JSON_TYPES:
        try:
            return loads_json(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                "malformed",
                f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            ) from None
        except DuplicateKey as exc:
            raise InputError("malformed", f"invalid JSON: {exc}") from None
        except RecursionError:
            raise InputError("malformed", "JSON is nested too deeply") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError("malformed", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise InputError("malformed", "YAML is nested too deeply") from None


def spec_from_data(data: Any) -> JobSpec:
    """`JobSpec.from_dict`, with every (field, message) pair in the 422."""
    if not isinstance(data, dict):
        raise InputError(
            "invalid",
            f"the spec must be a mapping of fields (name, dataset, models, ...), "
            f"got {type(data).__name__}",
            [{"field": "", "message": "expected a mapping"}],
        )
    try:
        return JobSpec.from_dict(data)
    except SpecError as exc:
        errors = [{"field": path, "message": msg} for path, msg in exc.errors]
        raise InputError("invalid", f"invalid job spec: {exc}", errors) from None
    except (TypeError, ValueError, RecursionError) as exc:
        # A shape the spec's own checks did not anticipate (e.g. a list where a scalar goes).
        raise InputError(
            "invalid", f"invalid job spec: {exc}", [{"field": "", "message": str(exc)}]
        ) from None


class DatasetPolicy:
    """Where datasets may be read from (`QUANTRAY_DATA_ROOTS`) and whether they are readable."""

    def __init__(self, data_roots: tuple[str, ...], probe: DatasetProbe) -> None:
        self.data_roots = data_roots
        self.probe = probe

    def check(self, spec: JobSpec) -> None:
        uri = spec.dataset.uri
        self.check_location(uri)
        symbols = spec.dataset.symbols
        try:
            available = self.probe.symbols(uri)
        except (OSError, ValueError) as exc:
            _invalid("dataset.uri", f"cannot read dataset {uri!r}: {exc}")
        if not available:
            _invalid("dataset.uri", f"{uri!r} has no rows with a symbol: check the file")
        if isinstance(symbols, int):
            if symbols > len(available):
                _invalid(
                    "dataset.symbols",
                    f"{symbols} symbols requested but {uri!r} has {len(available)}: "
                    f"ask for at most {len(available)}",
                )
            job_symbols = sorted(available)[:symbols]  # the driver's choice: the first N
            tune_symbols = spec.tune.symbols
            if isinstance(tune_symbols, tuple):
                chosen = set(job_symbols)
                outside = [s for s in tune_symbols if s not in chosen]
                if outside:
                    _invalid("tune.symbols", f"{outside} are not among the job's {symbols} "
                             f"symbols ({job_symbols[0]} .. {job_symbols[-1]} of {uri!r}): "
                             "the search runs on the job's own symbols")  # fmt: skip
        else:
            missing = [s for s in symbols if s not in available]
            if missing:
                shown = ", ".join(missing[:10]) + (
                    f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
                )
                cased = [s for s in missing if isinstance(s, str) and s.upper() in available]
                hint = f"; symbols are case-sensitive: {cased[0].upper()}?" if cased else ""
                _invalid("dataset.symbols", f"not in {uri!r}: {shown}{hint}")
            job_symbols = list(symbols)
        self.check_rows(spec, job_symbols)

    def check_rows(self, spec: JobSpec, job_symbols: list[str]) -> None:
        """Refuse a job none of whose symbols has the rows its preparation needs within the
        date window (every unit would fail on the cluster). Rows counted here include any
        the data validation would drop, so a symbol below the need here fails for sure; a
        job where only some symbols are short runs, and those fail alone."""
        from data.prepare import TIME_COLUMN, PrepareConfig

        ds = spec.dataset
        try:
            need = PrepareConfig(**spec.prepare_config_kwargs()).min_rows()
            rows = self.probe.rows_in_window(ds.uri, TIME_COLUMN[ds.kind], ds.start, ds.end)
        except (OSError, ValueError) as exc:  # the file's times do not read as dates
            # the other kind's columns (the loader then says which `dataset.kind` to set)
            field = "dataset.kind" if "dataset.kind" in str(exc) else "dataset.uri"
            _invalid(field, f"cannot count the rows of {ds.uri!r} by date: {exc}")
        counts = {s: rows.get(s, 0) for s in job_symbols}
        if not counts or max(counts.values()) >= need:
            return
        best = max(counts, key=counts.__getitem__)
        span = self.probe.span(ds.uri, TIME_COLUMN[ds.kind])
        covers = (f"; {ds.uri!r} runs from {str(span[0])[:10]} to {str(span[1])[:10]}"
                  if span else "")  # fmt: skip
        window = (f"between {ds.start or 'its start'} and {ds.end or 'its end'}"
                  if ds.start or ds.end else "in the dataset")  # fmt: skip
        field = "dataset.start" if ds.start else ("dataset.end" if ds.end else "dataset.symbols")
        _invalid(field, f"no symbol of the job has the {need} rows its preparation needs "
                 f"{window} (the most: {best} with {counts[best]}){covers}: widen the dates, "
                 "or shorten features.seq_len, target.horizons or the split")  # fmt: skip

    def check_location(self, uri: str) -> None:
        """`uri` must name data under a configured root, judged on the path the storage
        layer will actually open (percent-decoded, symlinks resolved), not on the string."""
        if uri.startswith("sample:"):
            return
        try:
            _, path = resolve_uri(uri)
        except ValueError as exc:
            _invalid("dataset.uri", str(exc))
        raw = uri.replace("\\", "/").split("?", 1)[0].split("/")
        if ".." in raw or ".." in path.split("/"):
            _invalid("dataset.uri", f"{uri!r} contains '..' (maybe percent-encoded): give a "
                     "normalised path")  # fmt: skip
        if not self.data_roots:
            _invalid(
                "dataset.uri",
                f"{uri!r} is not allowed: this server reads only sample: datasets "
                "(the operator can allow directories with QUANTRAY_DATA_ROOTS)",
            )
        if not any(_within(uri, path, root) for root in self.data_roots):
            _invalid(
                "dataset.uri",
                f"{uri!r} is outside the allowed data roots: use a dataset under "
                f"{', '.join(self.data_roots)} or a sample: URI",
            )


def _within(uri: str, path: str, root: str) -> bool:
    """Whether `uri` (whose decoded filesystem path is `path`) lies under data root `root`."""
    _, root_path = resolve_uri(root)
    if root.startswith("s3://"):
        if not uri.startswith("s3://"):
            return False
        # The query (endpoint_override...) must match too: else a spec could point the
        # server at any S3 endpoint.
        query, root_query = uri.partition("?")[2], root.partition("?")[2]
        same_endpoint = sorted(parse_qsl(query)) == sorted(parse_qsl(root_query))
        return same_endpoint and (path + "/").startswith(root_path.rstrip("/") + "/")
    if uri.startswith("s3://"):
        return False
    # realpath: a symlink inside a root must not lead outside it.
    real, real_root = os.path.realpath(path), os.path.realpath(root_path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def _invalid(field_path: str, message: str) -> NoReturn:
    raise InputError(
        "invalid", f"{field_path}: {message}", [{"field": field_path, "message": message}]
    )
