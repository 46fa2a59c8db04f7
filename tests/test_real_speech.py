"""Real speech in, offline: EnCodec through the whole pipeline (its architecture, tiny and untrained,
stands in for the pretrained weights) and a LibriSpeech source built from a fixture in its layout."""

import json
import math
import shutil

import pytest
import soundfile as sf
import torch

import mini_most.ablate as ablate_module
from mini_most import MoST, MoSTConfig, set_seed
from mini_most.ablate import SHIPPED_BASES, SMOKE, AblationConfig, ablate, base_folder, base_settings, merge
from mini_most.codec import EncodecCodec, load_codec
from mini_most.corpus import LIBRISPEECH, build_librispeech, encode_corpus, load_corpus
from mini_most.corpus import main as corpus_main
from mini_most.evaluate import speak
from mini_most.judge import StockRecogniser, normalize, wer
from mini_most.tokens import Tokenizer, batches, config_for, task_stream
from mini_most.train import TrainConfig, Trainer
from mini_most.train import main as train_main
from mini_most.utils import DATA_SAMPLES

SAMPLES = DATA_SAMPLES / "corpus"


def espeak_samples() -> list[dict]:
    """The 24 held-out eSpeak clips that ship for listening (16 kHz mono), with their texts."""
    return json.loads((SAMPLES / "samples.json").read_text())["utterances"]


def small_corpus(folder, splits=("train",) * 16 + ("validation",) * 4 + ("test",) * 4):
    """A built corpus (manifest + wavs) from the shipped clips, with the splits given in order."""
    items = []
    for it, split in zip(espeak_samples(), splits):
        (folder / "wav").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES / it["path"], folder / "wav" / f"{it['id']}.wav")
        items.append(dict(it, split=split, path=f"wav/{it['id']}.wav"))
    texts = [it["text"] for it in items if it["split"] == "train"]
    (folder / "text_only.txt").write_text("\n".join(texts) + "\n")
    (folder / "manifest.json").write_text(json.dumps({"sample_rate": 16000, "utterances": items}))
    return folder


@pytest.fixture(scope="module")
def encodec_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("encodec")
    encode_corpus(small_corpus(root / "built"), root / "tokens", EncodecCodec.untrained(), progress=False)
    return load_corpus(root / "tokens")


# --- EnCodec ------------------------------------------------------------------------------------

def test_encodec_architecture_rates_shapes_and_record():
    codec = EncodecCodec.untrained()
    assert (codec.sample_rate, codec.frame_rate, codec.cardinality) == (24_000, 75, 1024)
    assert codec.num_codebooks == codec.model_codebooks == 2                      # 1.5 kbps = 2 x 10 bits x 75 Hz
    wav = 0.1 * torch.randn(2, 1, 24_000, generator=torch.Generator().manual_seed(0))
    codes = codec.encode(wav)
    assert codes.shape == (2, 2, 75) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 1024 and len(codes.unique()) > 4      # not one code everywhere
    out = codec.decode(codes)
    assert out.shape == (2, 1, 75 * 320) and torch.isfinite(out).all()
    assert codec.decode(codes[:, :1]).shape == (2, 1, 75 * 320)                     # a prefix of codebooks decodes
    # the record rebuilds the same codec: same codes for the same audio
    again = load_codec(json.loads(json.dumps(codec.info())))
    assert torch.equal(again.encode(wav), codes)
    assert EncodecCodec.untrained(3.0).encode(wav).shape == (2, 4, 75)              # 3 kbps: 4 codebooks
    with pytest.warns(UserWarning, match="resampled from 16000 Hz to 24000 Hz"):
        assert codec.encode(wav[..., :16_000], sample_rate=16_000).shape == (2, 2, 75)


@pytest.mark.parametrize("bad, words", [(2.0, "offers"), (True, "offers"), ("1.5", "offers")])
def test_encodec_bad_bandwidth_says_which_exist(bad, words):
    with pytest.raises(ValueError, match=words):
        EncodecCodec.untrained(bad)


def test_encodec_pretrained_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))                 # an empty cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    assert not EncodecCodec.is_cached()
    with pytest.raises(RuntimeError, match="Go online once"):
        load_codec("encodec")


