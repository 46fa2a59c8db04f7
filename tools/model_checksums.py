"""Checksums of what the model computes from a seed, to prove a refactor numerically neutral.

    python tools/model_checksums.py --out build/after.json                      # ~2 minutes on 2 cores
    python tools/model_checksums.py --out build/after.json --compare tools/model_checksums.json

For every preset (full with 2 of its 27 layers, at full width), routing and dispatch: the initial
weights after set_seed(0), then on a fixed batch of mixed text and audio ids with left padding: the
fp32 logits, loss, balance loss, gradients and routing, greedy and sampled generation with and
without the KV cache, and the bf16-autocast logits. Floats are hashed bit for bit, so the same
numbers on the same machine and torch build give the same file; another CPU or torch build may
round matmuls differently. tools/model_checksums.json was written before the 0.4.0 reorganisation
(torch 2.14.1, this project's 2-core CPU machine); the code after it gives the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mini_most import MoST, MoSTConfig, set_seed  # noqa: E402

CASES = [("toy", {}, ("sorted", "reference")), ("small", {}, ("sorted", "reference")),
         ("full", {"num_hidden_layers": 2}, ("sorted",))]


def digest(t: torch.Tensor) -> str:
    t = t.detach().float() if t.dtype == torch.bfloat16 else t.detach()     # numpy has no bf16
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def digest_all(tensors) -> str:
    return hashlib.sha256("".join(tensors).encode()).hexdigest()[:16]


def checksums(preset: str, overrides: dict, routing: str, dispatch: str) -> dict:
    set_seed(0)
    cfg = MoSTConfig.preset(preset, routing=routing, dispatch=dispatch, **overrides)
    model = MoST(cfg)
    weights = digest_all(k + digest(v) for k, v in model.state_dict().items())
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, 24), generator=g)
    tokens[:, 8:16] = cfg.audio_token_start + torch.randint(0, 1024, (2, 8), generator=g)
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, :3] = 0
    out = model(tokens, targets=tokens.roll(-1, 1), attention_mask=mask)
    out.loss.backward()
    grads = digest_all(digest(p.grad) for p in model.parameters() if p.grad is not None)
    model.eval()
    prompt, prompt_mask = tokens[:, :10], mask[:, :10]
    with torch.no_grad():
        greedy = model.generate(prompt, 6, attention_mask=prompt_mask)
        sampled = model.generate(prompt, 6, attention_mask=prompt_mask, temperature=0.9, top_k=20,
                                 generator=torch.Generator().manual_seed(3))
        no_cache = model.generate(prompt, 6, attention_mask=prompt_mask, use_cache=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(tokens, attention_mask=mask).logits
    return {"weights": weights, "logits": digest(out.logits), "loss": out.loss.item(), "aux": out.aux_loss.item(),
            "grads": grads, "routing": [digest(r.expert_ids) + digest(r.weights) for r in out.routing],
            "gen": greedy.tolist(), "gen_sampled": sampled.tolist(), "gen_nocache": no_cache.tolist(),
            "bf16_logits": digest(bf16)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--compare", type=Path, default=None, help="a file written earlier: report every difference")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    result = {}
    for preset, overrides, dispatches in CASES:
        for routing in ("modality", "vanilla", "dense"):
            for dispatch in dispatches:
                key = f"{preset}/{routing}/{dispatch}"
                result[key] = checksums(preset, overrides, routing, dispatch)
                print(key, result[key]["weights"], result[key]["logits"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.compare:
        old = json.loads(args.compare.read_text())
        diff = [f"{k}: {f}" for k in old for f in old[k] if result.get(k, {}).get(f) != old[k][f]]
        print("\n".join(diff) if diff else f"identical to {args.compare}: {len(old)} cases")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
