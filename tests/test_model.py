"""Properties of mini_most/model.py: routing, counts, dispatch, cache, padding, errors."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import mini_most.model as model_module
from mini_most import KVCache, MoST, MoSTConfig, set_seed
from mini_most.convert import config_from_dict
from mini_most.model import MLP, Gate, MoE, balance_loss

FULL_TOTAL, FULL_ACTIVE, FULL_ACTIVE_NO_EMBED = 15_706_484_224, 2_661_150_208, 2_451_435_008
MOST_JSON = Path(__file__).parent / "data" / "most_config.json"


def toy(**kw):
    return MoSTConfig.preset("toy", **kw)


def mixed_tokens(cfg, B=3, T=40, seed=0):
    """Random ids, roughly half text and half audio."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, cfg.audio_token_start, (B, T), generator=g)
    audio = torch.randint(cfg.audio_token_start, cfg.audio_token_end, (B, T), generator=g)
    return torch.where(torch.rand(B, T, generator=g) < 0.5, text, audio)


def model(cfg, seed=0):
    set_seed(seed)
    return MoST(cfg).eval()


# --- routing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", [(8, 8), (12, 4), (3, 13)])
def test_modality_mask_holds_in_every_layer(split):
    cfg = toy(num_hidden_layers=4, n_text_experts=split[0], n_audio_experts=split[1])
    m = model(cfg)
    for seed in range(5):
        tokens = mixed_tokens(cfg, seed=seed)
        modality = cfg.token_modality(tokens)
        out = m(tokens)
        assert len(out.routing) == 3  # layers 1-3 are MoE
        for r in out.routing:
            is_audio_expert = r.expert_ids >= cfg.n_text_experts          # (B, T, k)
            assert torch.equal(is_audio_expert, modality[..., None].bool().expand_as(is_audio_expert))
            assert (r.weights > 0).all()


def test_explicit_modality_overrides_the_ids():
    cfg = toy()
    m = model(cfg)
    tokens = mixed_tokens(cfg)
    flipped = 1 - cfg.token_modality(tokens)
    for r in m(tokens, modality=flipped).routing:
        assert torch.equal((r.expert_ids >= cfg.n_text_experts).long(), flipped[..., None].expand_as(r.expert_ids))


def test_gate_masks_after_softmax_without_renormalising():
    cfg = toy()
    set_seed(0)
    gate = Gate(cfg)
    torch.nn.init.normal_(gate.weight, std=1.0)
    x, modality = torch.randn(64, cfg.hidden_size), torch.randint(0, 2, (64,))
    ids, weights, scores = gate(x, modality)
    full = torch.softmax(x @ gate.weight.T, dim=-1)                      # over all 16 experts
    group = torch.arange(16)[None] >= cfg.n_text_experts
    allowed = group == modality[:, None].bool()
    torch.testing.assert_close(scores, full * allowed)                   # masked, not re-softmaxed
    torch.testing.assert_close(weights, full.gather(1, ids))
    assert (weights.sum(-1) < full[allowed].view(64, -1).sum(-1) + 1e-6).all()
    assert (weights.sum(-1) < 1).all()                                   # no renormalisation
    vanilla = Gate(replace(cfg, routing="vanilla"))
    vanilla.load_state_dict(gate.state_dict())
    _, _, raw = vanilla(x, modality)
    torch.testing.assert_close(raw, full)


def test_balance_loss_formula_and_padding():
    B, T, E, k = 2, 10, 8, 2
    scores = torch.full((B, T, E), 1 / E)
    ids = torch.arange(T * k).view(1, T, k).expand(B, T, k) % E          # perfectly balanced
    assert balance_loss(scores, ids, torch.ones(B, T, dtype=torch.bool), 0.001).item() == pytest.approx(0.001)
    # everything on expert 0 with all score there: f_0 = E, P_0 = 1 -> alpha * E
    skew = torch.zeros(B, T, E)
    skew[..., 0] = 1
    assert balance_loss(skew, torch.zeros(B, T, k, dtype=torch.long), torch.ones(B, T, dtype=torch.bool),
                        0.001).item() == pytest.approx(0.001 * E)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[:, 7:] = False
    garbage = scores.clone()
    garbage[:, 7:] = 99.0  # padded positions must not count
    assert balance_loss(garbage, ids, valid, 1.0) == balance_loss(scores[:, :7], ids[:, :7], valid[:, :7], 1.0)


