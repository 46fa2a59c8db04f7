"""Evaluation, shared by the trainer, the ablation and the notebooks.

Teacher-forced (the model sees the true previous ids):
- `split_losses`: summed cross-entropy, counts and argmax hits of one batch's targets, split by
  what is predicted: text ids or audio ids;
- `loss_by_modality`: the same over several batches, as means (loss, text_loss, audio_loss,
  text_acc, audio_acc); `target_stats`: the same for a list of examples.
Free-running (the model continues its own output, greedy or sampled, with the KV cache):
- `transcribe`: ASR, the text each speech prompt continues with;
- `speak`: TTS, the audio codes each text prompt continues with.
Routing: `routing_stats` (expert load per layer and modality) and `load_divergence`.

Every function switches the model to eval mode (no dropout) for its own work and back after
(`evaluating`), and runs under the precision it is given (`utils.autocast`).
"""

from __future__ import annotations

import collections
import contextlib
import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from .model import MoST, MoSTConfig
from .tokens import IGNORE, Tokenizer, collate, prompts
from .utils import autocast


@contextlib.contextmanager
def evaluating(model: MoST):
    """Eval mode (no dropout) for the block, then the mode the model had, even after an error.
    Yields the model's device."""
    was = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was)


def split_losses(logits, targets, config: MoSTConfig) -> dict:
    """Summed cross-entropy, counts and argmax hits of the targets, split by what is predicted
    (text or audio ids)."""
    logits, targets = logits.flatten(0, 1).float(), targets.flatten()
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
    hit = logits.argmax(-1) == targets
    trained = targets != IGNORE
    audio = config.token_modality(targets).bool() & trained
    text = trained & ~audio
    return {"text_sum": ce[text].sum().item(), "text_n": int(text.sum()), "text_hit": int(hit[text].sum()),
            "audio_sum": ce[audio].sum().item(), "audio_n": int(audio.sum()), "audio_hit": int(hit[audio].sum())}


@torch.no_grad()
def loss_by_modality(model: MoST, batches, precision: str) -> dict:
    """Teacher-forced over `batches`: the mean loss over all targets, and per target modality the
    mean loss (nats per token) and argmax accuracy; NaN where there are no targets of a modality."""
    s = collections.Counter()
    with evaluating(model) as device:
        for b in batches:
            b = b.to(device)
            with autocast(device.type, precision):
                logits = model(b.tokens, b.modality, attention_mask=b.attention_mask).logits
            s.update(split_losses(logits, b.targets, model.config))
    n = s["text_n"] + s["audio_n"]
    out = {"loss": (s["text_sum"] + s["audio_sum"]) / n if n else math.nan}
    for k in ("text", "audio"):
        m = s[f"{k}_n"]
        out[f"{k}_loss"], out[f"{k}_acc"] = (s[f"{k}_sum"] / m, s[f"{k}_hit"] / m) if m else (math.nan, math.nan)
    return out


def target_stats(model: MoST, tok: Tokenizer, examples: list, precision: str, batch_size: int = 32) -> dict:
    """Teacher-forced: mean loss and argmax accuracy on text targets and on audio targets."""
    batches = (collate(examples[i:i + batch_size], tok.pad) for i in range(0, len(examples), batch_size))
    return {k: v for k, v in loss_by_modality(model, batches, precision).items() if k != "loss"}


@torch.no_grad()
def transcribe(model: MoST, tok: Tokenizer, examples: list, batch_size: int = 64, max_new_tokens: int = 72,
               precision: str = "fp32") -> list[str]:
    """Greedy, KV-cached ASR: the text each example's speech prompt continues with."""
    out = []
    with evaluating(model) as device:
        for i in range(0, len(examples), batch_size):
            tokens, attn = prompts(examples[i:i + batch_size], tok.pad)
            with autocast(device.type, precision):
                new = model.generate(tokens.to(device), max_new_tokens, attention_mask=attn.to(device)).cpu()
            out += [tok.decode_text(row[row != tok.pad].tolist(), skip_special=True) for row in new]
    return out


