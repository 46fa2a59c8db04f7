"""Configs and weights between Hugging Face's DeepSeek-V2 / MoST layout and mini-MoST.

Configs: `config_from_dict` reads a MoST or DeepSeek-V2 config.json (as a dict). MoSTConfig
keeps DeepSeek's field names, so most keys map one to one; MoST's text/audio expert index lists
become the split n_text_experts / n_audio_experts, and keys for features mini-MoST does not
implement (query compression, group-limited routing, ...) must hold their neutral value.

Weights:
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
from dataclasses import fields

import torch

from .model import MoSTConfig

# config.json keys that describe the file, not the model
IGNORED_KEYS = {"architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
                "use_cache", "_name_or_path", "output_router_logits"}


def config_from_dict(d: dict, **overrides) -> MoSTConfig:
    """A MoST or DeepSeek-V2 config.json (as a dict) -> MoSTConfig; what we can't model raises.
    Without MoST's keys (plain DeepSeek-V2) routing is "vanilla", split half-half by index.
    A dict of MoSTConfig's own fields (dataclasses.asdict) round-trips."""
    d, names = dict(d), {f.name for f in fields(MoSTConfig)}
    # keys whose value must be one that mini-MoST implements
    fixed = {"attention_bias": (False,), "attention_dropout": (0.0,), "hidden_act": ("silu",), "moe_layer_freq": (1,),
             "n_group": (1, None), "topk_group": (1, None), "topk_method": ("greedy",), "scoring_func": ("softmax",),
             "seq_aux": (True,), "pretraining_tp": (1,), "tie_word_embeddings": (False,), "q_lora_rank": (None,),
             "ep_size": (1,), "num_key_value_heads": (d.get("num_attention_heads", 16),), "mlp_bias": (False,)}
    for key, allowed in fixed.items():
        if key in d and d.pop(key) not in allowed:
            raise ValueError(f"config key {key!r} must be {allowed[0]!r}: mini-MoST implements only that "
                             "(full DeepSeek-V2's query compression and group-limited routing are out of scope)")
    kw = {k: d.pop(k) for k in list(d) if k in names}
    kw.setdefault("routing", "modality" if d.pop("use_modality_aware_routing", False) else "vanilla")
    if "n_text_experts" not in kw and "n_audio_experts" not in kw:
        n = kw.get("n_routed_experts", MoSTConfig.n_routed_experts)
        kw["n_text_experts"], kw["n_audio_experts"] = n - n // 2, n // 2
    if "text_expert_indices" in d or "audio_expert_indices" in d:
        text, audio = d.pop("text_expert_indices", []), d.pop("audio_expert_indices", [])
        if list(text) != list(range(len(text))) or list(audio) != list(range(len(text), len(text) + len(audio))):
            raise ValueError("text_expert_indices must be 0..n_text-1 and audio_expert_indices the next "
                             f"ids (contiguous, text first); got {text} and {audio}")
        kw["n_text_experts"], kw["n_audio_experts"] = len(text), len(audio)
    if "rope_parameters" in d:  # transformers v5 spelling: theta inside the scaling dict
        rp = dict(d.pop("rope_parameters"))
        kw["rope_theta"] = rp.pop("rope_theta", kw.get("rope_theta", 10000.0))
        kw["rope_scaling"] = rp if rp.get("rope_type", rp.get("type")) == "yarn" else None
    if set(d) - IGNORED_KEYS:
        raise ValueError(f"unknown config keys {sorted(set(d) - IGNORED_KEYS)}; valid: {sorted(names | set(fixed))}"
                         " plus use_modality_aware_routing, text_expert_indices, audio_expert_indices")
    MoSTConfig.check_fields(overrides)
    return MoSTConfig(**{**kw, **overrides})

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
