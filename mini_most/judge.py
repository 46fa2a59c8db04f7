"""An independent, offline recogniser to judge speech: PocketSphinx with a bigram language model.

MoST reports TTS quality as the WER an ASR system gets on generated speech; mini-MoST does the
same with CMU PocketSphinx (PyPI `pocketsphinx`, which ships its English acoustic model and
dictionary). Its generic language model does badly on espeak-ng speech, so the judge builds a
bigram model from the corpus's training sentences. It also pads each clip with 0.5 s at both
ends and adds faint noise (std 0.001) to the whole clip: espeak's digital silence, at the ends
and between words, confuses the recogniser, and a codec's output has none, so without the noise
the judge would favour the round trip over the original. Use the same judge for the
original and the round-tripped audio: only the difference means something.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter

import torch


def bigram_arpa(sentences: list[str], discount: float = 0.5) -> str:
    """A bigram language model in ARPA format, absolute discounting with backoff to unigrams."""
    uni, bi = Counter(), Counter()
    for s in sentences:
        words = ["<s>"] + s.split() + ["</s>"]
        uni.update(words)
        bi.update(zip(words, words[1:]))
    total = sum(c for w, c in uni.items() if w != "<s>")
    p_uni = {w: (uni[w] / total if w != "<s>" else 0.0) for w in uni}
    followers = {}
    for (h, w), c in bi.items():
        followers.setdefault(h, {})[w] = c
    backoff = {}
    for h, ws in followers.items():
        n_h = sum(ws.values())
        left = discount * len(ws) / n_h                                   # mass freed by discounting
        backoff[h] = left / max(1.0 - sum(p_uni[w] for w in ws), 1e-9)
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:"]
    for w in sorted(uni):
        lp = math.log10(p_uni[w]) if p_uni[w] > 0 else -99.0
        lines.append(f"{lp:.6f}\t{w}\t{math.log10(backoff.get(w, 1.0)):.6f}")
    lines += ["", "\\2-grams:"]
    for (h, w), c in sorted(bi.items()):
        lines.append(f"{math.log10((c - discount) / sum(followers[h].values())):.6f}\t{h} {w}")
    return "\n".join(lines + ["", "\\end\\", ""])


class SphinxJudge:
    """transcribe(wav) -> text, for 16 kHz mono float waveforms."""

    def __init__(self, sentences: list[str], seed: int = 0):
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as e:
            raise ImportError("the judge needs PocketSphinx: pip install pocketsphinx (it is in requirements.txt)") from e
        self._lm = tempfile.NamedTemporaryFile("w", suffix=".arpa", delete=False)
        self._lm.write(bigram_arpa(sentences))
        self._lm.close()
        model = get_model_path()
        self.decoder = Decoder(hmm=os.path.join(model, "en-us", "en-us"), lm=self._lm.name,
                               dict=os.path.join(model, "en-us", "cmudict-en-us.dict"), samprate=16000,
                               logfn=os.devnull)
        self.seed = seed

    def transcribe(self, wav: torch.Tensor) -> str:
        """The recogniser's text for one 16 kHz mono clip (same clip, same text: the noise is seeded)."""
        if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point:
            raise ValueError(f"the judge takes a float waveform in [-1, 1], got "
                             f"{wav.dtype if isinstance(wav, torch.Tensor) else type(wav).__name__}")
        wav = wav.reshape(-1).float()
        if not torch.isfinite(wav).all():
            raise ValueError("the clip holds NaN or inf samples: nothing a recogniser could hear; check what made it")
        padded = torch.cat([wav.new_zeros(8000), wav, wav.new_zeros(8000)])   # 0.5 s each side
        padded = padded + 0.001 * torch.randn(len(padded), generator=torch.Generator().manual_seed(self.seed))
        pcm = (padded.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def __del__(self):
        try:
            os.unlink(self._lm.name)
        except (AttributeError, OSError):
            pass


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer
    return jiwer.wer(references, hypotheses)
