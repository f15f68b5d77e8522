"""Turning a request body into a validated `JobSpec`: content type, parsing (JSON or YAML,
no aliases), the spec's own checks, allowed dataset locations, and a fail-fast read of the
dataset's symbol column.

Raises `InputError` (a domain error); the HTTP layer maps its `kind` to 400/413/415/422.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import yaml
from yaml.cyaml import CParser  # libyaml: PyYAML's wheels include it

from data.loading import spelling_hint
from data.storage import resolve_uri
from ray_jobs.spec import JobSpec, SpecError
from ray_jobs.spec_text import DuplicateKey, UniqueKeyLoader, loads_json
from service.dataset_probe import DatasetProbe

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


@dataclass
class InputError(ValueError):
    """Bad input. kind: malformed (400), too_large (413), unsupported_media (415),
    invalid (422)."""

    kind: str
    message: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


# A spec is a few hundred YAML nodes (600 symbols at most, a few models and overrides).
# The parse is refused past these bounds before any Python object is built: PyYAML's pure
# Python loader took ~11 us per byte (26 s of CPU for a 700 KB body under the 1 MiB limit),
# and libyaml's composer recurses in C, so a deep document must never reach it.
MAX_YAML_NODES = 10_000
MAX_NESTING = 64
# An integer this long (~300 digits) is out of range for every spec field, and float() or
# str() of it fails (4,300 digits and up: a ValueError from Python itself).
MAX_INT_BITS = 1000


class _TooLongInt(int):
    """Stands in for an integer literal too long for Python to convert (over 4,300 digits),
    so that the spec check can name its field (`_shape_errors`)."""

    digits: int

    def __new__(cls, digits: int) -> _TooLongInt:
        value = super().__new__(cls, 0)
        value.digits = digits
        return value


def _int_or_too_long(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return _TooLongInt(len(text.lstrip("+-").replace("_", "")))


_NON_TEXT_KEY_TAG = "tag:quantray,2025:non-text-key"
_READ_AS = {
    "tag:yaml.org,2002:bool": "a boolean (YAML reads yes, no, on, off, true and false so)",
    "tag:yaml.org,2002:null": "null (YAML reads ~ and null so)",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
}


class _NonTextKey(str):
    """A mapping key YAML would read as a boolean, number, null or date (`yes:`, `1:`,
    `~:`), kept as written, so that the spec check names it as the user spelled it (and
    `yes:` beside `1:` is not "a key given twice": True == 1 in Python)."""

    read_as: str


class _SpecLoader(CParser, UniqueKeyLoader):  # type: ignore[misc]
    """libyaml's parser and composer (C) with the safe constructors and `UniqueKeyLoader`'s
    refusal of a key given twice. Only for a document `_check_yaml_events` has passed: no
    aliases ("billion laughs"), at most MAX_YAML_NODES nodes, nested at most MAX_NESTING
    deep (libyaml's composer recurses in C: 100,000 `[` crash the process)."""

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            node.value = [
                (yaml.ScalarNode(_NON_TEXT_KEY_TAG, (key.tag, key.value), key.start_mark,
                                 key.end_mark) if isinstance(key, yaml.ScalarNode)
                 and key.tag in _READ_AS else key, value)
                for key, value in node.value
            ]  # fmt: skip
        return super().construct_mapping(node, deep=deep)

    def construct_non_text_key(self, node: Any) -> _NonTextKey:
        tag, text = node.value
        key = _NonTextKey(text)
        key.read_as = _READ_AS[tag]
        return key

    def construct_spec_int(self, node: Any) -> int:
        try:
            return self.construct_yaml_int(node)
        except ValueError:  # over 4,300 decimal digits
            return _TooLongInt(len(str(node.value).lstrip("+-").replace("_", "")))


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_spec_int)
_SpecLoader.add_constructor(_NON_TEXT_KEY_TAG, _SpecLoader.construct_non_text_key)


def _check_yaml_events(text: str) -> None:
    """Walk the document's parse events (libyaml, no Python objects per node) and refuse
    aliases, too many nodes and too deep nesting, before anything is composed."""
    parser = CParser(text)
    nodes = depth = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.AliasEvent):
                raise InputError("malformed", "YAML aliases (*name) are not allowed in a job "
                                 f"spec (line {event.start_mark.line + 1})")  # fmt: skip
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    raise InputError("malformed", f"YAML is nested too deeply (more than "
                                     f"{MAX_NESTING} levels, at line {event.start_mark.line + 1})")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_YAML_NODES:
                    message = (f"the YAML spec has more than {MAX_YAML_NODES} values (at line "
                               f"{event.start_mark.line + 1}); a job spec needs far fewer: "
                               "send the spec alone (at most 600 symbols)")
                    raise InputError("too_large", message,
                                     [{"field": "body", "message": message}])
    finally:
        parser.dispose()


