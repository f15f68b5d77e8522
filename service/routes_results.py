"""/v1/jobs/{id}/results, /summary, /plots/{name}, /artifacts/{path}: read from storage."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from data.spec_rules import MAX_FOLDS, MAX_HORIZON
from service.deps import PrincipalDep, StateDep, reject_unknown_query
from service.errors import ApiError
from service.job_files import PLOT_NAME_PATTERN, UnsafePath
from service.routes_jobs import _ERRORS, JobIdPath, _get
from service.store import JobRecord

router = APIRouter(
    prefix="/v1/jobs/{job_id}", tags=["results"], dependencies=[Depends(reject_unknown_query)]
)
FILTER_COLUMNS = ("symbol", "model", "horizon", "split", "fold")
PlotName = Annotated[str, Path(description="a plot's file name, as GET .../plots lists it",
                               json_schema_extra={"pattern": PLOT_NAME_PATTERN})]


def _missing(job: JobRecord, what: str, listing: str | None = "artifacts") -> ApiError:
    """The 404 of a file the job has not got. `listing`: the route that lists what it has
    (None from that listing itself: it must not send the client back to itself)."""
    job_id, status = job.id, job.status
    listed = f"GET /v1/jobs/{job_id}/{listing}" if listing else None
    if status in ("queued", "running"):
        why = (f"yet: the leaderboard, summary and plots are written when the job ends "
               f"(progress: GET /v1/jobs/{job_id}; each unit's files appear under "
               f"/artifacts as it finishes)")
    elif status == "interrupted":  # its driver was gone before it could report
        why = (f"(the job was interrupted before writing it: resume it, POST "
               f"/v1/jobs/{job_id}/resume or `quantray resume {job_id}`"
               + (f"; what its units finished is listed at GET /v1/jobs/{job_id}/artifacts)"
                  if listing else ")"))
    elif status == "cancelled" and job.started_at is None:  # cancelled while queued
        ran = ("it never ran" if not job.attempt else f"its attempt {job.attempt} never ran, "
               "and the earlier ones did not write it")
        why = (f"(the job was cancelled while queued, before it was submitted to Ray: {ran}; "
               f"resume it to run it, `quantray resume {job_id}` or POST "
               f"/v1/jobs/{job_id}/resume)")
    elif listed:  # final: nothing more will appear unless the job is resumed
        why = (f"(list what it has with {listed}; if QUANTRAY_STORAGE_URI changed since "
               f"the job ran, its files are in the storage it ran with)")
    else:
        why = ("(its units may have stored none; if QUANTRAY_STORAGE_URI changed since the "
               "job ran, its files are in the storage it ran with; if its files were "
               f"deleted, submit its spec again: the `spec` of GET /v1/jobs/{job_id})")
    return ApiError(404, "not_found", f"job {job_id} ({status}) has no {what} {why}")


def _refuse_slash_symbol(state: Any, job_id: str, path: str, field_path: str) -> None:
    """A path that was not found because its symbol has a '/' (`BF/B/ols`, stored under
    `BF_B`): the 400 that names the path to use, instead of a 404."""
    if path and (use := state.files.slash_symbol_form(job_id, path)) is not None:
        raise _unsafe(UnsafePath(
            f"{path!r}: a symbol with a '/' is stored under its file-safe name: use {use!r}"),
            field_path)


def _unsafe(exc: UnsafePath, field_path: str) -> ApiError:
    return ApiError(400, "malformed", str(exc), [{"field": field_path, "message": str(exc)}])


def wants_csv(accept: str) -> bool:
    """Whether an Accept header prefers text/csv to JSON (the default): CSV needs a q above
    0 and above application/json's, so `text/csv;q=0.9, application/json` gets JSON; the
    ranges `text/*`, `application/*` and `*/*` stand for the types they cover."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[media.lower()] = max(weights.get(media.lower(), 0.0), q)
    # a media range counts where the type itself is not named: `text/*` asks for CSV (the
    # one text type here), `application/*` and `*/*` for JSON, the default
    csv = weights.get("text/csv", weights.get("text/*", 0.0))
    json = weights.get("application/json",
                       max(weights.get("application/*", 0.0), weights.get("*/*", 0.0)))
    return csv > 0 and csv > json


