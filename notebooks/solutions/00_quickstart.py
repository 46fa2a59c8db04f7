"""Solutions to the exercises of notebook 00 (quickstart). Run: python notebooks/solutions/00_quickstart.py
(exercise 2 trains three toy models: 200 steps each at classroom scale, 10 with MINI_MOST_SCALE=smoke)"""

import torch

from mini_most import MoST, MoSTConfig, by_scale, set_seed

set_seed(0)
base = MoSTConfig.preset("toy")
text = list(b"say:") + [base.audio_token_start + i for i in range(12)] + list(b" hi")
tokens = torch.tensor([[base.bos_token_id, *text, base.eos_token_id]])
modality = base.token_modality(tokens)

# 1. a 12/4 split: text tokens reach experts 0-11, audio tokens 12-15; top-5 cannot fit a 4-expert group
cfg = MoSTConfig.preset("toy", n_text_experts=12, n_audio_experts=4)
out = MoST(cfg).eval()(tokens)
for r in out.routing:
    assert (r.expert_ids[modality == 0] < 12).all() and (r.expert_ids[modality == 1] >= 12).all()
try:
    MoSTConfig.preset("toy", n_text_experts=12, n_audio_experts=4, num_experts_per_tok=5)
    raise AssertionError("top-5 with 4 audio experts was accepted")
except ValueError as e:
    print("1. 12/4 split routes within groups; top-5 is refused:", str(e)[:90], "...")

# 2. the overfit of section 5 in the three arms (same seed, same data)
words = ["cat", "dog", "sun", "tree", "bird", "fish", "moon", "star", "rain", "wind", "leaf", "rock",
         "milk", "bread", "snow", "frog"]
BOA = base.eos_token_id + 1


def speak(word):
    return [x for c in word.encode() for x in (base.audio_token_start + (7 * c) % 1024,
                                               base.audio_token_start + 1024 + (13 * c) % 1024)]


seqs = [[base.bos_token_id, *w.encode(), BOA, *speak(w), base.eos_token_id] for w in words]
T = max(map(len, seqs))
batch = torch.full((len(seqs), T), base.pad_token_id)
mask = torch.zeros(len(seqs), T, dtype=torch.long)
tgt = torch.full((len(seqs), T), -100)
for i, (s, w) in enumerate(zip(seqs, words)):
    batch[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    tgt[i, len(w) + 1:len(s) - 1] = torch.tensor(s[len(w) + 2:])
final, active = {}, {}
for routing in ["modality", "vanilla", "dense"]:
    set_seed(0)
    model = MoST(MoSTConfig.preset("toy", routing=routing))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    for _ in range(by_scale(smoke=10, classroom=200)):
        o = model(batch, targets=tgt, attention_mask=mask)
        opt.zero_grad()
        (o.loss + o.aux_loss).backward()
        opt.step()
    final[routing], active[routing] = o.loss.item(), model.num_params()["active"]
assert active["modality"] == active["vanilla"]
gates = (base.num_hidden_layers - base.first_k_dense_replace) * base.n_routed_experts * base.hidden_size
assert active["modality"] - active["dense"] == gates          # equal active parameters, bar the router
print("2. final loss:", {k: round(v, 3) for k, v in final.items()}, "| active parameters:", active,
      "- the arms hold active parameters (and FLOPs) equal, not totals")

# 3. renormalised top-k: the k weights of every token sum to 1
out = MoST(MoSTConfig.preset("toy", norm_topk_prob=True)).eval()(tokens)
sums = torch.cat([r.weights.sum(-1).flatten() for r in out.routing])
assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
print("3. with norm_topk_prob=True the weights sum to 1; MoST keeps the raw scores, as DeepSeek-V2-Lite (its "
      "starting point) does, so a token whose choices stay in its group keeps exactly the pretrained weights")

# 4. right padding: generate moves every row's pads to the left first, so the tokens are the same
model = MoST(base).eval()
prompts = [[base.bos_token_id, *b"cat", BOA], [base.bos_token_id, *b"bread", BOA]]
P = max(map(len, prompts))
left, right = torch.full((2, P), base.pad_token_id), torch.full((2, P), base.pad_token_id)
lm, rm = torch.zeros(2, P, dtype=torch.long), torch.zeros(2, P, dtype=torch.long)
for i, p in enumerate(prompts):
    left[i, P - len(p):], lm[i, P - len(p):] = torch.tensor(p), 1
    right[i, :len(p)], rm[i, :len(p)] = torch.tensor(p), 1
with torch.no_grad():
    a = model.generate(left, 8, attention_mask=lm, stop_at_eos=False)
    b = model.generate(right, 8, attention_mask=rm, stop_at_eos=False)
assert torch.equal(a, b)
print("4. right-padded prompts give the same tokens: generate() sorts each row's pads to the left "
      "and positions count real tokens only")
