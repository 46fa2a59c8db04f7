"""Weights between Hugging Face's DeepSeek-V2 layout and mini-MoST.

mini-MoST keeps transformers' parameter names (model.layers.3.self_attn.kv_b_proj.weight becomes
layers.3.self_attn.kv_b_proj.weight), so the mapping is one prefix and the routed experts:

- transformers 5.x in memory stacks them: mlp.experts.gate_up_proj (E, 2I, H) = [gate; up] and
  mlp.experts.down_proj (E, H, I);
- checkpoints on disk (DeepSeek-V2-Lite's safetensors) keep one module per expert:
  mlp.experts.{e}.gate_proj.weight (I, H), .up_proj.weight (I, H), .down_proj.weight (H, I);
- mini-MoST stacks each projection: mlp.experts.gate_proj (E, I, H), up_proj, down_proj.

The router (mlp.gate.weight), the shared experts and the dense layers keep their names. The
attention softmax scale and RoPE/YaRN are computed from the config, not stored.
"""

from __future__ import annotations

import re

import torch

from .model import MoSTConfig

_EXPERT = re.compile(r"^(layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def state_dict_from_hf(hf_state: dict[str, torch.Tensor], config: MoSTConfig) -> dict[str, torch.Tensor]:
    """Map a DeepseekV2ForCausalLM state dict (stacked or per-expert) to MoST's names and shapes."""
    out, per_expert = {}, {}
    for name, t in hf_state.items():
        name = name.removeprefix("model.")
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the config
        if name.endswith("mlp.experts.gate_up_proj"):  # (E, 2I, H): gate rows first, then up rows
            gate, up = t.chunk(2, dim=1)
            out[name.replace("gate_up_proj", "gate_proj")] = gate
            out[name.replace("gate_up_proj", "up_proj")] = up
        elif m := _EXPERT.match(name):
            per_expert.setdefault((m[1], m[3]), {})[int(m[2])] = t
        else:
            out[name] = t
    for (prefix, proj), experts in per_expert.items():
        if sorted(experts) != list(range(config.n_routed_experts)):
            raise ValueError(f"{prefix}: found experts {sorted(experts)[:8]}..., expected 0..{config.n_routed_experts - 1}")
        out[f"{prefix}.{proj}"] = torch.stack([experts[e] for e in range(config.n_routed_experts)])
    return out


def load_hf_weights(model, hf_state: dict[str, torch.Tensor]) -> None:
    """Copy a DeepSeek-V2 state dict into a MoST model; every tensor must match (strict)."""
    result = model.load_state_dict(state_dict_from_hf(hf_state, model.config), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights don't match this config: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
