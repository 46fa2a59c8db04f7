"""Solutions to the exercises of notebook 01 (codec and tokens). Run: python notebooks/solutions/01_codec_tokenization.py"""

import soundfile as sf
import torch

from mini_most import DATA_SAMPLES, MoSTConfig
from mini_most.codec import load_codec, multiscale_mel_distance
from mini_most.corpus import load_corpus
from mini_most.tokens import Tokenizer

config = MoSTConfig.preset("small")
corpus = load_corpus()
sample = corpus.split("train")[::10]

# 1. two codebooks: audio doubles, text stays; attention's cost grows with the square of the length
one, two = Tokenizer(config, codebooks=1), Tokenizer(config, codebooks=2)
l1 = sum(len(one.asr(u.codes, u.text)) for u in sample) / len(sample)
l2 = sum(len(two.asr(u.codes, u.text)) for u in sample) / len(sample)
assert 1.6 < l2 / l1 < 1.9
print(f"1. ASR tokens per example: {l1:.0f} -> {l2:.0f} ({l2 / l1:.2f}x): MLPs and projections cost "
      f"{l2 / l1:.2f}x per example, attention scores {(l2 / l1) ** 2:.2f}x")

# 2. decode() reads its first row with codebook 0, so codes[:, 1:] are looked up in the wrong table.
#    Codebook 1 alone holds only the residual corrections: small vectors, no speech by themselves.
codec = load_codec()
wav, sr = sf.read(DATA_SAMPLES / "reference" / "exp_1.wav", dtype="float32")
wav = torch.from_numpy(wav)[None, None]
codes = codec.encode(wav)
cb0, cb1 = codec.codebooks[0][codes[0, 0]], codec.codebooks[1][codes[0, 1]]          # (F, n_mels) each
assert cb1.pow(2).mean().sqrt() < 0.5 * cb0.pow(2).mean().sqrt()
wrong = multiscale_mel_distance(wav, codec.decode(codes[:, 1:]))
right = multiscale_mel_distance(wav, codec.decode(codes[:, :1]))
assert wrong > right
print(f"2. rms of codebook-1 vectors {cb1.pow(2).mean().sqrt():.2f} vs codebook 0 {cb0.pow(2).mean().sqrt():.2f}; "
      f"decode(codes[:, 1:]) mel distance {wrong:.2f} vs {right:.2f} for the real first codebook")


# 3. a delay pattern: codebook k shifted right by k frames; one position per frame (plus K-1)
def delay(codes: torch.Tensor, pad: int) -> torch.Tensor:
    K, F = codes.shape
    out = torch.full((K, F + K - 1), pad, dtype=codes.dtype)
    for k in range(K):
        out[k, k:k + F] = codes[k]
    return out


def undelay(delayed: torch.Tensor) -> torch.Tensor:
    K, L = delayed.shape
    return torch.stack([delayed[k, k:L - K + 1 + k] for k in range(K)])


c = corpus.utterances[0].codes[:2]                      # the exercise's 2 codebooks (the codec has 3)
d = delay(c, pad=-1)
assert torch.equal(undelay(d), c) and d.shape[1] == c.shape[1] + 1
print(f"3. delay pattern: {c.shape[1]} frames -> {d.shape[1]} positions of 2 codes each (flattening: {2 * c.shape[1]}); "
      "the model would need one output head per codebook, predicting both codes of a position in one step")

# 4. exp_2.wav (4.4 s): our tokens vs MoST's HuBERT units
wav2, _ = sf.read(DATA_SAMPLES / "reference" / "exp_2.wav", dtype="float32")
frames = codec.encode(torch.from_numpy(wav2)[None, None]).shape[-1]
seconds = len(wav2) / sr
assert frames == len(wav2) // 320
print(f"4. {seconds:.1f} s: MoST {round(seconds * 25)} HuBERT units; ours {frames} (1 codebook), {2 * frames} (2 codebooks)")