def _filter(table: pa.Table, filters: dict[str, Any]) -> pa.Table:
    for column, value in filters.items():
        if value is None:
            continue
        if column not in table.column_names:
            raise ApiError(
                400, "malformed", f"the leaderboard has no {column!r} column to filter on",
                [{"field": f"query.{column}", "message": "column not in this leaderboard"}],
            )  # fmt: skip
        values = value if isinstance(value, list) else [value]
        column_data = table[column]
        if pa.types.is_dictionary(column_data.type):
            column_data = column_data.cast(column_data.type.value_type)
        try:
            value_set = pa.array(values, type=column_data.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # "abc"; 10**30
            raise ApiError(
                422, "invalid", f"{values!r} do not match the {column!r} column's type",
                [{"field": f"query.{column}", "message": f"expected {column_data.type}"}],
            ) from None  # fmt: skip
        mask = pc.is_in(column_data, value_set=value_set)
        table = table.filter(mask)
    return table


@router.get(
    "/results", responses=_ERRORS,
    summary="Leaderboard (JSON rows; CSV with Accept: text/csv), filtered by symbol, model, "
    "horizon, split, fold",
)  # fmt: skip
def results(
    job_id: JobIdPath,
    request: Request,
    state: StateDep,
    principal: PrincipalDep,
    symbol: Annotated[list[str] | None, Query(max_length=600)] = None,
    model: Annotated[list[str] | None, Query(max_length=50)] = None,
    horizon: Annotated[list[Annotated[int, Field(ge=1, le=MAX_HORIZON)]] | None,
                       Query(max_length=50)] = None,
    split: Annotated[list[Literal["val", "test"]] | None, Query(max_length=2)] = None,
    fold: Annotated[list[Annotated[int, Field(ge=0, lt=MAX_FOLDS)]] | None,
                    Query(max_length=100)] = None,
    sort: Annotated[str | None, Query(
        max_length=40, description="a leaderboard column, '-' first for descending (-macro_f1); "
        "rows without a value last")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000,
                                       description="at most this many rows")] = None,
    offset: Annotated[int, Query(ge=0, description="skip this many rows first")] = 0,
) -> Response:
    job = _get(state, job_id, principal)
    try:
        table = api_artifact_links(state.files.read_leaderboard(job.id), job.id)
    except FileNotFoundError:
        raise _missing(job, "results/leaderboard.parquet") from None
    filters = {"symbol": symbol, "model": model, "horizon": horizon, "split": split,
               "fold": fold}  # fmt: skip
    unmatched = _unmatched(table, filters)
    table = _filter(table, filters)
    total = table.num_rows
    if sort:
        table = _sorted(table, sort)
    table = table.slice(offset, limit)  # a big job's leaderboard is 10^5 rows and more
    page = {"total": total, "offset": offset, "next": (
        str(request.url.include_query_params(offset=offset + table.num_rows))
        if limit is not None and offset + table.num_rows < total else None)}  # fmt: skip
    if wants_csv(request.headers.get("accept", "")):
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        headers = {UNMATCHED_HEADER: unmatched_note(unmatched)} if unmatched else {}
        headers[TOTAL_HEADER] = str(total)
        return Response(buf.getvalue(), media_type="text/csv", headers=headers)
    # pyarrow -> Python: NaN stays float('nan'), which JSON cannot carry; map it to null.
    rows = [{k: _json_safe(v) for k, v in row.items()} for row in table.to_pylist()]
    return JSONResponse({"job_id": job.id, "status": job.status, "count": len(rows), **page,
                         "rows": rows, "unmatched": unmatched})  # fmt: skip


