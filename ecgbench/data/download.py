"""Fetch the PhysioNet databases the dataset plugins read, with wfdb (needs internet).

Each database lands in `to/<name>`, the folder its plugin looks for: `mitdb` (MIT-BIH, paper 3.1),
`ptbdb` (PTB Diagnostic, paper 3.1) and `ptbxl` (PTB-XL, the stand-in for ptbdb). Downloads that
were cut off resume: wfdb skips files already complete and appends to partial ones.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DATABASES", "download"]

# folder -> (PhysioNet slug, annotators, files beside the records that the plugin reads)
DATABASES: dict[str, tuple[str, list[str] | None, list[str]]] = {
    "mitdb": ("mitdb", ["atr"], ["RECORDS"]),
    "ptbdb": ("ptbdb", None, ["RECORDS", "CONTROLS"]),
    "ptbxl": ("ptb-xl", None, ["RECORDS", "ptbxl_database.csv", "scp_statements.csv"]),
}


def download(db: str, to: Path | str) -> Path:
    """Download database `db` into `to/db` and return that folder; ValueError for an unknown name."""
    if db not in DATABASES:
        raise ValueError(f"unknown database {db!r}; choose one of {', '.join(DATABASES)}")
    import wfdb

    slug, annotators, extra = DATABASES[db]
    target = Path(to) / db
    records: str | list[str] = "all"
    if db == "ptbxl":  # the plugin reads the 500 Hz records only; skip the 100 Hz copies
        records = [r for r in wfdb.get_record_list(slug) if r.startswith("records500/")] or "all"
    wfdb.dl_database(slug, str(target), records=records, annotators=annotators)
    wfdb.dl_files(slug, str(target), extra)
    return target