def test_codec_record_mismatch_is_refused():
    info = load_codec().info()
    with pytest.raises(ValueError, match="other mel-RVQ codebooks"):
        load_codec(dict(info, codebooks_sha256="0" * 64))
    with pytest.raises(ValueError, match="made at level 9.0"):              # same codebooks, another level
        load_codec(dict(info, level=9.0))
    with pytest.raises(ValueError, match="names no codec"):
        load_codec({"name": "HubertUnits"})


def test_encodec_corpus_sizes_the_model_and_its_ids(encodec_corpus):
    c = encodec_corpus
    assert c.codec["name"] == "EncodecCodec" and c.codec["frame_rate"] == 75 and c.model_codebooks == 2
    for u in c.utterances:                                   # 75 frames per second of speech (16 kHz -> 24 kHz)
        assert u.codes.shape[0] == 2 and abs(u.codes.shape[1] - 75 * u.seconds) <= 2
    cfg = config_for(c, "toy")
    assert (cfg.audio_codebooks, cfg.audio_cardinality, cfg.vocab_size) == (2, 1024, 320 + 2 * 1024)
    longest = max(u.codes.shape[1] * 2 + len(u.text.encode()) + 5 for u in c.utterances)
    assert cfg.max_position_embeddings >= longest - 1 and cfg.max_position_embeddings % 256 == 0
    assert config_for(load_corpus(), "toy") == MoSTConfig.preset("toy")             # the shipped corpus: unchanged
    wide = config_for(c, "toy", codebooks=2, max_position_embeddings=4096)
    assert wide.max_position_embeddings == 4096                                      # an override wins
    with pytest.raises(ValueError, match="has 1 to 2"):
        config_for(c, "toy", codebooks=3)
    tok = Tokenizer(cfg, codebooks=2)
    u = c.split("train")[0]
    ex = tok.tts(u.text, u.codes)
    audio = ex.modality.bool()
    assert audio.sum() == 2 * u.codes.shape[1]                                       # every code is one audio id
    assert (ex.ids[audio] >= 320).all() and (ex.ids[audio] < 320 + 2048).all()
    assert torch.equal(tok.decode_audio(ex.ids[audio]), u.codes)


def test_encodec_wider_bandwidth_grows_the_vocabulary(tmp_path):
    # 3 kbps: 4 codebooks, more ids than the toy vocabulary holds: the config grows to hold them
    encode_corpus(small_corpus(tmp_path / "built"), tmp_path / "tok", EncodecCodec.untrained(3.0), progress=False)
    c = load_corpus(tmp_path / "tok")
    cfg = config_for(c, "toy")
    assert (cfg.audio_codebooks, cfg.vocab_size) == (4, 320 + 4 * 1024) and c.model_codebooks == 4
    tok = Tokenizer(cfg, codebooks=4)
    ids = tok.asr(c.utterances[0].codes, c.utterances[0].text).ids
    assert int(ids.max()) < cfg.vocab_size and (cfg.token_modality(ids) == 1).sum() == 4 * c.utterances[0].codes.shape[1]
    assert MoST(cfg)(ids[None]).logits.shape[-1] == 320 + 4 * 1024


def test_encodec_trains_generates_and_decodes(encodec_corpus):
    c = encodec_corpus
    set_seed(0)
    cfg = config_for(c, "toy")
    trainer = Trainer(MoST(cfg), c, TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0,
                                                eval_batches=1, codebooks=2, precision="fp32"))
    trainer.train(progress=False)
    assert len(trainer.history) == 3 and all(math.isfinite(h["loss"]) for h in trainer.history)
    ev = trainer.evaluate()
    assert math.isfinite(ev["audio_loss"])
    codes = speak(trainer.model, trainer.tok, [c.split("test")[0].text], max_frames=6, temperature=1.0, seed=0)[0]
    assert codes.shape[0] == 2 and codes.shape[1] <= 6
    codec = c.load_codec()
    assert codec.info() == c.codec
    frames = torch.randint(0, 1024, (1, 2, 10), generator=torch.Generator().manual_seed(1))
    wav = codec.decode(codes[None] if codes.shape[1] else frames)
    assert wav.shape[-1] == 320 * (codes.shape[1] or 10) and torch.isfinite(wav).all()
    # the judge hears 24 kHz audio: it resamples to its 16 kHz itself
    assert isinstance(StockRecogniser().transcribe(wav[0], codec.sample_rate), str)


