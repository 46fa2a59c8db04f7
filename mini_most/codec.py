"""Speech <-> discrete codes: one interface, two codecs.

    codec = load_codec()                    # "offline" (default): the mel-RVQ codec this repo ships
    codec = load_codec("encodec")           # the pretrained 24 kHz neural EnCodec (downloads once)
    codec = load_codec(corpus.codec)        # the codec that made a corpus's codes (its `info()`)
    codes = codec.encode(wav)               # wav (B, C, T) float at codec.sample_rate -> (B, K, F) int64
    wav = codec.decode(codes)               # (B, K, F) -> (B, 1, T')

Both have the API of audiocraft's EnCodec wrapper: `sample_rate`, `frame_rate`, `num_codebooks`,
`cardinality`, plus `model_codebooks` (how many codebooks the model is fed by default) and
`info()` (a JSON-able record that `load_codec(info)` rebuilds the codec from). `encode` down-mixes
channels and resamples (when told the input's sample rate) and says so; it refuses empty audio,
NaN/inf, integer PCM without a stated scale and wrong shapes.

The offline codec (`MelRVQCodec`): encoder = log-mel spectrogram (16 kHz, 80 mel bins, hop 320 =
50 frames/s), each clip shifted to one speech level (a gain); quantizer = residual vector
quantization with k-means codebooks (3 codebooks of 1024 entries, 1.5 kbit/s; the model hears
codebook 0, 50 tokens per second); decoder = inverse mel filterbank + Griffin-Lim phase
reconstruction. Nothing is learned but the codebooks, which is why it can't collapse the way a
small neural codec trained for minutes on a CPU does. Rebuild them with `python -m mini_most.codec
train` (under a minute on 2 cores): it fits them on eSpeak, Flite and Bible verses (mini_most.voices).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from pathlib import Path

import soundfile as sf
import torch
import torch.nn as nn
import torchaudio.functional as AF
import torchaudio.transforms as T

from .files import check_finite, load_tensors, read_json, save_tensors
from .utils import DATA_SAMPLES

SHIPPED = DATA_SAMPLES / "codec" / "mel_rvq.safetensors"
log = logging.getLogger("mini_most.codec")


class CodecConversion(UserWarning):
    """encode() converted its input (down-mix, resample); the message says how."""


class Codec(nn.Module):
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    cardinality: int
    model_codebooks: int = 1      # codebooks per frame the tokenizer feeds the model by default
    min_samples: int = 1
    min_frames: int = 1

    def info(self) -> dict:
        """What made the codes, as JSON: stored with an encoded corpus; load_codec(info) rebuilds the codec."""
        return {"name": type(self).__name__, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "num_codebooks": self.num_codebooks, "cardinality": self.cardinality,
                "model_codebooks": self.model_codebooks}

    def prepare(self, wav, sample_rate: int | None = None, int_scale: float | None = None) -> torch.Tensor:
        """Check and convert input audio to (B, 1, T) float32 at self.sample_rate."""
        if not isinstance(wav, torch.Tensor):
            wav = torch.as_tensor(wav)
        if wav.is_complex() or wav.dtype == torch.bool:
            raise ValueError(f"audio must be real samples (float in [-1, 1], or integer PCM), got {wav.dtype}")
        if wav.dim() != 3:
            raise ValueError(f"audio must be (batch, channels, time), got shape {tuple(wav.shape)}; "
                             "for one mono clip use wav[None, None]")
        if wav.shape[1] > 16 and wav.shape[-1] <= 16:
            raise ValueError(f"audio shape {tuple(wav.shape)} looks like (batch, time, channels): "
                             "put channels before time, e.g. wav.transpose(1, 2)")
        if sample_rate is not None and (not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0):
            raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
        if int_scale is not None and (not isinstance(int_scale, (int, float)) or not math.isfinite(int_scale) or int_scale <= 0):
            raise ValueError(f"int_scale must be a positive number (32768 for 16-bit PCM), got {int_scale!r}")
        if wav.shape[-1] == 0 or wav.shape[0] == 0 or wav.shape[1] == 0:
            raise ValueError(f"audio is empty (shape {tuple(wav.shape)}): nothing to encode")
        if not wav.dtype.is_floating_point:
            if int_scale is None:
                raise ValueError(f"audio is integer PCM ({wav.dtype}) and no scale was given: pass "
                                 "int_scale=32768 for 16-bit PCM, or a float waveform in [-1, 1]")
            warnings.warn(f"converted {wav.dtype} PCM to float by dividing by {int_scale}", CodecConversion, stacklevel=3)
            wav = wav.float() / int_scale
        wav = wav.float()
        if not torch.isfinite(wav).all():
            raise ValueError("audio contains NaN or inf samples: clean it before encoding")
        peak = wav.abs().max().item()
        if peak > 2.0:   # a float waveform lives in [-1, 1]; integer PCM stored as float is far outside
            raise ValueError(f"audio peaks at {peak:.1f}, far outside [-1, 1]: if it is integer PCM stored as float, "
                             "divide by 32768 (16-bit) first; otherwise scale it into [-1, 1]")
        if wav.shape[1] > 1:
            warnings.warn(f"down-mixed {wav.shape[1]} channels to mono (their mean)", CodecConversion, stacklevel=3)
            wav = wav.mean(dim=1, keepdim=True)
        if sample_rate is not None and sample_rate != self.sample_rate:
            warnings.warn(f"resampled from {sample_rate} Hz to {self.sample_rate} Hz", CodecConversion, stacklevel=3)
            wav = AF.resample(wav, sample_rate, self.sample_rate)
        if wav.shape[-1] < self.min_samples:
            raise ValueError(f"audio is too short: {wav.shape[-1]} samples at {self.sample_rate} Hz; "
                             f"the codec needs at least {self.min_samples}")
        return wav

    def encode(self, wav, sample_rate: int | None = None, int_scale: float | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.dtype.is_floating_point \
                or codes.dtype == torch.bool or codes.is_complex():
            raise ValueError(f"codes must be an integer tensor (batch, codebooks, frames), got "
                             f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if codes.shape[1] > self.num_codebooks or codes.shape[1] == 0:
            raise ValueError(f"codes have {codes.shape[1]} codebooks; this codec has 1 to {self.num_codebooks}")
        if codes.shape[-1] < self.min_frames or codes.shape[0] == 0:
            raise ValueError(f"codes have {codes.shape[-1]} frames; this codec decodes at least {self.min_frames}")
        if codes.min() < 0 or codes.max() >= self.cardinality:
            raise ValueError(f"codes must lie in [0, {self.cardinality}), got {int(codes.min())}..{int(codes.max())}")
        return codes.long()

    # --- files ---
    def encode_file(self, path) -> torch.Tensor:
        """Read any file soundfile reads (wav, flac, ogg) and encode it: (1, K, F)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no audio file at {path}")
        try:
            info = sf.info(str(path))
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)    # (T, C)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise ValueError(f"{path} is not an audio file soundfile can read ({e})") from e
        # libsndfile reads what is there and notes a short data chunk in its log ("data : N (should be M)")
        short = re.search(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info or "")
        if short and int(short[2]) < int(short[1]):
            raise ValueError(f"{path} is truncated: its header says {short[1]} bytes of audio, the file holds {short[2]}")
        return self.encode(torch.from_numpy(data).T[None], sample_rate=sr)

    def write(self, path, wav: torch.Tensor) -> None:
        """Write one mono waveform, (1, 1, T), (1, T) or (T,), in [-1, 1], as 16-bit PCM at the codec's rate."""
        if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point:
            raise ValueError(f"write takes a float waveform in [-1, 1], got "
                             f"{wav.dtype if isinstance(wav, torch.Tensor) else type(wav).__name__}; divide integer PCM by 32768")
        if wav.dim() > 1 and wav.shape[:-1].numel() != 1:
            raise ValueError(f"write takes one mono clip, got shape {tuple(wav.shape)}; write a batch clip by clip")
        wav = wav.detach().reshape(-1).float().cpu()
        if wav.numel() == 0:
            raise ValueError(f"nothing to write to {path}: the clip is empty")
        if not torch.isfinite(wav).all():
            raise ValueError(f"the clip for {path} holds NaN or inf samples: nothing sensible to write")
        clipped = (wav.abs() > 1).float().mean().item()
        if clipped > 0.01:
            warnings.warn(f"{clipped:.1%} of the samples written to {path} lie outside [-1, 1] and are clipped: "
                          "scale the clip down", stacklevel=2)
        if not Path(path).parent.is_dir():
            raise FileNotFoundError(f"cannot write {path}: the folder {Path(path).parent} does not exist")
        sf.write(str(path), wav.clamp(-1, 1).numpy(), self.sample_rate, subtype="PCM_16")