def test_shared_experts_see_every_token():
    cfg = toy()
    m = model(cfg)
    tokens = mixed_tokens(cfg, B=2, T=30)
    # with the routed experts zeroed, an MoE layer is exactly its shared experts, for every token
    moe = m.layers[1].mlp
    with torch.no_grad():
        for p in moe.experts.parameters():
            p.zero_()
    h = torch.randn(2, 30, cfg.hidden_size)
    y, _, _ = moe(h, cfg.token_modality(tokens), torch.ones(2, 30, dtype=torch.bool))
    torch.testing.assert_close(y, moe.shared_experts(h).out)
    assert (y.abs().sum(-1) > 0).all()


# --- parameter counts ---------------------------------------------------------------------------

def analytic_counts(c: MoSTConfig):
    """Count parameters from the formulas, independently of the modules."""
    h, nh = c.hidden_size, c.num_attention_heads
    attn = (h * nh * c.qk_head_dim + h * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
            + c.kv_lora_rank * nh * (c.qk_nope_head_dim + c.v_head_dim) + nh * c.v_head_dim * h)
    mlp = lambda inter: 3 * h * inter  # noqa: E731
    n_moe = c.num_hidden_layers - c.first_k_dense_replace
    expert = mlp(c.moe_intermediate_size)
    if c.routing == "dense":
        moe_total = moe_active = mlp(c.dense_arm_intermediate_size)
    else:
        shared = mlp(c.n_shared_experts * c.moe_intermediate_size) + c.n_routed_experts * h
        moe_total = shared + c.n_routed_experts * expert
        moe_active = shared + c.num_experts_per_tok * expert
    common = c.num_hidden_layers * (attn + 2 * h) + h + 2 * c.vocab_size * h
    dense_layers = c.first_k_dense_replace * mlp(c.intermediate_size)
    return common + dense_layers + n_moe * moe_total, common + dense_layers + n_moe * moe_active


@pytest.mark.parametrize("name", ["toy", "small", "full"])
@pytest.mark.parametrize("routing", ["modality", "vanilla", "dense"])
def test_parameter_counts_match_formula(name, routing):
    cfg = MoSTConfig.preset(name, routing=routing)
    with torch.device("meta"):  # full is 15.7B parameters: count without allocating
        m = MoST(cfg)
    total, active = analytic_counts(cfg)
    n = m.num_params()
    assert (n["total"], n["active"]) == (total, active)
    assert n["active_without_input_embedding"] == active - cfg.vocab_size * cfg.hidden_size


def test_full_preset_is_most():
    with torch.device("meta"):
        m = MoST(MoSTConfig.preset("full"))
    assert next(m.parameters()).is_meta
    assert m.num_params() == {"total": FULL_TOTAL, "active": FULL_ACTIVE,
                              "active_without_input_embedding": FULL_ACTIVE_NO_EMBED}


def test_dense_arm_has_the_moe_arms_active_parameters():
    counts = {}
    for routing in ("modality", "dense"):
        with torch.device("meta"):
            counts[routing] = MoST(MoSTConfig.preset("small", routing=routing)).num_params()
    cfg = MoSTConfig.preset("small")
    gates = (cfg.num_hidden_layers - cfg.first_k_dense_replace) * cfg.n_routed_experts * cfg.hidden_size
    assert counts["dense"]["active"] == counts["modality"]["active"] - gates  # all but the routers


# --- config -------------------------------------------------------------------------------------

