"""The corpus builder (mini_most.corpus), on a handful of sentences (espeak-ng must be installed in CI)."""

import json
import os

import pytest
import soundfile as sf

from mini_most import corpus as data

needs_espeak = pytest.mark.skipif(
    not data.espeak_available() and os.environ.get("CI") != "true",
    reason="espeak-ng is not installed (apt-get install espeak-ng); CI installs it and runs this")


def test_grammar_is_small_and_reproducible():
    import random
    a = [data.sentence(random.Random(3)) for _ in range(5)]
    assert a == [data.sentence(random.Random(3)) for _ in range(5)]
    vocab = set(data.vocabulary())
    assert 60 <= len(vocab) <= 150
    rng = random.Random(0)
    for _ in range(500):
        s = data.sentence(rng)
        assert "{" not in s and set(s.split()) <= vocab, s


def test_splits_are_by_sentence_and_near_their_shares():
    import random
    rng = random.Random(1)
    sentences = {data.sentence(rng) for _ in range(20000)}
    splits = [data.split_of(s) for s in sentences]
    for name, share in data.SPLITS.items():
        assert abs(splits.count(name) / len(splits) - share) < 0.02


@needs_espeak
def test_build_a_handful(tmp_path):
    m = data.build(tmp_path, utterances=12, text_only=30, seed=0, progress=False)
    assert sum(s["utterances"] for s in m["splits"].values()) == 12
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["splits"] == m["splits"] and len(on_disk["utterances"]) == 12
    seen = {}
    for it in m["utterances"]:
        wav, sr = sf.read(tmp_path / it["path"])
        assert sr == 16000 and wav.ndim == 1
        assert abs(len(wav) / sr - it["seconds"]) < 1e-3 and 0.5 < it["seconds"] < 10
        assert abs(wav).max() > 0.05  # speech, not silence
        assert it["split"] == data.split_of(it["text"])
        seen.setdefault(it["text"], set()).add(it["split"])
    assert all(len(s) == 1 for s in seen.values())
    text_only = (tmp_path / "text_only.txt").read_text().split("\n")[:-1]
    assert len(text_only) == 30 and all(data.split_of(s) == "train" for s in text_only)
    # same seed, same corpus
    m2 = data.build(tmp_path / "again", utterances=12, text_only=30, seed=0, progress=False)
    strip = lambda m: [{k: v for k, v in it.items() if k != "path"} for it in m["utterances"]]  # noqa: E731
    assert strip(m2) == strip(m)
    assert all((tmp_path / it["path"]).read_bytes() == (tmp_path / "again" / it["path"]).read_bytes()
               for it in m["utterances"])
    assert m["espeak_ng"].startswith("eSpeak NG") and m["gain"] == data.GAIN
    # the codec's train command runs on such a corpus: first 0.4.1's recipe (its eSpeak speech, no level) ...
    from mini_most import codec, voices
    codec.main(["train", "--corpus", str(tmp_path), "--out", str(tmp_path / "c.safetensors"), "--codebooks", "1",
                "--cardinality", "8", "--frames", "300", "--iters", "3", "--pool", "corpus", "--no-level"])
    plain = codec.MelRVQCodec.load(tmp_path / "c.safetensors")
    assert "level" not in plain.config and plain.cardinality == 8
    with pytest.raises(SystemExit):                                         # a floor stands under a level only
        codec.main(["train", "--corpus", str(tmp_path), "--no-level", "--floor", "3"])
    # ... then the default pool (other synthesisers), where they are installed (.ci/run installs them;
    # tests/test_voices.py says so by skipping where they are not)
    if voices.available("flite") and voices.shutil.which("bible"):
        codec.main(["train", "--corpus", str(tmp_path), "--out", str(tmp_path / "c.safetensors"), "--codebooks", "1",
                    "--cardinality", "8", "--frames", "300", "--iters", "3"])
        small = codec.MelRVQCodec.load(tmp_path / "c.safetensors")
        assert small.num_codebooks == 1 and small.cardinality == 8
        # fitted on the corpus's eSpeak speech, Flite on grammar sentences, Flite and eSpeak on KJV verses, at
        # the pool's speech level; the checkpoint says what it was fitted on
        from mini_most.files import load_tensors
        pool = json.loads(load_tensors(tmp_path / "c.safetensors", "codec")[1]["pool"])
        assert [p["part"].split()[0] for p in pool] == ["espeak", "flite", "flite"] and all(p["clips"] >= 1 for p in pool)
        assert -3 < small.config["level"] < 3 and small.info()["level"] == small.config["level"]
    assert (tmp_path / "c.log").read_text().count("saved c.safetensors") == 1     # the log of the last fit only
    # the listening subset copies held-out utterances only, with the corpus summary
    samples = data.export_samples(tmp_path, tmp_path / "samples", per_split=2)
    assert samples["utterances"] and all(it["split"] != "train" for it in samples["utterances"])
    assert all((tmp_path / "samples" / it["path"]).exists() for it in samples["utterances"])
    assert samples["corpus"]["splits"] == m["splits"]
    # the encode step: codes equal the codec's, texts and splits kept, loadable offline
    shipped = codec.load_codec()
    data.main(["encode", "--corpus", str(tmp_path), "--out", str(tmp_path / "tok")])
    meta = json.loads((tmp_path / "tok" / "utterances.json").read_text())
    loaded = data.load_corpus(tmp_path / "tok")
    assert [u.text for u in loaded.utterances] == [it["text"] for it in m["utterances"]]
    assert [u.split for u in loaded.utterances] == [it["split"] for it in m["utterances"]]
    for u, it in zip(loaded.utterances, m["utterances"]):
        assert u.codes.equal(shipped.encode_file(tmp_path / it["path"])[0])
    assert loaded.text_only == text_only and loaded.codec["frame_rate"] == 50
    assert meta["corpus"]["splits"] == m["splits"] and len(meta["rows"]) == 12


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        data.espeak("hello", "en-us", 160, 50)
