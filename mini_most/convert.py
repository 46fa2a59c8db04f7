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

Folders: `load_pretrained(folder)` reads a Hugging Face checkpoint folder (config.json plus
model.safetensors or sharded model-*.safetensors with their index), e.g. DeepSeek-V2-Lite's, and
`export_pretrained(model, folder)` writes one that transformers' DeepseekV2ForCausalLM loads.
Starting a MoST run from DeepSeek-V2-Lite:

    model = load_pretrained("DeepSeek-V2-Lite/", routing="modality")   # experts 0-31 text, 32-63 audio

(V2-Lite's config has no MoST keys, so its 64 experts split half-half by index, as MoST does.)
Full DeepSeek-V2 (236B) needs query compression and group-limited routing: out of scope, and its
config.json is refused with a message saying so.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from pathlib import Path

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
    # transformers 5 also writes derived sizes: they must agree with the ones they derive from
    rope_dim = kw.get("qk_rope_head_dim", MoSTConfig.qk_rope_head_dim)
    derived = {"qk_head_dim": kw.get("qk_nope_head_dim", MoSTConfig.qk_nope_head_dim) + rope_dim, "head_dim": rope_dim}
    for key, value in derived.items():
        if key in d and d.pop(key) != value:
            raise ValueError(f"config key {key!r} disagrees with qk_nope_head_dim/qk_rope_head_dim (expected {value})")
    if kw.get("pad_token_id") is None:  # DeepSeek has no pad token (null in config.json): pads are masked anyway
        kw["pad_token_id"] = kw.get("eos_token_id", MoSTConfig.eos_token_id)
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


def _check_experts(name: str, found, n: int) -> None:
    """Every routed expert 0..n-1 of one projection must be present, and no other."""
    if sorted(found) != list(range(n)):
        raise ValueError(f"{name}: found experts {sorted(found)[:8]}..., expected 0..{n - 1}")


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
        _check_experts(prefix, experts, config.n_routed_experts)
        out[f"{prefix}.{proj}"] = torch.stack([experts[e] for e in range(config.n_routed_experts)])
    return out


def load_hf_weights(model, hf_state: dict[str, torch.Tensor]) -> None:
    """Copy a DeepSeek-V2 state dict into a MoST model; every tensor must match (strict)."""
    result = model.load_state_dict(state_dict_from_hf(hf_state, model.config), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights don't match this config: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


# ----------------------------------------------------------------------------------------------
# checkpoint folders


def _weight_files(folder: Path) -> list[Path]:
    if (folder / "model.safetensors").exists():   # as transformers: a single file first, then an index
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: the index names shards that are missing: {missing[:3]}")
        return [folder / s for s in shards]
    raise FileNotFoundError(f"{folder} has no model.safetensors nor model.safetensors.index.json "
                            "(a Hugging Face checkpoint folder in safetensors format is needed)")


def load_pretrained(folder, dtype: torch.dtype = torch.float32, device="cpu", **overrides):
    """A MoST model from a Hugging Face checkpoint folder (MoST, DeepSeek-V2-Lite, or export_pretrained's).
    The model is built on the meta device and takes the loaded tensors; each routed expert is copied
    straight into its layer's stacked tensor as it is read, so peak memory stays near the model's size.
    Overrides change config fields, e.g. routing="modality" to start MoST from DeepSeek-V2-Lite."""
    from safetensors import safe_open

    from .model import MoST
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json: not a checkpoint folder")
    config = config_from_dict(json.loads((folder / "config.json").read_text()), **overrides)
    hf, stacked, seen = {}, {}, {}
    for path in _weight_files(folder):
        with safe_open(str(path), "pt") as f:
            for k in f.keys():
                m = _EXPERT.match(k.removeprefix("model."))
                if m and int(m[2]) < config.n_routed_experts:      # (E, out, in), filled expert by expert
                    t = f.get_tensor(k)
                    key = f"{m[1]}.{m[3]}"
                    if key not in stacked:
                        stacked[key] = torch.empty((config.n_routed_experts, *t.shape), dtype=dtype)
                    stacked[key][int(m[2])].copy_(t)
                    seen.setdefault(key, set()).add(int(m[2]))
                else:
                    hf[k] = f.get_tensor(k).to(dtype)
    for key, experts in seen.items():
        _check_experts(f"{folder}: {key}", experts, config.n_routed_experts)
    state = {**state_dict_from_hf(hf, config), **stacked}
    del hf
    with torch.device("meta"):
        model = MoST(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        shapes = [k for k in set(want) & set(got) if want[k] != got[k]]
        raise ValueError(f"{folder}: weights do not fit its config: missing {missing[:4]}, unexpected {extra[:4]}, "
                         f"wrong shapes {[(k, got[k], want[k]) for k in shapes[:3]]}")
    model.load_state_dict(state, assign=True)
    return model.to(device)


def config_to_dict(config: MoSTConfig) -> dict:
    """MoSTConfig -> a config.json that transformers reads as DeepseekV2Config and config_from_dict
    reads back exactly (MoST's own keys ride along: transformers keeps unknown keys)."""
    d = asdict(config)
    text = list(range(config.n_text_experts))
    d.update({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "q_lora_rank": None,
              "topk_method": "greedy", "n_group": 1, "topk_group": 1, "scoring_func": "softmax", "seq_aux": True,
              "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
              "num_key_value_heads": config.num_attention_heads, "use_modality_aware_routing": config.routing == "modality",
              "text_expert_indices": text, "audio_expert_indices": list(range(len(text), config.n_routed_experts))})
    for k in ("n_text_experts", "n_audio_experts"):  # carried by the index lists
        d.pop(k)
    return d


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """MoST's weights under the on-disk Hugging Face names: one module per routed expert."""
    out = {}
    for name, t in model.state_dict().items():
        m = re.match(r"^(layers\.\d+\.mlp\.experts)\.(gate_proj|up_proj|down_proj)$", name)
        if m:
            for e in range(t.shape[0]):
                out[f"model.{m[1]}.{e}.{m[2]}.weight"] = t[e]
        else:
            out[name if name.startswith("lm_head") else f"model.{name}"] = t
    return out


def export_pretrained(model, folder, max_shard_bytes: int = 2 * 2**30, dtype: torch.dtype | None = None) -> Path:
    """Write config.json and safetensors shards (with their index when there is more than one) that
    transformers' DeepseekV2ForCausalLM.from_pretrained and load_pretrained both read."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("model*.safetensors"), folder / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)              # a previous export's shards must not outlive it
    (folder / "config.json").write_text(json.dumps(config_to_dict(model.config), indent=1))
    shards, current, size = [], {}, 0
    for name, t in hf_state_dict(model).items():
        t = (t.to(dtype) if dtype else t).detach().contiguous().cpu()
        if current and size + t.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = t.clone(), size + t.nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
        total += sum(t.nbytes for t in shard.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return folder