def test_from_json_gives_full():
    assert MoSTConfig.from_json(MOST_JSON) == MoSTConfig.preset("full")


@pytest.mark.parametrize("cfg", [MoSTConfig.preset("small", routing="dense", n_text_experts=12, n_audio_experts=4),
                                 MoSTConfig.preset("toy", routing="vanilla"), MoSTConfig.preset("full")])
def test_config_round_trips_through_a_dict(cfg):
    assert config_from_dict(asdict(cfg)) == cfg


def test_from_json_rejects_what_it_cannot_model(tmp_path):
    d = json.loads(MOST_JSON.read_text())
    for key, value, words in [("q_lora_rank", 1536, "q_lora_rank"), ("topk_method", "group_limited_greedy", "topk_method"),
                              ("flash_attention", True, "unknown config keys"),
                              ("audio_expert_indices", [40, 41], "contiguous")]:
        bad = dict(d, **{key: value})
        (tmp_path / "c.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=words):
            MoSTConfig.from_json(tmp_path / "c.json")


def test_preset_errors_list_valid_choices():
    with pytest.raises(ValueError, match="valid presets: \\['full', 'small', 'toy'\\]"):
        MoSTConfig.preset("tiny")
    with pytest.raises(ValueError, match="unknown MoSTConfig fields \\['n_expert'\\]; valid fields"):
        MoSTConfig.preset("toy", n_expert=4)


@pytest.mark.parametrize("overrides, words", [
    (dict(num_experts_per_tok=9), "exceeds a modality's group"),
    (dict(n_text_experts=13, n_audio_experts=3, num_experts_per_tok=4), "exceeds a modality's group"),
    (dict(n_text_experts=10), "must sum to n_routed_experts"),
    (dict(routing="sparse"), "choose one of"),
    (dict(audio_token_start=2000), "must fit in vocab_size"),
    (dict(pad_token_id=400), "outside the audio range"),
    (dict(rope_scaling={"type": "linear", "factor": 2}), "YaRN"),
])
def test_bad_configs_raise(overrides, words):
    with pytest.raises(ValueError, match=words):
        toy(**overrides)


# --- dispatch -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dispatch", ["sorted", "loop"], ids=["grouped_mm", "loop"])
@pytest.mark.parametrize("routing", ["modality", "vanilla"])
def test_sorted_dispatch_matches_reference_outputs_and_gradients(routing, dispatch):
    cfg = MoSTConfig.preset("small", routing=routing)
    if dispatch == "sorted":
        assert model_module.use_grouped_mm(torch.ones(1, cfg.hidden_size), cfg.moe_intermediate_size), \
            "this torch build has no CPU grouped matmul"
    set_seed(0)
    ref = MoE(replace(cfg, dispatch="reference"))
    torch.nn.init.normal_(ref.gate.weight, std=0.3)  # uneven loads, some experts idle
    for p in list(ref.experts.parameters()) + list(ref.shared_experts.parameters()):
        torch.nn.init.normal_(p, std=0.05)
    fast = MoE(replace(cfg, dispatch=dispatch))
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 50, cfg.hidden_size)
    modality = torch.randint(0, 2, (4, 50))
    valid = torch.ones(4, 50, dtype=torch.bool)
    valid[1, 30:] = False
    grads, outs = [], []
    for moe in (ref, fast):
        xi = x.clone().requires_grad_()
        y, aux, _ = moe(xi, modality, valid)
        ((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + aux).backward()
        outs.append(y)
        grads.append([xi.grad] + [p.grad for p in moe.parameters()])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert ref.experts.gate_proj.grad.abs().sum() > 0


def test_grouped_mm_probe_is_quiet_and_picks_dtypes():
    torch.manual_seed(0)
    a = torch.rand(2)
    torch.manual_seed(0)
    model_module._grouped_mm_works.cache_clear()
    use = model_module.use_grouped_mm
    assert use(torch.ones(1, 64), 32)                                   # fp32 on CPU: this build has it
    assert torch.equal(torch.rand(2), a)                                # the probe drew no global random numbers
    assert not use(torch.ones(1, 64, dtype=torch.float64), 32)
    assert not use(torch.ones(1, 64, dtype=torch.float16), 32)
    assert not use(torch.ones(1, 64, dtype=torch.bfloat16, device="meta"), 32)   # falls back, no error
    assert not use(torch.ones(1, 60), 32)                               # rows must be 16-byte aligned (8 bf16 values)


@pytest.mark.parametrize("dispatch", ["sorted", "loop"], ids=["grouped_mm", "loop"])
def test_sorted_dispatch_under_bf16_autocast_even_as_the_first_call(dispatch):
    # the probe once ran under autocast, failed, and left the loop path, whose bf16 output then
    # met the fp32 residual stream in index_add_: both paths, first call under autocast
    model_module._grouped_mm_works.cache_clear()
    cfg = MoSTConfig.preset("toy", dispatch=dispatch)
    set_seed(0)
    moe = MoE(cfg)
    ref = MoE(replace(cfg, dispatch="reference"))
    ref.load_state_dict(moe.state_dict())
    x, modality = torch.randn(2, 10, cfg.hidden_size), torch.randint(0, 2, (2, 10))
    valid = torch.ones(2, 10, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = moe(x, modality, valid).out
        y_ref = ref(x, modality, valid).out
    assert y.dtype == x.dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, atol=2e-2, rtol=2e-2)
    if dispatch == "sorted":
        assert model_module.use_grouped_mm(x, cfg.moe_intermediate_size)   # the probe, run under autocast, said yes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sorted_dispatch_takes_the_loop_at_unaligned_widths(dtype):
    # torch._grouped_mm needs 16-byte aligned rows (on CPU too): a width of 36 must not reach it
    cfg = MoSTConfig.preset("toy", moe_intermediate_size=36)
    assert not model_module.use_grouped_mm(torch.ones(1, cfg.hidden_size, dtype=dtype), cfg.moe_intermediate_size)
    set_seed(0)
    fast, ref = MoE(cfg).to(dtype), MoE(replace(cfg, dispatch="reference")).to(dtype)
    ref.load_state_dict(fast.state_dict())
    x, modality = torch.randn(2, 10, cfg.hidden_size, dtype=dtype), torch.randint(0, 2, (2, 10))
    valid = torch.ones(2, 10, dtype=torch.bool)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fast(x, modality, valid).out, ref(x, modality, valid).out, atol=tol, rtol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("routing", ["modality", "vanilla"])
def test_sorted_dispatch_on_gpu_matches_reference_in_bf16(routing):
    cfg = MoSTConfig.preset("small", routing=routing)
    set_seed(0)
    ref = MoE(replace(cfg, dispatch="reference")).cuda().bfloat16()
    fast = MoE(replace(cfg, dispatch="sorted")).cuda().bfloat16()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 64, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    modality = torch.randint(0, 2, (4, 64), device="cuda")
    valid = torch.ones(4, 64, dtype=torch.bool, device="cuda")
    print("grouped_mm on this GPU:", model_module.use_grouped_mm(x, cfg.moe_intermediate_size))
    outs = [m(x, modality, valid).out.float() for m in (ref, fast)]
    torch.testing.assert_close(outs[0], outs[1], atol=2e-2, rtol=2e-2)


def test_one_expert_top1_vanilla_is_exactly_a_dense_mlp():
    cfg = toy(routing="vanilla", n_routed_experts=1, n_text_experts=1, n_audio_experts=0,
              num_experts_per_tok=1, n_shared_experts=0)
    set_seed(0)
    moe = MoE(cfg)
    mlp = MLP(cfg.hidden_size, cfg.moe_intermediate_size)
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(moe.experts.gate_proj[0])
        mlp.up_proj.weight.copy_(moe.experts.up_proj[0])
        mlp.down_proj.weight.copy_(moe.experts.down_proj[0])
    x = torch.randn(2, 20, cfg.hidden_size)
    for dispatch in ("sorted", "loop", "reference"):
        moe.cfg = replace(cfg, dispatch=dispatch)
        y, _, r = moe(x, torch.zeros(2, 20, dtype=torch.long), torch.ones(2, 20, dtype=torch.bool))
        assert torch.equal(y, mlp(x).out), dispatch
        assert (r.weights == 1).all()


def test_dense_routing_replaces_moe_with_wide_mlp():
    cfg = toy(routing="dense")
    m = model(cfg)
    assert not any(isinstance(b.mlp, MoE) for b in m.layers)
    assert m.layers[1].mlp.up_proj.out_features == (cfg.num_experts_per_tok + cfg.n_shared_experts) * cfg.moe_intermediate_size
    out = m(mixed_tokens(cfg))
    assert out.routing == [] and out.aux_loss.item() == 0


# --- padding, determinism, cache, generation ----------------------------------------------------

YARN_TOY = dict(rope_scaling={"type": "yarn", "factor": 4, "original_max_position_embeddings": 16,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707})


@pytest.mark.parametrize("over", [{}, YARN_TOY], ids=["rope", "yarn"])
def test_padding_changes_nothing_at_real_positions(over):
    cfg = toy(**over)
    m = model(cfg)
    lengths, pads = [20, 13, 27], [(7, 0), (0, 5), (3, 4)]  # (left, right) padding per row
    seqs = [mixed_tokens(cfg, B=1, T=n, seed=i) for i, n in enumerate(lengths)]
    targets = [mixed_tokens(cfg, B=1, T=n, seed=10 + i) for i, n in enumerate(lengths)]
    T = max(n + left + right for n, (left, right) in zip(lengths, pads))
    tokens = torch.full((3, T), cfg.pad_token_id)
    tgt = torch.full((3, T), cfg.pad_token_id)  # targets at pads are NOT -100: the mask must handle them
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, (n, (left, _)) in enumerate(zip(lengths, pads)):
        tokens[i, left:left + n], tgt[i, left:left + n], mask[i, left:left + n] = seqs[i][0], targets[i][0], 1
    out = m(tokens, targets=tgt, attention_mask=mask)
    assert torch.isfinite(out.logits).all()
    for i in range(3):
        alone = m(seqs[i], targets=targets[i])
        real = mask[i].bool()
        torch.testing.assert_close(out.logits[i, real], alone.logits[0], atol=1e-5, rtol=1e-5)
        for r, r0 in zip(out.routing, alone.routing):
            assert torch.equal(r.expert_ids[i, real], r0.expert_ids[0])
            assert (r.expert_ids[i, ~real] == -1).all() and (r.weights[i, ~real] == 0).all()
    # one row alone: loss and balance loss are unchanged by padding
    one = m(tokens[1:2], targets=tgt[1:2], attention_mask=mask[1:2])
    alone = m(seqs[1], targets=targets[1])
    torch.testing.assert_close(one.loss, alone.loss)
    torch.testing.assert_close(one.aux_loss, alone.aux_loss)


def test_an_all_padding_row_stays_finite_and_out_of_the_loss():
    cfg = toy()
    m = model(cfg)
    tokens = mixed_tokens(cfg, B=2, T=16)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1] = 0
    out = m(tokens, targets=tokens, attention_mask=mask)
    alone = m(tokens[:1], targets=tokens[:1])
    assert torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.loss, alone.loss)
    torch.testing.assert_close(out.aux_loss, alone.aux_loss)


