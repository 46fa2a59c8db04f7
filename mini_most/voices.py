"""Voices to fit the offline codec on: three speech synthesisers that Debian packages.

    wav = speak("the old dog saw the ball", "flite", "slt")        # (T,) float at 16 kHz

- eSpeak NG (`espeak-ng`, GPL-3.0-or-later): formant synthesis; the corpus speaks with it
  (mini_most.corpus.espeak, 7 accents x 8 variants, speeds and pitches).
- Flite (`flite`, BSD-style licence): CMU's small synthesiser; its voices slt, rms, awb (clustergen
  statistical voices built from recordings of three ARCTIC speakers) and kal16 (a diphone voice of
  a fourth speaker, recorded).
- Festival (`festival`, `festvox-kallpc16k`, `festvox-kdlpc16k`, `festvox-us-slt-hts`; X11-style
  licences): the Edinburgh synthesiser; diphone voices kal and ked (LPC resynthesis) and the HTS
  voice of slt. The codec is never fitted on it: it is the synthesiser held out to test voices the
  codebooks have not heard (two of its speakers, kal and slt, are flite's too, spoken by another
  engine; ked is a speaker flite does not have).

What they speak is their output, used as data. `apt-get install espeak-ng flite festival
festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts` (Debian/Ubuntu) installs all three.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile

import torch

SAMPLE_RATE = 16_000
SYNTHESISERS = {
    "espeak": {"program": "espeak-ng", "packages": "espeak-ng"},
    "flite": {"program": "flite", "packages": "flite",
              "voices": ("slt", "rms", "awb", "kal16")},
    "festival": {"program": "text2wave", "packages": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
                 "voices": ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")},
}


def available(synth: str) -> bool:
    """Whether the synthesiser's program is installed."""
    return shutil.which(_synth(synth)["program"]) is not None


