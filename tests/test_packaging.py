"""What a package carries besides code: its licenses, metadata and version.

Building a wheel takes a release build, too slow for the suite; what the
wheel holds comes from the same metadata that the editable install of the
test run was made from, so the license files are checked in the installed
distribution (``.dist-info/licenses/``) as well as in the repository.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import nvmefast

ROOT = Path(__file__).resolve().parent.parent
LICENSES = ("LICENSE-MIT", "LICENSE-APACHE")


def _pyproject() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_the_license_texts_are_the_two_the_metadata_names() -> None:
    mit = (ROOT / "LICENSE-MIT").read_text()
    apache = (ROOT / "LICENSE-APACHE").read_text()
    # The operative sentences of each license, as OSI publishes them.
    assert "Copyright (c) the nvmefast developers" in mit
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in mit
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in mit
    assert "Apache License\n                           Version 2.0, January 2004" in apache
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in apache
    assert "9. Accepting Warranty or Additional Liability." in apache
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["license"] == "MIT OR Apache-2.0"  # PEP 639: an SPDX expression
    assert project["license-files"] == list(LICENSES)
    with open(ROOT / "Cargo.toml", "rb") as f:
        assert tomllib.load(f)["package"]["license"] == "MIT OR Apache-2.0"


def test_the_installed_distribution_carries_the_licenses() -> None:
    dist = importlib.metadata.distribution("nvmefast")
    assert dist.metadata["License-Expression"] == "MIT OR Apache-2.0"
    assert sorted(dist.metadata.get_all("License-File") or []) == sorted(LICENSES)
    for name in LICENSES:
        assert dist.read_text(f"licenses/{name}") == (ROOT / name).read_text(), name


def test_metadata_names_authors_and_project_urls() -> None:
    meta = importlib.metadata.metadata("nvmefast")
    assert meta["Author"] == "The nvmefast developers"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())


def test_version_flag_prints_the_installed_version() -> None:
    version = importlib.metadata.version("nvmefast")
    assert nvmefast.__version__ == version
    r = subprocess.run([sys.executable, "-m", "nvmefast.cli", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"nvmefast {version}\n"
    # One version, Cargo.toml's: the wheel takes it from there (dynamic in pyproject).
    with open(ROOT / "Cargo.toml", "rb") as f:
        assert tomllib.load(f)["package"]["version"] == version
