"""mini-MoST: the whole MoST model in one file.

MoST ("Mixture of Speech and Text", arXiv 2601.10272) is DeepSeek-V2-Lite with modality-aware
mixture-of-experts layers: every token carries a modality (0 text, 1 audio), and the router may
only send a text token to the text experts and an audio token to the audio experts, while a few
shared experts see every token. Read top to bottom:

    MoSTConfig -> RMSNorm, RoPE/YaRN -> KVCache, MLA (attention) -> MLP, Experts, Gate, MoE -> Block -> MoST

and, after the model, two pieces of plumbing: the probe that decides whether torch's grouped matmul
may run the experts, and the mapping between Hugging Face's config.json and MoSTConfig.

Only torch (and the standard library) is imported. Names follow DeepSeek-V2's config.json and
Hugging Face's DeepseekV2 code where they exist, so weights map across with few renames.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

ROUTING_MODES = ("modality", "vanilla", "dense")
# how an MoE layer runs its experts: "sorted" groups tokens by expert and runs them in one grouped
# matmul where torch has one for this device and dtype (else "loop"); "loop" is the same grouping
# with one matmul per expert; "reference" is the readable per-expert loop the others are tested against
DISPATCH_MODES = ("sorted", "loop", "reference")
TEXT, AUDIO = 0, 1  # modality ids

# MoST's rope_scaling, as in its config.json: YaRN stretches 4k-token RoPE to 40 x 4k = 160k.
MOST_YARN = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
             "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}


def is_integer(v) -> bool:
    """An int, or a numpy or torch integer; not a bool, not a float."""
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
        return True
    except TypeError:
        return False


@dataclass
class MoSTConfig:
    """Every field with MoST's value (the `full` preset); smaller presets override a few."""

    # --- vocabulary: one id space; a contiguous range of it holds only codec codes (audio) ---
    vocab_size: int = 102400                # DeepSeek-V2's BPE vocabulary
    audio_token_start: int = 100002         # MoST's speech units start here too (after BOS, EOS)
    audio_codebooks: int = 2                # codebook k lives at start + k * cardinality
    audio_cardinality: int = 1024           # 2 x 1024 = EnCodec at 1.5 kbps; ids 100002-102049
    bos_token_id: int = 100000
    eos_token_id: int = 100001
    pad_token_id: int = 100001              # DeepSeek has no pad token; pads are masked anyway
    max_position_embeddings: int = 163840   # longest sequence accepted (40 x 4096 with YaRN)
    # --- trunk ---
    hidden_size: int = 2048
    num_hidden_layers: int = 27
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02        # std of every weight at init (DeepSeek's)
    dropout: float = 0.0                    # not in MoST (0): a regulariser for the small presets
    # --- multi-head latent attention (MLA); no query compression (q_lora_rank null) ---
    num_attention_heads: int = 16
    kv_lora_rank: int = 512                 # keys and values are rebuilt from a 512-d latent
    qk_nope_head_dim: int = 128             # per-head query/key part without position
    qk_rope_head_dim: int = 64              # decoupled RoPE part, one key shared by all heads
    v_head_dim: int = 128
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default_factory=lambda: dict(MOST_YARN))  # None: plain RoPE
    # --- feed-forward ---
    intermediate_size: int = 10944          # the dense MLP of the first layers
    first_k_dense_replace: int = 1          # layers [0, k) are dense, the rest MoE
    # --- mixture of experts ---
    moe_intermediate_size: int = 1408       # width of one routed (and one shared) expert
    n_routed_experts: int = 64
    n_text_experts: int = 32                # experts [0, n_text) are text experts ...
    n_audio_experts: int = 32               # ... and [n_text, n_routed) audio experts
    n_shared_experts: int = 2               # one MLP of width 2 x 1408 that every token uses
    num_experts_per_tok: int = 6            # top-k
    norm_topk_prob: bool = False            # MoST: the k weights are NOT renormalised to sum 1
    routed_scaling_factor: float = 1.0
    aux_loss_alpha: float = 0.001           # weight of the sequence-level balance loss
    routing: str = "modality"               # "modality" (MoST), "vanilla" (DeepSeek), "dense"
    dispatch: str = "sorted"                # "sorted" (fast), "loop" or "reference": see DISPATCH_MODES

    def __post_init__(self):
        self._validate()

    # --- derived quantities ---
    @property
    def audio_token_end(self) -> int:       # one past the last audio id
        return self.audio_token_start + self.audio_codebooks * self.audio_cardinality

    @property
    def qk_head_dim(self) -> int:           # 128 + 64 = 192 in full
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def dense_arm_intermediate_size(self) -> int:
        # routing="dense": one MLP as wide as the k routed + shared experts a token uses,
        # so each token sees the same active parameters and FLOPs as in the MoE arms
        return (self.num_experts_per_tok + self.n_shared_experts) * self.moe_intermediate_size

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace and self.routing != "dense"

    def token_modality(self, tokens: torch.Tensor) -> torch.Tensor:
        """Modality of each id: 1 inside the audio range, else 0 (text, specials, markers)."""
        return ((tokens >= self.audio_token_start) & (tokens < self.audio_token_end)).long()

    def _validate(self) -> None:
        """Every field checked once, with an error that names it and says what would fit."""
        def need(ok, msg):
            if not ok:
                raise ValueError(f"MoSTConfig: {msg}")
        if isinstance(self.rope_scaling, dict) and "rope_type" in self.rope_scaling:
            self.rope_scaling = {("type" if k == "rope_type" else k): v for k, v in self.rope_scaling.items()}
        need(self.routing in ROUTING_MODES, f"routing={self.routing!r}; choose one of {ROUTING_MODES}")
        need(self.dispatch in DISPATCH_MODES, f"dispatch={self.dispatch!r}; choose one of {DISPATCH_MODES}")
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                 "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size",
                 "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok",
                 "audio_codebooks", "audio_cardinality", "max_position_embeddings")
        counts = ("audio_token_start", "bos_token_id", "eos_token_id", "pad_token_id", "first_k_dense_replace",
                  "n_text_experts", "n_audio_experts", "n_shared_experts")
        for f in sizes + counts:
            v = getattr(self, f)
            need(is_integer(v), f"{f} must be an integer, got {v!r} ({type(v).__name__})")
            setattr(self, f, int(v))                # a numpy or torch integer becomes a plain int
        for f in sizes:
            need(getattr(self, f) >= 1, f"{f} must be a positive integer, got {getattr(self, f)}")
        for f in ("rms_norm_eps", "initializer_range", "dropout", "rope_theta", "routed_scaling_factor", "aux_loss_alpha"):
            v = getattr(self, f)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                 f"{f} must be a finite number, got {v!r}")
        need(self.rms_norm_eps > 0, f"rms_norm_eps={self.rms_norm_eps} must be > 0 (it keeps RMSNorm from dividing by 0)")
        need(self.rope_theta > 0, f"rope_theta={self.rope_theta} must be > 0 (RoPE's base wavelength)")
        need(self.initializer_range >= 0, f"initializer_range={self.initializer_range} must be >= 0")
        need(self.aux_loss_alpha >= 0, f"aux_loss_alpha={self.aux_loss_alpha} must be >= 0 (0 turns the balance loss off)")
        need(self.routed_scaling_factor > 0, f"routed_scaling_factor={self.routed_scaling_factor} must be > 0")
        need(isinstance(self.norm_topk_prob, bool), f"norm_topk_prob must be True or False, got {self.norm_topk_prob!r}")
        need(self.qk_rope_head_dim % 2 == 0, f"qk_rope_head_dim must be even (RoPE rotates pairs), got {self.qk_rope_head_dim}")
        need(0 <= self.first_k_dense_replace <= self.num_hidden_layers,
             f"first_k_dense_replace={self.first_k_dense_replace} must lie in [0, num_hidden_layers={self.num_hidden_layers}]")
        need(min(self.n_text_experts, self.n_audio_experts, self.n_shared_experts) >= 0, "expert counts must be >= 0")
        need(self.n_text_experts + self.n_audio_experts == self.n_routed_experts,
             f"the split n_text_experts={self.n_text_experts} + n_audio_experts={self.n_audio_experts} "
             f"must sum to n_routed_experts={self.n_routed_experts}")
        k = self.num_experts_per_tok
        if self.routing == "modality":
            need(k <= min(self.n_text_experts, self.n_audio_experts),
                 f"num_experts_per_tok={k} exceeds a modality's group (text {self.n_text_experts}, "
                 f"audio {self.n_audio_experts}); lower top-k or enlarge the smaller group")
        need(k <= self.n_routed_experts, f"num_experts_per_tok={k} > n_routed_experts={self.n_routed_experts}")
        need(0 <= self.audio_token_start and self.audio_token_end <= self.vocab_size,
             f"audio ids [{self.audio_token_start}, {self.audio_token_end}) must fit in vocab_size={self.vocab_size}")
        for f in ("bos_token_id", "eos_token_id", "pad_token_id"):
            i = getattr(self, f)
            need(0 <= i < self.vocab_size and not self.audio_token_start <= i < self.audio_token_end,
                 f"{f}={i} must be a text-range id in [0, {self.vocab_size}) outside the audio range")
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1)")
        if self.rope_scaling is not None:
            need(isinstance(self.rope_scaling, dict) and self.rope_scaling.get("type") == "yarn",
                 f"rope_scaling must be None or a YaRN dict like {MOST_YARN}, got {self.rope_scaling}")
            unknown = set(self.rope_scaling) - set(MOST_YARN)
            need(not unknown, f"unknown rope_scaling keys {sorted(unknown)}; valid: {sorted(MOST_YARN)}")
            need({"factor", "original_max_position_embeddings"} <= set(self.rope_scaling),
                 "rope_scaling needs 'factor' and 'original_max_position_embeddings'")
            for k, v in self.rope_scaling.items():
                need(k == "type" or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
                     f"rope_scaling[{k!r}] must be a finite number, got {v!r}")
            need(self.rope_scaling["factor"] > 0 and self.rope_scaling["original_max_position_embeddings"] > 0,
                 f"rope_scaling's factor and original_max_position_embeddings must be > 0, got {self.rope_scaling}")

    # --- construction ---
    @classmethod
    def check_fields(cls, names) -> None:
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise ValueError(f"unknown MoSTConfig fields {unknown}; valid fields: {valid}")

    @classmethod
    def preset(cls, name: str, **overrides) -> MoSTConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
        cls.check_fields(overrides)
        return replace(cls(**PRESETS[name]), **overrides)

    @classmethod
    def from_json(cls, path, **overrides) -> MoSTConfig:
        """MoST's (or DeepSeek-V2's) config.json -> MoSTConfig (the key mapping: config_from_dict)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}: give the path of a MoST or DeepSeek-V2 config.json")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON ({e}): is it a config.json?") from e
        return config_from_dict(d, **overrides)


# Presets. Vocabulary of toy/small: bytes 0-255, specials 256-319 (pad 256, bos 257, eos 258; the
# rest are markers and task prompts that the tokenizer names), audio 320-2367 (2 codebooks x 1024).
# Parameters (total / active per token, both embedding tables counted):
#   toy 0.60M / 0.43M   small 5.73M / 2.63M   full 15.71B / 2.66B (2.45B without the input embedding)
_SMALL_VOCAB = dict(vocab_size=2368, audio_token_start=320, bos_token_id=257, eos_token_id=258, pad_token_id=256)
PRESETS = {
    "toy": dict(_SMALL_VOCAB, max_position_embeddings=512, hidden_size=64, num_hidden_layers=3,
                num_attention_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                rope_scaling=None, intermediate_size=192, moe_intermediate_size=32, n_routed_experts=16,
                n_text_experts=8, n_audio_experts=8, n_shared_experts=1, num_experts_per_tok=2),
    "small": dict(_SMALL_VOCAB, max_position_embeddings=1024, hidden_size=192, num_hidden_layers=4,
                  num_attention_heads=6, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                  rope_scaling=None, intermediate_size=512, moe_intermediate_size=128, n_routed_experts=16,
                  n_text_experts=8, n_audio_experts=8, n_shared_experts=2, num_experts_per_tok=2),
    "full": dict(),  # the dataclass defaults are MoST's config.json
}


# ----------------------------------------------------------------------------------------------
# normalisation, the one rule that draws initial weights, rotary position embedding (with YaRN)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # normalise in fp32 so bf16 activations don't lose the small variances
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def init_parameters(module: nn.Module, std: float) -> None:
    """DeepSeek's init, by module type, for the module's own parameters: RMSNorm weights 1, every
    other weight (linear, embedding, experts, router) ~ N(0, std). The one place weights are drawn."""
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            if isinstance(module, RMSNorm):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)


def yarn_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_scales(cfg: MoSTConfig) -> tuple[float, float]:
    """YaRN's two magnitude corrections (DeepSeek's defaults: mscale 1, mscale_all_dim 0):
    a factor on cos/sin, and one on the softmax scale. MoST sets mscale = mscale_all_dim = 0.707,
    so cos/sin stay as they are and attention logits are multiplied by 1.2608^2 = 1.59."""
    ys = cfg.rope_scaling
    if ys is None:
        return 1.0, 1.0
    f, m, m_all = ys["factor"], ys.get("mscale", 1), ys.get("mscale_all_dim", 0)
    return yarn_mscale(f, m) / yarn_mscale(f, m_all), yarn_mscale(f, m_all) ** 2


def rope_inv_freq(cfg: MoSTConfig, device=None) -> torch.Tensor:
    """Inverse frequencies of the qk_rope_head_dim / 2 rotating pairs.

    YaRN (arXiv 2309.00071) keeps the fast-rotating pairs as they are (they see many turns within
    the original 4k context), divides the slow ones by `factor` (interpolation), and blends the
    pairs in between with a linear ramp."""
    d = cfg.qk_rope_head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    ys = cfg.rope_scaling
    if ys is None:
        return inv_freq
    factor, orig = ys["factor"], ys["original_max_position_embeddings"]

    def pair_index(turns):  # the pair that makes `turns` full turns over the original context
        return d * math.log(orig / (turns * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))
    low = max(math.floor(pair_index(ys.get("beta_fast", 32))), 0)
    high = min(math.ceil(pair_index(ys.get("beta_slow", 1))), d - 1)
    ramp = ((torch.arange(d // 2, device=device, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
    return inv_freq / factor * ramp + inv_freq * (1 - ramp)  # ramp 0: keep, 1: interpolate


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs (x0, x1), (x2, x3), ... of x's last dim (DeepSeek's layout)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


def rope_cos_sin(cfg: MoSTConfig, seen: torch.Tensor, past: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, T, dr/2) for the last T = S - past of the S tokens in `seen` (B, S), the
    mask of real tokens so far. Positions count real tokens only, so left padding doesn't shift a
    sequence."""
    pos = (seen.long().cumsum(dim=1) - 1).clamp(min=0)[:, past:]              # (B, T)
    angles = pos[..., None].float() * rope_inv_freq(cfg, seen.device)         # (B, T, dr/2)
    rope_scale = yarn_scales(cfg)[0]
    return angles.cos() * rope_scale, angles.sin() * rope_scale


