"""Solutions to the exercises of notebook 03 (masked gating). Run: python notebooks/solutions/03_masked_gating.py"""

import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.model import MoE

set_seed(0)
cfg = MoSTConfig.preset("small", norm_topk_prob=True)
moe = MoE(cfg)
with torch.no_grad():
    moe.gate.weight.normal_(0.0, 0.15)
modality = torch.tensor([0] * 4 + [1] * 6 + [0] * 4)
x = torch.randn(len(modality), cfg.hidden_size)
E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
allowed = (torch.arange(E) >= cfg.n_text_experts).long()[None, :] == modality[:, None]
logits = x @ moe.gate.weight.T

# 1. renormalised top-k: divide the k weights by their sum, so they sum to 1. Then the order of mask
#    and softmax no longer matters: both give exp(l_i) / sum over the chosen k of exp(l_j).
masked = logits.softmax(-1) * allowed
w, ids = masked.masked_fill(~allowed, -1.0).topk(k, dim=-1)
w = w / w.sum(-1, keepdim=True)
g_ids, g_w, _ = moe.gate(x, modality)
assert torch.equal(g_ids, ids) and torch.allclose(g_w, w, atol=1e-6)
before, _ = logits.masked_fill(~allowed, float("-inf")).softmax(-1).topk(k, dim=-1)
assert torch.allclose(before / before.sum(-1, keepdim=True), w, atol=1e-6)
print(f"1. renormalised weights sum to {w.sum(-1).min():.4f}..{w.sum(-1).max():.4f}, and masking order no longer matters")

# 2. an uneven split: the number of experts is the same, so totals and actives are unchanged
with torch.device("meta"):
    even = MoST(MoSTConfig.preset("full")).num_params()
    uneven = MoST(MoSTConfig.preset("full", n_text_experts=48, n_audio_experts=16)).num_params()
assert even == uneven
small_12_4 = MoSTConfig.preset("small", n_text_experts=12, n_audio_experts=4)   # top-2 <= 4: fine
try:
    MoSTConfig.preset("small", n_text_experts=12, n_audio_experts=4, num_experts_per_tok=5)
    raise AssertionError("top-5 with a 4-expert audio group was accepted")
except ValueError as e:
    assert "exceeds a modality's group" in str(e)
print("2. a 48/16 split has the same parameter counts; top-k must fit the SMALLER group "
      f"(here {small_12_4.n_audio_experts} audio experts), or MoSTConfig refuses it")

# 3. sigmoid scoring (DeepSeek-V3): each expert's score is sigmoid(logit), independent of the others,
#    so masking before or after scoring is the same thing; normalise the chosen k.
def sigmoid_gate(logits, allowed, k):
    scores = logits.sigmoid() * allowed
    w, ids = scores.masked_fill(~allowed, -1.0).topk(k, dim=-1)
    return ids, w / w.sum(-1, keepdim=True)


ids_s, w_s = sigmoid_gate(logits, allowed, k)
mod_of = (torch.arange(E) >= cfg.n_text_experts).long()
assert (mod_of[ids_s] == modality[:, None]).all() and torch.allclose(w_s.sum(-1), torch.ones(len(modality)))
def sigmoid_gate_mask_first(logits, allowed, k):                 # mask the logits, then score
    scores = logits.masked_fill(~allowed, float("-inf")).sigmoid()             # sigmoid(-inf) = 0
    w, ids = scores.masked_fill(~allowed, -1.0).topk(k, dim=-1)
    return ids, w / w.sum(-1, keepdim=True)


ids_first, w_first = sigmoid_gate_mask_first(logits, allowed, k)
assert torch.equal(ids_first, ids_s) and torch.allclose(w_first, w_s)
# unlike the softmax, where masking first changes every weight (notebook 03, section 2)
soft_after = (logits.softmax(-1) * allowed).masked_fill(~allowed, -1.0).topk(k, dim=-1).values
soft_first = logits.masked_fill(~allowed, float("-inf")).softmax(-1).topk(k, dim=-1).values
assert not torch.allclose(soft_after, soft_first)
print("3. sigmoid gate: stays in-group, weights sum to 1, and mask-before equals mask-after")
