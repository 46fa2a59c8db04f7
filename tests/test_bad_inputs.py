"""The bad-input and fault sweep: every bad input meets an error (or a warning) that names the
problem, no command loses data, and nothing from a file or a manifest is trusted blindly.

Each case asserts the error type and that the message names the file, field or argument. The
lost-data cases fail on 0.3.0's code (the README's reliability section lists them)."""

import json
import math
import pickle
import subprocess
import warnings
from pathlib import Path

import pytest
import soundfile as sf
import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most import codec as codec_module
from mini_most import corpus as corpus_module
from mini_most.codec import MelRVQCodec, load_codec
from mini_most.convert import export_pretrained, load_pretrained
from mini_most.files import HASH_KEY, write_text_atomic
from mini_most.model import Gate, MoE
from mini_most.tokens import Tokenizer
from mini_most.train import TrainConfig, Trainer, load_weights, save_weights
from mini_most.train import main as train_main

TOY = MoSTConfig.preset("toy")


def toy_model(seed=0, **kw):
    set_seed(seed)
    return MoST(MoSTConfig.preset("toy", **kw)).eval()


@pytest.fixture(scope="module")
def codec():
    return load_codec()


# ================================================================================================
# lost data: each of these lost files or work in 0.3.0

def test_export_replaces_its_own_files_and_no_one_else_s(tmp_path):
    m = toy_model()
    (tmp_path / "notes.txt").write_text("the user's notes")
    export_pretrained(m, tmp_path, max_shard_bytes=600_000)                   # sharded
    export_pretrained(m, tmp_path)                                            # again, as one file
    export_pretrained(m, tmp_path, max_shard_bytes=600_000)                   # and sharded again
    assert (tmp_path / "notes.txt").read_text() == "the user's notes"
    assert not (tmp_path / "model.safetensors").exists()                      # the previous export's file went
    assert torch.equal(load_pretrained(tmp_path).lm_head.weight, m.lm_head.weight)
    # a folder holding weights or an index export_pretrained did not write is refused, untouched
    cases = {"garbage": {"model.safetensors": b"someone else's weights"},
             "save_weights": {},                                              # a trained model's weights file
             "foreign index": {"model.safetensors.index.json": json.dumps(
                 {"metadata": {}, "weight_map": {"lm_head.weight": "model-00001-of-00004.safetensors"}}).encode(),
                 "config.json": b"{}"}}
    for name, files in cases.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
        if name == "save_weights":
            save_weights(m, folder / "model.safetensors")
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        with pytest.raises(FileExistsError, match="export_pretrained did not write"):
            export_pretrained(m, folder, max_shard_bytes=200_000)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, name


def test_codec_train_checks_its_input_before_touching_the_log(tmp_path, capsys):
    out = tmp_path / "codec" / "mel_rvq.safetensors"
    out.parent.mkdir()
    out.with_suffix(".log").write_text("the previous training's log\n")
    with pytest.raises(SystemExit):
        codec_module.main(["train", "--corpus", str(tmp_path / "no_corpus"), "--out", str(out)])
    assert "no corpus at" in capsys.readouterr().err
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "manifest.json").write_text('{"utterances": [{"id": "0')     # truncated
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        codec_module.main(["train", "--corpus", str(tmp_path / "cut"), "--out", str(out)])
    assert out.with_suffix(".log").read_text() == "the previous training's log\n"


def test_no_command_writes_into_data_samples_unless_asked(monkeypatch):
    import importlib.util

    from mini_most import richtext
    built = []
    monkeypatch.setattr(richtext, "build", lambda out: built.append(out) or {})
    root = Path(__file__).parent.parent

    def tool(path):  # the scripts in tools/ and benchmarks/ are not a package: load them by path
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    defaults = {"codec train": codec_module.parser().parse_args(["train"]).out,
                "corpus encode": corpus_module.parser().parse_args(["encode"]).out,
                "corpus samples": corpus_module.parser().parse_args(["samples"]).out,
                "tools/learnability.py": tool(root / "tools" / "learnability.py").parser().parse_args([]).out,
                "benchmarks/codec.py": tool(root / "benchmarks" / "codec.py").parser().parse_args([]).json,
                "richtext build": richtext.main(["build"]) or built[0]}
    for command, out in defaults.items():
        assert out.parts[0] == "build", (command, out)


@pytest.mark.parametrize("args, message", [(["--utterances", "0"], "--utterances 0: give at least 1"),
                                           (["--festival", "-2"], "--festival -2: give at least 1"),
                                           (["--corpus", "no/such/corpus"], "no corpus at no/such/corpus")])
