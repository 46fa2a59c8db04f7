"""Does torch.compile pay on a CPU? A whole training step, eager against compiled, side by side.

    python benchmarks/compile_step.py                        # ~8 minutes on 2 cores; run it alone
    python benchmarks/compile_step.py --json benchmarks/compile_step_cpu.json

One lever of the ablation protocol (issue 16): the small preset, modality routing, batch 32 of
the ablation's stage-1 mix from the shipped corpus, bf16 autocast where the CPU runs it, AdamW.
Arms, each its own copy of the same initial weights, on the same batches in interleaved rounds:
- eager, dispatch="sorted" (the default: grouped matmul where torch has one, else a loop);
- eager, dispatch="loop" (the same grouping, one matmul per expert);
- torch.compile(dynamic=True), dispatch="loop";
- torch.compile(dynamic=True), dispatch="sorted": reported as failed, with the reason, if it fails.
It reports the median step time after compilation, the compile time (the first steps' extra
time) and the break-even: how many steps a run needs before compiling saves time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.corpus import SHIPPED_CORPUS, load_corpus
from mini_most.tokens import Tokenizer, batches, task_stream
from mini_most.utils import autocast, uses_bf16

ARMS = {"eager, sorted": ("sorted", False), "eager, loop": ("loop", False),
        "compiled, loop": ("loop", True), "compiled, sorted": ("sorted", True)}


def step(model, opt, b, precision):
    with autocast("cpu", precision):
        out = model(b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask)
    (out.loss + out.aux_loss).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8, help="timed rounds after the warm-up ones")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds: compilation and recompilation happen here")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    precision = "auto"
    cfg = MoSTConfig.preset("small")
    tok = Tokenizer(cfg)
    mix = {"asr": 0.8, "tts": 0.1, "text": 0.1}                       # the ablation's stage-1 mix (AblationConfig)
    stream = batches(task_stream(load_corpus(SHIPPED_CORPUS), tok, mix, seed=0), args.batch_size, tok.pad, seed=0,
                     max_len=cfg.max_position_embeddings)
    data = [next(stream) for _ in range(args.warmup + args.rounds)]
    runs, failed, first = {}, {}, {}
    for name, (dispatch, compiled) in ARMS.items():
        set_seed(0)
        model = MoST(MoSTConfig.preset("small", dispatch=dispatch))
        runner = torch.compile(model, dynamic=True) if compiled else model
        runs[name] = (runner, torch.optim.AdamW(model.parameters(), lr=1e-3))
    times = {name: [] for name in ARMS}
    for i, b in enumerate(data):
        for name in ARMS:
            if name in failed:
                continue
            runner, opt = runs[name]
            t0 = time.perf_counter()
            try:
                step(runner, opt, b, precision)
            except Exception as e:              # torch.compile's failures vary by version: report, don't crash
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                continue
            dt = time.perf_counter() - t0
            if i < args.warmup:
                first[name] = first.get(name, 0.0) + dt
            else:
                times[name].append(dt)
    base = statistics.median(times["eager, sorted"])
    rows = {}
    print(f"small preset, batch {args.batch_size}, {'bf16' if uses_bf16(precision, 'cpu') else 'fp32'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; {args.rounds} timed rounds")
    print(f"{'arm':18}{'ms/step':>9}{'vs eager sorted':>17}{'first steps, s':>16}{'break-even steps':>18}")
    for name in ARMS:
        if name in failed:
            print(f"{name:18} failed: {failed[name]}")
            rows[name] = {"failed": failed[name]}
            continue
        ms = statistics.median(times[name])
        extra = first[name] - args.warmup * ms                         # warm-up time beyond ordinary steps
        gain = base - ms
        even = round(extra / gain) if gain > 0 and ARMS[name][1] else None
        rows[name] = {"ms": round(1000 * ms, 1), "vs_eager_sorted": round(ms / base, 3),
                      "warmup_extra_s": round(extra, 1), "break_even_steps": even}
        print(f"{name:18}{1000 * ms:>9.0f}{ms / base:>16.2f}x{first[name]:>16.1f}{'' if even is None else even:>18}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch_size, "rounds": args.rounds, "warmup": args.warmup, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "arms": rows}, f, indent=1)


if __name__ == "__main__":
    main()
