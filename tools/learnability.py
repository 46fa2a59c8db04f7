"""Is the corpus learnable? Train the small preset on ASR alone with a plain loop for a fixed
wall-clock budget and measure the character error rate on held-out sentences along the way.

    python tools/learnability.py                        # 10 minutes of training steps, ~11 with evaluation
    python tools/learnability.py --minutes 1 --eval 40  # a quick look

The bar (issue 4): CER under 40% within 10 minutes on 2 CPU cores, or the corpus changes. The
learning-rate schedule runs on the clock (warmup, then cosine to 10% at the budget), so a faster
machine simply takes more steps. Only training steps count against the budget (not evaluation,
not batch building). The curve is measured on validation sentences; the test sentences are
transcribed once, at the end. Writes a JSON of every figure (default
data_samples/corpus/learnability.json).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import jiwer
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mini_most import MoST, MoSTConfig, set_seed  # noqa: E402
from mini_most.ablate import transcribe  # noqa: E402
from mini_most.data import Tokenizer, batches, load_corpus  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--checkpoints", type=int, default=4, help="evaluations spread over the budget")
    ap.add_argument("--eval", type=int, default=200, help="validation (and test) utterances to transcribe")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the bar is for 2 cores)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--routing", default="modality")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("data_samples/corpus/learnability.json"))
    args = ap.parse_args(argv)

    set_seed(args.seed)
    torch.set_num_threads(args.threads)
    config = MoSTConfig.preset("small", dropout=args.dropout, routing=args.routing)
    tok = Tokenizer(config, codebooks=1)
    corpus = load_corpus()
    train = [tok.asr(u.codes, u.text) for u in corpus.split("train")]
    held = random.Random(args.seed).sample(corpus.split("validation"), min(args.eval, len(corpus.split("validation"))))
    held_ex = [tok.asr(u.codes, u.text) for u in held]
    test = random.Random(args.seed).sample(corpus.split("test"), min(args.eval, len(corpus.split("test"))))
    test_ex = [tok.asr(u.codes, u.text) for u in test]
    train_probe = [tok.asr(u.codes, u.text) for u in random.Random(1).sample(corpus.split("train"), min(args.eval, 200))]
    print(f"train {len(train)} ASR examples, {sum(len(e) for e in train) / len(train):.0f} tokens on average; "
          f"validation {len(held_ex)}, test {len(test_ex)}; {args.threads} threads, torch {torch.__version__}")

    model = MoST(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    budget, warmup = args.minutes * 60, 50
    marks = [budget * (i + 1) / args.checkpoints for i in range(args.checkpoints)]
    curve, losses, step, epoch, trained = [], [], 0, 0, 0.0

    def recent_loss():
        return sum(losses[-50:]) / len(losses[-50:])

    def cer_at(examples, n=None):
        hyps = transcribe(model, tok, examples[:n])
        refs = [e.text for e in examples[:n]]
        return jiwer.cer(refs, hyps), jiwer.wer(refs, hyps), hyps

    while marks:
        rng = random.Random(args.seed * 1000 + epoch)
        order = train[:]
        rng.shuffle(order)
        for batch in batches(order, args.batch_size, tok.pad, seed=args.seed * 1000 + epoch, max_len=config.max_position_embeddings):
            t0 = time.perf_counter()
            frac = min(1.0, trained / budget)
            lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(batch.tokens, batch.modality, targets=batch.targets, attention_mask=batch.attention_mask)
            (out.loss + out.aux_loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            trained += time.perf_counter() - t0
            losses.append(out.loss.item())
            if step % 50 == 0:
                print(f"step {step:5d}  {trained / 60:5.2f} min  loss {recent_loss():.3f}  lr {lr:.2e}", flush=True)
            if marks and trained >= marks[0]:
                marks.pop(0)
                t1 = time.perf_counter()
                cer, wer, hyps = cer_at(held_ex)
                curve.append({"minutes": round(trained / 60, 2), "step": step, "loss": round(recent_loss(), 4),
                              "cer": round(cer, 4), "wer": round(wer, 4)})
                print(f"== {trained / 60:.2f} min, step {step}: validation CER {cer:.3f} WER {wer:.3f} "
                      f"(eval {time.perf_counter() - t1:.0f} s)  e.g. {held_ex[0].text!r} -> {hyps[0]!r}", flush=True)
            if not marks:
                break
        epoch += 1

    train_cer, train_wer, _ = cer_at(train_probe)
    test_cer, test_wer, _ = cer_at(test_ex)
    _, _, hyps = cer_at(held_ex, 8)
    result = {
        "command": " ".join(["python tools/learnability.py", *(argv if argv is not None else sys.argv[1:])]),
        "preset": "small", "routing": args.routing, "dropout": args.dropout, "lr": args.lr,
        "batch_size": args.batch_size, "codebooks": 1, "task": "ASR only", "autocast": "bf16",
        "params": model.num_params(), "train_examples": len(train), "validation": len(held_ex), "test": len(test_ex),
        "steps": step, "epochs": round(step * args.batch_size / len(train), 2),
        "steps_per_second": round(step / trained, 3), "train_minutes": round(trained / 60, 2),
        "curve": curve, "final_test_cer": round(test_cer, 4), "final_test_wer": round(test_wer, 4),
        "final_train_cer": round(train_cer, 4), "final_train_wer": round(train_wer, 4),
        "examples": [{"reference": e.text, "hypothesis": h} for e, h in zip(held_ex[:8], hyps)],
        "machine": {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("steps", "epochs", "curve", "final_test_cer", "final_train_cer")}, indent=1))


if __name__ == "__main__":
    main()
