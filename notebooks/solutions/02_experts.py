"""Solutions to the exercises of notebook 02 (experts). Run: python notebooks/solutions/02_experts.py"""

from math import comb

import torch

from mini_most import MoST, MoSTConfig


def params(**overrides) -> dict:
    with torch.device("meta"):  # shapes only
        return MoST(MoSTConfig.preset("full", **overrides)).num_params()


full = MoSTConfig.preset("full")
H, I = full.hidden_size, full.moe_intermediate_size
expert = 3 * H * I                                   # one SwiGLU expert: 8,650,752 parameters
n_moe = full.num_hidden_layers - full.first_k_dense_replace
base = params()

# 1. top-8 instead of top-6: two more routed experts per token in each of the 26 MoE layers;
#    nothing more is stored. 4 shared experts instead of 2: two more experts stored AND used.
top8, shared4 = params(num_experts_per_tok=8), params(n_shared_experts=4)
assert top8["total"] == base["total"] and top8["active"] - base["active"] == n_moe * 2 * expert
assert shared4["total"] - base["total"] == shared4["active"] - base["active"] == n_moe * 2 * expert
print(f"1. active: top-6 {base['active']:,}, top-8 {top8['active']:,} (+{(top8['active'] / base['active'] - 1):.1%}); "
      f"4 shared {shared4['active']:,}")

# 2. a ReLU MLP has 2 matrices (2 H I'), a SwiGLU expert 3 (3 H I): same parameters at I' = 1.5 I
relu_width = 3 * I // 2
assert 2 * H * relu_width == 3 * H * I
print(f"2. ReLU width with the parameters of a {I}-wide SwiGLU expert: {relu_width}")

# 3. fine-grained experts: 128 of width 704, top-12; keep the shared width with 4 shared experts of 704
fine = params(n_routed_experts=128, n_text_experts=64, n_audio_experts=64, num_experts_per_tok=12,
              moe_intermediate_size=704, n_shared_experts=4)
extra_gate = n_moe * 64 * H                          # the router gets 64 more rows per MoE layer
assert fine["total"] - base["total"] == extra_gate and fine["active"] - base["active"] == extra_gate
print(f"3. totals differ by {extra_gate:,} (the bigger router). What changes is the number of expert "
      f"combinations a token can use: C(32,6) = {comb(32, 6):,} -> C(64,12) = {comb(64, 12):,} per modality, "
      "with smaller matrix multiplies per expert")

# 4. attention FLOPs per token: scores (q.k over qk_head_dim) and weighted values (v_head_dim) for every
#    past token, per head and layer, 2 FLOPs per multiply-add
ctx = 4096
attn = 2 * ctx * full.num_attention_heads * (full.qk_head_dim + full.v_head_dim) * full.num_hidden_layers
matmul = 2 * base["active_without_input_embedding"]
crossover = matmul / (2 * full.num_attention_heads * (full.qk_head_dim + full.v_head_dim) * full.num_hidden_layers)
assert attn < matmul and 15_000 < crossover < 20_000
print(f"4. at context {ctx}: attention {attn / 1e9:.2f} GFLOPs vs matmuls {matmul / 1e9:.2f} GFLOPs per token; "
      f"equal at about {crossover:,.0f} tokens of context")
