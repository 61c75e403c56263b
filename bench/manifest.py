"""The study manifest: which study, which of its cells and which command produced a results folder.

``vaebench run`` writes ``study.json`` beside the records; the report and the results API read it
to tell the study's current cells from stale records of other settings. Also here: the column
declarations of a record, which a record written before records carried them takes from its
method's registered class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaebench.datasets.storage import atomic_write_bytes

from .columns import Column
from .config import to_dict
from .errors import VaebenchError
from .records import dumps, loads

if TYPE_CHECKING:
    from .study import Study

STUDY_FILE = "study.json"


def study_info(results_dir: Path) -> dict[str, Any]:
    """What ``vaebench run`` recorded about the study in ``study.json`` ({} when absent)."""
    path = Path(results_dir) / STUDY_FILE
    if not path.exists():
        return {}
    try:
        info = loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VaebenchError(f"{path}: not a readable study file ({exc})") from None
    if not isinstance(info, dict):
        raise VaebenchError(f"{path}: not a study file")
    return info


def write_study_file(results_dir: Path, study: Study, command: str) -> Path:
    """Record which study (and which of its cells) and which command produced a results folder."""
    path = Path(results_dir) / STUDY_FILE
    previous = study_info(results_dir)
    old_name = previous.get("study", {}).get("name")
    if old_name and old_name != study.name:
        raise VaebenchError(f"{results_dir} holds the results of study {old_name!r}, not {study.name!r}; "
                            "choose another --out")
    cells = [{"cell_id": run.cell_id, "eval_id": run.eval_id, "protocol_id": run.protocol_id}
             for run in study.cells()]
    atomic_write_bytes(path, dumps({"command": command, "study": to_dict(study), "cells": cells}).encode())
    return path


def split_records(records: list[dict[str, Any]], info: dict[str, Any]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records of the study's current cells, stale records of other settings).

    Without a ``study.json`` every record counts, and settings that differ other than by
    seed are told apart by their protocol in the report's frames.
    """
    cells = info.get("cells")
    if cells is None:
        return records, []
    wanted = {(c["cell_id"], c["eval_id"]) for c in cells}
    current = [r for r in records if (r.get("cell_id"), r.get("eval_id")) in wanted]
    stale = [r for r in records if (r.get("cell_id"), r.get("eval_id")) not in wanted]
    return current, stale


def declared_columns(record: dict[str, Any]) -> tuple[Column, ...]:
    """The per-example columns the record's method declares: as written in the record
    (``record["columns"]``), or, for a record written before records carried them, as the
    registered method class (``config.method``) declares them now; () for an unknown method."""
    if "columns" in record:
        return tuple(Column.from_dict(c) for c in record["columns"] or ())
    name = (record.get("config") or {}).get("method")
    if not isinstance(name, str):
        return ()
    from vaebench.methods import METHODS  # only for records from before declarations were written

    if name not in METHODS:
        return ()
    return tuple(getattr(METHODS.get(name), "columns", ()))


__all__ = ["STUDY_FILE", "declared_columns", "split_records", "study_info", "write_study_file"]
