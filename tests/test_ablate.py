"""The routing ablation (mini_most.ablate) at smoke scale: the command, its numbers, merging, the bases."""

import json
import math
from dataclasses import replace

import pytest
import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.ablate import (
    ARMS,
    METRICS,
    SHIPPED_BASES,
    SMOKE,
    AblationConfig,
    Evaluator,
    ablate,
    base_folder,
    base_settings,
    load_base,
    load_divergence,
    main,
    merge,
    routing_stats,
    run,
    speak,
    summarize,
)
from mini_most.corpus import load_corpus
from mini_most.tokens import Batch, Tokenizer
from mini_most.train import Trainer

CFG = AblationConfig(**SMOKE)



@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The command twice, as two students would run it: all arms on seed 0, two arms on seed 1."""
    a, b = tmp_path_factory.mktemp("seed0"), tmp_path_factory.mktemp("seed1")
    main(["--smoke", "--seeds", "1", "--out", str(a)])
    main(["--smoke", "--seeds", "1", "--first-seed", "1", "--arms", "modality", "dense", "--out", str(b)])
    return a, b


def test_command_writes_every_number_and_the_plots(grid):
    a, _ = grid
    r = json.loads((a / "results.json").read_text())
    assert [x["arm"] for x in r["runs"]] == list(ARMS) and {x["seed"] for x in r["runs"]} == {0}
    for x in r["runs"]:
        assert x["steps"] == CFG.steps and len(x["loss_curve"]) == CFG.steps
        assert [e["step"] for e in x["evals"]] == [0, 3, 6]                  # step 0, then every eval_every
        for key, _, _ in METRICS:
            assert key == "load_divergence" or math.isfinite(x[key]), key           # derived at summary time
        assert 0 <= x["tts_audio_acc"] <= 1 and len(x["asr_examples"]) == CFG.asr_sentences
    assert 0 <= r["reference"]["judge_wer_on_corpus_codes"] < 1
    assert r["runs"][2]["routing"] is None                                    # dense has no router
    for x in r["runs"][:2]:
        load = torch.tensor(x["routing"]["load"])                             # (layers, 2, experts)
        assert torch.allclose(load.sum(-1), torch.ones(load.shape[:2]), atol=1e-5)
    own = torch.tensor(r["runs"][0]["routing"]["own_group_share"])
    assert torch.allclose(own, torch.ones_like(own))                          # modality routing stays in its group
    for name in ("table.md", "ablation.png", "expert_load.png"):
        assert (a / name).stat().st_size > 0
    # run again into the same folder: the finished runs are kept, nothing is trained again
    lines = []
    ablate(ARMS, [0], CFG, a, judge=False, progress=False, log=lines.append)
    assert len(lines) == 3 and all("already in" in line for line in lines)
    with pytest.raises(ValueError, match="other settings"):
        ablate(ARMS, [0], replace(CFG, steps=7), a, judge=False, progress=False)


def test_merge_pairs_seeds(grid, tmp_path):
    a, b = grid
    main(["--merge", str(a / "results.json"), str(b / "results.json"), "--out", str(tmp_path)])
    r = json.loads((tmp_path / "results.json").read_text())
    assert sorted((x["arm"], x["seed"]) for x in r["runs"]) == sorted(
        [(arm, 0) for arm in ARMS] + [("modality", 1), ("dense", 1)])
    s = summarize(r)
    assert s["table"]["asr_cer"]["modality"]["n"] == 2 and s["table"]["asr_cer"]["vanilla"]["n"] == 1
    d = s["paired"]["modality-dense"]["asr_cer"]
    by = {(x["arm"], x["seed"]): x for x in r["runs"]}
    want = [by["modality", k]["asr_cer"] - by["dense", k]["asr_cer"] for k in (0, 1)]
    assert d["diffs"] == pytest.approx(want) and d["n"] == 2 and d["a_better"] == sum(x < 0 for x in want)
    assert s["paired"]["modality-vanilla"]["asr_cer"]["n"] == 1               # only seed 0 has both
    assert "modality-dense" in (tmp_path / "table.md").read_text()


def test_merge_refuses_other_settings(grid, tmp_path):
    a, b = grid
    other = json.loads((b / "results.json").read_text())
    other["config"]["steps"] += 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"\['steps'\] differ"):
        merge([a / "results.json", tmp_path / "other.json"])
    (tmp_path / "bad.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match="not a mini_most.ablate results file"):
        merge([tmp_path / "bad.json"])


def test_summary_statistics_by_hand():
    runs = [{"arm": arm, "seed": s, **{k: v + s for k, _, _ in METRICS}}
            for arm, v in (("modality", 1.0), ("vanilla", 2.0), ("dense", 4.0)) for s in (0, 1, 2)]
    runs[0]["asr_cer"] = 3.0                                   # modality seed 0: worse than vanilla seed 0
    s = summarize({"runs": runs})
    d = s["paired"]["modality-vanilla"]["asr_cer"]
    assert d["diffs"] == [1.0, -1.0, -1.0] and d["a_better"] == 2 and d["ties"] == 0   # lower CER is better
    assert d["mean"] == pytest.approx(-1 / 3) and d["std"] == pytest.approx(math.sqrt(4 / 3))
    acc = s["paired"]["modality-vanilla"]["tts_audio_acc"]                    # higher is better: -1 is worse
    assert acc["diffs"] == [-1.0] * 3 and acc["a_better"] == 0
    assert s["table"]["val_text_loss"]["dense"] == {"mean": 5.0, "std": 1.0, "n": 3}
    runs[4]["val_audio_loss"] = math.nan                      # vanilla seed 1 measured nothing: left out, not NaN
    s = summarize({"runs": runs})
    assert s["table"]["val_audio_loss"]["vanilla"] == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert s["paired"]["modality-vanilla"]["val_audio_loss"]["diffs"] == [-1.0, -1.0]


def test_load_divergence_is_zero_for_shared_and_one_for_disjoint_experts():
    same = [[[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]]
    apart = [[[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]]
    swapped = [[[0.0, 0.5, 0.5, 0.0], [0.5, 0.0, 0.0, 0.5]]]                 # the numbering does not matter
    assert load_divergence(same) == pytest.approx([0.0]) and load_divergence(apart) == pytest.approx([1.0])
    assert load_divergence(swapped) == pytest.approx([1.0])
    assert 0 < load_divergence([[[0.5, 0.5, 0, 0], [0.25, 0.25, 0.5, 0]]])[0] < 1


def test_speak_and_judge_survive_what_a_model_may_generate(corpus, monkeypatch):
    """No audio, a codebook-1 id, too few frames to decode: TTS evaluation scores them, never crashes."""
    tok = Tokenizer(MoSTConfig.preset("toy"))
    model = MoST(MoSTConfig.preset("toy"))
    a, c1 = tok.audio_start, tok.audio_start + tok.cardinality                # codebook-0 and codebook-1 ids
    rows = torch.tensor([[tok.eos] + [tok.pad] * 7,                           # stops at once
                         [a + 5, a + 6, c1, a + 7, a + 8, a + 9, a + 1, tok.eoa],   # codebook-1 id at position 2
                         [a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, tok.eoa, tok.eos]])
    monkeypatch.setattr(MoST, "generate", lambda self, tokens, n, **kw: rows[:len(tokens)])
    codes = speak(model, tok, ["one", "two", "three"], max_frames=6, temperature=0.8, seed=0)
    assert [c.shape for c in codes] == [(1, 0), (1, 2), (1, 6)]
    ev = Evaluator(corpus, tok, CFG, judge=True)
    heard = ev.judge_texts(codes)
    assert heard[:2] == ["", ""] and isinstance(heard[2], str)                # too short to decode: heard nothing


def test_same_seed_same_run_and_every_arm_sees_the_same_data(corpus, tmp_path):
    base = base_folder("moe", CFG, corpus, tmp_path)
    made = (base / "base.json").stat().st_mtime_ns
    assert base_folder("moe", CFG, corpus, tmp_path) == base and (base / "base.json").stat().st_mtime_ns == made
    ev = Evaluator(corpus, Tokenizer(MoSTConfig.preset("toy")), CFG, judge=False)
    one, two = (run("vanilla", 3, CFG, corpus, base, ev, progress=False) for _ in range(2))
    assert one["loss_curve"] == two["loss_curve"] and one["asr_cer"] == two["asr_cer"]
    assert "tts_judge_wer" not in one                                         # judge=False skips it
    firsts = []
    for arm in ARMS:
        model = load_base(base_folder("dense" if arm == "dense" else "moe", CFG, corpus, tmp_path), arm, 0.0)
        trainer = Trainer(model, corpus, CFG.train_config(seed=3, stage=1))
        firsts.append(torch.cat([trainer._next_batch().tokens.flatten() for _ in range(5)]))
    assert all(torch.equal(firsts[0], f) for f in firsts[1:])


def test_routing_stats_count_choices():
    set_seed(0)
    cfg = MoSTConfig.preset("toy", routing="vanilla")
    model = MoST(cfg)
    tokens = torch.tensor([[1, 2, 400, 500, 3], [600, 700, 800, 4, 5]])
    batch = Batch(tokens, cfg.token_modality(tokens), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
                  torch.full_like(tokens, -100), [])
    stats = routing_stats(model, [batch], "fp32")
    out = model.eval()(tokens, attention_mask=batch.attention_mask)
    ids = out.routing[0].expert_ids                                           # (B, T, k)
    audio = ids[batch.modality.bool() & batch.attention_mask.bool()].flatten()
    want = torch.bincount(audio, minlength=cfg.n_routed_experts).float() / len(audio)
    assert torch.allclose(torch.tensor(stats["load"][0][1]), want)
    p = want[want > 0]
    assert stats["entropy_bits"][0][1] == pytest.approx(-(p * p.log2()).sum().item(), abs=1e-5)
    assert stats["own_group_share"][0][1] == pytest.approx(want[cfg.n_text_experts:].sum().item(), abs=1e-6)
    assert routing_stats(MoST(replace(cfg, routing="dense")), [batch], "fp32") is None


def test_shipped_bases_match_the_default_settings_and_load():
    cfg = AblationConfig()
    for kind in ("moe", "dense"):
        folder = SHIPPED_BASES / f"small_{kind}"
        info = json.loads((folder / "base.json").read_text())
        assert info["settings"] == base_settings(cfg, load_corpus()), "the shipped base no longer matches AblationConfig()"
        assert all(p.stat().st_size < 10 * 2**20 for p in folder.iterdir())
    assert base_folder("moe", cfg, load_corpus(), "/nonexistent") == SHIPPED_BASES / "small_moe"   # no training needed
    model = load_base(SHIPPED_BASES / "small_moe", "modality", 0.0)
    assert model.config.routing == "modality" and model.config.dropout == 0.0
    tok = Tokenizer(model.config)
    ex = tok.text_lm(load_corpus().split("validation")[0].text)
    out = model(ex.ids[None, :-1], targets=ex.ids[None, 1:].masked_fill(~ex.loss_mask[None, 1:], -100))
    assert out.loss.item() < 2.0                                              # a text model, not an untrained one


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="counts must be >= 1"):
        AblationConfig(steps=0)
    with pytest.raises(ValueError, match="unknown arm"):
        run("sparse", 0, CFG, None, None, None)
    with pytest.raises(ValueError, match=r"arms \['sparse'\]"):
        ablate(["sparse"], [0], CFG, "/nonexistent")
    with pytest.raises(ValueError, match="full needs GPUs"):
        ablate(["dense"], [0], replace(CFG, preset="full"), "/nonexistent")


def test_merging_into_one_of_its_inputs_keeps_its_runs(grid, tmp_path, capsys):
    a, b = grid
    (tmp_path / "a").mkdir()
    mine = tmp_path / "a" / "results.json"
    mine.write_text((a / "results.json").read_text())
    main(["--merge", str(mine), str(b / "results.json"), "--out", str(tmp_path / "a")])
    r = json.loads(mine.read_text())
    assert sorted((x["arm"], x["seed"]) for x in r["runs"]) == sorted(
        [(arm, 0) for arm in ARMS] + [("modality", 1), ("dense", 1)])
    with pytest.raises(SystemExit):                      # a results file that is not an input: refused, kept
        main(["--merge", str(b / "results.json"), "--out", str(tmp_path / "a")])
    assert "is not among the --merge inputs" in capsys.readouterr().err
    assert json.loads(mine.read_text()) == r


def test_results_survive_a_kill_while_they_are_written(grid, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import mini_most.ablate as ablate_module
    a, _ = grid
    out = tmp_path / "grid"
    shutil.copytree(a, out)
    before = json.loads((out / "results.json").read_text())

    def quick_run(arm, seed, *args, **kw):               # a finished run, without the training
        return {**before["runs"][0], "arm": arm, "seed": seed}
    real = Path.write_text

    def killed_mid_write(self, text, *args, **kw):
        real(self, text[: len(text) // 2])
        raise OSError("killed mid-write")
    monkeypatch.setattr(ablate_module, "run", quick_run)
    monkeypatch.setattr(Path, "write_text", killed_mid_write)
    with pytest.raises(OSError, match="mid-write"):
        ablate(ARMS, [0, 7], CFG, out, judge=False, progress=False, log=lambda line: None)
    monkeypatch.undo()
    assert json.loads((out / "results.json").read_text()) == before     # whole, as before the kill
