"""Output-free copies of the numbered notebooks for a class (`make student`).

    python tools/student.py [--out build/student]

Each copy keeps every cell but no outputs, execution counts or run metadata, so students run
them themselves; the solutions in notebooks/solutions/ are not copied. The copies find the data
through `mini_most.DATA_SAMPLES` (the repository's data_samples/), so they run from any folder
with mini_most installed from the checkout (`pip install -e .`, as `make` does).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def strip(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("mini_most", None)
    return nb


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "student")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nbformat.write(strip(nbformat.read(path, as_version=4)), args.out / path.name)
        written.append(args.out / path.name)
    print(f"{len(written)} output-free notebooks in {args.out}")
    return written


if __name__ == "__main__":
    main()
