"""What a lab needs to adopt and cite the benchmark: a licence file and a citation file that agree with the package."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cff_field(name: str) -> str:
    match = re.search(rf"^{name}:\s*\"?([^\"\n]+)\"?\s*$", (REPO / "CITATION.cff").read_text(), re.MULTILINE)
    assert match, f"CITATION.cff has no top-level {name!r}"
    return match.group(1)


def test_the_citation_file_names_the_package_version_and_licence():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _cff_field("cff-version") == "1.2.0"
    assert _cff_field("version") == project["version"], "bump CITATION.cff's version with pyproject.toml's"
    assert _cff_field("license") == project["license"]


def test_the_licence_file_is_the_licence_the_package_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith(f"{project['license']} License"), "LICENSE's first line names the package's licence"
    assert "Permission is hereby granted, free of charge" in text
