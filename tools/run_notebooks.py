"""Execute the numbered notebooks in order, in place, headless, and record how they were run.

    MINI_MOST_SCALE=classroom python tools/run_notebooks.py [notebooks/03_*.ipynb ...]

Each notebook runs in a fresh kernel from the notebooks/ folder; its outputs and plots are
written back, and its metadata gets {"mini_most": {"scale", "seconds", "code_sha256"}}, which
tests/test_notebooks.py checks (the hash catches a cell edited after the run). A cell may fail
only if it carries the `raises-exception` tag.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mini_most.utils import scale

ROOT = Path(__file__).resolve().parent.parent


def code_hash(nb) -> str:
    """A hash of the notebook's code, to tell whether its outputs come from this code."""
    code = "\n\x00".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nb.metadata["mini_most"] = {"scale": scale(), "seconds": round(seconds, 1), "code_sha256": code_hash(nb)}
    nbformat.write(nb, path)
    return seconds


def main(paths: list[str]) -> None:
    notebooks = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    total = 0.0
    for path in notebooks:
        print(f"{path.name} at {scale()} scale ...", end=" ", flush=True)
        seconds = run(path)
        total += seconds
        print(f"{seconds:.0f} s", flush=True)
    print(f"{len(notebooks)} notebooks in {total:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
