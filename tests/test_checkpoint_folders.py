"""Hugging Face checkpoint folders: load transformers' own saves, export ones it loads, and map
DeepSeek-V2-Lite's names completely."""

import json

import pytest
import torch
import transformers
from test_transformers_equivalence import OURS, TINY, hf_model

from mini_most import MoST, MoSTConfig
from mini_most.convert import config_from_dict, config_to_dict, export_pretrained, hf_state_dict, load_pretrained, state_dict_from_hf

TOKENS = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(3))


def logits(model):
    with torch.no_grad():
        return model(TOKENS).logits


def test_a_sharded_transformers_save_loads_with_equal_logits(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path, max_shard_size="100KB")          # several shards + index, per-expert names
    assert (tmp_path / "model.safetensors.index.json").exists()
    ours = load_pretrained(tmp_path, **OURS).eval()
    assert (logits(ours) - logits(hf)).abs().max() < 1e-4
    assert ours.config.n_routed_experts == 8 and ours.config.routing == "vanilla"


def test_export_loads_in_transformers_and_back(tmp_path):
    torch.manual_seed(1)
    ours = MoST(config_from_dict(TINY, **OURS)).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    export_pretrained(ours, tmp_path, max_shard_bytes=200_000)
    assert len(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]) == len(hf_state_dict(ours))
    hf = transformers.DeepseekV2ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert (logits(hf) - logits(ours)).abs().max() < 1e-4
    back = load_pretrained(tmp_path)
    assert back.config == ours.config                               # MoST's keys ride along in config.json
    for (n, a), b in zip(ours.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), n
    # exporting again into the same folder, unsharded, leaves nothing of the old shards behind
    other = MoST(ours.config)
    export_pretrained(other, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
    assert torch.equal(load_pretrained(tmp_path).lm_head.weight, other.lm_head.weight)


def test_modality_routing_round_trips_through_config_json():
    cfg = MoSTConfig.preset("small")
    d = config_to_dict(cfg)
    assert d["use_modality_aware_routing"] and d["audio_expert_indices"] == list(range(8, 16))
    assert config_from_dict(d) == cfg


def test_deepseek_v2_lite_names_and_shapes_map_completely(tmp_path):
    """V2-Lite's on-disk names, as transformers writes them for its config (27 layers, 64 experts),
    with V2-Lite's shapes, map onto `full` exactly: nothing missing, nothing left over."""
    lite = {"vocab_size": 102400, "hidden_size": 2048, "num_hidden_layers": 27, "num_attention_heads": 16,
            "num_key_value_heads": 16, "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64, "v_head_dim": 128, "intermediate_size": 10944, "moe_intermediate_size": 1408,
            "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
            "norm_topk_prob": False, "routed_scaling_factor": 1.0, "topk_method": "greedy", "n_group": 1,
            "topk_group": 1, "tie_word_embeddings": False}
    # the names: from transformers' own save of a narrow model with V2-Lite's layer and expert counts
    narrow = dict(lite, vocab_size=64, hidden_size=8, num_attention_heads=2, num_key_value_heads=2, kv_lora_rank=4,
                  qk_nope_head_dim=2, qk_rope_head_dim=2, v_head_dim=2, intermediate_size=4, moe_intermediate_size=2)
    transformers.DeepseekV2ForCausalLM(transformers.DeepseekV2Config(**narrow)).save_pretrained(tmp_path)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    # the shapes: from transformers' full-size model on the meta device (its in-memory experts are stacked)
    with torch.device("meta"):
        big = transformers.DeepseekV2ForCausalLM(transformers.DeepseekV2Config(**lite))
    shapes = {k: tuple(v.shape) for k, v in big.state_dict().items()}

    def shape_of(name):
        if ".mlp.experts." in name and name.split(".mlp.experts.")[1][0].isdigit():
            prefix, rest = name.split(".mlp.experts.")
            proj = rest.split(".")[1]
            if proj == "down_proj":
                return shapes[f"{prefix}.mlp.experts.down_proj"][1:]
            inter2, hidden = shapes[f"{prefix}.mlp.experts.gate_up_proj"][1:]
            return (inter2 // 2, hidden)
        return shapes[name]
    index = {n: shape_of(n) for n in names}
    assert sum(".mlp.experts." in n and "gate_up" not in n for n in index) == 26 * 64 * 3   # per-expert on disk
    full = config_from_dict(json.loads(json.dumps(lite)), routing="modality")
    assert full == MoSTConfig.preset("full")                        # V2-Lite + MoST's split is `full`
    mapped = state_dict_from_hf({n: torch.empty(s, device="meta") for n, s in index.items()}, full)
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in MoST(full).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == want


def test_bad_folders_say_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_pretrained(tmp_path, **OURS)
    hf_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="found experts .* expected 0..3"):   # 8 experts on disk, 4 in the config
        load_pretrained(tmp_path, **OURS, n_routed_experts=4, n_text_experts=2, n_audio_experts=2)
    with pytest.raises(ValueError, match="do not fit its config: .*wrong shapes"):
        load_pretrained(tmp_path, **OURS, moe_intermediate_size=16)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors nor"):
        load_pretrained(tmp_path, **OURS)
