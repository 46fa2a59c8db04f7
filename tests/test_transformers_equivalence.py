"""Equivalence with an implementation nobody here wrote: transformers' DeepseekV2ForCausalLM.

A tiny random model with MoST's structure (MLA without query compression, MoST's YaRN, shared
experts, one dense first layer, greedy top-k without renormalisation) must give the same fp32
logits once its weights are mapped into mini-MoST with routing="vanilla". This guards the RoPE
layout, YaRN's correction range and the placement of mscale."""

import math

import pytest
import torch
import transformers  # a pinned test dependency: a missing one must fail, not skip

from mini_most.convert import config_from_dict, load_hf_weights, state_dict_from_hf
from mini_most.model import MLA, MoST, MoSTConfig

TINY = {  # DeepSeek-V2 config.json keys, MoST's structure at a tiny width
    "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 4, "kv_lora_rank": 32, "q_lora_rank": None, "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "intermediate_size": 128, "moe_intermediate_size": 32,
    "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 3, "first_k_dense_replace": 1,
    "norm_topk_prob": False, "routed_scaling_factor": 1.0, "topk_method": "greedy", "n_group": 1,
    "topk_group": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000, "tie_word_embeddings": False,
    # transformers derives YaRN quantities from max / original, so keep MoST's pair (ratio 40)
    "max_position_embeddings": 163840,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    "bos_token_id": 0, "eos_token_id": 1,
}
OURS = dict(routing="vanilla", audio_token_start=256,
            audio_codebooks=1, audio_cardinality=128, pad_token_id=2)


def hf_model():
    torch.manual_seed(0)
    kw = dict(TINY)
    rope = dict(kw.pop("rope_scaling"), rope_type="yarn", rope_theta=kw.pop("rope_theta"))
    rope.pop("type")
    cfg = transformers.DeepseekV2Config(**kw, rope_parameters=rope, attn_implementation="eager")
    model = transformers.DeepseekV2ForCausalLM(cfg).eval()
    with torch.no_grad():  # norms and router start at 1 / 0: randomise so a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("gate.weight"):
                p.normal_(0, 0.5)
    return model


def test_logits_match_transformers_deepseek_v2():
    hf = hf_model()
    cfg = config_from_dict(TINY, **OURS)
    ours = MoST(cfg).eval()
    load_hf_weights(ours, hf.state_dict())
    tokens = torch.randint(0, 512, (2, 320), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(tokens).logits[:, 100:301]
        got = ours(tokens).logits[:, 100:301]
    diff = (got - want).abs().max().item()
    assert diff < 1e-4, diff
    assert want.abs().max() > 0.1  # the comparison is not between near-zero logits


def test_routing_matches_transformers_router():
    hf = hf_model()
    cfg = config_from_dict(TINY, **OURS)
    ours = MoST(cfg).eval()
    load_hf_weights(ours, hf.state_dict())
    x = torch.randn(50, 64)
    _, w_hf, i_hf = hf.model.layers[1].mlp.gate(x)
    i, w, _ = ours.layers[1].mlp.gate(x, torch.zeros(50, dtype=torch.long))
    order_hf, order = i_hf.sort(-1), i.sort(-1)
    assert torch.equal(order_hf.values, order.values)
    torch.testing.assert_close(w_hf.gather(1, order_hf.indices), w.gather(1, order.indices))


def test_softmax_scale_full_shape():
    # 192^-0.5 * mscale^2, mscale = 0.1 * 0.707 * ln 40 + 1
    want = 192 ** -0.5 * (0.1 * 0.707 * math.log(40) + 1) ** 2
    with torch.device("meta"):
        mla = MLA(MoSTConfig.preset("full"))
    assert mla.softmax_scale == pytest.approx(want, rel=1e-12)
    assert round(mla.softmax_scale, 6) == 0.114721
    hf_cfg = transformers.DeepseekV2Config(**{k: v for k, v in TINY.items() if k != "rope_scaling"},
                                            rope_parameters={"rope_type": "yarn", "rope_theta": 10000,
                                                             **{k: v for k, v in TINY["rope_scaling"].items() if k != "type"}})
    hf_cfg.qk_nope_head_dim, hf_cfg.qk_rope_head_dim = 128, 64
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import yarn_apply_mscale
    assert yarn_apply_mscale(hf_cfg.rope_parameters, 192 ** -0.5) == pytest.approx(mla.softmax_scale, rel=1e-12)


def test_per_expert_checkpoint_layout_maps_too():
    """DeepSeek-V2-Lite's files keep one module per expert; both layouts give the same weights."""
    hf = hf_model()
    stacked = hf.state_dict()
    per_expert = {}
    for name, t in stacked.items():
        if name.endswith("experts.gate_up_proj"):
            base = name.removesuffix(".gate_up_proj")
            for e, (g, u) in enumerate(zip(*t.chunk(2, dim=1))):
                per_expert[f"{base}.{e}.gate_proj.weight"] = g
                per_expert[f"{base}.{e}.up_proj.weight"] = u
        elif name.endswith("experts.down_proj"):
            base = name.removesuffix(".down_proj")
            for e, d in enumerate(t):
                per_expert[f"{base}.{e}.down_proj.weight"] = d
        else:
            per_expert[name] = t
    cfg = config_from_dict(TINY, **OURS)
    a, b = state_dict_from_hf(stacked, cfg), state_dict_from_hf(per_expert, cfg)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