def causal_mask(seen: torch.Tensor, past: int) -> torch.Tensor:
    """Which keys each of the last T = S - past queries may attend to: earlier real tokens, and
    always itself, so a padding row stays finite. seen (B, S) -> (B, 1, T, S), one mask for all heads."""
    S = seen.shape[1]
    q_pos = torch.arange(past, S, device=seen.device)[:, None]                # (T, 1)
    k_pos = torch.arange(S, device=seen.device)[None, :]                      # (1, S)
    return (((k_pos <= q_pos) & seen[:, None, :]) | (k_pos == q_pos))[:, None]


# ----------------------------------------------------------------------------------------------
# attention: DeepSeek-V2's multi-head latent attention (MLA)


class KVCache:
    """MLA's inference cache. Per layer and token it keeps only the normalised latent c_kv
    (kv_lora_rank) and the roped shared key k_pe (qk_rope_head_dim): 512 + 64 = 576 values in
    `full`, where plain multi-head attention would keep K and V for 16 heads: 16 * (192 + 128)
    = 5,120. Keys and values are rebuilt from the latent (kv_b_proj) at every step.

    The cache owns its state, changed only by its methods. One forward of T new tokens:
    extend_mask(valid) once, then every layer's append (through its view, layer(i)), then advance(T)."""

    def __init__(self, cfg: MoSTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        if max_len > cfg.max_position_embeddings:
            raise ValueError(f"KVCache max_len={max_len} exceeds max_position_embeddings={cfg.max_position_embeddings}")
        width = cfg.kv_lora_rank + cfg.qk_rope_head_dim
        self.latent = torch.zeros(cfg.num_hidden_layers, batch_size, max_len, width, device=device, dtype=dtype)
        self.mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # real (non-pad) tokens
        self.length = 0  # tokens stored in every layer

    @property
    def values_per_token_per_layer(self) -> int:
        return self.latent.shape[-1]

    def extend_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """Record which of the next T tokens are real (B, T); return the mask of all S so far (B, S)."""
        end = self.length + valid.shape[1]
        self.mask[:, self.length:end] = valid
        return self.mask[:, :end]

    def append(self, layer: int, latent: torch.Tensor) -> torch.Tensor:
        """Store one layer's latents of the new tokens (B, T, rank + dr) after the `length` stored
        ones; return all S of them (B, S, rank + dr). The store is detached; the new chunk keeps
        its graph, so the cache also works under grad."""
        end = self.length + latent.shape[1]
        self.latent[layer, :, self.length:end] = latent.detach()
        return torch.cat([self.latent[layer, :, :self.length], latent], dim=1)

    def advance(self, n: int) -> None:
        """After every layer appended n tokens: they are now stored."""
        self.length += n

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self, i)

    def update(self, layer: int, latent: torch.Tensor) -> torch.Tensor:
        """0.3.0's name for append, kept for one release."""
        warnings.warn("KVCache.update is now KVCache.append; update goes in 0.5.0", DeprecationWarning, stacklevel=2)
        return self.append(layer, latent)


