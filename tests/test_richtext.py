"""The rich text (King James Bible): shipped, split by whole chapters, refused when broken."""

import gzip
import shutil

import pytest

from mini_most import richtext


def test_shipped_text_is_the_whole_bible_split_by_chapter():
    text = richtext.load()
    assert len(text.train) + len(text.held_out) == richtext.VERSES
    assert text.train[0] == "In the beginning God created the heaven and the earth."
    assert text.train[-1].startswith("The grace of our Lord Jesus Christ")        # Revelation 22:21
    # every 20th of 1,189 chapters: 59 of them (chapter 20, 40, ... 1180), about 5% of the verses
    assert len(text.held_out) == 1573 and 0.04 < len(text.held_out) / richtext.VERSES < 0.06
    assert "Jesus wept." not in text.held_out and "Jesus wept." in text.train   # John 11 (chapter 1,008) trains


def test_split_holds_out_whole_chapters():
    verses = [(f"Ge{c}", f"chapter {c} verse {v}") for c in range(1, 8) for v in range(3)]
    train, held_out = richtext.split(verses, every=3)
    assert held_out == [f"chapter {c} verse {v}" for c in (3, 6) for v in range(3)]
    assert len(train) == 5 * 3 and not set(train) & set(held_out)
    with pytest.raises(ValueError, match="at least 2"):
        richtext.split(verses, every=1)


def test_fingerprint_tells_texts_apart():
    a = richtext.RichText(["a b", "c"], ["d"], "x")
    assert a.fingerprint() == richtext.RichText(["a b", "c"], ["d"], "y").fingerprint()
    assert a.fingerprint() != richtext.RichText(["a b"], ["c", "d"], "x").fingerprint()   # a verse moved part


def test_bad_files_are_refused_with_the_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match="richtext build"):
        richtext.load(tmp_path / "none.txt.gz")
    bad = tmp_path / "bad.txt"
    bad.write_text("Ge1:1 In the beginning.\nnot a verse\n")
    with pytest.raises(ValueError, match="line 2"):
        richtext.load(bad)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(richtext.KJV.read_bytes()[:5000])                              # a truncated download
    with pytest.raises(ValueError, match="cannot be read"):
        richtext.load(cut)
    empty = tmp_path / "empty.txt.gz"
    empty.write_bytes(gzip.compress(b"\n"))
    with pytest.raises(ValueError, match="no verses"):
        richtext.load(empty)


def test_cli_stats_and_missing_program(tmp_path, monkeypatch, capsys):
    richtext.main(["stats"])
    assert '"verses": 1573' in capsys.readouterr().out
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit):
        richtext.main(["build", "--out", str(tmp_path / "kjv.txt.gz")])
    assert "apt-get install bible-kjv" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv is not installed (.ci/run installs it)")
def test_build_remakes_the_shipped_file_byte_for_byte(tmp_path):
    out = tmp_path / "kjv.txt.gz"
    info = richtext.build(out)
    assert out.read_bytes() == richtext.KJV.read_bytes()
    assert info["train"]["verses"] + info["held_out"]["verses"] == richtext.VERSES