@torch.no_grad()
def speak(model: MoST, tok: Tokenizer, texts: list[str], max_frames: int, temperature: float, seed: int,
          batch_size: int = 32, precision: str = "fp32") -> list[torch.Tensor]:
    """TTS by the model: sampled audio ids for each text, prompted with <bos><tts> text <boa>;
    returns each utterance's codes (K, F), cut at the first non-audio id (F may be 0)."""
    out = []
    with evaluating(model) as device:
        gen = torch.Generator(device).manual_seed(seed)
        for i in range(0, len(texts), batch_size):
            chunk = [tok.tts(t, torch.zeros(tok.codebooks, 1, dtype=torch.long)) for t in texts[i:i + batch_size]]
            chunk = [replace(e, prompt_len=e.prompt_len + 1) for e in chunk]       # the prompt ends with <boa>
            tokens, attn = prompts(chunk, tok.pad)
            with autocast(device.type, precision):
                new = model.generate(tokens.to(device), max_frames * tok.codebooks + 2, attention_mask=attn.to(device),
                                     temperature=temperature, top_k=50, generator=gen).cpu()
            for row in new:
                span = tok.audio_span(row)
                out.append(tok.decode_audio(span) if len(span) else torch.zeros(tok.codebooks, 0, dtype=torch.long))
    return out


@torch.no_grad()
def routing_stats(model: MoST, batches: list, precision: str) -> dict | None:
    """Expert load per layer and modality (the share of top-k choices each expert gets), its entropy
    in bits, and the share of choices in the token's own expert group by index (experts 0..n/2-1 for
    text tokens, the rest for audio): 1 by construction under modality routing, which this checks;
    under vanilla routing the index split means nothing (see load_divergence for specialisation)."""
    cfg = model.config
    if cfg.routing == "dense":
        return None
    counts = None
    with evaluating(model) as device:
        for b in batches:
            b = b.to(device)
            with autocast(device.type, precision):
                out = model(b.tokens, b.modality, attention_mask=b.attention_mask)
            valid = b.attention_mask.bool()
            if counts is None:
                counts = torch.zeros(len(out.routing), 2, cfg.n_routed_experts)  # (MoE layers, modality, expert)
            for i, r in enumerate(out.routing):
                for m in (0, 1):
                    ids = r.expert_ids[valid & (b.modality == m)].flatten()
                    ids = ids[ids >= 0]
                    counts[i, m] += torch.bincount(ids, minlength=cfg.n_routed_experts).cpu().float()
    load = counts / counts.sum(-1, keepdim=True).clamp(min=1)                   # (L, 2, E)
    entropy = -(load * load.clamp(min=1e-12).log2()).sum(-1)                     # (L, 2) bits
    own = torch.stack([load[:, 0, :cfg.n_text_experts].sum(-1), load[:, 1, cfg.n_text_experts:].sum(-1)], 1)
    return {"load": load.tolist(), "entropy_bits": entropy.tolist(), "own_group_share": own.tolist(),
            "max_entropy_bits": math.log2(cfg.n_routed_experts)}


def load_divergence(load) -> list[float]:
    """Per layer, the Jensen-Shannon divergence (bits) between the expert load of text tokens and of
    audio tokens: 0 when both modalities use the experts in the same proportions, 1 when no expert
    serves both. It does not depend on how the experts are numbered. load: (layers, 2, experts)."""
    load = torch.as_tensor(load, dtype=torch.float64)
    p, q = load[:, 0], load[:, 1]
    m = (p + q) / 2

    def kl(a, b):
        return torch.where(a > 0, a * (a.clamp(min=1e-300) / b.clamp(min=1e-300)).log2(), 0.0).sum(-1)
    return ((kl(p, m) + kl(q, m)) / 2).tolist()
