"""Is the corpus learnable? Train the small preset on ASR alone with the project's Trainer for a
fixed number of steps and measure the character error rate on held-out sentences along the way.

    python tools/learnability.py --out data_samples/corpus/learnability.json   # 810 steps, ~11 minutes on 2 cores
    python tools/learnability.py --steps 100 --eval 40                         # a quick look (writes build/)

The bar: CER under 40% within 10 minutes of training on 2 CPU cores, or the corpus changes; 810
steps is what 10 minutes bought on 2 cores when the bar was set, and the JSON records the minutes
this run took. The schedule is the Trainer's (warmup, then cosine to 10% at the last step), the
task mix ASR only. The curve is measured on validation sentences; the test sentences are
transcribed once, at the end. Writes a JSON of every figure (default build/learnability.json;
the committed one is data_samples/corpus/learnability.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
from pathlib import Path

import jiwer
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mini_most import MoST, MoSTConfig, set_seed  # noqa: E402
from mini_most.corpus import SHIPPED_CORPUS, load_corpus  # noqa: E402
from mini_most.evaluate import transcribe  # noqa: E402
from mini_most.train import TrainConfig, Trainer  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=810)
    ap.add_argument("--checkpoints", type=int, default=4, help="evaluations spread over the run")
    ap.add_argument("--eval", type=int, default=200, help="validation (and test) utterances to transcribe")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the bar is for 2 cores)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--routing", default="modality")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("build/learnability.json"))
    return ap


def main(argv=None):
    args = parser().parse_args(argv)

    torch.set_num_threads(args.threads)
    corpus = load_corpus(SHIPPED_CORPUS)                  # the shipped corpus, whatever $MINI_MOST_CORPUS says
    set_seed(args.seed)
    model = MoST(MoSTConfig.preset("small", dropout=args.dropout, routing=args.routing))
    trainer = Trainer(model, corpus, TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                 mix={"asr": 1.0}, eval_every=0, seed=args.seed))
    tok = trainer.tok

    def sample(split, n, seed):
        utts = corpus.split(split)
        return [tok.asr(u.codes, u.text) for u in random.Random(seed).sample(utts, min(n, len(utts)))]
    held, test, train_probe = sample("validation", args.eval, args.seed), sample("test", args.eval, args.seed), \
        sample("train", min(args.eval, 200), 1)
    print(f"ASR only, {len(corpus.split('train'))} train utterances; validation {len(held)}, test {len(test)}; "
          f"{args.threads} threads, torch {torch.__version__}, bf16 autocast: {trainer.autocast}")

    def cer_of(examples):
        hyps = transcribe(model, tok, examples)
        refs = [e.text for e in examples]
        return jiwer.cer(refs, hyps), jiwer.wer(refs, hyps), hyps

    def minutes():   # training steps only: not evaluation
        return sum(h["seconds"] for h in trainer.history) / 60

    curve = []
    for i in range(1, args.checkpoints + 1):
        trainer.train(steps=round(args.steps * i / args.checkpoints) - trainer.step, progress=sys.stderr.isatty())
        cer, wer, hyps = cer_of(held)
        loss = sum(h["loss"] for h in trainer.history[-50:]) / len(trainer.history[-50:])
        curve.append({"minutes": round(minutes(), 2), "step": trainer.step, "loss": round(loss, 4),
                      "cer": round(cer, 4), "wer": round(wer, 4)})
        print(f"== {minutes():.2f} min, step {trainer.step}: validation CER {cer:.3f} WER {wer:.3f}  "
              f"e.g. {held[0].text!r} -> {hyps[0]!r}", flush=True)

    train_cer, train_wer, _ = cer_of(train_probe)
    test_cer, test_wer, _ = cer_of(test)
    _, _, hyps = cer_of(held[:8])
    result = {
        "command": " ".join(["python tools/learnability.py", *(argv if argv is not None else sys.argv[1:])]),
        "preset": "small", "routing": args.routing, "dropout": args.dropout, "lr": args.lr,
        "batch_size": args.batch_size, "codebooks": tok.codebooks, "task": "ASR only", "trainer": "mini_most.train.Trainer",
        "autocast": "bf16" if trainer.autocast else "fp32", "params": model.num_params(),
        "train_utterances": len(corpus.split("train")), "validation": len(held), "test": len(test),
        "steps": trainer.step, "epochs": round(trainer.step * args.batch_size / len(corpus.split("train")), 2),
        "steps_per_second": round(trainer.step / (minutes() * 60), 3), "train_minutes": round(minutes(), 2),
        "curve": curve, "final_test_cer": round(test_cer, 4), "final_test_wer": round(test_wer, 4),
        "final_train_cer": round(train_cer, 4), "final_train_wer": round(train_wer, 4),
        "examples": [{"reference": e.text, "hypothesis": h} for e, h in zip(held[:8], hyps)],
        "machine": {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("steps", "train_minutes", "curve", "final_test_cer", "final_train_cer")}, indent=1))


if __name__ == "__main__":
    main()
