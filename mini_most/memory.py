"""How much memory a preset needs: weights, KV cache, gradients and optimizer state.

    from mini_most.memory import memory_estimate
    m = memory_estimate(MoSTConfig.preset("full"), context=4096, gpus=8)
    m.weights / 2**30, m.training_per_gpu / 2**30          # GiB

Counted exactly from the parameter count (the model is built on the meta device: no memory):
- weights in bf16: 2 bytes per parameter;
- inference: the weights plus MLA's KV cache (kv_lora_rank + qk_rope_head_dim values per token per
  layer, bf16) for `batch` sequences of `context` tokens;
- training with AdamW in mixed precision: bf16 weights (2) + bf16 gradients (2) + fp32 master
  weights (4) + fp32 first and second moments (4 + 4) = 16 bytes per parameter;
- per GPU: fully sharded over `gpus` (FSDP/ZeRO-3 splits weights, gradients and optimizer state
  evenly); the KV cache splits by sequence only (MLA's latent is shared by all heads, so a head
  split would not divide it): each GPU holds ceil(batch / gpus) sequences' cache.
Not counted: activations (they depend on batch, sequence and activation checkpointing), the
temporary all-gathered layer under FSDP, and the framework's own workspace. Say so when you
quote these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import MoST, MoSTConfig

GiB = 2**30
TRAIN_BYTES_PER_PARAM = 2 + 2 + 4 + 4 + 4   # bf16 weight + bf16 grad + fp32 master + Adam m + Adam v


@dataclass
class MemoryEstimate:
    params: int               # total parameters
    active_params: int        # per token
    weights: int              # bytes, bf16
    kv_cache: int             # bytes, bf16, batch x context tokens
    kv_cache_mha: int         # what plain multi-head attention would cache instead (expanded K and V)
    inference: int            # weights + kv_cache
    grads: int                # bytes, bf16
    optimizer: int            # fp32 master weights + Adam moments
    training: int             # weights + grads + optimizer (16 bytes per parameter)
    gpus: int
    inference_per_gpu: int
    training_per_gpu: int

    def gib(self) -> dict:
        return {k: round(v / GiB, 2) for k, v in vars(self).items() if k not in ("params", "active_params", "gpus")}


def count_params(config: MoSTConfig) -> dict:
    """num_params() of the model, built on the meta device (shapes only: instant, no memory)."""
    with torch.device("meta"):
        return MoST(config).num_params()


def memory_estimate(config: MoSTConfig, context: int = 4096, batch: int = 1, gpus: int = 1) -> MemoryEstimate:
    if min(context, batch, gpus) < 1:
        raise ValueError(f"context ({context}), batch ({batch}) and gpus ({gpus}) must be >= 1")
    if context > config.max_position_embeddings:
        raise ValueError(f"context={context} exceeds the model's max_position_embeddings={config.max_position_embeddings}")
    n = count_params(config)
    bf16 = 2
    per_token = config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * bf16
    per_token_mha = config.num_hidden_layers * config.num_attention_heads * (config.qk_head_dim + config.v_head_dim) * bf16
    weights, grads = n["total"] * bf16, n["total"] * bf16
    optimizer = n["total"] * (TRAIN_BYTES_PER_PARAM - 2 * bf16)
    kv = per_token * context * batch
    kv_per_gpu = per_token * context * -(-batch // gpus)
    training = weights + grads + optimizer
    return MemoryEstimate(
        params=n["total"], active_params=n["active"], weights=weights, kv_cache=kv,
        kv_cache_mha=per_token_mha * context * batch, inference=weights + kv, grads=grads, optimizer=optimizer,
        training=training, gpus=gpus, inference_per_gpu=-(-weights // gpus) + kv_per_gpu, training_per_gpu=-(-training // gpus))