# ----------------------------------------------------------------------------------------------
# the offline codec: log-mel -> residual VQ -> inverse mel + Griffin-Lim


def rvq_encode(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Residual VQ: codebook k quantizes what codebooks 0..k-1 left over. x (N, D) -> (N, K)."""
    codes, residual = [], x
    for cb in codebooks:                                             # cb (C, D)
        idx = torch.cdist(residual, cb).argmin(dim=-1)               # nearest entry, (N,)
        codes.append(idx)
        residual = residual - cb[idx]
    return torch.stack(codes, dim=-1)


def rvq_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(N, K) -> (N, D): the sum of the chosen entries."""
    return sum(codebooks[k][codes[:, k]] for k in range(codes.shape[1]))


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator, progress=None) -> torch.Tensor:
    """k-means on x (N, D) with k-means++ initialisation (each new centre drawn with probability
    proportional to its squared distance from the centres so far); empty clusters are re-seeded."""
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: only (N,) temporaries per centre (an (N, D) one per centre,
    # a thousand times over, once grew a 90,000-frame fit to 24 GB and had it killed)
    xx = x.square().sum(-1)                                          # (N,)

    def sq_dist(c):                                                  # c (1, D) -> (N,)
        return (xx - 2 * (x @ c[0]) + c.square().sum()).clamp(min=0)
    first = x[torch.randint(len(x), (1,), generator=generator)]
    means, d2 = [first], sq_dist(first)
    for _ in range(k - 1):
        new = x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]
        means.append(new)
        d2 = torch.minimum(d2, sq_dist(new))
    means = torch.cat(means)
    for _ in range(iters):
        assign = torch.cat([torch.cdist(chunk, means).argmin(-1) for chunk in x.split(16384)])
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(means).index_add_(0, assign, x)
        empty = counts == 0
        means = torch.where(empty[:, None], x[torch.randint(len(x), (k,), generator=generator)],
                            sums / counts.clamp(min=1)[:, None])
        if progress is not None:
            progress.update(1)
    return means


