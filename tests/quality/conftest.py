"""Fixtures of the quality tests: one phrase encoder and one METEOR process for the whole session."""

from __future__ import annotations

import pytest

from grand_engine.quality.captions import MeteorScorer, java_path
from grand_engine.quality.text_similarity import TextEncoder


@pytest.fixture(scope="session")
def encoder() -> TextEncoder:
    """The default encoder (bert-base-uncased when cached, else the packaged all-MiniLM-L6-v2)."""
    return TextEncoder.load()


@pytest.fixture(scope="session")
def meteor():
    """A METEOR scorer shared by the tests that need one (METEOR is a java program)."""
    if java_path() is None:
        pytest.skip("java is not installed (`make test` installs default-jre-headless when run as root)")
    with MeteorScorer() as scorer:
        yield scorer
