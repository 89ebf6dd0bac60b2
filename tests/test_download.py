"""download.py needs internet, so only its argument checks run here."""
from __future__ import annotations

from pathlib import Path

import pytest

from ecgbench.data.download import DATABASES, download


def test_unknown_database_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown database 'ptb-xl'; choose one of mitdb, ptbdb, ptbxl"):
        download("ptb-xl", tmp_path)
    assert not any(tmp_path.iterdir())  # refused before touching the disk or the network


def test_folders_are_the_ones_the_plugins_look_for() -> None:
    assert set(DATABASES) == {"mitdb", "ptbdb", "ptbxl"}
    assert DATABASES["ptbxl"][0] == "ptb-xl"
    assert "ptbxl_database.csv" in DATABASES["ptbxl"][2] and "RECORDS" in DATABASES["mitdb"][2]