def test_codec_benchmark_refuses_what_it_cannot_measure(args, message, capsys):
    import importlib.util
    path = Path(__file__).parent.parent / "benchmarks" / "codec.py"
    spec = importlib.util.spec_from_file_location("codec_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main(args)
    assert message in capsys.readouterr().err


def test_train_command_saves_periodically_so_a_killed_run_keeps_its_steps(tmp_path, monkeypatch):
    out = tmp_path / "run.safetensors"
    real_step = Trainer._step_with_own_rng

    def dies_at_step_3(self, b):
        if self.step == 3:
            raise KeyboardInterrupt("killed")
        return real_step(self, b)
    monkeypatch.setattr(Trainer, "_step_with_own_rng", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_main(["--preset", "toy", "--steps", "6", "--batch-size", "4", "--checkpoint-every", "2",
                    "--out", str(out), "--precision", "fp32"])
    monkeypatch.undo()
    from mini_most.corpus import load_corpus
    resumed = Trainer.load(out, load_corpus())
    assert resumed.step == 2                                                  # the last periodic save survived
    assert resumed.config.checkpoint_every == 2


def test_train_command_checkpoints_every_100_steps_by_default(tmp_path, monkeypatch):
    seen = {}

    def record(self, steps=None, progress=True, checkpoint=None):
        seen.update(every=self.config.checkpoint_every, checkpoint=checkpoint)
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "train", record)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_main(["--preset", "toy", "--steps", "6"])
    assert seen == {"every": 100, "checkpoint": Path("runs") / "toy.safetensors"}


def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_text_atomic(path, json.dumps({"runs": [1, 2, 3]}))
    real = Path.write_text

    def dies_half_way(self, text, *a, **k):
        real(self, text[: len(text) // 2])
        raise OSError("killed mid-write")
    monkeypatch.setattr(Path, "write_text", dies_half_way)
    with pytest.raises(OSError, match="mid-write"):
        write_text_atomic(path, json.dumps({"runs": [1, 2, 3, 4]}))
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"runs": [1, 2, 3]}


# ================================================================================================
# silent wrong answers, now errors (or warnings)

def test_non_finite_weights_are_refused_when_loaded(tmp_path):
    m = toy_model()
    with torch.no_grad():
        m.layers[1].mlp.experts.up_proj[3, 0, 0] = float("nan")
    save_weights(m, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="layers.1.mlp.experts.up_proj.*NaN or inf"):
        load_weights(tmp_path / "w.safetensors")
    export_pretrained(m, tmp_path / "hf")
    with pytest.raises(ValueError, match="experts.3.up_proj.weight.*NaN or inf"):
        load_pretrained(tmp_path / "hf")
    from mini_most.corpus import load_corpus
    t = Trainer(m, load_corpus(), TrainConfig(steps=1, batch_size=2, eval_every=0, precision="fp32"))
    t.save(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="c.safetensors: tensor 'layers.1.mlp.experts.up_proj' holds NaN"):
        Trainer.load(tmp_path / "c.safetensors", load_corpus())
    books = torch.randn(1, 8, 80)
    books[0, 3, 5] = float("inf")
    MelRVQCodec(books).save(tmp_path / "codec.safetensors")
    with pytest.raises(ValueError, match="codec.safetensors: tensor 'codebooks' holds NaN or inf"):
        MelRVQCodec.load(tmp_path / "codec.safetensors")


def test_generate_refuses_non_finite_logits():
    m = toy_model()
    with torch.no_grad():
        m.lm_head.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        m.generate(torch.tensor([[257, 65, 66]]), 3)


def test_training_stops_at_a_non_finite_loss_with_the_step(corpus):
    set_seed(0)
    m = MoST(TOY)
    with torch.no_grad():
        m.embed_tokens.weight[65] = float("nan")                              # byte 'A' poisons any text with it
        m.embed_tokens.weight[:, 0] = float("nan")
    t = Trainer(m, corpus, TrainConfig(steps=3, batch_size=4, precision="fp32", eval_every=0))
    before = m.lm_head.weight.clone()
    with pytest.raises(FloatingPointError, match="step 0: the loss is nan"):
        t.train(progress=False)
    assert torch.equal(m.lm_head.weight, before)                              # nothing was applied


@pytest.mark.parametrize("field, value, words", [
    ("rms_norm_eps", 0.0, "rms_norm_eps=0.0 must be > 0"),
    ("rope_theta", -1.0, "rope_theta=-1.0 must be > 0"),
    ("rope_scaling", {"type": "yarn", "factor": 0, "original_max_position_embeddings": 16}, "factor .* must be > 0"),
    ("rope_scaling", {"type": "yarn", "factor": float("nan"), "original_max_position_embeddings": 16}, "'factor'.*finite"),
    ("routed_scaling_factor", float("inf"), "routed_scaling_factor must be a finite number"),
    ("aux_loss_alpha", -0.1, "aux_loss_alpha=-0.1 must be >= 0"),
    ("hidden_size", "64", "hidden_size must be an integer, got '64'"),
    ("hidden_size", 64.5, "hidden_size must be an integer, got 64.5"),
    ("num_hidden_layers", True, "num_hidden_layers must be an integer"),
    ("initializer_range", float("nan"), "initializer_range must be a finite number"),
    ("norm_topk_prob", "yes", "norm_topk_prob must be True or False"),
])
def test_config_values_that_make_no_sense(field, value, words):
    with pytest.raises(ValueError, match=words):
        MoSTConfig.preset("toy", **{field: value})


@pytest.mark.parametrize("field, value, words", [
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("grad_clip", float("nan"), "grad_clip must be a finite number"),
    ("lr", float("inf"), "lr must be a finite number"),
    ("steps", 2.5, "steps must be an integer, got 2.5"),
    ("batch_size", "8", "batch_size must be an integer"),
    ("mix", [0.5, 0.5], "mix must be a dict"),
    ("betas", (0.9, 1.5), "betas must be two numbers in"),
])
def test_train_config_values_that_make_no_sense(field, value, words):
    with pytest.raises(ValueError, match=f"TrainConfig: {words}"):
        TrainConfig(**{field: value})


def test_all_padding_is_refused_but_padding_first_in_a_cache_is_fine():
    m = toy_model()
    tokens = torch.tensor([[257, 65, 66, 67]])
    with pytest.raises(ValueError, match="attention_mask is all zeros"):
        m(tokens, attention_mask=torch.zeros(1, 4, dtype=torch.long))
    # a left-padded prompt fed token by token through a cache: its first chunks are all padding
    from mini_most import KVCache
    padded, mask = torch.tensor([[256, 256, 257, 65, 66]]), torch.tensor([[0, 0, 1, 1, 1]])
    cache = KVCache(TOY, 1, 5)
    steps = [m(padded[:, i:i + 1], attention_mask=mask[:, i:i + 1], cache=cache).logits for i in range(5)]
    torch.testing.assert_close(steps[-1][:, -1], m(padded, attention_mask=mask).logits[:, -1], atol=1e-5, rtol=0)
    prompts = torch.tensor([[257, 65, 66], [256, 256, 256]])
    with pytest.raises(ValueError, match=r"prompts \[1\] are all padding"):
        m.generate(prompts, 2, attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))


def test_gate_and_moe_called_directly_check_the_modality():
    x = torch.randn(4, TOY.hidden_size)
    with pytest.raises(ValueError, match="modality must be .* of 0 \\(text\\) and 1 \\(audio\\).*values \\[0, 2\\]"):
        Gate(TOY)(x, torch.tensor([0, 2, 0, 2]))
    with pytest.raises(ValueError, match="modality must be"):
        MoE(TOY)(x[None], torch.tensor([[0, 1, 1, -1]]), torch.ones(1, 4, dtype=torch.bool))


def test_trainer_load_with_steps_below_the_checkpoint(corpus, tmp_path):
    set_seed(0)
    t = Trainer(MoST(TOY), corpus, TrainConfig(steps=4, batch_size=4, eval_every=0, precision="fp32"))
    t.train(progress=False)
    t.save(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="steps=2 is below the checkpoint's step 4"):
        Trainer.load(tmp_path / "c.safetensors", corpus, steps=2)


# --- audio --------------------------------------------------------------------------------------

def test_audio_inputs_that_would_encode_silently_wrong(codec, tmp_path):
    wav = torch.randn(1, 1, 16000) * 0.1
    with pytest.raises(ValueError, match="peaks at .* far outside \\[-1, 1\\].*divide by 32768"):
        codec.encode(wav * 30000)                                              # int PCM stored as float
    with pytest.raises(ValueError, match="codes must be an integer tensor"):
        codec.decode(torch.ones(1, 1, 8, dtype=torch.bool))
    path = tmp_path / "x.wav"
    for bad, words in ((torch.full((100,), float("nan")), "NaN or inf"),
                       (torch.zeros(100, dtype=torch.int16), "float waveform.*int16"),
                       (torch.zeros(0), "empty")):
        with pytest.raises(ValueError, match=words):
            codec.write(path, bad)
    assert not path.exists()
    with pytest.warns(UserWarning, match="outside \\[-1, 1\\] and are clipped"):
        codec.write(path, torch.linspace(-2, 2, 1000))


def test_a_truncated_audio_file_is_named(codec, tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, (torch.randn(16000) * 0.1).numpy(), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])                                   # the header still says 32,000 bytes
    with pytest.raises(ValueError, match="cut.wav is truncated: its header says 32000 bytes of audio"):
        codec.encode_file(path)


