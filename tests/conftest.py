"""Shared fixtures.  Tests that read ``../shared`` (classic POMDP problems, ProcessBench)
skip cleanly when that folder is absent; its files are never copied into the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRIM_POMDP_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ``../shared``; skips the calling test when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


@pytest.fixture
def pomdp_problems_dir() -> Path:
    return shared_path("pomdp", "problems")


@pytest.fixture
def pomdp_collection_dir() -> Path:
    return shared_path("pomdp", "collection")


@pytest.fixture
def processbench_dir() -> Path:
    return shared_path("data", "processbench")