def _sorted(table: pa.Table, sort: str) -> pa.Table:
    """`table` sorted by column `sort` ('-' first: descending), NaN and null last either way;
    a stable sort, so ties keep the leaderboard's order."""
    name = sort[1:] if sort.startswith("-") else sort
    if name not in table.column_names:
        raise ApiError(422, "invalid", f"sort {sort!r}: {name!r} is not a leaderboard column",
                       [{"field": "query.sort", "message": "one of "
                         + ", ".join(table.column_names) + ", '-' first for descending"}])
    column = table[name]
    if pa.types.is_floating(column.type):  # NaN sorts as a number in pyarrow: make it null
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    direction = "descending" if sort.startswith("-") else "ascending"
    order = pc.sort_indices(pa.table({"key": column}), sort_keys=[("key", direction, "at_end")])
    return table.take(order)


UNMATCHED_HEADER = "Quantray-Unmatched"  # CSV answers carry the notes here
TOTAL_HEADER = "Quantray-Total-Rows"  # ... and the matched rows' count before limit/offset
MAX_LISTED = 20
MAX_NOTE_CHARS = 4000  # the Quantray-Unmatched header (`unmatched_note`)
ARTIFACT_COLUMN = "artifact_uri"  # rewritten to an API link (`api_artifact_links`)


def _unmatched(table: pa.Table, filters: dict[str, Any]) -> list[dict[str, Any]]:
    """Filter values that occur nowhere in their column (a typo, the wrong case, a horizon
    the job did not train), each with the values the leaderboard has: a filter that
    matches nothing says why instead of an empty answer alone."""
    out = []
    for column, values in filters.items():
        if not values or column not in table.column_names:
            continue
        have = sorted(pc.unique(table[column]).drop_null().to_pylist(), key=str)
        for value in values:
            if value in have:
                continue
            listed = ", ".join(map(str, have[:MAX_LISTED])) + (" ..." if len(have) > MAX_LISTED
                                                               else "")  # fmt: skip
            case = [h for h in have if isinstance(h, str) and h.lower() == str(value).lower()]
            hint = f" (values are case-sensitive: {case[0]}?)" if case else ""
            out.append({"field": f"query.{column}", "value": value,
                        "message": f"{column} {value!r} is not in this leaderboard{hint}; it "
                        f"has: {listed}"})  # fmt: skip
    return out


def unmatched_note(unmatched: list[dict[str, Any]]) -> str:
    """The `Quantray-Unmatched` header: the notes, ASCII only (anything else in a user's
    value is escaped), and at most MAX_NOTE_CHARS: 600 unmatched symbols made a 44 KB header,
    which Node's HTTP parser (16 KB), nginx's default proxy buffers and many gateways refuse.
    A cut note says how many it left out and where the whole list is."""
    notes = [u["message"].encode("ascii", "backslashreplace").decode() for u in unmatched]
    note = "; ".join(notes)
    if len(note) <= MAX_NOTE_CHARS:
        return note
    kept: list[str] = []
    for text in notes:
        if len("; ".join([*kept, text])) > MAX_NOTE_CHARS - 200:
            break
        kept.append(text)
    left = len(notes) - len(kept)
    more = (f"... and {left} more unmatched filter value{'s' if left > 1 else ''}: ask with "
            "Accept: application/json for the whole list (its `unmatched`)")
    return "; ".join([*kept, more])


