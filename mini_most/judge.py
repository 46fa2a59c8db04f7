"""An independent, offline recogniser to judge speech: PocketSphinx with a bigram language model.

MoST reports TTS quality as the WER an ASR system gets on generated speech; mini-MoST does the
same with CMU PocketSphinx (PyPI `pocketsphinx`, which ships its English acoustic model and
dictionary). Its generic language model does badly on espeak-ng speech, so the judge builds a
bigram model from the corpus's training sentences. It also pads each clip with 0.5 s at both
ends and adds faint noise (std 0.001) to the whole clip: espeak's digital silence, at the ends
and between words, confuses the recogniser, and a codec's output has none, so without the noise
the judge would favour the round trip over the original. Use the same judge for the
original and the round-tripped audio: only the difference means something.

`StockRecogniser` is PocketSphinx as shipped, with its generic English language model (en-us.lm.bin,
~20k words, CMU Sphinx's, BSD licence): it knows nothing of the corpus, so it can judge free speech
(MoST's clips, your own voice) that the grammar judge cannot. It is a weak recogniser (tens of
percent WER on clean read speech): compare before and after a round trip, not against other systems.
"""

from __future__ import annotations

import math
import os
import re
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


def _decoder(lm: str | None):
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as e:
        raise ImportError("the judge needs PocketSphinx: pip install pocketsphinx (it is in requirements.txt)") from e
    model = os.path.join(get_model_path(), "en-us")
    return Decoder(hmm=os.path.join(model, "en-us"), lm=lm or os.path.join(model, "en-us.lm.bin"),
                   dict=os.path.join(model, "cmudict-en-us.dict"), samprate=16000, logfn=os.devnull)


class SphinxJudge:
    """transcribe(wav, sample_rate=16000) -> text, for mono float waveforms; the grammar's bigram LM."""

    def __init__(self, sentences: list[str], seed: int = 0):
        self._lm = tempfile.NamedTemporaryFile("w", suffix=".arpa", delete=False)
        self._lm.write(bigram_arpa(sentences))
        self._lm.close()
        self._start(self._lm.name, seed)

    def _start(self, lm: str | None, seed: int) -> None:
        self.decoder = _decoder(lm)
        self._cmn0 = self.decoder.get_cmn()            # the state every clip starts from (see transcribe)
        self.seed = seed

    def transcribe(self, wav: torch.Tensor, sample_rate: int = 16000) -> str:
        """The recogniser's text for one mono clip, resampled to 16 kHz (same clip, same text: the
        noise is seeded)."""
        if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point:
            raise ValueError(f"the judge takes a float waveform in [-1, 1], got "
                             f"{wav.dtype if isinstance(wav, torch.Tensor) else type(wav).__name__}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 8000:
            raise ValueError(f"sample_rate={sample_rate!r}: give the clip's rate in Hz (8000 or more)")
        if wav.dim() > 1 and wav.shape[:-1].numel() != 1:
            raise ValueError(f"the judge takes one mono clip, got shape {tuple(wav.shape)}: mix it down "
                             "(wav.mean(0)) or judge clip by clip")
        wav = wav.reshape(-1).float()
        if sample_rate != 16000:
            import torchaudio.functional as AF
            wav = AF.resample(wav, sample_rate, 16000)
        if not torch.isfinite(wav).all():
            raise ValueError("the clip holds NaN or inf samples: nothing a recogniser could hear; check what made it")
        padded = torch.cat([wav.new_zeros(8000), wav, wav.new_zeros(8000)])   # 0.5 s each side
        padded = padded + 0.001 * torch.randn(len(padded), generator=torch.Generator().manual_seed(self.seed))
        pcm = (padded.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes()
        # PocketSphinx carries its feature state (the cepstral mean among it) from one utterance into
        # the next: reset it, so a clip's transcript does not depend on what was heard before it
        self.decoder.reinit_feat()
        self.decoder.set_cmn(self._cmn0)
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


class StockRecogniser(SphinxJudge):
    """PocketSphinx with its own generic English language model: for free speech, not the grammar."""

    def __init__(self, seed: int = 0):
        self._start(None, seed)


def normalize(text: str) -> str:
    """Lowercase words without punctuation ("AI's" -> "ai's"), as recognisers write them: score with this."""
    words = (w.strip("'") for w in re.sub(r"[^a-z0-9']+", " ", text.lower()).split())
    return " ".join(w for w in words if w)


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer
    return jiwer.wer(references, hypotheses)