def _load_yaml(text: str) -> Any:
    _check_yaml_events(text)
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _load_json(text: str) -> Any:
    try:
        return loads_json(text)
    except (json.JSONDecodeError, DuplicateKey, RecursionError):
        raise
    except ValueError:
        # An integer literal over Python's 4,300-digit limit: read again, with it replaced
        # by a stand-in, so that the 422 names its field.
        return json.loads(text, parse_int=_int_or_too_long)


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
            return _load_json(text)
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
        return _load_yaml(text)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # PyYAML 6.0.4's libyaml stops at 1000
            mark = getattr(exc, "problem_mark", None)  # levels, before our own check sees 64
            where = f", at line {mark.line + 1}" if mark is not None else ""
            raise InputError("malformed", f"YAML is nested too deeply (more than "
                             f"{MAX_NESTING} levels{where})") from None
        raise InputError("malformed", f"invalid YAML: {exc}") from None


def _key_text(key: Any) -> tuple[str, str]:
    """(the key as written, what it was read as) for a mapping key that is not text."""
    if isinstance(key, _NonTextKey):
        return str(key), key.read_as
    if isinstance(key, bool):
        return str(key).lower(), "a boolean"
    if key is None:
        return "null", "null"
    if isinstance(key, int | float):
        return str(key), "a number"
    return repr(key), f"a {type(key).__name__}"


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unpaired_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate (JSON's "\\ud800"): no UTF-8 text can,
    nor an answer, a database row or a file name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _spelled(text: str) -> str:
    """`text` with any lone surrogate written as its escape, printable in an answer."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_SURROGATE_MESSAGE = ("holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape), "
                      "which is not text: send valid Unicode")


def _shape_errors(data: Any) -> list[dict[str, str]]:
    """What no spec field can hold, each with its field: a mapping key that is not text
    (YAML's `yes:`, `1:`, `~:`), an integer too long to be anything's value, and a key or
    string with a lone surrogate (JSON's `"\\ud800"`; it failed the answer with a 500)."""
    errors: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not isinstance(key, _NonTextKey):
                    if _unpaired_surrogate(key):
                        errors.append({"field": _field(path, _spelled(key)),
                                       "message": f"this key {_SURROGATE_MESSAGE}"})
                        continue
                    stack.append((_field(path, key), item))
                    continue
                spelled, kind = _key_text(key)
                errors.append({"field": _field(path, spelled), "message": (
                    f"this key reads as {kind}, and spec keys must be strings: quote it "
                    f"('{spelled}': ...) or correct the field name")})
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and _unpaired_surrogate(value):
            errors.append({"field": path or "body", "message": f"this text {_SURROGATE_MESSAGE}"})
        elif isinstance(value, int) and not isinstance(value, bool):
            digits = value.digits if isinstance(value, _TooLongInt) else None
            about = ""
            if digits is None and value.bit_length() > MAX_INT_BITS:
                try:
                    digits = len(str(abs(value)))
                except ValueError:  # over 4,300 digits (from hex, octal or binary)
                    digits, about = int(value.bit_length() * 0.30103) + 1, "about "
            if digits is not None:
                errors.append({"field": path or "body", "message": (
                    f"an integer of {about}{digits} digits is out of range for every spec "
                    "field")})
    return sorted(errors, key=lambda e: e["field"])


_VALUE_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number",
                bool: "a boolean"}


def spec_from_data(data: Any) -> JobSpec:
    """`JobSpec.from_dict`, with every (field, message) pair in the 422."""
    if not isinstance(data, dict):
        got = ("nothing: the body holds no document" if data is None else
               _VALUE_KINDS.get(type(data), f"a {type(data).__name__}"))  # fmt: skip
        raise InputError(
            "invalid",
            f"the spec must be a mapping of fields (name: ..., dataset: {{...}}, models: "
            f"[...]), got {got}",
            [{"field": "", "message": "expected a mapping"}],
        )
    shape = _shape_errors(data)
    if shape:  # as a SpecError lists them: the first MAX_SPEC_ERRORS, then a count
        listed = SpecError([(e["field"], e["message"]) for e in shape])
        raise InputError("invalid", f"invalid job spec: {listed}",
                         [{"field": path, "message": msg} for path, msg in listed.listed])
    try:
        spec = JobSpec.from_dict(data)
        if problems := spec.split.new_spec_problems():  # a new job's, not a stored one's
            raise SpecError(problems)
        return spec
    except SpecError as exc:
        errors = [{"field": path, "message": msg} for path, msg in exc.listed]
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
            self.probe.check_kind(uri, spec.dataset.kind)
        except (OSError, ValueError) as exc:  # every column the kind needs, at once
            field = "dataset.kind" if "dataset.kind" in str(exc) else "dataset.uri"
            _invalid(field, f"cannot read dataset {uri!r}: {exc}")
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
                # the file's spellings that differ by case or spaces ('BRK.B' for 'brk.b'),
                # in the words of `quantray train` and the driver
                hint = spelling_hint([s for s in missing if isinstance(s, str)],
                                     sorted(available))
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
        covers = (f"; {ds.uri!r} runs from {_when(span[0], span)} to {_when(span[1], span)}"
                  if span else "")  # fmt: skip
        window = (f"between {ds.start or 'its start'} and {ds.end or 'its end'}"
                  if ds.start or ds.end else "in the dataset")  # fmt: skip
        field = "dataset.start" if ds.start else ("dataset.end" if ds.end else "dataset.symbols")
        folds = (f", lower split.n_folds ({spec.split.n_folds}: each fold needs its own "
                 "test block)" if spec.split.method == "walk_forward" else "")
        _invalid(field, f"no symbol of the job has the {need} rows its preparation needs "
                 f"{window} (the most: {best} with {counts[best]}){covers}: widen the dates"
                 f"{folds}, or shorten features.seq_len, target.horizons, split.purge/embargo "
                 "or the split")  # fmt: skip

    def check_location(self, uri: str) -> None:
        """`uri` must name data under a configured root, judged on the path the storage
        layer will actually open (percent-decoded, symlinks resolved), not on the string."""
        if uri.startswith("sample:"):
            return
        try:
            _, path = resolve_uri(uri)
        except ValueError as exc:
            _invalid("dataset.uri", str(exc))
        if "\x00" in path:  # no file name holds one (os.path.realpath raised on it: a 500)
            _invalid("dataset.uri", f"{uri!r} holds a NUL character (maybe percent-encoded "
                     "as %00), which no file name can: give the dataset's path")  # fmt: skip
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
            _invalid("dataset.uri", _endpoint_mismatch(uri, path, self.data_roots) or (
                f"{uri!r} is outside the allowed data roots: use a dataset under "
                f"{', '.join(self.data_roots)} or a sample: URI"))


def _when(t: object, span: tuple[object, object]) -> str:
    """A time of the dataset's span: its date where both ends fall on midnight (daily
    bars), else to the second (intraday bars, order-book snapshots: a one-day file's span
    said only "from 2024-03-04 to 2024-03-04")."""
    import pandas as pd

    stamps = [pd.Timestamp(s) for s in span]
    daily = all(s == s.normalize() for s in stamps)
    return str(pd.Timestamp(t).date()) if daily else pd.Timestamp(t).isoformat(
        timespec="seconds")


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


def _endpoint_mismatch(uri: str, path: str, roots: tuple[str, ...]) -> str | None:
    """For an S3 `uri` whose bucket and key lie under a root but whose query (endpoint,
    region, scheme) is not the root's: why it is refused, and the root to configure. The
    queries are shown as they are: `resolve_uri` accepted only endpoint_override, region,
    scheme and anonymous, none of them a credential (those come from the AWS chain)."""
    query = uri.partition("?")[2]
    for root in roots:
        bare_root, _, root_query = root.partition("?")
        if not root.startswith("s3://") or not _within(uri.partition("?")[0], path, bare_root):
            continue
        ours = f"the query {query!r}" if query else "no query"
        theirs = f"the query {root_query!r}" if root_query else "none"
        head = (f"{uri!r} is under data root {root!r} but with {ours}, where the root has "
                f"{theirs}: a dataset is read only through its root's own endpoint")
        if not query:
            return f"{head}: give the root's query ({uri}?{root_query})"
        instead = f"give the root's query ({root_query}), or " if root_query else ""
        return (f"{head}, so {instead}QUANTRAY_DATA_ROOTS must name this endpoint too: "
                f"{bare_root}?{query} (the server's operator sets it)")
    return None


def _invalid(field_path: str, message: str) -> NoReturn:
    raise InputError(
        "invalid", f"{field_path}: {message}", [{"field": field_path, "message": message}]
    )
