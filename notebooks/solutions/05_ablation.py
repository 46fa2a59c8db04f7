"""Solutions to the exercises of notebook 05 (the routing ablation). Run: python notebooks/solutions/05_ablation.py
(reads the committed grid, results/ablation_small/results.json; trains nothing)"""

import json
import math
from math import comb

import torch

from mini_most import MoST, MoSTConfig
from mini_most.ablate import COMMITTED, load_divergence, summarize

GRID = json.loads((COMMITTED / "results.json").read_text())
summary = summarize(GRID)
d = summary["paired"]["modality-vanilla"]["asr_cer"]
n = d["n"]                                             # seeds on which both arms ran

# 1. a sign test: with no effect, each paired difference favours either arm with probability 1/2
need = next(k for k in range(1, 20) if 2 * 0.5 ** k < 0.05)      # all k of one sign, either sign (two-sided)
k = d["a_better"]
p_k = sum(comb(n, j) for j in range(n + 1) if abs(j - n / 2) >= abs(k - n / 2)) / 2 ** n
print(f"1. {n} paired seeds all of one sign happen by chance with p = {2 * 0.5 ** n:.3f} (two-sided); p < 0.05 needs "
      f"{need} seeds all agreeing. modality vs vanilla ASR CER: modality better on {k}/{n} seeds, sign-test p = {p_k:.3f}")
assert need == 6 and 2 * 0.5 ** n - 1e-12 <= p_k <= 1

# 2. a paired t interval for the same difference: mean +- t(0.975, n - 1) * std / sqrt(n)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
if n >= 2 and n - 1 in T975:
    half = T975[n - 1] * d["std"] / math.sqrt(n)
    lo, hi = d["mean"] - half, d["mean"] + half
    print(f"2. modality - vanilla ASR CER: {d['mean']:+.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}] "
          f"({'excludes' if lo > 0 or hi < 0 else 'includes'} 0; the interval assumes normal differences)")
    assert lo <= d["mean"] <= hi
else:
    print(f"2. {n} paired seeds: no interval (it needs 2 to 10)")

# 3. the "no shared experts" arm: top-k raised by the number of shared experts keeps active parameters equal
base = MoSTConfig.preset("small")
arm = MoSTConfig.preset("small", n_shared_experts=0, num_experts_per_tok=base.num_experts_per_tok + base.n_shared_experts)
with torch.device("meta"):
    a, b = MoST(base).num_params(), MoST(arm).num_params()
print(f"3. small with 2 shared + top-2: active {a['active']:,}, total {a['total']:,}; "
      f"no shared + top-4: active {b['active']:,}, total {b['total']:,}")
assert a["active"] == b["active"] and b["total"] < a["total"]
# running it needs its own stage-0 base (there are no shared experts to copy from the MoE base):
# ablate.train_base builds bases from MoSTConfig.preset(preset, routing=...), so this arm would need
# its config overrides (n_shared_experts=0, num_experts_per_tok=4) passed through train_base and load_base.

# 4. does the vanilla MoE separate the modalities on its own? Jensen-Shannon divergence (bits) between
# the expert load of text tokens and of audio tokens, per layer: 0 = same experts in the same proportions,
# 1 = no expert serves both (modality routing, by construction)
for name in ("vanilla", "modality"):
    load = torch.tensor([r["routing"]["load"] for r in GRID["runs"] if r["arm"] == name]).mean(0)
    js = load_divergence(load)
    print(f"4. {name}: text-vs-audio expert-load divergence per layer {[round(x, 2) for x in js]} bits")
    if name == "modality":
        assert all(abs(x - 1) < 1e-6 for x in js)
    else:
        assert all(0 <= x < 1 for x in js)             # vanilla experts are shared by both modalities, to some degree
