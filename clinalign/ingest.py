"""Ingest cases from JSONL, CSV or Parquet into quarantine, validating every field first.

Reads: a file of cases (``schemas.CaseIn``: id, prompt, reference, variants, persona, specialty, risk).
Writes: ``RawRecord`` rows (quarantined: may hold PHI); artifacts ``source_file`` (input) and
``raw_records`` (output).

All or nothing: the whole file is parsed and validated before one row is stored, and a bad line
stops the ingest with its file, line and field (a table's missing or unknown columns: its header's).
Every field is bounded or drawn from a vocabulary (``schemas.CaseIn``), so nothing stored here can
later block ``deidentify`` or reach a record unscanned. Messages never quote a value (it may be PHI).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import ValidationError
from sqlalchemy import select

from clinalign.audit import RunContext, canonical_json, record_event, sha256_path, sha256_text
from clinalign.schemas import CaseIn, ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Artifact, RawRecord

log = logging.getLogger(__name__)

BUNDLED_SCENARIOS = resources.files("clinalign") / "data" / "scenarios.jsonl"


class Config(StageConfig):
    path: Path
    """File to ingest (the demo passes ``BUNDLED_SCENARIOS``: 160 synthetic cases, some with fake PHI)."""

    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    """File format; ``auto`` decides by extension (.jsonl/.json, .csv, .parquet)."""


def _format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in formats:
        raise ClinalignError(f"{path}: cannot tell the format from '{suffix}'; set format=jsonl|csv|parquet")
    return formats[suffix]


def _jsonl_rows(path: Path) -> list[tuple[int, object]]:
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte order mark may open the file
            except UnicodeDecodeError as err:
                raise ClinalignError(f"{path}:{number}: not valid UTF-8 (byte {err.start} of the line)") from None
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ClinalignError(f"{path}:{number}: malformed JSON ({err.msg} at column {err.colno})") from None
    return rows


def _check_columns(where: str, columns: list[str]) -> None:
    """A table's header names each field of ``CaseIn`` at most once, and the required ones."""
    known = CaseIn.model_fields
    for name, field in known.items():
        if field.is_required() and name not in columns:
            raise ClinalignError(f"{where}: missing column '{name}'")
    for column in columns:
        if column not in known:
            raise ClinalignError(f"{where}: unknown column '{column}' (expected: {', '.join(known)})")
        if columns.count(column) > 1:
            raise ClinalignError(f"{where}: column '{column}' appears twice")


def _csv_rows(path: Path) -> list[tuple[int, object]]:
    try:
        # utf-8-sig: spreadsheet programs open their CSV exports with a byte order mark
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ClinalignError(f"{path}:{line}: not valid UTF-8") from None
    # newline="": line breaks inside quoted cells belong to the cell (a prompt may have paragraphs)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = next(reader, None)
        if header is None:
            return []
        _check_columns(f"{path}:1", [h.strip() for h in header])
        columns = [h.strip() for h in header]
        while True:
            number = reader.line_num + 1  # where the row starts: a quoted cell may span lines
            cells = next(reader, None)
            if cells is None:
                break
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                raise ClinalignError(f"{path}:{number}: more cells than the header has columns")
            cleaned = {k: v for k, v in zip(columns, cells, strict=False) if v.strip()}  # a blank cell is absent
            if "variants" in cleaned:
                try:
                    cleaned["variants"] = json.loads(cleaned["variants"])
                except json.JSONDecodeError:
                    raise ClinalignError(f"{path}:{number}: field 'variants': not a JSON list") from None
            rows.append((number, cleaned))
    except csv.Error as err:  # the csv module's messages describe the syntax, never a cell's content
        raise ClinalignError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
    return rows


def _parquet_rows(path: Path) -> list[tuple[int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ClinalignError(f"{path}: not a readable Parquet file ({type(err).__name__})") from None
    _check_columns(str(path), table.column_names)
    return [(i, {k: v for k, v in row.items() if v is not None}) for i, row in enumerate(table.to_pylist(), start=1)]


def read_cases(path: Path, fmt: str = "auto") -> list[tuple[int, CaseIn]]:
    """Parse and validate a whole file; the first problem raises with file, line and field."""
    if not path.is_file():
        raise ClinalignError(f"input file not found: {path}")
    kind = _format(path, fmt)
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[kind](path)
    cases: list[tuple[int, CaseIn]] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        if not isinstance(row, dict):
            raise ClinalignError(f"{path}:{number}: expected an object, got {type(row).__name__}")
        try:
            case = CaseIn.model_validate({k: v for k, v in row.items() if v is not None})  # null: absent, as in tables
        except ValidationError as err:
            first = err.errors(include_input=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or "(record)"
            raise ClinalignError(f"{path}:{number}: field '{field}': {first['msg']}") from None
        if case.id in seen:
            raise ClinalignError(f"{path}:{number}: field 'id': duplicate of line {seen[case.id]}")
        seen[case.id] = number
        cases.append((number, case))
    if not cases:
        raise ClinalignError(f"{path}: no cases found")
    return cases


def run(ctx: RunContext, config: Config) -> dict:
    cases = read_cases(config.path, config.format)
    file_hash = sha256_path(config.path)
    with ctx.store.session() as session:
        previous = session.scalar(select(Artifact).where(Artifact.kind == "source_file", Artifact.sha256 == file_hash))
        if previous is not None:
            raise ClinalignError(f"{config.path}: this exact file was already ingested (artifact {previous.id})")
        ids = [case.id for _, case in cases]
        clash = session.scalar(select(RawRecord.external_id).where(RawRecord.external_id.in_(ids)).limit(1))
        if clash is not None:
            line = next(n for n, c in cases if c.id == clash)
            raise ClinalignError(f"{config.path}:{line}: field 'id': a case with this id is already in the store")
        ctx.use_external(session, "source_file", str(config.path.resolve()), file_hash, {"rows": len(cases)})
        payloads = [case.model_dump(mode="json") for _, case in cases]
        session.add_all(
            RawRecord(external_id=case.id, source=config.path.name, source_line=n, payload=payload, run_id=ctx.run_id)
            for (n, case), payload in zip(cases, payloads, strict=True)
        )
        ctx.produce(
            session,
            "raw_records",
            f"store://raw_record?run={ctx.run_id}",
            sha256_text(canonical_json(payloads)),
            {"count": len(cases)},
        )
        record_event(session, "system", "ingest", f"run:{ctx.run_id}", {"file_sha256": file_hash, "count": len(cases)})
    log.info("ingested %d cases from %s", len(cases), config.path.name)
    ctx.metrics.update(ingested=len(cases))
    return ctx.metrics
