"""Per-clip stage records: what a stage made of a clip, kept even when the answer is 'rejected'.

Per-clip rules always write one record (JSON) as their declared output. When the clip is
usable the record names the media files beside it; when it is not, it holds the reason.
Downstream stages read records to decide which clips go on, and `data/rejected.csv`
gathers every rejection, so nothing silently vanishes.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from mssync.core.atomic import write_json_atomic, write_text_atomic

OK = "ok"
REJECTED = "rejected"
REJECTED_COLUMNS = ("clip_id", "speaker", "stage", "reason")


def write_record(path: str | Path, clip_id: str, stage: str, status: str, **fields: Any) -> dict[str, Any]:
    record = {"clip_id": clip_id, "stage": stage, "status": status, **fields}
    write_json_atomic(path, record)
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    with Path(path).open(encoding="utf-8") as fh:
        return json.load(fh)


def is_ok(path: str | Path) -> bool:
    return read_record(path)["status"] == OK


def write_rejected_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REJECTED_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["clip_id"]):
        writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())
