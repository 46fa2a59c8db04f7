"""Solutions to the exercises of notebook 06 (scaling up). Run: python notebooks/solutions/06_scaling_up.py"""

import tempfile
from pathlib import Path

import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.convert import export_pretrained, load_pretrained
from mini_most.memory import GiB, memory_estimate

full = MoSTConfig.preset("full")

# 1. twice the experts at top-6: each MoE layer stores 64 more experts; a token still uses 6 + 2 shared
double = MoSTConfig.preset("full", n_routed_experts=128, n_text_experts=64, n_audio_experts=64)
a, b = memory_estimate(full, gpus=8), memory_estimate(double, gpus=8)
expert = 3 * full.hidden_size * full.moe_intermediate_size
n_moe = full.num_hidden_layers - full.first_k_dense_replace
gates = n_moe * 64 * full.hidden_size
assert b.params - a.params == n_moe * 64 * expert + gates and b.active_params - a.active_params == gates
print(f"1. 128 experts: total {a.params / 1e9:.1f}B -> {b.params / 1e9:.1f}B, active {a.active_params / 1e9:.3f}B -> "
      f"{b.active_params / 1e9:.3f}B (the router only), training state per GPU of 8 {a.training_per_gpu / GiB:.1f} -> "
      f"{b.training_per_gpu / GiB:.1f} GiB")

# 2. FSDP traffic per step and GPU: all-gather the bf16 weights for forward and again for backward,
#    reduce-scatter the gradients (fp32 reduction here: 4 bytes); each moves (N-1)/N of the tensor
n, world, bw = a.params, 8, 400e9
per_gpu = (2 * 2 * n + 4 * n) * (world - 1) / world
seconds = per_gpu / bw
assert 100e9 < per_gpu < 120e9
print(f"2. {per_gpu / 1e9:.0f} GB received per GPU per step: {seconds * 1e3:.0f} ms at 400 GB/s, which a large enough "
      "batch hides behind compute (FSDP prefetches the next block while this one computes)")

# 3. a bf16 export rounds every weight to 8 significant bits (7 stored): relative error up to 2^-8
set_seed(0)
toy = MoST(MoSTConfig.preset("toy"))
with tempfile.TemporaryDirectory() as d:
    export_pretrained(toy, Path(d), dtype=torch.bfloat16)
    back = load_pretrained(Path(d))
worst = max(((p - q).abs() / p.abs().clamp(min=1e-12)).max().item() for p, q in zip(toy.parameters(), back.parameters()))
assert worst <= 2 ** -8 and back.config == toy.config
assert all(torch.equal(p, q) for (name, p), q in zip(toy.named_parameters(), back.parameters()) if "norm" in name)
print(f"3. every tensor is rounded to bf16: worst relative change {worst:.2e} (bf16 keeps 8 significant bits); "
      "norm weights at 1.0 are exact")
