"""The committed notebooks: run in order at classroom scale, with outputs, no errors, small."""

import json
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tools"))
from run_notebooks import code_hash  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name.startswith("00_quickstart") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_was_run_in_order_at_classroom_scale(path):
    nb = json.loads(path.read_text())
    meta = nb["metadata"].get("mini_most", {})
    assert meta.get("scale") == "classroom", "run `make notebooks` before committing"
    assert meta.get("code_sha256") == code_hash(nbformat.read(path, as_version=4)), \
        "code changed since the outputs were made: run `make notebooks`"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "cells not run once, top to bottom"
    for c in code:
        errors = [o for o in c["outputs"] if o["output_type"] == "error"]
        if "raises-exception" in c["metadata"].get("tags", []):
            assert errors and "NBVAL_RAISES_EXCEPTION" in "".join(c["source"]), "an expected error must show, marked"
        else:
            assert not errors, f"error output in cell: {''.join(c['source'])[:80]}"
    assert any(c["outputs"] for c in code)
    assert path.stat().st_size < 3 * 2**20, "notebooks stay under 3 MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_what_and_cost_then_seeds(path):
    nb = json.loads(path.read_text())
    intro = "".join(nb["cells"][0]["source"]).lower()
    assert "you'll learn" in intro or "you will learn" in intro
    assert "cost" in intro
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "set_seed(" in "".join(first_code["source"])
    assert "exercise" in "".join(nb["cells"][-1]["source"]).lower()
