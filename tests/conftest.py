"""Fixtures shared by the test files."""

import pytest

from mini_most.corpus import load_corpus


@pytest.fixture(scope="session")
def corpus():
    """The shipped pre-tokenized corpus (data_samples/corpus), loaded once per test run."""
    return load_corpus()