class MelRVQCodec(Codec):
    def __init__(self, codebooks: torch.Tensor, sample_rate=16000, n_fft=1024, hop_length=320, n_mels=80,
                 griffin_lim_iters=64, level: float | None = None, floor: float | None = None):
        super().__init__()
        if codebooks.dim() != 3 or codebooks.shape[-1] != n_mels:
            raise ValueError(f"codebooks must be (K, C, {n_mels}), got {tuple(codebooks.shape)}")
        self.register_buffer("codebooks", codebooks.float())             # (K, C, n_mels), log-mel units
        self.sample_rate, self.hop_length = sample_rate, hop_length
        self.frame_rate = sample_rate / hop_length                       # 50 Hz
        self.num_codebooks, self.cardinality = codebooks.shape[0], codebooks.shape[1]
        self.config = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                           griffin_lim_iters=griffin_lim_iters)
        if floor is not None and level is None:
            raise ValueError("floor (nats below the level) needs a level to stand under: pass level= too")
        if level is not None:   # older checkpoints have no level: their config (and info) stay as they were
            self.config["level"] = float(level)
        if floor is not None:
            if not floor > 0:
                raise ValueError(f"floor={floor!r}: give how far below the level (natural-log units, > 0) the floor lies")
            self.config["floor"] = float(floor)
        self.min_frames = n_fft // hop_length + 1          # Griffin-Lim needs a few frames: 4 (80 ms)
        self.min_samples = self.min_frames * hop_length
        self.mel = T.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=1.0)
        self.inverse_mel = T.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, F, n_mels): one frame per hop (F = T // hop), each centred on its hop's
        first sample (the STFT's extra last frame is dropped, so a second is exactly 50 frames)."""
        frames = wav.shape[-1] // self.hop_length
        return self.mel(wav[:, 0]).clamp(min=1e-5).log().transpose(1, 2)[:, :frames]

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """What the codebooks quantize: the log-mel frames (B, F, n_mels), each clip shifted to the
        codec's level when it has one (see level_shift), and raised to its floor when it has one."""
        feats = self.log_mel(wav)
        if "level" in self.config:
            feats = feats + level_shift(feats, self.config["level"])[:, None, None]
        if "floor" in self.config:   # what lies far under the speech (silence, room noise) becomes one floor
            feats = feats.clamp(min=self.config["level"] - self.config["floor"])
        return feats

    @torch.no_grad()
    def encode(self, wav, sample_rate: int | None = None, int_scale: float | None = None) -> torch.Tensor:
        feats = self.features(self.prepare(wav, sample_rate, int_scale))    # (B, F, n_mels)
        B, F, D = feats.shape
        return rvq_encode(feats.reshape(B * F, D), self.codebooks).view(B, F, -1).transpose(1, 2)  # (B, K, F)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, F) are the FIRST K codebooks (residual VQ refines in order, so any prefix
        decodes; codebook 1 alone does not) -> (B, 1, F * hop)."""
        codes = self.check_codes(codes)
        B, K, F = codes.shape
        feats = rvq_decode(codes.transpose(1, 2).reshape(B * F, K), self.codebooks).view(B, F, -1)
        return self.invert(feats)

    @torch.no_grad()
    def invert(self, feats: torch.Tensor) -> torch.Tensor:
        """The decoder without the codebooks: log-mel frames (B, F, n_mels) -> (B, 1, F * hop)."""
        B, F, _ = feats.shape
        spec = self.inverse_mel(feats.exp().transpose(1, 2))              # (B, n_fft/2+1, F) magnitudes
        # F centred frames span (F - 1) hops; repeat the last so the output is F whole hops long
        spec = torch.cat([spec, spec[..., -1:]], dim=-1)
        clips = []
        for one in spec:  # clip by clip, each from the same seeded random phase: same codes, same audio
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                clips.append(AF.griffinlim(one, self.window, self.config["n_fft"], self.hop_length, self.config["n_fft"],
                                           power=1.0, n_iter=self.config["griffin_lim_iters"], momentum=0.99,
                                           length=F * self.hop_length, rand_init=True))
        wav = torch.stack(clips)
        return wav[:, None]                                               # (B, 1, F * hop)

    def info(self) -> dict:
        digest = hashlib.sha256(self.codebooks.half().numpy().tobytes()).hexdigest()
        level = {k: self.config[k] for k in ("level", "floor") if k in self.config}   # they change the codes too
        return {**super().info(), "source": "offline", "codebooks_sha256": digest, **level}

    def save(self, path, pool: list[dict] | None = None) -> None:
        """Half precision (small files); `pool`: what the codebooks were fitted on, kept as metadata."""
        meta = {"config": json.dumps(self.config)}
        if pool is not None:
            meta["pool"] = json.dumps(pool)
        save_tensors({"codebooks": self.codebooks.half()}, path, metadata=meta)

    @classmethod
    def load(cls, path=SHIPPED) -> MelRVQCodec:
        if not Path(path).exists():
            raise FileNotFoundError(f"no codec checkpoint at {path}: rebuild it with "
                                    "`python -m mini_most.codec train --corpus build/corpus` (see the README)")
        tensors, meta = load_tensors(path, "codec checkpoint")
        if "config" not in meta or "codebooks" not in tensors:
            raise ValueError(f"{path} is not a mel-RVQ codec checkpoint (it lacks its config or codebooks)")
        check_finite(tensors, path)
        return cls(tensors["codebooks"].float(), **json.loads(meta["config"]))

    @classmethod
    def fit(cls, frames: torch.Tensor, num_codebooks=2, cardinality=1024, iters=25, seed=0, **config) -> MelRVQCodec:
        """k-means codebooks for log-mel frames (N, n_mels), one residual stage at a time."""
        from tqdm import tqdm
        g = torch.Generator().manual_seed(seed)
        books, residual = [], frames
        with tqdm(total=num_codebooks * iters, desc="k-means") as bar:
            for k in range(num_codebooks):
                books.append(kmeans(residual, cardinality, iters, g, bar))
                residual = residual - books[-1][rvq_encode(residual, books[-1][None])[:, 0]]
                log.info("codebook %d: residual rms %.4f", k, residual.pow(2).mean().sqrt())
        return cls(torch.stack(books), **config)


LEVEL_PERCENTILE = 0.9
MAX_LEVEL_SHIFT = (-2.3, 3.5)     # natural-log units of magnitude: -20 dB to +30 dB


def clip_level(feats: torch.Tensor) -> torch.Tensor:
    """A clip's speech level: the 90th percentile over frames of the frame's mean log-mel. (B, F, D) -> (B,).
    A high percentile reads the loud (voiced) frames, so ordinary pauses hardly move it; a clip that
    is mostly silence reads quieter (MoST's 4.5 s exp_4 zero-padded to 10 s: 0.46 nats lower, and
    73% of its codebook-0 codes change). So encode clips one by one, not zero-padded into a batch."""
    return feats.mean(-1).quantile(LEVEL_PERCENTILE, dim=-1)


def level_shift(feats: torch.Tensor, level: float) -> torch.Tensor:
    """The shift of each clip's log-mel (a gain, since log(g * |X|) = log g + log |X|) that brings
    its speech level to `level`, within -20..+30 dB so that near-silence is not blown up. (B,)"""
    return (level - clip_level(feats)).clamp(*MAX_LEVEL_SHIFT)


def multiscale_mel_distance(a: torch.Tensor, b: torch.Tensor, sample_rate: int = 16000, match_level: bool = False) -> float:
    """Mean |log-mel difference| of two waveforms at FFT sizes 512, 1024 and 2048 (trimmed to the shorter).
    match_level=True first shifts b's log-mel to a's speech level (clip_level): the distance then
    ignores an overall gain, which a codec that normalises level changes on purpose."""
    n = min(a.shape[-1], b.shape[-1])
    a, b = a.reshape(-1)[:n], b.reshape(-1)[:n]
    dists = []
    for n_fft, n_mels in ((512, 64), (1024, 80), (2048, 128)):
        mel = _mel_transform(sample_rate, n_fft, n_mels)
        la, lb = (mel(x).clamp(min=1e-5).log().T[None] for x in (a, b))     # (1, frames, n_mels)
        if match_level:
            lb = lb + (clip_level(la) - clip_level(lb))[:, None, None]
        dists.append((la - lb).abs().mean().item())
    return sum(dists) / len(dists)


@functools.cache
def _mel_transform(sample_rate: int, n_fft: int, n_mels: int) -> T.MelSpectrogram:
    # built once per scale: the benchmark measures hundreds of clips
    return T.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)


# ----------------------------------------------------------------------------------------------
# the pretrained neural codec: Meta's EnCodec 24 kHz (the `encodec` package, CC-BY-NC 4.0)


class EncodecCodec(Codec):
    """EnCodec: a convolutional encoder, residual VQ with codebooks of 1024 and a convolutional
    decoder, at 24 kHz and 75 frames per second; `bandwidth` (kbps) picks how many codebooks are
    used: 1.5 -> 2, 3 -> 4, 6 -> 8, 12 -> 16, 24 -> 32 (each codebook costs 75 x 10 bits per second).

    EncodecCodec(bandwidth) is Meta's pretrained encodec_model_24khz. The weights download once
    (torch hub cache, ~90 MB) the first time; offline, this raises with what to do instead.
    torch.hub would check the file's hash only when it downloads, then unpickle whatever sits in its
    cache; here the model is built without weights and the cached file is read as tensors only
    (torch.load with weights_only=True), so a tampered cache cannot run code.

    EncodecCodec.untrained(bandwidth) is the same architecture at a tiny width with seeded random
    weights and no download: same rates, shapes and id ranges, meaningless sounds. It exists so
    that the whole EnCodec path (corpus, tokenizer, training, decoding) is tested offline."""

    CHECKPOINT = "encodec_24khz-d7cc33bc.th"
    BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)

    @classmethod
    def is_cached(cls) -> bool:
        """Whether the pretrained weights are already in the torch hub cache (then no network is needed)."""
        return (Path(torch.hub.get_dir()) / "checkpoints" / cls.CHECKPOINT).exists()

    def __init__(self, bandwidth: float = 1.5, model: nn.Module | None = None, weights: str | None = None):
        super().__init__()
        if isinstance(bandwidth, bool) or bandwidth not in self.BANDWIDTHS:
            raise ValueError(f"bandwidth={bandwidth!r} kbps: EnCodec 24 kHz offers {list(self.BANDWIDTHS)}")
        if model is not None and weights in (None, "pretrained"):
            raise ValueError("EncodecCodec(model=...) needs weights='<a name for them>': its record (info()) must not "
                             "claim the pretrained weights, or load_codec(record) would rebuild another codec")
        weights = weights or "pretrained"
        if model is None:
            from encodec import EncodecModel
            with _quiet_weight_norm():
                model = EncodecModel.encodec_model_24khz(pretrained=False)
            model.load_state_dict(self.pretrained_state())
        if bandwidth not in model.target_bandwidths:
            raise ValueError(f"bandwidth={bandwidth!r} kbps: this EnCodec model offers {model.target_bandwidths}")
        self.model, self.bandwidth, self.weights = model, float(bandwidth), weights
        self.model.set_target_bandwidth(bandwidth)
        self.model.eval()
        self.sample_rate, self.frame_rate = self.model.sample_rate, self.model.frame_rate   # 24000, 75
        self.num_codebooks = self.model.quantizer.get_num_quantizers_for_bandwidth(self.model.frame_rate, bandwidth)
        self.cardinality = self.model.quantizer.bins
        # every codebook the bandwidth pays for: codebook 0 of EnCodec alone is far from intelligible
        self.model_codebooks = self.num_codebooks
        self.min_samples = self.model.encoder.hop_length       # one frame: 320 samples (13 ms)

    @classmethod
    def untrained(cls, bandwidth: float = 1.5, seed: int = 0) -> EncodecCodec:
        """EnCodec's architecture (the `encodec` package's SEANet encoder/decoder and residual VQ, the
        24 kHz model's strides and codebook size) at a tiny width, with seeded random weights."""
        from encodec import EncodecModel
        from encodec.modules import SEANetDecoder, SEANetEncoder
        from encodec.quantization import ResidualVectorQuantizer
        with torch.random.fork_rng(devices=[]), _quiet_weight_norm():
            torch.manual_seed(seed)
            size = dict(channels=1, dimension=16, n_filters=2, lstm=1, causal=True, norm="weight_norm")
            encoder, decoder = SEANetEncoder(**size), SEANetDecoder(**size)
            n_q = int(1000 * cls.BANDWIDTHS[-1] // (math.ceil(24_000 / encoder.hop_length) * 10))      # 32
            # kmeans_init=False: uniformly drawn codebooks (k-means would leave them zero until trained)
            quantizer = ResidualVectorQuantizer(dimension=16, n_q=n_q, bins=1024, kmeans_init=False)
            model = EncodecModel(encoder, decoder, quantizer, list(cls.BANDWIDTHS), 24_000, 1, name="encodec_untrained_tiny")
            # random codebooks all sit far from what a random encoder emits (every frame picks the same
            # few codes): seed each stage with encoder frames of random noise instead, as k-means would
            with torch.no_grad():
                residual = encoder(0.1 * torch.randn(1, 1, 24_000 * 15)).squeeze(0).T       # (1125 frames, 16)
                for layer in quantizer.vq.layers:
                    book = layer._codebook
                    book.embed.copy_(residual[torch.randperm(len(residual))[:1024]])
                    residual = residual - book.embed[book.quantize(residual)]
        codec = cls(bandwidth, model=model, weights=f"untrained-tiny-seed{seed}")
        return codec

    def info(self) -> dict:
        return {**super().info(), "source": "encodec", "bandwidth": self.bandwidth, "weights": self.weights}

    @classmethod
    def pretrained_state(cls) -> dict:
        """The pretrained weights from torch.hub's cache, downloaded (hash-checked) if missing."""
        from encodec.model import ROOT_URL
        path = Path(torch.hub.get_dir()) / "checkpoints" / cls.CHECKPOINT
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(ROOT_URL + cls.CHECKPOINT, str(path), hash_prefix=cls.CHECKPOINT[14:22])
            except OSError as e:  # urllib's URLError and socket errors are OSErrors
                raise RuntimeError(f"could not download EnCodec's pretrained weights ({e}). Go online once (they are "
                                   "cached by torch.hub), or use load_codec('offline'), which ships with the repo") from e
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle's and torch's errors vary by version: any failure refuses the file
            first = (str(e).split(".")[0].splitlines() or [""])[0][:120]   # torch's message runs to pages
            raise ValueError(f"{path} is not a plain tensor checkpoint ({type(e).__name__}: {first}); it was "
                             "refused unread. Delete it and load again to download a fresh copy") from e

    @torch.no_grad()
    def encode(self, wav, sample_rate: int | None = None, int_scale: float | None = None) -> torch.Tensor:
        frames = self.model.encode(self.prepare(wav, sample_rate, int_scale))
        return torch.cat([codes for codes, _ in frames], dim=-1)          # EnCodec's list of frames, joined

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, F), the first K codebooks -> (B, 1, F * 320) at 24 kHz."""
        return self.model.decode([(self.check_codes(codes), None)])


@contextlib.contextmanager
def _quiet_weight_norm():
    """The encodec package builds its convolutions with torch's older weight_norm, which torch now
    flags as deprecated on every layer: a warning about the package, not about anything you did."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
        yield


def load_codec(source: str | dict = "offline", **kwargs) -> Codec:
    """source="offline" (default): the shipped mel-RVQ codec; "encodec": the pretrained EnCodec
    (kwargs: bandwidth); "encodec-untrained": EnCodec's architecture, tiny and untrained (tests);
    a dict: the codec a corpus was encoded with (its `info()`, as `corpus.codec` holds it)."""
    if isinstance(source, dict):
        return codec_from_info(source)
    if source == "offline":
        return MelRVQCodec.load(**kwargs)
    if source == "encodec":
        return EncodecCodec(**kwargs)
    if source == "encodec-untrained":
        return EncodecCodec.untrained(**kwargs)
    raise ValueError(f"unknown codec source {source!r}: use 'offline', 'encodec' or 'encodec-untrained'")


def codec_from_info(info: dict) -> Codec:
    """Rebuild the codec an `info()` record describes, and check it is the one that made the codes."""
    name = info.get("name") if isinstance(info, dict) else None
    if name == "MelRVQCodec":
        codec = MelRVQCodec.load()
        digest = info.get("codebooks_sha256")
        if digest is not None and digest != codec.info()["codebooks_sha256"]:
            raise ValueError("these codes were made by other mel-RVQ codebooks than the shipped ones: decode them with "
                             "the codec that made them (MelRVQCodec.load(path)), or re-encode the corpus")
        if digest is not None and any(info.get(k) != codec.config.get(k) for k in ("level", "floor")):
            raise ValueError(f"these codes were made at level {info.get('level')} (floor {info.get('floor')}), the shipped "
                             f"codec quantizes at {codec.config.get('level')} (floor {codec.config.get('floor')}): "
                             "decode them with the codec that made them, or re-encode the corpus")
    elif name == "EncodecCodec":
        weights, bandwidth = info.get("weights", "pretrained"), info.get("bandwidth", 1.5)
        seed = re.fullmatch(r"untrained-tiny-seed(\d+)", str(weights))
        if weights == "pretrained":
            codec = EncodecCodec(bandwidth)
        elif seed:
            codec = EncodecCodec.untrained(bandwidth, seed=int(seed[1]))
        else:
            raise ValueError(f"the codec record names EnCodec weights {weights!r}, which mini_most cannot rebuild; "
                             "decode with the EncodecCodec(model=..., weights=...) that made the codes")
    else:
        raise ValueError(f"the codec record {info!r} names no codec mini_most knows (MelRVQCodec, EncodecCodec)")
    # the rebuilt codec must have the shape the record says the codes have
    differ = [k for k in ("sample_rate", "frame_rate", "num_codebooks", "cardinality")
              if k in info and info[k] != getattr(codec, k)]
    if differ:
        raise ValueError(f"the codec record says {', '.join(f'{k}={info[k]}' for k in differ)}, but the {name} it names "
                         f"has {', '.join(f'{k}={getattr(codec, k)}' for k in differ)}: the record is not this codec's")
    return codec


# ----------------------------------------------------------------------------------------------
# python -m mini_most.codec train


def corpus_frames(corpus: Path, max_frames: int, codec: MelRVQCodec, seed: int = 0) -> torch.Tensor:
    """The codec's features of the corpus's train split, clips shuffled, at most max_frames: 0.4.1's
    fitting set, kept for code that called it (`codec train` now gathers its pool with
    voices.corpus_clips / fitting_pool and pool_frames)."""
    from .voices import corpus_clips
    clips = corpus_clips(corpus, max_frames / codec.frame_rate, seed)
    return torch.cat([codec.features(w[None, None])[0] for w in clips])[:max_frames]


def pool_frames(codec: MelRVQCodec, clips: list[torch.Tensor], max_frames: int, seed: int = 0) -> torch.Tensor:
    """The codec's features (level-shifted, floored) of every clip, shuffled, at most max_frames. (N, n_mels)"""
    feats = torch.cat([codec.features(w[None, None])[0] for w in clips])
    return feats[torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed))[:max_frames]]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mini_most.codec", description="mini-MoST's offline codec")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit the mel-RVQ codebooks on a corpus built by `python -m mini_most.corpus build`")
    t.add_argument("--corpus", type=Path, default=Path("build/corpus"))
    t.add_argument("--out", type=Path, default=Path("build/codec/mel_rvq.safetensors"),
                   help=f"where to write the codebooks (to replace the shipped codec: --out {SHIPPED.relative_to(SHIPPED.parents[2])})")
    t.add_argument("--codebooks", type=int, default=3)
    t.add_argument("--cardinality", type=int, default=1024)
    t.add_argument("--frames", type=int, default=90_000, help="log-mel frames to fit on (50 per second)")
    t.add_argument("--iters", type=int, default=25)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--pool", choices=("voices", "corpus"), default="voices",
                   help="voices (the shipped codec's): half the corpus's eSpeak speech, a quarter Flite's four voices on "
                        "grammar sentences, a quarter Flite + eSpeak on KJV verses (mini_most.voices.POOL); corpus: its eSpeak speech only")
    t.add_argument("--no-level", dest="level", action="store_false",
                   help="quantize each clip at its own level, not at one speech level (as codecs before 0.4.2 did)")
    t.add_argument("--floor", type=float, default=0.0,
                   help="nats under the speech level where the features stop (default 0: no floor; "
                        "floors of 3.5 and 5 did not pay, see the README)")
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    if not (args.corpus / "manifest.json").is_file():   # check the input before touching the output or its log
        ap.error(f"no corpus at {args.corpus} (no manifest.json): build one with `python -m mini_most.corpus build`")
    read_json(args.corpus / "manifest.json", "corpus manifest")          # a truncated one is named here
    if min(args.codebooks, args.cardinality, args.frames, args.iters) < 1:
        ap.error("--codebooks, --cardinality, --frames and --iters must be >= 1")
    if args.floor < 0 or (args.floor > 0 and not args.level):
        ap.error("--floor is how far under the speech level the features stop: a number >= 0, and only with a level")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # to the screen and to a log beside the checkpoint; the log replaces the old one only on success
    log_file, tmp_log = args.out.with_suffix(".log"), args.out.with_suffix(".log.tmp")
    handlers = [logging.StreamHandler(), logging.FileHandler(tmp_log, mode="w")]
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    try:
        train(args)
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
    os.replace(tmp_log, log_file)


