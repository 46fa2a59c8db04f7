"""The trainer: schedule, seeds, exact resume, validation split by modality, checkpoints."""

import math

import pytest
import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.train import TrainConfig, Trainer, bf16_works, load_weights, lr_at, main, save_weights

TOY = MoSTConfig.preset("toy", dropout=0.1)      # dropout on: resume must restore its RNG too



def make(corpus, seed=0, **kw):
    set_seed(seed)
    cfg = dict(steps=6, batch_size=4, warmup_steps=2, eval_every=0, eval_batches=1, precision="fp32", seed=seed)
    return Trainer(MoST(TOY), corpus, TrainConfig(**{**cfg, **kw}))


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))               # warmup rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))                # cosine falls
    assert lr_at(100, cfg) == pytest.approx(0.1) and lr_at(55, cfg) == pytest.approx(0.55)


def test_same_seed_same_numbers_other_seed_other_numbers(corpus):
    a, b, c = make(corpus), make(corpus), make(corpus, seed=1)
    for t in (a, b, c):
        t.train(progress=False)
    la, lb, lc = ([h["loss"] for h in t.history] for t in (a, b, c))
    assert la == lb and la != lc
    assert all(h["lr"] > 0 and h["tokens"] > 0 and math.isfinite(h["grad_norm"]) for h in a.history)


def test_exact_resume_after_an_interruption(corpus, tmp_path):
    straight = make(corpus)
    straight.train(progress=False)
    first = make(corpus)
    first.train(steps=3, progress=False)
    path = first.save(tmp_path / "ckpt.safetensors")
    torch.manual_seed(12345)                                    # whatever happened in between
    resumed = Trainer.load(path, corpus)
    assert resumed.step == 3 and len(resumed.history) == 3
    resumed.train(progress=False)
    assert resumed.step == 6
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for (n, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n
    # without the optimizer state the continuation differs: the test can tell
    fresh_opt = Trainer.load(path, corpus)
    fresh_opt.opt.state.clear()
    fresh_opt.train(progress=False)
    assert [h["loss"] for h in fresh_opt.history][3:] != [h["loss"] for h in straight.history][3:]


@pytest.mark.skipif(not bf16_works("cpu"), reason="this CPU has no bf16 autocast")
def test_exact_resume_in_bf16_with_validation_and_periodic_checkpoints(corpus, tmp_path):
    straight = make(corpus, precision="bf16", eval_every=2)
    straight.train(progress=False)
    first = make(corpus, precision="bf16", eval_every=2, checkpoint_every=2)
    path = tmp_path / "run.safetensors"
    first.train(steps=4, progress=False, checkpoint=path)
    assert Trainer.load(path, corpus).step == 4 and not path.with_name(path.name + ".tmp").exists()
    resumed = Trainer.load(path, corpus)
    resumed.train(progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.evals == straight.evals and [e["step"] for e in resumed.evals] == [2, 4, 6]


def test_neither_the_bf16_probe_nor_training_touch_the_global_rng(corpus):
    bf16_works.cache_clear()
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    bf16_works("cpu")
    assert torch.equal(torch.rand(3), a)
    t = make(corpus)                                     # dropout 0.1: training draws random numbers ...
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    t.train(steps=2, progress=False)                     # ... from the trainer's own RNG only
    assert torch.equal(torch.rand(3), a)


def test_resuming_with_other_settings_warns(corpus, tmp_path):
    t = make(corpus)
    t.train(steps=2, progress=False)
    path = t.save(tmp_path / "c.safetensors")
    with pytest.warns(UserWarning, match="cosine schedule is stretched"):
        Trainer.load(path, corpus, steps=12)
    with pytest.warns(UserWarning, match="not an exact resume"):
        Trainer.load(path, corpus, seed=3)


def test_validation_splits_text_and_audio_and_keeps_train_mode(corpus):
    t = make(corpus, eval_every=3, eval_batches=2)
    t.train(progress=False)
    assert [e["step"] for e in t.evals] == [3, 6]
    e = t.evals[-1]
    assert all(math.isfinite(e[k]) and e[k] > 0 for k in ("loss", "text_loss", "audio_loss"))
    assert min(e["text_loss"], e["audio_loss"]) <= e["loss"] <= max(e["text_loss"], e["audio_loss"])
    assert t.model.training
    again = t.evaluate()                                        # fixed batches: same numbers
    assert again["loss"] == pytest.approx(e["loss"], abs=0)


def test_loss_goes_down_with_the_mix(corpus):
    t = make(corpus, steps=40, batch_size=8, lr=3e-3, warmup_steps=5)
    t.train(progress=False)
    first, last = (sum(h["loss"] for h in rows) / 5 for rows in (t.history[:5], t.history[-5:]))
    assert last < first - 1.0


def test_weights_files_are_half_precision_and_reload(corpus, tmp_path):
    t = make(corpus)
    t.train(steps=2, progress=False)
    path = save_weights(t.model, tmp_path / "w.safetensors")
    ckpt = t.save(tmp_path / "full.safetensors")
    assert path.stat().st_size < 0.3 * ckpt.stat().st_size      # fp16 weights vs fp32 weights + 2 Adam moments
    model = load_weights(path).eval()
    t.model.eval()
    x = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, t.model(x).logits, atol=2e-2, rtol=0)
    vanilla = load_weights(path, routing="vanilla")             # same shapes, other router rule
    assert vanilla.config.routing == "vanilla"
    with pytest.raises(ValueError, match="not a mini_most weights file"):
        load_weights(ckpt)
    with pytest.raises(ValueError, match="not a mini_most.train checkpoint"):
        Trainer.load(path, corpus)
    with pytest.raises(FileNotFoundError):
        Trainer.load(tmp_path / "missing.safetensors", corpus)


def test_bad_settings_say_what_is_wrong(corpus):
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="precision='fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="bad task mix"):
        make(corpus, mix={"translate": 1.0}).train(progress=False)
    with pytest.raises(ValueError, match="steps=-1"):
        make(corpus).train(steps=-1, progress=False)


def test_command_line_trains_saves_and_resumes(corpus, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    main(["--preset", "toy", "--steps", "3", "--batch-size", "4", "--precision", "fp32", "--out", str(out)])
    straight = tmp_path / "straight.safetensors"
    main(["--preset", "toy", "--steps", "5", "--batch-size", "4", "--precision", "fp32", "--out", str(straight)])
    with pytest.warns(UserWarning, match="cosine schedule is stretched"):
        main(["--resume", str(out), "--steps", "5"])
    t, s = Trainer.load(out, corpus), Trainer.load(straight, corpus)
    assert t.step == 5 and len(t.history) == 5
    assert [h["lr"] for h in t.history][3:] == [h["lr"] for h in s.history][3:]   # the same 5-step schedule from step 3
    assert "saved" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--resume", str(out), "--preset", "small"])


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_command_line_refuses_a_device_it_does_not_have(command, capsys):
    import mini_most.ablate
    import mini_most.train
    main = {"train": mini_most.train.main, "ablate": mini_most.ablate.main}[command]
    with pytest.raises(SystemExit):
        main(["--device", "nope", "--steps", "1"])
    assert "--device nope" in capsys.readouterr().err
