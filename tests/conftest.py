"""Fixtures shared by the test files."""

import os

import pytest

from mini_most.corpus import load_corpus

# the tests are about the shipped corpus: a user's $MINI_MOST_CORPUS (another corpus) must not reach them
os.environ.pop("MINI_MOST_CORPUS", None)


@pytest.fixture(scope="session")
def corpus():
    """The shipped pre-tokenized corpus (data_samples/corpus), loaded once per test run."""
    return load_corpus()
