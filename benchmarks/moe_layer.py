"""Forward+backward time of one MoE layer against a dense MLP with the same active parameters.

Every row runs its contenders side by side in this one process, on the same input, and reports
ratios to the dense MLP (width (k + n_shared) x moe_intermediate_size: the FLOPs a token pays in
the MoE layer). Contenders: mini-MoST's sorted dispatch (torch._grouped_mm on CPU), the same
without the grouped matmul (a loop over the sorted slices), its per-expert reference dispatch,
and (if transformers is installed) transformers' DeepseekV2Moe with the same shape.

    python benchmarks/moe_layer.py                 # toy, small, full width (about 8 minutes, 13 GB, on 2 cores)
    python benchmarks/moe_layer.py --sizes toy small --json out.json
    python benchmarks/moe_layer.py --device cuda --dtype bf16 --sizes full16k --json benchmarks/moe_layer_gpu.json

On a GPU the table adds TFLOP/s on active parameters: forward + backward = 3 x 2 x tokens x
(k + n_shared) x 3 x hidden x moe_intermediate_size FLOPs, the same for every contender (the dense
MLP has exactly those weights). The GPU goal: sorted >= 50% of dense's TFLOP/s at 16k tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

from mini_most import model
from mini_most.model import MLP, MoE, MoSTConfig

SIZES = {  # preset, tokens per batch, repeats
    "toy": ("toy", 4096, 30),
    "small": ("small", 4096, 20),
    "full": ("full", 512, 7),  # one full-width layer: 64 routed + 2 shared experts, hidden 2048 (noisy: 7 rounds)
    "full16k": ("full", 16384, 10),  # the GPU goal's size: 16k tokens per batch
}


def hf_moe(cfg: MoSTConfig):
    try:
        import transformers
        transformers.logging.set_verbosity_error()
        from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe
    except ImportError:
        return None
    hc = transformers.DeepseekV2Config(
        hidden_size=cfg.hidden_size, moe_intermediate_size=cfg.moe_intermediate_size,
        n_routed_experts=cfg.n_routed_experts, n_shared_experts=cfg.n_shared_experts,
        num_experts_per_tok=cfg.num_experts_per_tok, topk_method="greedy", n_group=1, topk_group=1,
        norm_topk_prob=False, num_attention_heads=cfg.num_attention_heads, q_lora_rank=None)
    moe = DeepseekV2Moe(hc)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=cfg.initializer_range)
    return moe, list(moe.parameters())


def sync(x):
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def time_fwd_bwd(contenders: dict, x, repeats: int) -> dict:
    """Median ms of forward + backward per contender, in interleaved rounds so that a slow
    spell of the machine hits every contender alike. The first round warms up. Gradients are
    set to None before each step, as a training loop's zero_grad() does."""
    times = {name: [] for name in contenders}
    for i in range(repeats + 1):
        for name, (fn, params) in contenders.items():
            for p in params:
                p.grad = None
            xi = x.detach().requires_grad_()
            sync(x)
            t = time.perf_counter()
            out = fn(xi)
            y = out[0] if isinstance(out, tuple) else out   # transformers' layer may return a tuple
            y.float().pow(2).mean().backward()
            sync(x)
            if i:
                times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def run(size: str, with_hf: bool, device: str = "cpu", dtype: torch.dtype = torch.float32):
    preset, n_tokens, repeats = SIZES[size]
    cfg = MoSTConfig.preset(preset)
    torch.manual_seed(0)
    x = torch.randn(1, n_tokens, cfg.hidden_size).to(device, dtype)
    modality = (torch.rand(1, n_tokens) < 0.5).long().to(device)
    valid = torch.ones(1, n_tokens, dtype=torch.bool, device=device)
    dense = MLP(cfg.hidden_size, cfg.dense_arm_intermediate_size).to(device, dtype)
    moes = {d: MoE(replace(cfg, dispatch=d)).to(device, dtype) for d in ("sorted", "loop", "reference")}
    for d in ("loop", "reference"):   # the same weights in every contender
        moes[d].load_state_dict(moes["sorted"].state_dict())

    def call(moe):
        return lambda x: moe(x, modality, valid).out

    # "sorted_loop": the sorted dispatch without torch._grouped_mm (older torch builds)
    contenders = {
        "dense": (lambda x: dense(x).out, list(dense.parameters())),
        "sorted": (call(moes["sorted"]), list(moes["sorted"].parameters())),
        "sorted_loop": (call(moes["loop"]), list(moes["loop"].parameters())),
        "reference": (call(moes["reference"]), list(moes["reference"].parameters())),
    }
    hf = hf_moe(cfg) if with_hf else None
    if hf is not None:
        hf[0].to(device, dtype)
        contenders["transformers"] = hf
    ms = time_fwd_bwd(contenders, x, repeats)
    flops = 3 * 2 * n_tokens * cfg.dense_arm_intermediate_size * 3 * cfg.hidden_size   # forward + backward, active
    return {"size": size, "tokens": n_tokens, "hidden": cfg.hidden_size, "device": str(device), "dtype": str(dtype),
            "experts": f"{cfg.n_routed_experts}+{cfg.n_shared_experts} top-{cfg.num_experts_per_tok}",
            "grouped_mm": model.use_grouped_mm(x, cfg.moe_intermediate_size), "ms": ms,
            "ratio": {k: v / ms["dense"] for k, v in ms.items()},
            "tflops": {k: flops / (v / 1e3) / 1e12 for k, v in ms.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=None, choices=list(SIZES),
                    help="default: toy small full on the CPU (full16k needs over 24 GB there), full full16k on a GPU")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers' DeepseekV2Moe")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    args.sizes = args.sizes or (["toy", "small", "full"] if args.device == "cpu" else ["full", "full16k"])
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{torch.get_num_threads()} threads, CPU"
    print(f"torch {torch.__version__}, {where}, {args.dtype}, forward+backward, median ms")
    rows = []
    header = (f"{'size':6} {'tokens':>6} {'experts':>15} {'dense ms':>9} {'sorted':>8} {'sorted_loop':>12} "
              f"{'reference':>10} {'transformers':>13}")
    print(header)
    for size in args.sizes:
        r = run(size, not args.no_hf, args.device, dtype)
        rows.append(r)
        hf = f"{r['ratio']['transformers']:12.2f}x" if "transformers" in r["ratio"] else f"{'-':>13}"
        print(f"{r['size']:6} {r['tokens']:6d} {r['experts']:>15} {r['ms']['dense']:9.1f} {r['ratio']['sorted']:7.2f}x "
              f"{r['ratio']['sorted_loop']:11.2f}x {r['ratio']['reference']:9.2f}x {hf}", flush=True)
        if args.device != "cpu":
            print("       TFLOP/s on active parameters: " + "  ".join(f"{k} {v:.1f}" for k, v in r["tflops"].items())
                  + f"  (sorted / dense = {r['tflops']['sorted'] / r['tflops']['dense']:.0%}; grouped_mm used: {r['grouped_mm']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
