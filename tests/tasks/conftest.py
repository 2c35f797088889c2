"""Shared fixtures: one data directory per test session holding the embedded datasets."""

from __future__ import annotations

import pytest

from star_core.tasks.data import digits, text


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A fresh data directory with digits and the default text corpus built in it."""
    root = tmp_path_factory.mktemp("tfds")
    digits.build_digits(root)
    text.build_text(text.DEFAULT_CORPUS, data_dir=root)
    return str(root)