def test_encodec_ablation_runs_on_its_corpus(encodec_corpus, tmp_path):
    cfg = AblationConfig(**dict(SMOKE, asr_sentences=2, tts_sentences=2, text_sentences=2))
    results = ablate(["modality", "dense"], [0], cfg, tmp_path, encodec_corpus, progress=False, log=lambda *a: None)
    assert results["codec"] == encodec_corpus.codec
    assert results["model_config"]["audio_codebooks"] == 2
    assert [r["arm"] for r in results["runs"]] == ["modality", "dense"]
    for r in results["runs"]:
        assert math.isfinite(r["asr_cer"]) and math.isfinite(r["val_audio_loss"]) and "tts_judge_wer" in r
    # resuming into the same folder with another corpus is refused: its runs are not comparable
    with pytest.raises(ValueError, match="another corpus"):
        ablate(["modality"], [1], cfg, tmp_path, load_corpus(), progress=False, log=lambda *a: None)


def test_encodec_corpus_never_reuses_the_shipped_bases(encodec_corpus, monkeypatch, tmp_path):
    cfg = AblationConfig()                                   # the small preset: the shipped bases' settings
    assert base_settings(cfg) == json.loads((SHIPPED_BASES / "small_moe" / "base.json").read_text())["settings"]
    assert base_settings(cfg, encodec_corpus) != base_settings(cfg)          # other text: another base

    def would_train(*args, **kwargs):
        raise RuntimeError("trains a new base")
    monkeypatch.setattr(ablate_module, "train_base", would_train)
    assert base_folder("moe", cfg, None, tmp_path) == SHIPPED_BASES / "small_moe"    # 0.4.0's call: the shipped one
    with pytest.raises(RuntimeError, match="trains a new base"):
        base_folder("moe", cfg, encodec_corpus, tmp_path)


def test_merge_refuses_results_of_two_corpora(encodec_corpus, tmp_path):
    cfg = AblationConfig(**dict(SMOKE, asr_sentences=2, tts_sentences=2, text_sentences=2))
    for name, corpus in (("espeak", load_corpus()), ("encodec", encodec_corpus)):
        ablate(["dense"], [0], cfg, tmp_path / name, corpus, judge=False, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="another corpus"):
        merge([tmp_path / "espeak" / "results.json", tmp_path / "encodec" / "results.json"])


