"""Solutions to the exercises of notebook 04 (the assembled model). Run: python notebooks/solutions/04_mini_most.py
(exercise 3 trains three toy models: 300 steps each at classroom scale, 20 with MINI_MOST_SCALE=smoke)"""

import math

import torch

from mini_most import MoST, MoSTConfig, by_scale, set_seed
from mini_most.corpus import load_corpus
from mini_most.evaluate import split_losses
from mini_most.memory import memory_estimate
from mini_most.model import rope_inv_freq
from mini_most.tokens import Tokenizer, batches, task_stream

full = MoSTConfig.preset("full")

# 1. KV cache next to the bf16 weights on one 80 GB GPU (batch 1)
m = memory_estimate(full, context=1)
free = 80e9 - m.weights
mla_tokens, mha_tokens = free // m.kv_cache, free // m.kv_cache_mha
assert mla_tokens // mha_tokens == 8 and mla_tokens > 9 * full.max_position_embeddings   # 5,120 / 576 = 8.9
print(f"1. {free / 1e9:.1f} GB left: MLA caches {mla_tokens:,.0f} tokens (over 9 full 163,840-token contexts), "
      f"multi-head attention {mha_tokens:,.0f} (one)")

# 2. the YaRN ramp: a smaller factor moves the slow pairs less; a larger beta_fast starts the ramp earlier
plain = rope_inv_freq(MoSTConfig.preset("full", rope_scaling=None))
for change in ({"factor": 8}, {"beta_fast": 64}):
    ys = dict(full.rope_scaling, **change)
    ratio = plain / rope_inv_freq(MoSTConfig.preset("full", rope_scaling=ys))
    kept = int((ratio < 1.0001).sum())
    print(f"2. {change}: pairs kept {kept}, slowest pair divided by {ratio[-1]:.1f}")
    assert math.isclose(ratio[-1].item(), ys["factor"], rel_tol=1e-5)
kept_default = int((plain / rope_inv_freq(full) < 1.0001).sum())
kept_64 = int((plain / rope_inv_freq(MoSTConfig.preset("full", rope_scaling=dict(full.rope_scaling, beta_fast=64))) < 1.0001).sum())
assert kept_64 < kept_default

# 3. the three arms, same seed and data order (one seed: an anecdote, not evidence)
corpus = load_corpus()
steps = by_scale(smoke=20, classroom=300)
result = {}
for routing in ["modality", "vanilla", "dense"]:
    set_seed(0)
    cfg = MoSTConfig.preset("toy", routing=routing)
    model, tok = MoST(cfg), Tokenizer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    stream = batches(task_stream(corpus, tok, seed=0), batch_size=16, pad_id=tok.pad, max_len=cfg.max_position_embeddings)
    losses, by_modality = [], {0: [], 1: []}
    for _ in range(steps):
        b = next(stream)
        out = model(b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask)
        (out.loss + out.aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        with torch.no_grad():                                    # split by what is predicted: text or audio ids
            split = split_losses(out.logits, b.targets, cfg)
        for m, name in ((0, "text"), (1, "audio")):
            if split[f"{name}_n"]:
                by_modality[m].append(split[f"{name}_sum"] / split[f"{name}_n"])
    result[routing] = {"loss": sum(losses[-10:]) / 10, "text": sum(by_modality[0][-10:]) / 10,
                       "audio": sum(by_modality[1][-10:]) / 10}
    assert result[routing]["loss"] < sum(losses[:5]) / 5 and result[routing]["text"] < result[routing]["audio"]
print("3. final losses per arm:", {arm: {k: round(v, 2) for k, v in r.items()} for arm, r in result.items()},
      "- differences this small need several seeds, paired by seed, and a spread to compare against")

# 4. fewest 80 GB GPUs holding full's training state with 20% left for activations
n = next(g for g in range(1, 65) if memory_estimate(full, gpus=g).training_per_gpu <= 0.8 * 80e9)
assert memory_estimate(full, gpus=n - 1).training_per_gpu > 0.8 * 80e9
print(f"4. {n} GPUs: {memory_estimate(full, gpus=n).training_per_gpu / 1e9:.1f} GB each of 80")