def api_artifact_links(table: pa.Table, job_id: str) -> pa.Table:
    """The leaderboard's `artifact_uri` (where the driver stored a unit's model: a server
    path or an S3 URI with its bucket and endpoint, of no use to a client) as the API link
    that lists the unit's model files, `/v1/jobs/{id}/artifacts?prefix=BRK_B/ols/f0/model`;
    a value that is not under the job's units/ folder is not exposed (null)."""
    if ARTIFACT_COLUMN not in table.column_names:
        return table
    column = table[ARTIFACT_COLUMN]
    if pa.types.is_null(column.type):  # no unit stored a model (ensembles, failures)
        return table
    column = column.cast(pa.string())
    pattern = rf"^.*/jobs/{job_id}/units/([^?]+?)/*(\?.*)?$"
    links = pc.if_else(
        pc.match_substring_regex(column, pattern),
        pc.replace_substring_regex(column, pattern, f"/v1/jobs/{job_id}/artifacts?prefix=\\1"),
        pa.scalar(None, pa.string()))  # fmt: skip
    index = table.column_names.index(ARTIFACT_COLUMN)
    return table.set_column(index, ARTIFACT_COLUMN, links)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@router.get("/summary", responses=_ERRORS, summary="results/summary.json")
def summary(job_id: JobIdPath, state: StateDep, principal: PrincipalDep) -> JSONResponse:
    job = _get(state, job_id, principal)
    try:
        return JSONResponse(state.files.read_summary(job.id))
    except FileNotFoundError:
        raise _missing(job, "results/summary.json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(500, "corrupt", f"job {job.id} summary.json is not JSON: {exc}") from None


@router.get("/plots", responses=_ERRORS, summary="Names of the job's plots")
def plots(job_id: JobIdPath, state: StateDep, principal: PrincipalDep) -> dict[str, list[str]]:
    job = _get(state, job_id, principal)
    return {"plots": state.files.list_plots(job.id)}


@router.get(
    "/plots/{name}", responses={**_ERRORS, 200: {"content": {"image/png": {}}}},
    response_class=Response, summary="One plot (PNG)",
)  # fmt: skip
def plot(job_id: JobIdPath, name: PlotName, state: StateDep, principal: PrincipalDep) -> Response:
    job = _get(state, job_id, principal)
    try:
        return Response(state.files.plot_bytes(job.id, name), media_type="image/png")
    except UnsafePath as exc:
        raise _unsafe(exc, "path.name") from None
    except FileNotFoundError:
        raise _missing(job, f"plot {name!r}", listing="plots") from None


@router.get("/artifacts", responses=_ERRORS, summary="List the job's artifact files")
def list_artifacts(
    job_id: JobIdPath,
    state: StateDep,
    principal: PrincipalDep,
    prefix: Annotated[str, Query(max_length=1000)] = "",
) -> dict[str, Any]:
    job = _get(state, job_id, principal)
    try:
        return {"job_id": job.id, "files": state.files.list_artifacts(job.id, prefix)}
    except UnsafePath as exc:
        raise _unsafe(exc, "query.prefix") from None
    except FileNotFoundError:
        _refuse_slash_symbol(state, job.id, prefix, "query.prefix")
        what = (f"artifact folder {prefix!r} (a prefix is a whole folder: a symbol, "
                "SYMBOL/model or SYMBOL/model/fold, not part of a name)" if prefix
                else "artifacts")  # fmt: skip
        # a prefix's 404 may point at the whole listing; the whole listing's not at itself
        raise _missing(job, what, listing="artifacts" if prefix else None) from None


@router.get(
    "/artifacts/{path:path}",
    responses={**_ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=StreamingResponse, summary="Stream one artifact file from units/",
)  # fmt: skip
def artifact(
    job_id: JobIdPath, path: str, state: StateDep, principal: PrincipalDep
) -> StreamingResponse:
    job = _get(state, job_id, principal)
    try:
        size, chunks = state.files.open_artifact(job.id, path)
    except UnsafePath as exc:
        raise _unsafe(exc, "path.path") from None
    except FileNotFoundError:
        _refuse_slash_symbol(state, job.id, path, "path.path")
        raise _missing(job, f"artifact {path!r}") from None
    filename = path.rsplit("/", 1)[-1]
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)
