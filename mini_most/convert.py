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

import hashlib
import json
import re
from pathlib import Path

import torch

from .files import HASH_KEY, check_digest, check_finite, inside, open_tensors, read_json, save_tensors, update_digest, write_text_atomic
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
        weight_map = read_json(index, "checkpoint index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map: not a safetensors index")
        shards = [inside(folder, s, f"{index.name}: shard") for s in sorted(set(weight_map.values()))]
        missing = [s.name for s in shards if not s.exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: the index names shards that are missing: {missing[:3]}")
        return shards
    raise FileNotFoundError(f"{folder} has no model.safetensors nor model.safetensors.index.json "
                            "(a Hugging Face checkpoint folder in safetensors format is needed)")


def load_pretrained(folder, dtype: torch.dtype = torch.float32, device="cpu", **overrides):
    """A MoST model from a Hugging Face checkpoint folder (MoST, DeepSeek-V2-Lite, or export_pretrained's).
    The model is built on the meta device and takes the loaded tensors; each routed expert is copied
    straight into its layer's stacked tensor as it is read, so peak memory stays near the model's size.
    Shards that carry mini-MoST's content hash are checked against it; NaN or inf weights are refused.
    Overrides change config fields, e.g. routing="modality" to start MoST from DeepSeek-V2-Lite."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json: not a checkpoint folder")
    config = config_from_dict(read_json(folder / "config.json", "config.json"), **overrides)
    hf, stacked, seen = {}, {}, {}
    for path in _weight_files(folder):
        with open_tensors(path, "checkpoint shard") as f:
            meta = f.metadata() or {}
            h = hashlib.sha256() if HASH_KEY in meta else None
            for k in sorted(f.keys()):                 # name order: the order the content hash was made in
                t = f.get_tensor(k)
                if h is not None:
                    update_digest(h, k, t)
                check_finite({k: t}, path)
                m = _EXPERT.match(k.removeprefix("model."))
                if m and int(m[2]) < config.n_routed_experts:      # (E, out, in), filled expert by expert
                    key = f"{m[1]}.{m[3]}"
                    if key not in stacked:
                        stacked[key] = torch.empty((config.n_routed_experts, *t.shape), dtype=dtype)
                    stacked[key][int(m[2])].copy_(t)
                    seen.setdefault(key, set()).add(int(m[2]))
                else:
                    hf[k] = t.to(dtype)
            if h is not None:
                check_digest(path, meta, h.hexdigest())
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
    transformers' DeepseekV2ForCausalLM.from_pretrained and load_pretrained both read. Exporting
    again into the same folder replaces the earlier export (every file it wrote is marked); a folder
    holding weights or an index that export_pretrained did not write is refused, untouched. Each file
    is written atomically, but a kill between shards of a re-export with the same shard count can
    leave old and new shards under one index: export again before loading such a folder."""
    folder = Path(folder)
    shards, current, size = [], {}, 0
    for name, t in hf_state_dict(model).items():
        t = (t.to(dtype) if dtype else t).detach().contiguous().cpu()
        if current and size + t.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = t.clone(), size + t.nbytes
    shards.append(current)
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    previous = _previous_export(folder)
    foreign = sorted(p.name for p in [*folder.glob("model*.safetensors"), folder / INDEX] if p.exists() and p not in previous)
    if foreign:
        raise FileExistsError(f"{folder} holds {foreign[:3]}, which export_pretrained did not write: export into "
                              "an empty folder, or move those files first")
    marker = {"format": "pt", "written_by": EXPORTER}
    for fname, shard in zip(names, shards):
        save_tensors(shard, folder / fname, marker)
    if len(shards) > 1:
        weight_map = {k: fname for fname, shard in zip(names, shards) for k in shard}
        total = sum(t.nbytes for shard in shards for t in shard.values())
        write_text_atomic(folder / INDEX, json.dumps(
            {"metadata": {"total_size": total, "written_by": EXPORTER}, "weight_map": weight_map}, indent=1))
    write_text_atomic(folder / "config.json", json.dumps(config_to_dict(model.config), indent=1))
    for old in previous:                         # the earlier export's files that the new one did not replace
        if old.name not in names and not (old.name == INDEX and len(shards) > 1):
            old.unlink(missing_ok=True)
    return folder


INDEX, EXPORTER = "model.safetensors.index.json", "mini_most.convert.export_pretrained"


def _previous_export(folder: Path) -> list[Path]:
    """The files an earlier export_pretrained wrote into folder: its index and the shards it names,
    and a single model.safetensors it wrote (each marked written_by in its metadata)."""
    found = []
    index = folder / INDEX
    if index.exists():
        meta = read_json(index, "checkpoint index")
        if isinstance(meta, dict) and meta.get("metadata", {}).get("written_by") == EXPORTER:
            found += [inside(folder, s, f"{INDEX}: shard") for s in sorted(set(meta["weight_map"].values()))] + [index]
    for shard in sorted(folder.glob("model*.safetensors")):   # marked shards, even one an interrupted export left
        if shard in found:
            continue
        try:
            with open_tensors(shard) as f:
                ours = (f.metadata() or {}).get("written_by") == EXPORTER
        except ValueError:                       # not even a safetensors file: certainly not ours
            ours = False
        if ours:
            found.append(shard)
    return found