def speak(text: str, synth: str, voice: str, speed: int = 165, pitch: int = 50) -> torch.Tensor:
    """`text` spoken by one synthesiser's voice: (T,) float32 at 16 kHz, peaking as the synthesiser
    made it (speed and pitch are eSpeak's; the others speak at their own)."""
    import soundfile as sf
    import torchaudio.functional as AF
    info = _synth(synth)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    if synth == "espeak":
        from .corpus import espeak
        return espeak(text, voice, speed, pitch)
    if voice not in info["voices"]:
        raise ValueError(f"{synth} has no voice {voice!r} here: use one of {list(info['voices'])}")
    if not available(synth):
        raise RuntimeError(f"{info['program']} is not installed: `apt-get install {info['packages']}` (Debian/Ubuntu)")
    # the text goes in through a file, never as an argument (text starting with '-' reads as an option)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f, tempfile.NamedTemporaryFile(suffix=".wav") as out:
        f.write(text + "\n")
        f.flush()
        if synth == "flite":
            cmd = ["flite", "-voice", voice, "-f", f.name, "-o", out.name]
        else:
            cmd = ["text2wave", "-eval", f"(voice_{voice})", "-o", out.name, f.name]
        subprocess.run(cmd, check=True, capture_output=True)
        wav, sr = sf.read(io.BytesIO(open(out.name, "rb").read()), dtype="float32")
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    wav = torch.from_numpy(wav)
    if len(wav) == 0:
        raise RuntimeError(f"{synth} ({voice}) made no audio for {text!r}")
    return AF.resample(wav, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else wav


def _synth(synth: str) -> dict:
    if synth not in SYNTHESISERS:
        raise ValueError(f"unknown synthesiser {synth!r}: use one of {list(SYNTHESISERS)}")
    return SYNTHESISERS[synth]


def kjv_verses(count: int, seed: int = 0) -> list[str]:
    """`count` verses of the King James Bible (public domain; Debian's `bible-kjv`), lowercased, drawn
    at random: text far richer in sounds than the grammar's hundred words."""
    import random
    if shutil.which("bible") is None:
        raise RuntimeError("the `bible` program is not installed: `apt-get install bible-kjv` (Debian/Ubuntu)")
    books = subprocess.run(["bible", "-f", "Gen1:1-50:26"], capture_output=True, text=True, check=True).stdout
    lines = [line.split(" ", 1)[1] for line in books.splitlines() if " " in line]
    rng = random.Random(seed)
    return [line.lower() for line in rng.sample(lines, min(count, len(lines)))]


# ----------------------------------------------------------------------------------------------
# the pool the shipped codec is fitted on

FLITE_VOICES = [("flite", v) for v in SYNTHESISERS["flite"]["voices"]]
ESPEAK_RANDOM = ("espeak", "random")     # a random accent, variant, speed and pitch of the corpus's


def synthesised(texts: list[str], voices: list[tuple[str, str]], seconds: float, seed: int = 0) -> list[torch.Tensor]:
    """The texts spoken in turn by the voices, (synth, voice) pairs, until `seconds` of audio."""
    import random

    from .corpus import PITCHES, SPEEDS, VARIANTS, VOICES
    rng = random.Random(seed)
    out, total = [], 0.0
    for i, text in enumerate(texts):
        synth, voice = voices[i % len(voices)]
        if (synth, voice) == ESPEAK_RANDOM:
            voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
            out.append(speak(text, synth, voice, rng.choice(SPEEDS), rng.choice(PITCHES)))
        else:
            out.append(speak(text, synth, voice))
        total += len(out[-1]) / SAMPLE_RATE
        if total >= seconds:
            break
    return out


def corpus_clips(corpus, seconds: float, seed: int = 0) -> list[torch.Tensor]:
    """Train-split clips of a built corpus (its eSpeak speech), shuffled, until `seconds` of audio."""
    import random
    from pathlib import Path

    import soundfile as sf

    from .files import inside, read_json
    corpus = Path(corpus)
    manifest = read_json(corpus / "manifest.json", "corpus manifest (build it with `python -m mini_most.corpus build`)")
    items = [it for it in manifest["utterances"] if it["split"] == "train"]
    random.Random(seed).shuffle(items)
    out, total = [], 0.0
    for it in items:
        wav, sr = sf.read(str(inside(corpus, it["path"], "manifest path")), dtype="float32")
        if sr != SAMPLE_RATE:
            raise ValueError(f"{it['path']} is at {sr} Hz; the codec is fitted on {SAMPLE_RATE} Hz speech")
        out.append(torch.from_numpy(wav))
        total += len(wav) / SAMPLE_RATE
        if total >= seconds:
            break
    return out


def grammar_texts(corpus) -> list[str]:
    """The corpus's train-split sentences (utterances and text-only), sorted: never a test sentence."""
    from pathlib import Path

    from .files import read_json
    corpus = Path(corpus)
    manifest = read_json(corpus / "manifest.json", "corpus manifest")
    return sorted({it["text"] for it in manifest["utterances"] if it["split"] == "train"}
                  | {line for line in (corpus / "text_only.txt").read_text().split("\n") if line})


# the shipped codec's pool: half of its audio is the corpus's own eSpeak speech (codebook 0 is what
# the models hear, and they hear this corpus); a quarter is Flite's four voices speaking train
# sentences of the grammar; a quarter is the King James Bible (far more sounds than the grammar's
# hundred words) spoken by Flite's voices and eSpeak. Festival is held out. (share, kind, what, voices)
POOL = [
    (0.50, "corpus", "espeak corpus (train split)", None),
    (0.25, "grammar", "flite slt/rms/awb/kal16, grammar train sentences", FLITE_VOICES),
    (0.25, "kjv", "flite x4 + espeak x2 (random settings), KJV Genesis verses", FLITE_VOICES + [ESPEAK_RANDOM] * 2),
]


def fitting_pool(corpus, seconds: float, seed: int = 0, pool=POOL, progress: bool = True) -> tuple[list[torch.Tensor], list[dict]]:
    """The clips the codec is fitted on, `seconds` in all, shared by the pool's parts as it says; and a
    record of what each part holds (for the codec's log and checkpoint)."""
    import random

    from tqdm import tqdm
    clips, record = [], []
    for share, kind, what, voices in tqdm(pool, desc="gathering speech", disable=not progress):
        share = seconds * share / sum(p[0] for p in pool)
        if kind == "corpus":
            part = corpus_clips(corpus, share, seed)
        else:
            texts = grammar_texts(corpus) if kind == "grammar" else kjv_verses(10_000, seed)
            random.Random(seed + 1).shuffle(texts)
            part = synthesised(texts, voices, share, seed)
        clips += part
        record.append({"part": what, "clips": len(part), "seconds": round(sum(len(w) for w in part) / SAMPLE_RATE, 1)})
    return clips, record
