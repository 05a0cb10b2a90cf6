"""Per-problem tables of a stage (pass rates, weights) as JSONL and/or Parquet, written atomically.

Shared by the pass-rate and weight stages, so neither imports the other for file handling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .data import read_jsonl, write_jsonl

__all__ = ["save_table", "load_table"]


def save_table(out_dir: Path, stem: str, rows: list[dict], formats: Sequence[str]) -> None:
    """Write ``rows`` to ``out_dir/<stem>.jsonl`` and/or ``.parquet`` (``formats``)."""
    out_dir = Path(out_dir)
    if "jsonl" in formats:
        write_jsonl(out_dir / f"{stem}.jsonl", rows)
    if "parquet" in formats:
        import pyarrow as pa
        import pyarrow.parquet as pq
        tmp = out_dir / f"{stem}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(out_dir / f"{stem}.parquet")


def load_table(out_dir: Path, stem: str) -> list[dict]:
    """The rows of ``<stem>.parquet`` (preferred) or ``<stem>.jsonl``."""
    out_dir = Path(out_dir)
    if (out_dir / f"{stem}.parquet").exists():
        import pyarrow.parquet as pq
        return pq.read_table(out_dir / f"{stem}.parquet").to_pylist()
    return read_jsonl(out_dir / f"{stem}.jsonl")