def test_same_seed_same_result():
    cfg = toy()
    a, b = model(cfg, seed=3), model(cfg, seed=3)
    tokens = mixed_tokens(cfg)
    assert torch.equal(a(tokens).logits, b(tokens).logits)
    assert not torch.equal(model(cfg, seed=4)(tokens).logits, a(tokens).logits)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1 = a.generate(tokens[:, :10], 8, temperature=1.0, top_k=20, generator=g1, stop_at_eos=False)
    s2 = a.generate(tokens[:, :10], 8, temperature=1.0, top_k=20, generator=g2, stop_at_eos=False)
    assert torch.equal(s1, s2)


def test_kv_cache_stores_the_latent_only():
    with torch.device("meta"):
        cache = KVCache(MoSTConfig.preset("full"), batch_size=1, max_len=4096)
    assert cache.values_per_token_per_layer == 576  # against 16 heads x (192 + 128) = 5,120 expanded
    assert cache.latent.shape == (27, 1, 4096, 576)
    # what a forward writes is MLA's normalised latent (then the roped shared key), nothing else
    cfg = toy()
    m = model(cfg)
    tokens = mixed_tokens(cfg, B=2, T=10)
    cache = KVCache(cfg, 2, 16)
    with torch.no_grad():
        m(tokens, cache=cache)
        attn = m.layers[0].self_attn
        c_kv = attn.kv_a_proj_with_mqa(m.layers[0].input_layernorm(m.embed_tokens(tokens)))[..., :cfg.kv_lora_rank]
    assert cache.latent.shape[-1] == cfg.kv_lora_rank + cfg.qk_rope_head_dim
    torch.testing.assert_close(cache.latent[0, :, :10, :cfg.kv_lora_rank], attn.kv_a_layernorm(c_kv))
    assert (cache.latent[:, :, 10:] == 0).all() and cache.length == 10


