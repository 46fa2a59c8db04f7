"""The exercise solutions run and their checks hold; `make student` copies are output-free."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.py"))


def test_every_numbered_notebook_has_solutions():
    numbered = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert numbered and numbered <= {p.stem for p in SOLUTIONS}
    for stem in numbered:  # and the notebook points to them
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        assert f"notebooks/solutions/{stem}.py" in nb.cells[-1].source


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_runs(path):
    env = dict(os.environ, MINI_MOST_SCALE="smoke")
    r = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("\n") >= 3          # one line per exercise at least


def test_student_copies_have_no_outputs(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import student
    written = student.main(["--out", str(tmp_path)])
    originals = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in written] == [p.name for p in originals]
    for copy, original in zip(written, originals):
        a, b = nbformat.read(copy, as_version=4), nbformat.read(original, as_version=4)
        assert [c.source for c in a.cells] == [c.source for c in b.cells]
        code = [c for c in a.cells if c.cell_type == "code"]
        assert code and all(c.outputs == [] and c.execution_count is None for c in code)
        assert "mini_most" not in a.metadata
        assert any(c.outputs for c in b.cells if c.cell_type == "code")   # the originals keep theirs