@dataclass
class LayerCache:
    """One layer's view of a KVCache: all that its attention sees of the cache."""
    cache: KVCache
    index: int

    def append(self, latent: torch.Tensor) -> torch.Tensor:
        return self.cache.append(self.index, latent)


class MLA(nn.Module):
    """Multi-head latent attention. Keys and values are rebuilt from a small per-token latent
    (what the cache keeps). Position rides on a separate rope part of q and k; its key part is one
    vector shared by all heads ("decoupled RoPE"), since a rotated key could not be cached as latent."""

    def __init__(self, cfg: MoSTConfig):
        super().__init__()
        self.cfg = cfg
        h, nh = cfg.hidden_size, cfg.num_attention_heads
        self.q_proj = nn.Linear(h, nh * cfg.qk_head_dim, bias=False)
        # down-projection to the latent, plus the one roped key that all heads share
        self.kv_a_proj_with_mqa = nn.Linear(h, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        # up-projection of the latent to per-head keys (no position) and values
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, nh * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(nh * cfg.v_head_dim, h, bias=False)
        # YaRN also sharpens attention: in full, 192^-0.5 x 1.59 = 0.114721 instead of 0.0722
        self.softmax_scale = cfg.qk_head_dim ** -0.5 * yarn_scales(cfg)[1]

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attn_mask: torch.Tensor,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, hidden), rope = (cos, sin) each (B, T, dr/2), attn_mask (B, 1, T, S) -> (B, T, hidden)."""
        cfg, (B, T, _), (cos, sin) = self.cfg, x.shape, rope
        nh, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        q_nope, q_pe = self.q_proj(x).view(B, T, nh, dn + dr).split([dn, dr], dim=-1)
        q_pe = apply_rope(q_pe, cos[:, :, None], sin[:, :, None])                 # (B, T, nh, dr)
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, dr], dim=-1)
        # what the cache stores: the normalised latent and the roped shared key, (B, T, rank + dr)
        latent = torch.cat([self.kv_a_layernorm(c_kv), apply_rope(k_pe, cos, sin)], dim=-1)
        if cache is not None:
            latent = cache.append(latent)                                         # (B, S, rank + dr)
        S = latent.shape[1]
        c_kv, k_pe = latent.split([cfg.kv_lora_rank, dr], dim=-1)
        k_nope, v = self.kv_b_proj(c_kv).view(B, S, nh, dn + dv).split([dn, dv], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)                     # (B, nh, T, dn + dr)
        k = torch.cat([k_nope, k_pe[:, :, None].expand(B, S, nh, dr)], dim=-1).transpose(1, 2)  # (B, nh, S, dn + dr)
        y = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), attn_mask=attn_mask, scale=self.softmax_scale)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, nh * dv))             # (B, T, hidden)


# ----------------------------------------------------------------------------------------------
# feed-forward: the SwiGLU MLP, routed experts, the modality-aware gate, the MoE layer


class LayerOutput(NamedTuple):
    """What a feed-forward layer (MLP or MoE) or a block computed. Only an MoE layer has a
    balance loss and a routing; a dense one leaves them None."""
    out: torch.Tensor                       # (B, T, hidden)
    aux_loss: torch.Tensor | None = None    # the sequence-level balance loss (scalar)
    routing: Routing | None = None          # what the router chose


def swiglu(x, w_gate, w_up, w_down, scale=None):
    """down(silu(gate(x)) * up(x)); `scale` (N, 1), if given, weights the hidden units, which equals
    weighting the output, with less memory traffic."""
    h = F.silu(F.linear(x, w_gate)) * F.linear(x, w_up)
    return F.linear(h if scale is None else h * scale, w_down)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). The dense layers, the shared experts, the dense arm."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> LayerOutput:
        """x (..., hidden) -> LayerOutput(out (..., hidden)). modality and valid are not used (a
        dense MLP treats every token alike): the call is the same as an MoE layer's."""
        return LayerOutput(swiglu(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight))