@pytest.mark.parametrize("over", [{}, YARN_TOY], ids=["rope", "yarn"])
def test_cached_forward_equals_full_forward(over):
    cfg = toy(**over)
    m = model(cfg)
    tokens = mixed_tokens(cfg, B=2, T=40)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[0, :5] = 0  # a left-padded row
    full = m(tokens, attention_mask=mask).logits
    cache = KVCache(cfg, 2, 40)
    parts = [m(tokens[:, :12], attention_mask=mask[:, :12], cache=cache).logits]
    for t in range(12, 40):
        parts.append(m(tokens[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache).logits)
    cached = torch.cat(parts, dim=1)
    torch.testing.assert_close(cached[mask.bool()], full[mask.bool()], atol=1e-5, rtol=1e-5)
    # under grad the cache keeps no graph of earlier steps, and the current step still backprops
    assert not cache.latent.requires_grad
    m(tokens[:, :1], cache=KVCache(cfg, 2, 4)).logits.sum().backward()
    assert m.layers[0].self_attn.kv_b_proj.weight.grad is not None


def test_kv_cache_misuse_raises():
    cfg = toy()
    m = model(cfg)
    with pytest.raises(ValueError, match="KVCache holds batch 2"):
        m(mixed_tokens(cfg, B=3, T=4), cache=KVCache(cfg, 2, 8))
    cache = KVCache(cfg, 1, 8)
    m(mixed_tokens(cfg, B=1, T=6), cache=cache)
    with pytest.raises(ValueError, match="cannot add batch 1 x 3 tokens after 6"):
        m(mixed_tokens(cfg, B=1, T=3), cache=cache)


@pytest.mark.parametrize("over", [{}, YARN_TOY], ids=["rope", "yarn"])
def test_generate_with_cache_equals_recomputing(over):
    cfg = toy(**over)
    m = model(cfg)
    with torch.no_grad():  # a sharper output layer so greedy choices are not near-ties
        m.lm_head.weight.mul_(20)
    prompts = mixed_tokens(cfg, B=3, T=12)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :4] = 0   # left padding
    mask[2, 9:] = 0   # right padding: generate moves pads to the left
    a = m.generate(prompts, 25, attention_mask=mask, use_cache=True, stop_at_eos=False)
    b = m.generate(prompts, 25, attention_mask=mask, use_cache=False, stop_at_eos=False)
    assert a.shape == (3, 25) and torch.equal(a, b)
    for i in range(3):  # each padded row generates what it generates alone
        alone = m.generate(prompts[i:i + 1, mask[i].bool()], 25, stop_at_eos=False)
        assert torch.equal(a[i:i + 1], alone)


