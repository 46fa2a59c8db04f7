"""Rich text: the King James Bible (1611; public domain), for the ablation's text base and its retention test.

The corpus's own text is a grammar of about a hundred words, and the speech tasks speak the same
sentences: a model that keeps them after speech training has kept little. MoST expects routing by
modality to matter for text ability *beyond* what the speech data rehearses, so the ablation needs
a text of its own: 31,102 verses, 790,000 words, in English four centuries old.

    data_samples/text/kjv.txt.gz     one verse per line, "<book><chapter>:<verse> <text>", e.g.
                                     "Ge1:1 In the beginning God created the heaven and the earth."
    python -m mini_most.richtext build --out data_samples/text/kjv.txt.gz   # remake it (Debian's bible-kjv)
    python -m mini_most.richtext stats                                      # what is in it

The held-out part is whole chapters, every 20th of the Bible's 1,189 counted from Genesis 1 (59
chapters, 1,573 verses: 5%): a held-out verse is never the neighbour of a training verse in
the same chapter, though the Bible repeats itself (genealogies, "And the LORD spake unto Moses,
saying"), so some held-out phrases are in the training part too, as they would be in any text.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .files import write_bytes_atomic
from .utils import DATA_SAMPLES

KJV = DATA_SAMPLES / "text" / "kjv.txt.gz"
VERSES = 31_102                        # in the King James Version as Debian's bible-kjv-text has it
HELD_OUT_EVERY = 20                    # every 20th chapter is held out
LINE = re.compile(r"^(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>\S.*)$")


@dataclass
class RichText:
    train: list[str]         # verse texts, in the Bible's order
    held_out: list[str]      # the held-out chapters' verses: for measuring what a model keeps
    source: str              # where it came from (the file)

    def fingerprint(self) -> str:
        """A hash of both parts: a base trained on one text is not reused for another."""
        h = hashlib.sha256()
        for part in (self.train, self.held_out):
            h.update("\n".join(part).encode())
            h.update(b"\0")
        return h.hexdigest()


def parse(lines: list[str], source: str = "text") -> list[tuple[str, str]]:
    """[(chapter, verse text)] from "<book><chapter>:<verse> <text>" lines; a line in another form is an error."""
    out = []
    for n, line in enumerate(lines, 1):
        m = LINE.match(line)
        if m is None:
            raise ValueError(f"{source}, line {n}: {line[:60]!r} is not '<book><chapter>:<verse> <text>' "
                             "(e.g. 'Ge1:1 In the beginning...'): remake the file with python -m mini_most.richtext build")
        out.append((m["book"] + m["chapter"], m["text"]))
    return out


def split(verses: list[tuple[str, str]], every: int = HELD_OUT_EVERY) -> tuple[list[str], list[str]]:
    """(train, held_out): the verses of every `every`-th chapter (the first chapter is chapter 0) held out."""
    if every < 2:
        raise ValueError(f"every={every}: hold out one chapter in at least 2, or nothing is left to train on")
    train, held_out, chapter, last = [], [], -1, None
    for key, text in verses:
        if key != last:
            chapter, last = chapter + 1, key
        (held_out if chapter % every == every - 1 else train).append(text)
    return train, held_out


def load(path: Path | str = KJV, every: int = HELD_OUT_EVERY) -> RichText:
    """The shipped King James Bible (or another file in its form), split into train and held-out verses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no rich text at {path}: remake it with python -m mini_most.richtext build "
                                f"--out {path} (needs Debian's bible-kjv: apt-get install bible-kjv)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = [line for line in f.read().split("\n") if line]
    except (OSError, EOFError, UnicodeDecodeError) as e:     # a truncated or foreign file
        raise ValueError(f"{path} cannot be read ({e}): remake it with python -m mini_most.richtext build --out {path}") from e
    if not lines:
        raise ValueError(f"{path} holds no verses: remake it with python -m mini_most.richtext build --out {path}")
    train, held_out = split(parse(lines, str(path)), every)
    return RichText(train, held_out, str(path))


def from_bible_program() -> list[str]:
    """Every verse, from Debian's `bible` program (package bible-kjv; the text is bible-kjv-text)."""
    if shutil.which("bible") is None:
        raise RuntimeError("the `bible` program is not installed: apt-get install bible-kjv (Debian/Ubuntu)")
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.split("\n") if line]
    parse(lines, "the bible program's output")                  # every line in the expected form
    if len(lines) != VERSES:
        raise RuntimeError(f"the bible program gave {len(lines)} verses, not the King James Version's {VERSES}")
    return lines


def build(out: Path) -> dict:
    lines = from_bible_program()
    # mtime=0: the same text makes the same bytes, so a rebuild shows no change in git
    write_bytes_atomic(out, gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=9, mtime=0))
    return stats(load(out))


def stats(text: RichText) -> dict:
    def count(part):
        return {"verses": len(part), "words": sum(len(v.split()) for v in part), "bytes": sum(len(v.encode()) for v in part)}
    return {"source": text.source, "train": count(text.train), "held_out": count(text.held_out),
            "sha256": text.fingerprint()}


def main(argv=None):
    import json
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the King James Bible from Debian's bible-kjv")
    b.add_argument("--out", type=Path, default=Path("build/kjv.txt.gz"), help=f"(the shipped copy: {KJV.relative_to(KJV.parents[2])})")
    s = sub.add_parser("stats", help="verses, words and bytes of each part")
    s.add_argument("--path", type=Path, default=KJV)
    args = ap.parse_args(argv)
    try:
        result = build(args.out) if args.command == "build" else stats(load(args.path))
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        ap.error(str(e))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