class Experts(nn.Module):
    """n routed SwiGLU experts, weights stacked (n, out, in) so a grouped matmul can use them."""

    def __init__(self, n: int, hidden: int, inter: int, std: float):
        super().__init__()
        self.std = std
        self.gate_proj = nn.Parameter(torch.empty(n, inter, hidden))
        self.up_proj = nn.Parameter(torch.empty(n, inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(n, hidden, inter))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # drawn here, as nn.Linear draws its own, so a layer built alone is usable; MoST.init_weights
        # then draws every weight of the model again, module by module, from the same rule
        init_parameters(self, self.std)

    def per_expert(self):
        # unbind once per forward: autograd then stacks the n gradients in one go, where
        # indexing weight[e] n times would build n full-size zero gradients
        return list(zip(self.gate_proj.unbind(0), self.up_proj.unbind(0), self.down_proj.unbind(0)))


class Gate(nn.Module):
    """The router: DeepSeek's MoEGate (routing="vanilla") or MoST's MAMoEGate ("modality")."""

    def __init__(self, cfg: MoSTConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_parameters(self, self.cfg.initializer_range)

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, hidden), modality (N,) -> expert ids (N, k), weights (N, k), masked scores (N, E)."""
        cfg = self.cfg
        if modality.shape != x.shape[:1] or ((modality != TEXT) & (modality != AUDIO)).any():
            raise ValueError(f"modality must be (N,) = {tuple(x.shape[:1])} of 0 (text) and 1 (audio), got shape "
                             f"{tuple(modality.shape)} with values {modality.unique()[:5].tolist()}")
        with torch.autocast(x.device.type, enabled=False):      # fp32 as DeepSeek, even under autocast
            logits = F.linear(x.float(), self.weight.float())    # (N, E)
        scores = logits.softmax(dim=-1)                           # over ALL routed experts ...
        if cfg.routing == "modality":
            expert_modality = (torch.arange(cfg.n_routed_experts, device=x.device) >= cfg.n_text_experts).long()
            allowed = expert_modality[None, :] == modality[:, None]  # (N, E)
            scores = scores * allowed                             # ... THEN zero the other group's
            # pick among allowed experts even if an allowed score underflowed to exactly 0
            weights, ids = scores.masked_fill(~allowed, -1.0).topk(cfg.num_experts_per_tok, dim=-1)
        else:
            weights, ids = scores.topk(cfg.num_experts_per_tok, dim=-1)
        # no renormalisation in MoST: a text token's k weights sum to less than its text share
        if cfg.norm_topk_prob and cfg.num_experts_per_tok > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            weights = weights * cfg.routed_scaling_factor
        return ids, weights, scores


def balance_loss(scores, ids, valid, alpha: float) -> torch.Tensor:
    """DeepSeek's sequence-level balance loss, on the (masked) scores, over real tokens only.

    Per sequence: alpha * sum_i f_i * P_i, with f_i = E / (k * T) * (tokens that chose expert i)
    and P_i = mean score of expert i over the T tokens; then the mean over sequences. Uniform
    routing over all E experts gives alpha * 1. scores (B, T, E), ids (B, T, k), valid (B, T)."""
    B, T, E = scores.shape
    k = ids.shape[-1]
    v = valid.float()
    n = v.sum(dim=1).clamp(min=1)                                                # (B,)
    chosen = torch.zeros(B, E, device=scores.device).scatter_add_(
        1, ids.flatten(1), v[:, :, None].expand(B, T, k).flatten(1))             # (B, E)
    f = chosen * E / (k * n[:, None])
    p = (scores * v[:, :, None]).sum(dim=1) / n[:, None]                         # (B, E)
    has_tokens = (valid.sum(dim=1) > 0).float()
    return alpha * ((f * p).sum(dim=1) * has_tokens).sum() / has_tokens.sum().clamp(min=1)


@dataclass
class Routing:
    """What one MoE layer decided (detached statistics). Padding holds expert id -1, weight 0."""
    layer: int | None         # the block's index (None for an MoE layer built on its own)
    expert_ids: torch.Tensor  # (B, T, k)
    weights: torch.Tensor     # (B, T, k), fp32


class MoE(nn.Module):
    """Gate -> k routed experts per token (weighted) + the shared experts (every token)."""

    def __init__(self, cfg: MoSTConfig, layer: int | None = None):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.gate = Gate(cfg)
        self.experts = Experts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size, cfg.initializer_range)
        # the shared experts are one MLP n_shared times as wide, added for every token, no gate
        self.shared_experts = MLP(cfg.hidden_size, cfg.n_shared_experts * cfg.moe_intermediate_size) \
            if cfg.n_shared_experts > 0 else None

    def forward(self, x: torch.Tensor, modality: torch.Tensor, valid: torch.Tensor) -> LayerOutput:
        """x (B, T, hidden), modality (B, T) 0/1, valid (B, T) bool -> LayerOutput with the balance
        loss and the routing."""
        B, T, H = x.shape
        flat = x.reshape(B * T, H)
        ids, weights, scores = self.gate(flat, modality.reshape(-1))
        aux = balance_loss(scores.view(B, T, -1), ids.view(B, T, -1), valid, self.cfg.aux_loss_alpha)
        pad = ~valid.reshape(-1, 1)
        ids, weights = ids.masked_fill(pad, -1), weights.masked_fill(pad, 0.0)  # pads go to no expert
        if self.cfg.dispatch == "reference":
            y = self.dispatch_reference(flat, ids, weights)
        else:  # "sorted" runs the grouped matmul where torch can; "loop" always loops over the sorted slices
            grouped = self.cfg.dispatch == "sorted" and use_grouped_mm(flat, self.cfg.moe_intermediate_size)
            y = self.dispatch_sorted(flat, ids, weights, grouped)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat).out
        return LayerOutput(y.view(B, T, H), aux, Routing(self.layer, ids.view(B, T, -1), weights.detach().view(B, T, -1)))

    def dispatch_reference(self, x, ids, weights):
        """Readable: for each expert, find its tokens, run them, add back weighted."""
        y = torch.zeros_like(x)
        for e, w in enumerate(self.experts.per_expert()):
            token, slot = torch.where(ids == e)
            if token.numel() == 0:
                continue
            out = swiglu(x[token], *w) * weights[token, slot, None]
            y.index_add_(0, token, out.to(x.dtype))
        return y

    def dispatch_sorted(self, x, ids, weights, grouped: bool):
        """Fast: sort the (token, slot) pairs by expert once, so each expert's tokens form one
        contiguous slice; run the experts on their slices; scatter back with one index_add.
        Same sums as the reference. x (N, H), ids and weights (N, k) -> (N, H)."""
        k = ids.shape[1]
        flat_ids = ids.flatten()                                        # (N*k,)
        n_pad = int((flat_ids < 0).sum())
        order = flat_ids.argsort(stable=True)[n_pad:]                   # pads (-1) sort first: drop them
        if len(order) == 0:
            return torch.zeros_like(x)
        counts = torch.bincount(flat_ids[order], minlength=self.cfg.n_routed_experts)  # (E,) tokens per expert
        token = order // k                                              # (M,) the token of each pair
        xs = x.index_select(0, token)                                   # (M, H), grouped by expert
        ws = weights.flatten()[order, None].to(x.dtype)                 # (M, 1)
        ys = self._grouped_experts(xs, ws, counts) if grouped else self._looped_experts(xs, ws, counts)
        return torch.zeros_like(x).index_add_(0, token, ys.to(x.dtype))   # autocast may have made ys bf16

    def _grouped_experts(self, xs, ws, counts):
        """All experts in one grouped matmul per projection; expert e's rows end at offs[e]."""
        ex = self.experts
        offs = counts.cumsum(0).to(torch.int32)
        h = F.silu(torch._grouped_mm(xs, ex.gate_proj.transpose(1, 2), offs=offs)) \
            * torch._grouped_mm(xs, ex.up_proj.transpose(1, 2), offs=offs)
        return torch._grouped_mm(h * ws, ex.down_proj.transpose(1, 2), offs=offs)

    def _looped_experts(self, xs, ws, counts):
        """One SwiGLU per expert on its slice (idle experts skipped)."""
        counts = counts.tolist()
        return torch.cat([swiglu(c, g, u, d, scale=w)
                          for c, w, (g, u, d) in zip(xs.split(counts), ws.split(counts), self.experts.per_expert()) if len(c)])


# ----------------------------------------------------------------------------------------------
# the transformer


class Block(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + feed_forward(norm(x)); the feed-forward is a
    dense MLP (the first layers, and every layer of the dense arm) or an MoE layer."""

    def __init__(self, cfg: MoSTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.is_moe_layer(layer):
            self.mlp = MoE(cfg, layer)
        elif layer < cfg.first_k_dense_replace:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)
        else:  # routing="dense": the fair dense baseline in place of an MoE layer
            self.mlp = MLP(cfg.hidden_size, cfg.dense_arm_intermediate_size)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, *, rope: tuple[torch.Tensor, torch.Tensor], attn_mask: torch.Tensor,
                modality: torch.Tensor, valid: torch.Tensor, cache: LayerCache | None = None) -> LayerOutput:
        """x (B, T, hidden) -> LayerOutput(the new x, the MoE layer's balance loss and routing)."""
        x = x + self.drop(self.self_attn(self.input_layernorm(x), rope, attn_mask, cache))
        ffn = self.mlp(self.post_attention_layernorm(x), modality, valid)   # MLP or MoE: the same call
        return LayerOutput(x + self.drop(ffn.out), ffn.aux_loss, ffn.routing)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the targets that are not -100, never at padding."""
    targets = targets.masked_fill(~valid, -100)
    if not (targets != -100).any():
        raise ValueError("targets has no position to learn from: every target is -100 or padding")
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
               generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of logits (B, vocab): the argmax at temperature 0, else a sample from
    softmax(logits / temperature), optionally among the top_k ids only."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if not torch.isfinite(logits).all():
        raise ValueError(f"temperature={temperature} is so small that logits / temperature overflow: "
                         "use temperature=0 for the most likely id")
    if top_k is not None:  # keep exactly the k best ids (ties broken by topk)
        keep = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices
        logits = torch.full_like(logits, float("-inf")).scatter(1, keep, logits.gather(1, keep))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


@dataclass
class MoSTOutput:
    logits: torch.Tensor            # (B, T, vocab)
    loss: torch.Tensor | None       # mean cross-entropy over targets != -100; None without targets
    aux_loss: torch.Tensor          # sum of the MoE layers' balance losses; train on loss + aux_loss
    routing: list[Routing]          # one per MoE layer


class MoST(nn.Module):
    def __init__(self, config: MoSTConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)  # untied
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """DeepSeek's init, module by module (init_parameters): every matrix ~ N(0, 0.02), norms 1.
        Call again after to_empty()."""
        for module in self.modules():
            init_parameters(module, self.config.initializer_range)

    def num_params(self) -> dict:
        """Total and per-token active parameters (works on the meta device)."""
        cfg = self.config
        total = sum(p.numel() for p in self.parameters())
        routed = sum(p.numel() for b in self.layers if isinstance(b.mlp, MoE) for p in b.mlp.experts.parameters())
        active = total - routed * (cfg.n_routed_experts - cfg.num_experts_per_tok) // cfg.n_routed_experts
        return {"total": total, "active": active,
                "active_without_input_embedding": active - self.embed_tokens.weight.numel()}

    def forward(self, tokens: torch.Tensor, modality: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> MoSTOutput:
        """tokens (B, T) ids; modality (B, T) 0/1, default from the ids; targets (B, T): the id
        that should follow each position (-100: no loss); attention_mask (B, T): 1 real, 0 pad
        (any side); cache: a KVCache to extend (generation)."""
        tokens, modality, valid, targets = self._check_inputs(tokens, modality, targets, attention_mask, cache)
        past = cache.length if cache is not None else 0
        seen = cache.extend_mask(valid) if cache is not None else valid           # (B, S) real tokens so far
        rope, attn_mask = rope_cos_sin(self.config, seen, past), causal_mask(seen, past)

        x = self.drop(self.embed_tokens(tokens))                                  # (B, T, hidden)
        aux_loss, routing = x.new_zeros((), dtype=torch.float32), []
        for i, block in enumerate(self.layers):
            y = block(x, rope=rope, attn_mask=attn_mask, modality=modality, valid=valid,
                      cache=cache.layer(i) if cache is not None else None)
            x = y.out
            if y.routing is not None:                                             # an MoE layer
                aux_loss, routing = aux_loss + y.aux_loss, routing + [y.routing]
        logits = self.lm_head(self.norm(x))                                       # (B, T, vocab)
        if cache is not None:
            cache.advance(tokens.shape[1])
        loss = None if targets is None else lm_loss(logits, targets, valid)
        return MoSTOutput(logits, loss, aux_loss, routing)

    def _check_inputs(self, tokens, modality, targets, attention_mask, cache):
        cfg = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point \
                or tokens.dtype == torch.bool or tokens.is_complex() or tokens.numel() == 0:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be a non-empty integer tensor of shape (B, T), got {got}; "
                             "for one sequence use tokens[None]")
        tokens = tokens.long()                          # any integer dtype (embedding lookups want int64)
        B, T = tokens.shape
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, vocab_size={cfg.vocab_size}), got min {lo}, max {hi}")
        past = cache.length if cache is not None else 0
        if past + T > cfg.max_position_embeddings:
            raise ValueError(f"sequence length {past + T} exceeds max_position_embeddings="
                             f"{cfg.max_position_embeddings}; shorten it or raise the config's limit")
        if cache is not None and (cache.latent.shape[1] != B or past + T > cache.latent.shape[2]):
            raise ValueError(f"KVCache holds batch {cache.latent.shape[1]} x {cache.latent.shape[2]} tokens; "
                             f"cannot add batch {B} x {T} tokens after {past}")

        def check_like(name, t, allowed, valid_values):
            if not isinstance(t, torch.Tensor) or t.shape != tokens.shape:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must have the shape of tokens {tuple(tokens.shape)}, got {shape}")
            if t.dtype.is_floating_point or t.is_complex():
                raise ValueError(f"{name} must be an integer or bool tensor, got {t.dtype}")
            bad = ~allowed(t.long())
            if bad.any():
                raise ValueError(f"{name} has invalid values {t[bad].unique()[:5].tolist()}; {valid_values}")
            return t.long()

        if modality is None:
            modality = cfg.token_modality(tokens)
        else:
            modality = check_like("modality", modality, lambda m: (m == TEXT) | (m == AUDIO),
                                  "use 0 for text and 1 for audio, or leave modality=None to read it off the ids")
        if attention_mask is None:
            valid = torch.ones_like(tokens, dtype=torch.bool)
        else:
            valid = check_like("attention_mask", attention_mask, lambda m: (m == 0) | (m == 1),
                               "use 1 for real tokens and 0 for padding").bool()
            if cache is None and not valid.any():   # (with a cache, padding may come first, chunk by chunk)
                raise ValueError("attention_mask is all zeros: every token is padding, so there is nothing to compute; "
                                 "mark real tokens with 1")
        if targets is not None:
            targets = check_like("targets", targets, lambda t: (t == -100) | ((t >= 0) & (t < cfg.vocab_size)),
                                 f"targets are ids in [0, {cfg.vocab_size}) or -100 (no loss there)")
        return tokens, modality, valid, targets

    @torch.no_grad()
    def generate(self, tokens, max_new_tokens: int, attention_mask=None, modality=None, temperature: float = 0.0,
                 top_k: int | None = None, stop_at_eos: bool = True, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Continue each prompt by max_new_tokens ids: greedy (temperature 0) or sampled from
        softmax(logits / temperature), optionally among the top_k. Prompts may be padded on
        either side (attention_mask). Returns only the new ids (B, max_new_tokens); after a row's
        EOS (if stop_at_eos) it holds pad_token_id. New ids get their modality from the id."""
        cfg = self.config
        if not is_integer(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if top_k is not None and (not is_integer(top_k) or top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
                or temperature < 0:
            raise ValueError(f"need a finite temperature >= 0 (0: greedy), got {temperature!r}")
        tokens, modality, valid, _ = self._check_inputs(tokens, modality, None, attention_mask, None)
        if not valid.any(dim=1).all():
            raise ValueError(f"prompts {(~valid.any(dim=1)).nonzero().flatten().tolist()} are all padding: each "
                             "prompt needs at least one real token to continue from")
        B, T = tokens.shape
        if T + max_new_tokens > cfg.max_position_embeddings:
            raise ValueError(f"prompt {T} + {max_new_tokens} new tokens exceeds max_position_embeddings="
                             f"{cfg.max_position_embeddings}")
        # move every prompt's pads to the left, so all rows end at the same column
        order = valid.long().argsort(dim=1, stable=True)
        tokens, modality, valid = tokens.gather(1, order), modality.gather(1, order), valid.gather(1, order)
        cache = KVCache(cfg, B, T + max_new_tokens, tokens.device, self.lm_head.weight.dtype) if use_cache else None
        out = torch.full((B, max_new_tokens), cfg.pad_token_id, dtype=torch.long, device=tokens.device)
        done = torch.zeros(B, dtype=torch.bool, device=tokens.device)
        seq, seq_mod, seq_valid = tokens, modality, valid
        for i in range(max_new_tokens):
            start = cache.length if cache is not None else 0  # with a cache, feed only the new ids
            logits = self(seq[:, start:], seq_mod[:, start:], attention_mask=seq_valid[:, start:],
                          cache=cache).logits[:, -1].float()                     # (B, vocab)
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"generate: the logits of new token {i} hold NaN or inf; check the "
                                         "weights (NaN or inf in them?) and the precision (try fp32)")
            nxt = next_token(logits, temperature, top_k, generator)
            nxt = nxt.masked_fill(done, cfg.pad_token_id)  # finished rows emit padding
            out[:, i] = nxt
            if stop_at_eos:
                done = done | (nxt == cfg.eos_token_id)
                if done.all():
                    break
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            seq_mod = torch.cat([seq_mod, cfg.token_modality(nxt[:, None])], dim=1)
            seq_valid = F.pad(seq_valid, (0, 1), value=True)
        return out


# ----------------------------------------------------------------------------------------------
# plumbing 1: may torch's grouped matmul run the experts here?


def use_grouped_mm(x: torch.Tensor, inter: int) -> bool:
    """Whether the sorted dispatch runs the experts (width `inter`) on tokens x (N, hidden) with
    torch._grouped_mm. It runs every expert's matmul in one call, and its backward writes the
    stacked expert gradients directly. It is a private op whose support varies by build and device
    (CUDA: bf16 on recent GPUs), so a probe checks it once per device and dtype against plain
    matmuls; where it fails, the loop over sorted slices runs instead."""
    ok_dtype = x.dtype == torch.bfloat16 or (x.device.type == "cpu" and x.dtype == torch.float32)
    # its rows must be 16-byte aligned on every device: 8 bf16 values (autocast may run it in bf16)
    aligned = x.shape[-1] % 8 == 0 and inter % 8 == 0
    return ok_dtype and aligned and _grouped_mm_works(x.device.type, x.device.index, x.dtype)


@functools.cache
def _grouped_mm_works(device_type: str, index: int | None, dtype: torch.dtype) -> bool:
    g = torch.Generator().manual_seed(0)                                  # not the global RNG
    try:  # everything inside: on an unusual device (meta, ...) even autocast may refuse
        dev = torch.device(device_type, index) if index is not None else torch.device(device_type)
        # the first call may come under autocast: probe the op itself, in the dtype asked about
        with torch.autocast(device_type, enabled=False):
            x = torch.randn(48, 32, generator=g).to(dev, dtype)
            w = torch.randn(3, 16, 32, generator=g).to(dev, dtype)        # stored (E, out, in), as Experts
            offs = torch.tensor([16, 40, 48], dtype=torch.int32, device=dev)   # uneven groups
            got = torch._grouped_mm(x, w.transpose(1, 2), offs=offs).float()
            want = torch.cat([x[a:b].float() @ w[e].float().T for e, (a, b) in enumerate([(0, 16), (16, 40), (40, 48)])])
            return bool(torch.allclose(got, want, atol=0.1, rtol=0.02))
    except (AttributeError, RuntimeError, NotImplementedError, TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# plumbing 2: Hugging Face's config.json <-> MoSTConfig
#
# MoSTConfig keeps DeepSeek's field names, so most keys map one to one; MoST's text/audio expert
# index lists become the split n_text_experts / n_audio_experts; keys for features mini-MoST does
# not implement (query compression, group-limited routing, ...) must hold their neutral value.

# key -> the values mini-MoST implements; the first is what config_to_dict writes.
# num_key_value_heads must equal num_attention_heads (MLA has no grouped keys): checked apart.
NEUTRAL_KEYS = {"attention_bias": (False,), "attention_dropout": (0.0,), "hidden_act": ("silu",), "moe_layer_freq": (1,),
                "n_group": (1, None), "topk_group": (1, None), "topk_method": ("greedy",), "scoring_func": ("softmax",),
                "seq_aux": (True,), "pretraining_tp": (1,), "tie_word_embeddings": (False,), "q_lora_rank": (None,),
                "ep_size": (1,), "mlp_bias": (False,)}
# keys that describe the file, not the model
IGNORED_KEYS = {"architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
                "use_cache", "_name_or_path", "output_router_logits"}


def config_from_dict(d: dict, **overrides) -> MoSTConfig:
    """A MoST or DeepSeek-V2 config.json (as a dict) -> MoSTConfig; what we can't model raises.
    Without MoST's keys (plain DeepSeek-V2) routing is "vanilla", split half-half by index.
    A dict of MoSTConfig's own fields (dataclasses.asdict) round-trips."""
    if not isinstance(d, dict):
        raise ValueError(f"a config must be a JSON object (dict), got {type(d).__name__}")
    d, names = dict(d), {f.name for f in fields(MoSTConfig)}
    fixed = {**NEUTRAL_KEYS, "num_key_value_heads": (d.get("num_attention_heads", MoSTConfig.num_attention_heads),)}
    for key, allowed in fixed.items():
        if key in d and d.pop(key) not in allowed:
            raise ValueError(f"config key {key!r} must be {allowed[0]!r}: mini-MoST implements only that "
                             "(full DeepSeek-V2's query compression and group-limited routing are out of scope)")
    kw = {k: d.pop(k) for k in list(d) if k in names}
    # transformers 5 also writes derived sizes: they must agree with the ones they derive from
    rope_dim = kw.get("qk_rope_head_dim", MoSTConfig.qk_rope_head_dim)
    derived = {"qk_head_dim": kw.get("qk_nope_head_dim", MoSTConfig.qk_nope_head_dim) + rope_dim, "head_dim": rope_dim}
    for key, value in derived.items():
        if key in d and d.pop(key) != value:
            raise ValueError(f"config key {key!r} disagrees with qk_nope_head_dim/qk_rope_head_dim (expected {value})")
    if kw.get("pad_token_id") is None:  # DeepSeek has no pad token (null in config.json): pads are masked anyway
        kw["pad_token_id"] = kw.get("eos_token_id", MoSTConfig.eos_token_id)
    kw.setdefault("routing", "modality" if d.pop("use_modality_aware_routing", False) else "vanilla")
    if "n_text_experts" not in kw and "n_audio_experts" not in kw:
        n = kw.get("n_routed_experts", MoSTConfig.n_routed_experts)
        kw["n_text_experts"], kw["n_audio_experts"] = n - n // 2, n // 2
    if "text_expert_indices" in d or "audio_expert_indices" in d:
        text, audio = d.pop("text_expert_indices", []), d.pop("audio_expert_indices", [])
        if list(text) != list(range(len(text))) or list(audio) != list(range(len(text), len(text) + len(audio))):
            raise ValueError("text_expert_indices must be 0..n_text-1 and audio_expert_indices the next "
                             f"ids (contiguous, text first); got {text} and {audio}")
        kw["n_text_experts"], kw["n_audio_experts"] = len(text), len(audio)
    if "rope_parameters" in d:  # transformers v5 spelling: theta inside the scaling dict
        rp = dict(d.pop("rope_parameters"))
        kw["rope_theta"] = rp.pop("rope_theta", kw.get("rope_theta", 10000.0))
        kw["rope_scaling"] = rp if rp.get("rope_type", rp.get("type")) == "yarn" else None
    if set(d) - IGNORED_KEYS:
        raise ValueError(f"unknown config keys {sorted(set(d) - IGNORED_KEYS)}; valid: {sorted(names | set(fixed))}"
                         " plus use_modality_aware_routing, text_expert_indices, audio_expert_indices")
    MoSTConfig.check_fields(overrides)
    return MoSTConfig(**{**kw, **overrides})


def config_to_dict(config: MoSTConfig) -> dict:
    """MoSTConfig -> a config.json that transformers reads as DeepseekV2Config and config_from_dict
    reads back exactly (MoST's own keys ride along: transformers keeps unknown keys)."""
    d = asdict(config)
    text = list(range(config.n_text_experts))
    d.update({key: allowed[0] for key, allowed in NEUTRAL_KEYS.items()})
    d.update({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
              "num_key_value_heads": config.num_attention_heads, "use_modality_aware_routing": config.routing == "modality",
              "text_expert_indices": text, "audio_expert_indices": list(range(len(text), config.n_routed_experts))})
    for k in ("n_text_experts", "n_audio_experts"):  # carried by the index lists
        d.pop(k)
    return d