def train(args) -> None:
    from . import voices
    start = time.perf_counter()
    seconds = args.frames / 50 * 1.3          # a little more audio than the frames kept: the shuffle draws from all of it
    if args.pool == "corpus":
        clips = voices.corpus_clips(args.corpus, seconds, args.seed)
        record = [{"part": "espeak corpus (train split)", "clips": len(clips),
                   "seconds": round(sum(len(w) for w in clips) / voices.SAMPLE_RATE, 1)}]
    else:
        clips, record = voices.fitting_pool(args.corpus, seconds, args.seed)
    for part in record:
        log.info("pool: %s: %d clips, %.0f s", part["part"], part["clips"], part["seconds"])
    config = {}
    if args.level:   # the pool's median speech level: the level every clip is quantized at
        probe = MelRVQCodec(torch.zeros(1, 1, 80))
        config["level"] = round(torch.stack([clip_level(probe.log_mel(w[None, None]))[0] for w in clips]).median().item(), 3)
        if args.floor > 0:
            config["floor"] = args.floor
        log.info("level %.3f%s", config["level"], f", floor {config['floor']} nats under it" if "floor" in config else "")
    frames = pool_frames(MelRVQCodec(torch.zeros(1, 1, 80), **config), clips, args.frames, args.seed)
    log.info("fitting %d x %d codebooks on %d frames", args.codebooks, args.cardinality, len(frames))
    codec = MelRVQCodec.fit(frames, args.codebooks, args.cardinality, args.iters, args.seed, **config)
    codec.save(args.out, pool=record)
    log.info("saved %s (%d bytes) in %.0f s", args.out.name, args.out.stat().st_size, time.perf_counter() - start)


if __name__ == "__main__":
    main()