def test_sampling_respects_top_k_and_temperature():
    cfg = toy()
    m = model(cfg)
    prompt = mixed_tokens(cfg, B=1, T=8)
    top3 = set(m(prompt).logits[0, -1].topk(3).indices.tolist())
    firsts = {m.generate(prompt, 1, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(s)).item()
              for s in range(40)}
    assert firsts <= top3 and len(firsts) > 1
    greedy = m.generate(prompt, 5, stop_at_eos=False)
    assert torch.equal(m.generate(prompt, 5, temperature=1.0, top_k=1, stop_at_eos=False), greedy)
    assert torch.equal(m.generate(prompt, 5, temperature=1e-4, stop_at_eos=False), greedy)


def test_generate_stops_at_eos_and_pads_after():
    cfg = toy()
    m = model(cfg)
    def eos_wins(module, inp, logits):  # make EOS the likeliest next id everywhere
        logits[..., cfg.eos_token_id] = logits.max() + 10
        return logits
    m.lm_head.register_forward_hook(eos_wins)
    prompts = mixed_tokens(cfg, B=2, T=5)
    out = m.generate(prompts, 6)
    assert out.shape == (2, 6) and (out[:, 0] == cfg.eos_token_id).all()
    assert (out[:, 1:] == cfg.pad_token_id).all()
    out = m.generate(prompts, 4, top_k=1, temperature=0.7)
    assert (out[:, 0] == cfg.eos_token_id).all()


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make_call, words", [
    (lambda c: dict(tokens=torch.tensor([[1, 2, c.vocab_size]])), "token ids must lie in"),
    (lambda c: dict(tokens=torch.tensor([[-1, 2]])), "token ids must lie in"),
    (lambda c: dict(tokens=torch.tensor([1, 2, 3])), "shape \\(B, T\\)"),
    (lambda c: dict(tokens=torch.tensor([[1.0, 2.0]])), "integer tensor"),
    (lambda c: dict(tokens=torch.zeros(1, 0, dtype=torch.long)), "non-empty"),
    (lambda c: dict(tokens=torch.zeros(1, c.max_position_embeddings + 1, dtype=torch.long)), "exceeds max_position_embeddings"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), modality=torch.tensor([[0, 1, 2]])), "modality has invalid values \\[2\\]"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), modality=torch.tensor([[0, 1]])), "modality must have the shape"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), modality=torch.tensor([[0.0, 1.0, 0.0]])), "modality must be an integer"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), targets=torch.ones(1, 2, dtype=torch.long)), "targets must have the shape"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), targets=torch.tensor([[1, -5, 2]])), "targets has invalid values \\[-5\\]"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), targets=torch.full((1, 3), -100)), "no position to learn from"),
    (lambda c: dict(tokens=torch.ones(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 2, 1]])), "attention_mask has invalid"),
])
def test_bad_input_raises_clear_error(make_call, words):
    cfg = toy()
    m = model(cfg)
    with pytest.raises(ValueError, match=words):
        m(**make_call(cfg))


def test_bad_generate_arguments_raise():
    cfg = toy()
    m = model(cfg)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        m.generate(torch.ones(1, 500, dtype=torch.long), 20)
    with pytest.raises(ValueError, match="temperature >= 0"):
        m.generate(torch.ones(1, 5, dtype=torch.long), 3, temperature=-1)


def test_bf16_forward_is_finite_and_close_to_fp32():
    cfg = toy()
    m = model(cfg)
    with torch.no_grad():
        m.lm_head.weight.mul_(20)  # logits with a real spread, so agreement means something
    tokens = mixed_tokens(cfg)
    ref = m(tokens).logits
    out = m.to(torch.bfloat16)(tokens)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
    err = (out.logits.float() - ref).abs().max() / ref.std()
    assert err < 0.1, err
    assert (out.logits.float().argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
