"""Tokens per second of a whole training step (forward, backward, AdamW) per routing arm.

The arms of the ablation hold active parameters per token equal (bar the router): "modality"
(MoST), "vanilla" (DeepSeek's gate) and "dense" (one MLP as wide as the k routed + shared experts).
Each size runs the three arms side by side in this process, on the same batches of the shipped
corpus (MoST's stage-1 mix), in interleaved rounds, and reports ratios to dense. The goal: the modality-aware step within 1.5x
of dense's time on CPU.

    python benchmarks/train_step.py                        # toy and small, fp32 and bf16, ~2 minutes
    python benchmarks/train_step.py --sizes small --precisions bf16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.corpus import SHIPPED_CORPUS, load_corpus
from mini_most.model import ROUTING_MODES as ARMS
from mini_most.tokens import Tokenizer, batches, task_stream

SIZES = {"toy": 20, "small": 10}   # timed rounds per size


def bench(size: str, precision: str, rounds: int, batch_size: int, corpus) -> dict:
    cfg0 = MoSTConfig.preset(size)
    tok = Tokenizer(cfg0)
    stream = batches(task_stream(corpus, tok, seed=0), batch_size, tok.pad, seed=0, max_len=cfg0.max_position_embeddings)
    data = [next(stream) for _ in range(rounds + 1)]
    models, opts = {}, {}
    for arm in ARMS:
        set_seed(0)
        models[arm] = MoST(MoSTConfig.preset(size, routing=arm))
        opts[arm] = torch.optim.AdamW(models[arm].parameters(), lr=1e-3, betas=(0.9, 0.95))
    times = {arm: [] for arm in ARMS}
    for i, b in enumerate(data):                  # round 0 warms up; arms interleave within a round
        for arm in ARMS:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = models[arm](b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask)
            (out.loss + out.aux_loss).backward()
            opts[arm].step()
            opts[arm].zero_grad(set_to_none=True)
            if i:
                times[arm].append(time.perf_counter() - t0)
    tokens = sum(int(b.attention_mask.sum()) for b in data[1:]) / rounds
    ms = {arm: 1000 * statistics.median(t) for arm, t in times.items()}
    active = {arm: models[arm].num_params()["active"] for arm in ARMS}
    return {"size": size, "precision": precision, "batch": batch_size, "tokens_per_step": round(tokens),
            "ms": {a: round(v, 2) for a, v in ms.items()},
            "tokens_per_s": {a: round(tokens / v * 1000) for a, v in ms.items()},
            "time_vs_dense": {a: round(ms[a] / ms["dense"], 3) for a in ARMS}, "active_params": active}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    corpus = load_corpus(SHIPPED_CORPUS)                  # the shipped corpus, whatever $MINI_MOST_CORPUS says
    rows = [bench(s, p, SIZES[s], args.batch_size, corpus) for s in args.sizes for p in args.precisions]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, training step (forward, backward, AdamW), "
          f"batch {args.batch_size} of the stage-1 mix, median")
    print(f"{'size':6}{'prec':>6}{'tokens':>8}{'dense ms':>10}{'dense tok/s':>13}" + "".join(f"{a:>10}" for a in ARMS[:2]))
    for r in rows:
        print(f"{r['size']:6}{r['precision']:>6}{r['tokens_per_step']:8}{r['ms']['dense']:10.1f}{r['tokens_per_s']['dense']:13,}"
              + "".join(f"{r['time_vs_dense'][a]:9.2f}x" for a in ARMS[:2]))
    print("(columns modality and vanilla: step time as a multiple of dense's; goal for modality: <= 1.5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
