"""Configs and weights between Hugging Face's DeepSeek-V2 / MoST layout and mini-MoST.

Configs: `config_from_dict` and `config_to_dict` live beside MoSTConfig in model.py (which reads
its own config.json, MoSTConfig.from_json); they are importable from here as before.

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
from pathlib import Path

import torch

from .model import Experts, MoST, MoSTConfig, config_from_dict, config_to_dict

__all__ = ["config_from_dict", "config_to_dict", "state_dict_from_hf", "load_hf_weights", "load_pretrained",
           "export_pretrained", "hf_state_dict"]

# a routed expert's weight as checkpoints store it on disk: one module per expert
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


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """MoST's weights under the on-disk Hugging Face names: one module per routed expert."""
    stacked = {f"{prefix}.{proj}": (prefix, proj) for prefix, module in model.named_modules()
               if isinstance(module, Experts) for proj in ("gate_proj", "up_proj", "down_proj")}
    out = {}
    for name, t in model.state_dict().items():
        if name in stacked:
            prefix, proj = stacked[name]
            for e in range(t.shape[0]):
                out[f"model.{prefix}.{e}.{proj}.weight"] = t[e]
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
