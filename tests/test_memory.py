"""memory_estimate: exact byte counts from the parameter count."""

import pytest
import torch

from mini_most import MoST, MoSTConfig
from mini_most.memory import TRAIN_BYTES_PER_PARAM, GiB, count_params, memory_estimate


def test_full_matches_the_figures_in_the_readme():
    m = memory_estimate(MoSTConfig.preset("full"), context=4096, gpus=8)
    assert m.params == 15_706_484_224 and m.active_params == 2_661_150_208
    assert abs((m.weights + m.grads) / GiB - 58.5) < 0.05          # bf16 weights + grads
    assert abs(m.training / GiB - 234.0) < 0.1 and TRAIN_BYTES_PER_PARAM == 16
    assert abs(m.training_per_gpu / GiB - 234.04 / 8) < 0.01
    # one sequence's cache cannot be split: each of the 8 GPUs holds all of it
    assert m.inference_per_gpu == -(-m.weights // 8) + m.kv_cache
    eight = memory_estimate(MoSTConfig.preset("full"), context=4096, batch=8, gpus=8)
    assert eight.inference_per_gpu == m.inference_per_gpu and eight.kv_cache == 8 * m.kv_cache
    # MLA cache: 27 layers x 576 values x 2 bytes x 4096 tokens; plain MHA: 5,120 values
    assert m.kv_cache == 27 * 576 * 2 * 4096 and m.kv_cache_mha == 27 * 5120 * 2 * 4096
    assert m.inference == m.weights + m.kv_cache


@pytest.mark.parametrize("name", ["toy", "small"])
def test_counts_come_from_the_real_model(name):
    cfg = MoSTConfig.preset(name)
    real = MoST(cfg).num_params()
    assert count_params(cfg) == real
    m = memory_estimate(cfg, context=cfg.max_position_embeddings, batch=3, gpus=2)
    assert m.weights == 2 * real["total"] and m.optimizer == 12 * real["total"]
    # the KV cache is what a real KVCache allocates, in bf16
    from mini_most import KVCache
    cache = KVCache(cfg, batch_size=3, max_len=cfg.max_position_embeddings, dtype=torch.bfloat16)
    assert m.kv_cache == cache.latent.numel() * 2
    assert set(m.gib()) >= {"weights", "training", "training_per_gpu"}


def test_bad_arguments():
    cfg = MoSTConfig.preset("small")
    with pytest.raises(ValueError, match="must be >= 1"):
        memory_estimate(cfg, gpus=0)
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings=1024"):
        memory_estimate(cfg, context=4096)