def test_the_committed_grid_counts_as_made_on_the_corpus_before_0_4_2(tmp_path):
    """The committed grid has no corpus hash (it predates 0.4.1): it was made on 0.4.1's codes, which
    0.4.2's codec remade, so it must not be extended or merged with runs on today's corpus."""
    old = json.loads((ablate_module.COMMITTED / "results.json").read_text())
    assert "corpus_sha256" not in old and ablate_module.CORPUS_BEFORE_0_4_2 != load_corpus().fingerprint()
    shutil.copy(ablate_module.COMMITTED / "results.json", tmp_path / "results.json")
    with pytest.raises(ValueError, match="another corpus"):        # refused before anything trains
        ablate(["dense"], [9], AblationConfig(**old["config"]), tmp_path, progress=False, log=lambda *a: None)
    cfg = AblationConfig(**dict(SMOKE, asr_sentences=2, tts_sentences=2, text_sentences=2))
    ablate(["dense"], [0], cfg, tmp_path / "new", judge=False, progress=False, log=lambda *a: None)
    new = json.loads((tmp_path / "new" / "results.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**old, "config": new["config"]}))   # same settings, old corpus
    with pytest.raises(ValueError, match="another corpus"):
        merge([tmp_path / "new" / "results.json", tmp_path / "old.json"])


def test_resume_on_another_codecs_corpus_is_refused(encodec_corpus, tmp_path):
    # the checkpoint's codec record tells the codecs apart (0.4.1's offline codec made 2 x 1024 codes, like EnCodec at 1.5 kbps)
    set_seed(0)
    t = Trainer(MoST(MoSTConfig.preset("toy")), load_corpus(), TrainConfig(steps=1, batch_size=2, eval_every=0,
                                                                            precision="fp32"))
    t.train(progress=False)
    t.save(tmp_path / "c.safetensors")
    assert Trainer.load(tmp_path / "c.safetensors", load_corpus()).step == 1
    with pytest.raises(ValueError, match="trained on codes of the codec"):
        Trainer.load(tmp_path / "c.safetensors", encodec_corpus)


def test_trainer_takes_the_codecs_codebooks_by_default(encodec_corpus):
    t = Trainer(MoST(config_for(encodec_corpus, "toy")), encodec_corpus, TrainConfig(steps=1, batch_size=2))
    assert t.config.codebooks == t.tok.codebooks == 2
    assert Trainer(MoST(MoSTConfig.preset("toy")), load_corpus(), TrainConfig(steps=1)).config.codebooks == 1


def test_full_preset_keeps_room_for_the_markers_after_a_wider_audio_range(tmp_path):
    encode_corpus(small_corpus(tmp_path / "built"), tmp_path / "tok", EncodecCodec.untrained(3.0), progress=False)
    cfg = config_for(load_corpus(tmp_path / "tok"), "full")
    assert cfg.audio_token_end == 100002 + 4 * 1024 and cfg.vocab_size >= cfg.audio_token_end + 6
    with pytest.warns(UserWarning, match="BPE"):
        tok = Tokenizer(cfg, codebooks=4)                    # its markers sit right after the audio range
    assert max(tok.marker.values()) < cfg.vocab_size


def test_codec_records_that_do_not_fit_the_codec_are_refused():
    info = load_codec().info()
    with pytest.raises(ValueError, match="frame_rate=75"):
        load_codec(dict(info, frame_rate=75))
    with pytest.raises(ValueError, match="num_codebooks=4"):
        load_codec(dict(EncodecCodec.untrained().info(), num_codebooks=4))
    with pytest.raises(ValueError, match="cannot rebuild"):
        load_codec(dict(EncodecCodec.untrained().info(), weights="my-own"))
    with pytest.raises(ValueError, match="needs weights="):
        EncodecCodec(1.5, model=EncodecCodec.untrained().model)


def test_encodec_command_line_encode_then_train(tmp_path, capsys):
    built = small_corpus(tmp_path / "built")
    corpus_main(["encode", "--codec", "encodec-untrained", "--corpus", str(built), "--out", str(tmp_path / "tok")])
    assert load_corpus(tmp_path / "tok").codec["weights"] == "untrained-tiny-seed0"
    train_main(["--corpus", str(tmp_path / "tok"), "--preset", "toy", "--steps", "2", "--batch-size", "4",
                "--precision", "fp32", "--out", str(tmp_path / "run.safetensors")])
    assert (tmp_path / "run.safetensors").is_file()
    loaded = Trainer.load(tmp_path / "run.safetensors", load_corpus(tmp_path / "tok"))
    assert loaded.tok.codebooks == 2 and loaded.model.config.audio_codebooks == 2


# --- LibriSpeech ----------------------------------------------------------------------------------

def librispeech_fixture(root, long_seconds=0.0):
    """LibriSpeech's on-disk layout, from the shipped clips: 3 subsets, 2 speakers each, FLAC + trans.txt.
    With long_seconds > 0 the first utterance of each chapter is padded to that length."""
    clips = espeak_samples()
    layout = {"train-clean-100": (19, 27), "dev-clean": (84, 174), "test-clean": (61, 121)}
    expected = {}
    k = 0
    for subset, speakers in layout.items():
        for spk in speakers:
            folder = root / "LibriSpeech" / subset / str(spk) / "198"
            folder.mkdir(parents=True)
            lines = []
            for n in range(4):
                it = clips[k % len(clips)]
                k += 1
                wav, sr = sf.read(SAMPLES / it["path"], dtype="float32")
                if n == 0 and long_seconds:
                    wav = torch.cat([torch.from_numpy(wav), torch.zeros(int(long_seconds * sr))]).numpy()
                uid = f"{spk}-198-{n:04d}"
                sf.write(folder / f"{uid}.flac", wav, sr, format="FLAC")
                lines.append(f"{uid} {it['text'].upper()}")
                expected[uid] = (subset, it["text"], len(wav) / sr)
            (folder / f"{spk}-198.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


def test_librispeech_layout_builds_the_same_corpus_format(tmp_path, capsys):
    expected = librispeech_fixture(tmp_path / "ls", long_seconds=5.0)
    corpus_main(["build", "--source", "librispeech", "--root", str(tmp_path / "ls"), "--out", str(tmp_path / "c"),
                 "--subset", "train-clean-100", "dev-clean", "test-clean", "--max-seconds", "4.5"])
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    kept = {uid: v for uid, v in expected.items() if v[2] <= 4.5}
    dropped = len(expected) - len(kept)
    assert dropped == 6 and f"dropped {dropped} utterances longer than 4.5 s" in printed
    assert sum(manifest["dropped_longer"].values()) == dropped
    items = {it["id"]: it for it in manifest["utterances"]}
    assert set(items) == set(kept)
    for uid, (subset, text, seconds) in kept.items():
        it = items[uid]
        assert it["split"] == LIBRISPEECH[subset][0] and it["text"] == text                   # lowercased again
        assert it["speaker"] == f"librispeech {uid.split('-')[0]}" and abs(it["seconds"] - seconds) < 1e-3
        assert (tmp_path / "c" / it["path"]).is_file()
    speakers = {s: {it["speaker"] for it in items.values() if it["split"] == s} for s in ("train", "validation", "test")}
    assert all(speakers.values()) and not (speakers["train"] & speakers["validation"] or speakers["train"] & speakers["test"])
    assert (tmp_path / "c" / "text_only.txt").read_text().split("\n")[:-1] == \
        [it["text"] for it in manifest["utterances"] if it["split"] == "train"]
    assert manifest["splits"]["validation"]["speakers"] == 2 and "CC BY 4.0" in json.dumps(manifest["licences"])
    # then as any corpus: encoded, loaded, laid out as tasks
    encode_corpus(tmp_path / "c", tmp_path / "tok", progress=False)
    corpus = load_corpus(tmp_path / "tok")
    assert len(corpus.utterances) == len(kept) and corpus.info["source"] == "librispeech"
    tok = Tokenizer(config_for(corpus, "toy"))
    batch = next(batches(task_stream(corpus, tok, {"asr": 1.0}, seed=0), 4, tok.pad, max_len=tok.config.max_position_embeddings))
    assert batch.tokens.shape[0] == 4 and (batch.modality == 1).any()


def test_librispeech_missing_or_broken_input_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download"):
        build_librispeech(tmp_path / "c", tmp_path / "nothing", ["dev-clean"])
    with pytest.raises(ValueError, match="unknown LibriSpeech subset"):
        build_librispeech(tmp_path / "c", tmp_path / "nothing", ["dev-dirty"])
    with pytest.raises(SystemExit):                          # the command line: argparse's error, not a traceback
        corpus_main(["build", "--source", "librispeech", "--root", str(tmp_path / "nothing"), "--subset", "dev-clean",
                     "--out", str(tmp_path / "c")])
    librispeech_fixture(tmp_path / "ls")
    trans = next((tmp_path / "ls" / "LibriSpeech" / "dev-clean").glob("*/*/*.trans.txt"))
    (trans.parent / f"{trans.name.split('.')[0]}-0001.flac").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        build_librispeech(tmp_path / "c", tmp_path / "ls", ["dev-clean"])
    trans.write_text("not an id line\n")
    with pytest.raises(ValueError, match="TRANSCRIPT"):
        build_librispeech(tmp_path / "c", tmp_path / "ls", ["dev-clean"])
    assert not (tmp_path / "c").exists()                  # every subset is checked before anything is written


def test_librispeech_rebuild_replaces_its_own_build_and_spares_other_corpora(tmp_path):
    librispeech_fixture(tmp_path / "ls")
    build_librispeech(tmp_path / "c", tmp_path / "ls", ["dev-clean", "test-clean"], progress=False)
    assert (tmp_path / "c" / "wav" / "test").is_dir()
    m = build_librispeech(tmp_path / "c", tmp_path / "ls", ["dev-clean"], progress=False)
    files = sorted(p.name for p in (tmp_path / "c" / "wav").rglob("*.flac"))
    assert files == sorted(f"{it['id']}.flac" for it in m["utterances"]) and not (tmp_path / "c" / "wav" / "test").exists()
    small_corpus(tmp_path / "espeak")                     # an eSpeak build: never overwritten
    with pytest.raises(FileExistsError, match="another corpus"):
        build_librispeech(tmp_path / "espeak", tmp_path / "ls", ["dev-clean"], progress=False)


def test_stock_recogniser_hears_mosts_clips():
    ref = DATA_SAMPLES / "reference"
    texts = json.loads((ref / "transcripts.json").read_text())
    wav, sr = sf.read(ref / "exp_4.wav", dtype="float32")
    heard = StockRecogniser().transcribe(torch.from_numpy(wav), sr)
    assert wer([normalize(texts["exp_4.wav"])], [normalize(heard)]) < 0.3