def test_judge_refuses_nan_audio():
    from mini_most.judge import SphinxJudge
    judge = SphinxJudge(["the red dog saw the ball"])
    with pytest.raises(ValueError, match="NaN or inf"):
        judge.transcribe(torch.full((16000,), float("nan")))


# --- tokens and data ----------------------------------------------------------------------------

def test_token_inputs_that_went_through_silently():
    tok = Tokenizer(TOY)
    for text in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="empty text"):
            tok.text_lm(text)
    with pytest.raises(ValueError, match="ids must be integers, got torch.float32"):
        tok.decode_audio(torch.tensor([320.0, 321.0]))
    with pytest.raises(ValueError, match="looks like \\(frames, codebooks\\)"):
        tok.encode_audio(torch.randint(0, 1024, (120, 2)))                   # (F, K): transposed


def test_an_utterance_outside_the_splits_is_refused(tmp_path):
    from mini_most import DATA_SAMPLES
    from mini_most.corpus import load_corpus
    for name in ("codes.safetensors", "text_only.txt"):
        (tmp_path / name).write_bytes((DATA_SAMPLES / "corpus" / name).read_bytes())
    meta = json.loads((DATA_SAMPLES / "corpus" / "utterances.json").read_text())
    meta["rows"][5][1] = "dev"
    (tmp_path / "utterances.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="splits \\['dev'\\] are not among"):
        load_corpus(tmp_path)


# ================================================================================================
# unclear errors, now naming the file, field or argument

def test_missing_and_truncated_files_are_named(codec, tmp_path, corpus):
    from mini_most.corpus import load_corpus
    missing = tmp_path / "nope"
    cases = [
        (lambda: codec.encode_file(missing / "a.wav"), FileNotFoundError, "no audio file at .*a.wav"),
        (lambda: codec.write(missing / "a.wav", torch.zeros(10)), FileNotFoundError, "folder .*nope does not exist"),
        (lambda: Trainer.load(missing / "c.safetensors", corpus), FileNotFoundError, "no training checkpoint at"),
        (lambda: load_pretrained(missing), FileNotFoundError, "nope has no config.json"),
        (lambda: MoSTConfig.from_json(missing / "config.json"), FileNotFoundError, "no config file at"),
        (lambda: load_weights(missing / "w.safetensors"), FileNotFoundError, "no weights file at"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind, match=words):
            call()
    (tmp_path / "config.json").write_text('{"hidden_size": 64, "num_hid')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        MoSTConfig.from_json(tmp_path / "config.json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_pretrained(tmp_path)
    from mini_most import DATA_SAMPLES
    (tmp_path / "codes.safetensors").write_bytes((DATA_SAMPLES / "corpus" / "codes.safetensors").read_bytes())
    (tmp_path / "utterances.json").write_text((DATA_SAMPLES / "corpus" / "utterances.json").read_text()[:5000])
    with pytest.raises(ValueError, match="utterances.json is not valid JSON .*truncated"):
        load_corpus(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="w.safetensors is not a readable safetensors file"):
        load_weights(tmp_path / "w.safetensors")


def test_a_checkpoint_that_does_not_match_names_what_is_missing(corpus, tmp_path):
    set_seed(0)
    t = Trainer(MoST(TOY), corpus, TrainConfig(steps=1, batch_size=4, eval_every=0, precision="fp32"))
    t.train(progress=False)
    t.save(tmp_path / "c.safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(tmp_path / "c.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(tmp_path / "c.safetensors")
    save_file(tensors, tmp_path / "no_meta.safetensors", {k: v for k, v in meta.items() if k not in ("optim_step", HASH_KEY)})
    with pytest.raises(ValueError, match="lacks \\['optim_step'\\]"):
        Trainer.load(tmp_path / "no_meta.safetensors", corpus)
    del tensors["model.lm_head.weight"]
    save_file(tensors, tmp_path / "no_head.safetensors", {k: v for k, v in meta.items() if k != HASH_KEY})
    with pytest.raises(ValueError, match="missing \\['lm_head.weight'\\]"):
        Trainer.load(tmp_path / "no_head.safetensors", corpus)


@pytest.mark.parametrize("argv, words", [
    (["--mix", "[0.5, 0.5]"], "--mix must be a JSON object of task weights, got list"),
    (["--mix", "{asr: 1}"], "--mix must be a JSON object of task weights"),
    (["--steps", "2.5"], "invalid int value"),
])
def test_train_command_arguments_of_the_wrong_shape(argv, words, capsys):
    with pytest.raises(SystemExit):
        train_main(argv)
    assert words in capsys.readouterr().err


def test_merge_inputs_of_the_wrong_shape_are_named(tmp_path):
    from mini_most.ablate import merge
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "cut.json").write_text('{"format": "mini_most.ablate/1", "conf')
    with pytest.raises(ValueError, match="list.json is not a mini_most.ablate results file"):
        merge([tmp_path / "list.json"])
    with pytest.raises(ValueError, match="cut.json is not valid JSON"):
        merge([tmp_path / "cut.json"])


def test_other_integer_token_dtypes_are_accepted():
    m = toy_model()
    tokens = torch.tensor([[257, 65, 66, 320, 321, 258]])
    want = m(tokens).logits
    for dtype in (torch.int32, torch.int16):
        torch.testing.assert_close(m(tokens.to(dtype)).logits, want, rtol=0, atol=0)
    text = torch.tensor([[72, 105, 33]])                                      # bytes fit uint8
    torch.testing.assert_close(m(text.to(torch.uint8)).logits, m(text).logits, rtol=0, atol=0)


def test_numpy_and_torch_integers_are_integers():
    import numpy as np
    cfg = MoSTConfig.preset("toy", hidden_size=np.int64(64), num_hidden_layers=torch.tensor(3))
    assert cfg == MoSTConfig.preset("toy") and type(cfg.hidden_size) is int
    assert TrainConfig(steps=np.int32(10)).steps == 10
    assert toy_model().generate(torch.tensor([[257, 65]]), np.int64(2), top_k=np.int64(5)).shape == (1, 2)


@pytest.mark.parametrize("kw, words", [
    (dict(max_new_tokens=2.5), "max_new_tokens must be an integer >= 1, got 2.5"),
    (dict(max_new_tokens=None), "max_new_tokens must be an integer >= 1, got None"),
    (dict(max_new_tokens=3, temperature=float("nan")), "finite temperature >= 0"),
    (dict(max_new_tokens=3, temperature=float("inf")), "finite temperature >= 0"),
    (dict(max_new_tokens=3, temperature=1e-45), "temperature=1e-45 is so small that logits / temperature overflow"),
    (dict(max_new_tokens=3, top_k=0.5), "top_k must be an integer >= 1 or None"),
])
def test_bad_generate_arguments_are_named(kw, words):
    m = toy_model()
    with pytest.raises(ValueError, match=words.replace("(", "\\(").replace(")", "\\)")):
        m.generate(torch.tensor([[257, 65, 66]]), **kw)


@pytest.mark.parametrize("kw, wav, words", [
    (dict(sample_rate=0), None, "sample_rate must be a positive integer"),
    (dict(sample_rate=16000.5), None, "sample_rate must be a positive integer"),
    (dict(int_scale=0), torch.zeros(1, 1, 16000, dtype=torch.int16), "int_scale must be a positive number"),
    ({}, torch.zeros(1, 1, 16000, dtype=torch.complex64), "audio must be real samples"),
    ({}, torch.zeros(1, 16000, 1), "looks like \\(batch, time, channels\\)"),
])
def test_bad_audio_arguments_are_named(codec, kw, wav, words):
    with pytest.raises(ValueError, match=words):
        codec.encode(torch.zeros(1, 1, 16000) if wav is None else wav, **kw)


def test_corpus_build_refuses_negative_counts(tmp_path, capsys):
    with pytest.raises(ValueError, match="utterances=-1"):
        corpus_module.build(tmp_path, utterances=-1, text_only=0)
    with pytest.raises(SystemExit):
        corpus_module.main(["build", "--out", str(tmp_path), "--utterances", "-1"])
    assert "--utterances must be a whole number >= 0" in capsys.readouterr().err


# ================================================================================================
# security: nothing from a file, a manifest or a cache runs code or leaves its folder

def test_espeak_text_goes_in_on_stdin_and_voices_are_checked(monkeypatch):
    calls = []
    real_run = subprocess.run

    def spy(argv, *a, **k):
        calls.append((argv, k.get("input")))
        return real_run(argv, *a, **k)
    if not corpus_module.espeak_available():
        pytest.skip("espeak-ng is not installed (CI installs it)")
    monkeypatch.setattr(corpus_module.subprocess, "run", spy)
    wav = corpus_module.espeak("-f/etc/passwd", "en-us", 160, 50)
    argv, text = calls[-1]
    assert "-f/etc/passwd" not in argv and text == b"-f/etc/passwd"         # spoken, not read as an option
    assert 0.5 < len(wav) / 16000 < 5                                          # a few words, not a whole file
    for voice in ("../../..", "en-us+../x", "no-such-voice"):
        with pytest.raises(ValueError, match="is not an espeak-ng voice"):
            corpus_module.espeak("hello", voice, 160, 50)


def test_paths_from_manifests_and_indexes_stay_inside_their_folder(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    secret = tmp_path / "secret.wav"
    sf.write(secret, torch.zeros(4000).numpy(), 16000)
    for path in ("../secret.wav", str(secret)):
        (corpus / "manifest.json").write_text(json.dumps({"utterances": [
            {"id": "000000", "split": "test", "text": "a cat", "seconds": 0.25, "voice": "en-us+m1", "speed": 160,
             "pitch": 50, "path": path}]}))
        with pytest.raises(ValueError, match="must be a relative path inside"):
            corpus_module.export_samples(corpus, tmp_path / "out", per_split=1)
        with pytest.raises(ValueError, match="must be a relative path inside"):
            corpus_module.encode_corpus(corpus, tmp_path / "tok", progress=False)
    hf = tmp_path / "hf"
    export_pretrained(toy_model(), hf, max_shard_bytes=600_000)
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    index["weight_map"]["lm_head.weight"] = "../secret.safetensors"
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="'../secret.safetensors' must be a relative path inside"):
        load_pretrained(hf)


class Payload:
    """What a tampered cache could hold: unpickling it would run a command (here: create a file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_encodec_cache_is_read_as_tensors_only(tmp_path, monkeypatch):
    from mini_most.codec import EncodecCodec
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    ran = tmp_path / "the_payload_ran"
    with open(tmp_path / "hub" / "checkpoints" / EncodecCodec.CHECKPOINT, "wb") as f:
        pickle.dump({"weight": Payload(ran)}, f, protocol=2)
    pickle.loads(pickle.dumps(Payload(tmp_path / "probe")))                    # the payload does run when unpickled
    assert (tmp_path / "probe").exists()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="is not a plain tensor checkpoint.*refused unread"):
        load_codec("encodec")
    assert not ran.exists()


def test_content_hash_refuses_a_corrupted_file_and_hf_files_load_as_before(tmp_path):
    m = toy_model()
    path = save_weights(m, tmp_path / "w.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF                                                           # one flipped byte in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="w.safetensors is corrupted"):
        load_weights(path)
    hf = tmp_path / "hf"
    export_pretrained(m, hf)
    from safetensors.torch import load_file, save_file
    save_file(load_file(hf / "model.safetensors"), hf / "model.safetensors", {"format": "pt"})   # as transformers writes
    torch.testing.assert_close(load_pretrained(hf).lm_head.weight, m.lm_head.weight)
    codec_file = tmp_path / "codec.safetensors"
    MelRVQCodec(torch.randn(1, 8, 80)).save(codec_file)
    data = bytearray(codec_file.read_bytes())
    data[-3] ^= 0xFF
    codec_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="codec.safetensors is corrupted"):
        MelRVQCodec.load(codec_file)


def test_warnings_are_not_errors_for_merely_unusual_input(codec):
    # a quiet clip and a clip peaking just above 1 (resampling overshoot) encode without complaint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codec.encode(torch.randn(1, 1, 16000) * 1e-4)
        codec.encode(torch.clamp(torch.randn(1, 1, 16000), -1.05, 1.05))
    assert math.isfinite(codec.decode(codec.encode(torch.randn(1, 1, 16000) * 0.1)).abs().max().item())
