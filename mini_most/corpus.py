"""The speech-text corpus: sentences from a small grammar, spoken by eSpeak NG (or LibriSpeech).

    python -m mini_most.corpus build --out build/corpus                 # 16,000 utterances, ~6 minutes
    python -m mini_most.corpus build --out /tmp/c --utterances 12 --text-only 50
    python -m mini_most.corpus encode --corpus build/corpus --out data_samples/corpus   # the shipped codes
    python -m mini_most.corpus encode --codec encodec --bandwidth 1.5 --out build/corpus_encodec
    python -m mini_most.corpus build --source librispeech --subset train-clean-100 dev-clean test-clean \
        --root ~/data --download --out build/librispeech                # real read speech (see below)

Every sentence comes from the grammar below (written for mini-MoST, Apache-2.0), so the vocabulary
stays small (under 100 words) and a classroom-sized model can learn to recognise it in minutes.
Each utterance is one sentence spoken by espeak-ng with a random voice, speed and pitch, resampled
to 16 kHz mono. Sentences, not utterances, are split into train / validation / test, so no test
sentence is ever heard in training. A larger text-only part (train sentences only) feeds
text-LM training. `manifest.json` records every utterance and the counts, durations and sizes.
`encode` turns it into the compact pre-tokenized copy that ships in data_samples/corpus, which
`load_corpus` reads without audio packages or espeak-ng. How the model eats it: tokens.py.

eSpeak NG (Debian package `espeak-ng`) is GPL-3.0-or-later; the speech it generates is its
output, used here as data.

LibriSpeech (Panayotov et al., 2015; openslr.org/12, CC BY 4.0) is read English audiobook speech at
16 kHz. Its subsets have disjoint speakers, so they are the splits: train-* is train, dev-* is
validation, test-* is test. `build --source librispeech` reads its on-disk layout
(<root>/LibriSpeech/<subset>/<speaker>/<chapter>/<id>.flac + <speaker>-<chapter>.trans.txt) with
soundfile, hard-links the audio into the corpus (a copy where links fail), lowercases the
transcripts and drops utterances longer than --max-seconds, counting them in the manifest. Only
`--download` reaches the network (torchaudio's LIBRISPEECH downloader, checksummed).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import inside, load_tensors, read_json, save_tensors, write_text_atomic
from .utils import DATA_SAMPLES

SAMPLE_RATE = 16_000
GAIN = 0.9
SHIPPED_CORPUS = DATA_SAMPLES / "corpus"

# --- the grammar: few choices per slot keep the vocabulary small and the task learnable ---
WORDS = {
    "adj": "red green blue small big old new happy quiet warm".split(),
    "noun": "dog cat bird fish horse girl boy teacher farmer baker".split(),
    "thing": "ball book cup hat box kite chair lamp key coat".split(),
    "things": "balls books cups hats boxes kites chairs lamps keys coats".split(),
    "place": "park house garden school market river kitchen station".split(),
    "name": "anna tom mia sam lucy ben nora jack".split(),
    "verb_past": "saw found took made moved washed painted carried".split(),
    "count": "two three four five six seven".split(),
    "prep": "under near behind inside".split(),
    "weather": "cold warm sunny windy rainy cloudy".split(),
    "time": "today tonight now again".split(),
    "verb_imp": "bring open close clean find take".split(),
}
TEMPLATES = [
    "the {adj} {noun} {verb_past} the {thing}",
    "{name} {verb_past} {count} {adj} {things}",
    "a {noun} is {prep} the {place}",
    "please {verb_imp} the {adj} {thing}",
    "{name} and {name} went to the {place}",
    "it is {weather} in the {place} {time}",
    "the {noun} {verb_past} a {thing} {prep} the {place}",
]
# voices x variants x speeds x pitches: 7 x 8 x 3 x 3 = 504 speakers
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"]
SPEEDS = [140, 165, 190]   # words per minute
PITCHES = [35, 50, 65]     # 0-99
SPLITS = {"train": 0.90, "validation": 0.05, "test": 0.05}


def sentence(rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    out = template
    for slot in WORDS:
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", rng.choice(WORDS[slot]), 1)
    return out


def vocabulary() -> list[str]:
    fixed_words = {w for t in TEMPLATES for w in t.split() if "{" not in w}  # "the", "went", ...
    return sorted({w for ws in WORDS.values() for w in ws} | fixed_words)


def split_of(text: str) -> str:
    """A sentence's split, fixed by a hash of its text: the same sentence is always in the same split."""
    u = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8
    return "train" if u < SPLITS["train"] else "validation" if u < SPLITS["train"] + SPLITS["validation"] else "test"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_version() -> str:
    """The version line of the installed espeak-ng (audio differs between versions)."""
    if not espeak_available():
        return "not installed"
    return subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data at")[0].strip()


@functools.cache
def espeak_voices() -> frozenset[str]:
    """The voice names (language codes and voice names) the installed espeak-ng knows."""
    lines = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    return frozenset(name for line in lines for name in line.split()[1:4:2])      # Language and VoiceName columns


def espeak(text: str, voice: str, speed: int, pitch: int) -> torch.Tensor:
    """espeak-ng's speech for `text`, as a 16 kHz mono float waveform (T,) in [-1, 1]."""
    import soundfile as sf  # audio packages only where audio is made
    import torchaudio.functional as AF
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu) "
                           "or `brew install espeak-ng` (macOS), then run the build again")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    base, _, variant = voice.partition("+") if isinstance(voice, str) else ("", "", "")
    if base not in espeak_voices() or (variant and not re.fullmatch(r"[A-Za-z0-9_]+", variant)):
        raise ValueError(f"voice {voice!r} is not an espeak-ng voice: use a name from `espeak-ng --voices` "
                         "(e.g. en-us), optionally with a variant (en-us+m1)")
    for name, v, lo, hi in (("speed", speed, 80, 450), ("pitch", pitch, 0, 99)):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{name}={v!r}: espeak-ng takes an integer in [{lo}, {hi}]")
    # the text goes in on stdin, never as an argument: text starting with '-' would be read as an
    # option (-f<path> speaks any file)
    wav_bytes = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--stdin"],
                               input=text.encode(), check=True, capture_output=True).stdout
    wav, sr = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    # resampling overshoots espeak's full-scale peaks a little (up to 1.014): leave headroom
    return GAIN * AF.resample(torch.from_numpy(wav), sr, SAMPLE_RATE)


def build(out: Path, utterances: int, text_only: int, seed: int = 0, progress: bool = True) -> dict:
    """Write out/wav/<split>/<id>.wav, out/text_only.txt and out/manifest.json; return the manifest."""
    for name, v in (("utterances", utterances), ("text_only", text_only)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name}={v!r}: give a whole number >= 0")
    import soundfile as sf
    from tqdm import tqdm
    rng = random.Random(seed)
    out = Path(out)
    items, start = [], time.perf_counter()
    for i in tqdm(range(utterances), desc="speaking", disable=not progress):
        text = sentence(rng)
        voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
        speed, pitch = rng.choice(SPEEDS), rng.choice(PITCHES)
        split = split_of(text)
        path = out / "wav" / split / f"{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = espeak(text, voice, speed, pitch)
        sf.write(path, wav.numpy(), SAMPLE_RATE, subtype="PCM_16")
        items.append({"id": f"{i:06d}", "split": split, "text": text, "voice": voice, "speed": speed,
                      "pitch": pitch, "seconds": round(len(wav) / SAMPLE_RATE, 3),
                      "path": str(path.relative_to(out))})
    # text-only sentences: from the train split only, so no validation/test sentence leaks in
    texts = []
    while len(texts) < text_only:
        s = sentence(rng)
        if split_of(s) == "train":
            texts.append(s)
    (out / "text_only.txt").write_text("\n".join(texts) + "\n")
    manifest = {
        "sample_rate": SAMPLE_RATE, "seed": seed, "espeak_ng": espeak_version(), "gain": GAIN,
        "seconds_to_build": round(time.perf_counter() - start, 1),
        "splits": {s: {"utterances": sum(it["split"] == s for it in items),
                       "sentences": len({it["text"] for it in items if it["split"] == s}),
                       "hours": round(sum(it["seconds"] for it in items if it["split"] == s) / 3600, 4)}
                   for s in SPLITS},
        "text_only_sentences": len(texts),
        "vocabulary_words": len(vocabulary()),
        "bytes": sum((out / it["path"]).stat().st_size for it in items),
        "licences": {"sentences": "mini-MoST grammar, Apache-2.0",
                     "speech": "generated by eSpeak NG (GPL-3.0-or-later program); its output, used as data"},
        "utterances": items,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ----------------------------------------------------------------------------------------------
# LibriSpeech: real read speech, in its own on-disk layout

# subset -> (split, speakers, hours, download size): from openslr.org/12 and the LibriSpeech paper
LIBRISPEECH = {
    "dev-clean": ("validation", 40, 5.4, "337 MB"), "dev-other": ("validation", 33, 5.3, "314 MB"),
    "test-clean": ("test", 40, 5.4, "346 MB"), "test-other": ("test", 33, 5.1, "328 MB"),
    "train-clean-100": ("train", 251, 100.6, "6.3 GB"), "train-clean-360": ("train", 921, 363.6, "23 GB"),
    "train-other-500": ("train", 1166, 496.7, "30 GB"),
}
MAX_SECONDS = 35.0   # LibriSpeech's longest utterances run 35 s: 1,750 frames at 50 Hz, 2,625 at 75 Hz


def librispeech_folder(root: Path, subset: str, download: bool = False) -> Path:
    """<root>/LibriSpeech/<subset>, downloaded and extracted first when asked (the network's only use)."""
    if subset not in LIBRISPEECH:
        raise ValueError(f"unknown LibriSpeech subset {subset!r}: choose among {list(LIBRISPEECH)}")
    folder = Path(root) / "LibriSpeech" / subset
    if not folder.is_dir():
        if not download:
            raise FileNotFoundError(f"no LibriSpeech {subset} at {folder}: pass --download to fetch it "
                                    f"({LIBRISPEECH[subset][3]} from openslr.org), or --root the folder that holds LibriSpeech/")
        Path(root).mkdir(parents=True, exist_ok=True)
        from torchaudio.datasets import LIBRISPEECH as Downloader  # checks the archive's hash, then extracts
        Downloader(str(root), url=subset, download=True)
    return folder


def librispeech_utterances(folder: Path) -> list[tuple[str, str, Path]]:
    """(id, transcript, flac path) for every utterance of one subset folder, in id order."""
    out = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        for n, line in enumerate(trans.read_text().splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not re.fullmatch(r"\d+-\d+-\d+", uid) or not text.strip():
                raise ValueError(f"{trans}:{n} is not '<speaker>-<chapter>-<utterance> TRANSCRIPT': {line[:80]!r}")
            flac = trans.parent / f"{uid}.flac"
            if not flac.is_file():
                raise FileNotFoundError(f"{trans}:{n} names {uid}, but {flac.name} is missing: the subset is incomplete; "
                                        "extract it again (or --download)")
            out.append((uid, text.strip().lower(), flac))
    if not out:
        raise FileNotFoundError(f"{folder} holds no <speaker>/<chapter>/*.trans.txt: is it a LibriSpeech subset folder?")
    return out


def build_librispeech(out: Path, root: Path, subsets: list[str], max_seconds: float = MAX_SECONDS,
                      download: bool = False, progress: bool = True) -> dict:
    """A corpus (same manifest, splits and text_only.txt as `build`) from LibriSpeech subsets."""
    import soundfile as sf
    from tqdm import tqdm
    if not subsets or len(set(subsets)) != len(subsets):
        raise ValueError(f"give each LibriSpeech subset once, e.g. train-clean-100 dev-clean test-clean; got {subsets}")
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not max_seconds > 0:
        raise ValueError(f"max_seconds={max_seconds!r}: give a positive number of seconds")
    out, start = Path(out), time.perf_counter()
    # every subset present and every transcript readable before anything is written
    folders = {sub: librispeech_folder(root, sub, download) for sub in subsets}
    listed = {sub: librispeech_utterances(folder) for sub, folder in folders.items()}
    if (out / "manifest.json").exists() or (out / "wav").exists():
        old = read_json(out / "manifest.json", "corpus manifest") if (out / "manifest.json").exists() else {}
        if old.get("source") != "librispeech":
            raise FileExistsError(f"{out} holds another corpus: choose an empty --out")
        shutil.rmtree(out / "wav", ignore_errors=True)      # an earlier LibriSpeech build here: replaced whole
    items, dropped = [], {}
    for sub, utterances in listed.items():
        split = LIBRISPEECH[sub][0]
        dropped[sub] = 0
        for uid, text, flac in tqdm(utterances, desc=sub, disable=not progress):
            info = sf.info(str(flac))
            if info.samplerate != SAMPLE_RATE or info.channels != 1:
                raise ValueError(f"{flac} is {info.samplerate} Hz x {info.channels} channels; LibriSpeech is 16 kHz mono")
            if info.duration > max_seconds:
                dropped[sub] += 1
                continue
            path = out / "wav" / split / f"{uid}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(flac, path)     # no second copy: the corpus's file IS the download's (don't edit it in place)
            except OSError:
                shutil.copyfile(flac, path)
            items.append({"id": uid, "split": split, "text": text, "speaker": f"librispeech {uid.split('-')[0]}",
                          "subset": sub, "seconds": round(info.duration, 3), "path": str(path.relative_to(out))})
    texts = [it["text"] for it in items if it["split"] == "train"]
    write_text_atomic(out / "text_only.txt", "\n".join(texts) + ("\n" if texts else ""))
    manifest = {
        "source": "librispeech", "sample_rate": SAMPLE_RATE, "subsets": subsets,
        "max_seconds": max_seconds, "dropped_longer": dropped,
        "seconds_to_build": round(time.perf_counter() - start, 1),
        "splits": {s: {"utterances": sum(it["split"] == s for it in items),
                       "sentences": len({it["text"] for it in items if it["split"] == s}),
                       "speakers": len({it["speaker"] for it in items if it["split"] == s}),
                       "hours": round(sum(it["seconds"] for it in items if it["split"] == s) / 3600, 4)}
                   for s in SPLITS},
        "text_only_sentences": len(texts),
        "vocabulary_words": len({w for it in items for w in it["text"].split()}),
        "bytes": sum((out / it["path"]).stat().st_size for it in items),
        "licences": {"speech and transcripts": "LibriSpeech ASR corpus (Panayotov et al., 2015), CC BY 4.0, openslr.org/12",
                     "text_only": "the train split's transcripts"},
        "command": f"python -m mini_most.corpus build --source librispeech --subset {' '.join(subsets)}",
        "utterances": items,
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def export_samples(corpus: Path, out: Path, per_split: int = 12) -> dict:
    """Copy a few held-out utterances (validation and test) for listening, with the corpus summary."""
    corpus, out = Path(corpus), Path(out)
    manifest = read_json(corpus / "manifest.json", "corpus manifest")
    (out / "wav").mkdir(parents=True, exist_ok=True)
    chosen = []
    for split in ("validation", "test"):
        items = [it for it in manifest["utterances"] if it["split"] == split][:per_split]
        for it in items:
            name = f"{split}_{it['id']}{Path(it['path']).suffix}"        # .wav (eSpeak), .flac (LibriSpeech)
            shutil.copyfile(inside(corpus, it["path"], "manifest path"), out / "wav" / name)
            chosen.append(dict(it, path=f"wav/{name}"))
    summary = {k: v for k, v in manifest.items() if k != "utterances"}
    summary.setdefault("command", "python -m mini_most.corpus build --out build/corpus")
    samples = {"corpus": summary, "utterances": chosen}
    write_text_atomic(out / "samples.json", json.dumps(samples, indent=1))
    return samples


# ----------------------------------------------------------------------------------------------
# the pre-tokenized corpus that ships in data_samples/corpus (codes as int16, texts as JSON)


@dataclass
class Utterance:
    id: str
    split: str              # train | validation | test (by sentence: no test sentence is heard in training)
    text: str
    codes: torch.Tensor     # (K, F) int64 codec codes (shipped codec: K = 3 codebooks, F = 50 frames per second)
    seconds: float
    speaker: str            # eSpeak: "<voice>+<variant> <speed> wpm pitch <p>"; LibriSpeech: "librispeech <id>"


@dataclass
class Corpus:
    utterances: list[Utterance]
    text_only: list[str]    # train sentences without audio, for text-LM training
    codec: dict             # which codec made the codes: its info() (rates, codebooks, cardinality)
    info: dict              # the build's manifest summary (counts, hours, licences)

    def split(self, name: str) -> list[Utterance]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: choose one of {list(SPLITS)}")
        return [u for u in self.utterances if u.split == name]

    @property
    def model_codebooks(self) -> int:
        """Codebooks per frame the model is fed by default: the codec's choice (shipped codec: 1, EnCodec: all)."""
        return int(self.codec.get("model_codebooks", 1))

    def fingerprint(self) -> str:
        """A hash of everything a model trained on this corpus depends on: the codec's record, every
        utterance's id, split, text and codes, and the text-only sentences."""
        h = hashlib.sha256(json.dumps(self.codec, sort_keys=True).encode())
        for u in self.utterances:
            h.update(f"\x00{u.id}\x00{u.split}\x00{u.text}\x00".encode())
            h.update(u.codes.to(torch.int16).numpy().tobytes())
        h.update("\n".join(self.text_only).encode())
        return h.hexdigest()

    def load_codec(self):
        """The codec that made these codes (to decode what a model says); needs the audio packages."""
        from .codec import load_codec
        return load_codec(self.codec)


def speaker_of(item: dict) -> str:
    """The manifest's speaker: eSpeak's voice settings, or a LibriSpeech speaker id."""
    if "speaker" in item:
        return str(item["speaker"])
    return f"{item['voice']} {item['speed']} wpm pitch {item['pitch']}"


def encode_corpus(corpus: Path, out: Path, codec=None, progress: bool = True) -> dict:
    """Encode every utterance of a built corpus with `codec` (default: the shipped one; any codec of
    mini_most.codec, e.g. load_codec("encodec")) and write out/codes.safetensors
    (all codes concatenated as int16 (K, total frames) + offsets), out/utterances.json, out/text_only.txt."""
    from tqdm import tqdm

    from .codec import load_codec
    corpus, out = Path(corpus), Path(out)
    codec = codec or load_codec()
    if codec.cardinality > 2**15:
        raise ValueError(f"codes up to {codec.cardinality - 1} do not fit the int16 storage: widen it first")
    manifest = read_json(corpus / "manifest.json", "corpus manifest (build it with `python -m mini_most.corpus build`)")
    codes, offsets, rows = [], [0], []
    for it in tqdm(manifest["utterances"], desc="encoding", disable=not progress):
        if it["split"] not in SPLITS:
            raise ValueError(f"{corpus}: utterance {it['id']} has split {it['split']!r}; splits are {list(SPLITS)}")
        c = codec.encode_file(inside(corpus, it["path"], "manifest path"))[0]          # (K, F)
        codes.append(c.to(torch.int16))                                    # codes < 1024 fit in int16
        offsets.append(offsets[-1] + c.shape[1])
        rows.append([it["id"], it["split"], it["text"], it["seconds"], speaker_of(it)])
    out.mkdir(parents=True, exist_ok=True)
    codec_info = codec.info()                       # load_codec(corpus.codec) rebuilds this codec
    save_tensors({"codes": torch.cat(codes, dim=1), "offsets": torch.tensor(offsets)}, out / "codes.safetensors",
                 metadata={"codec": json.dumps(codec_info)})
    info = {k: v for k, v in manifest.items() if k != "utterances"}
    info.setdefault("command", "python -m mini_most.corpus build --out build/corpus")
    info["command"] += f" && python -m mini_most.corpus encode ({codec_info['name']})"
    write_text_atomic(out / "utterances.json", json.dumps(
        {"corpus": info, "columns": ["id", "split", "text", "seconds", "speaker"], "rows": rows}, separators=(",", ":")))
    shutil.copyfile(corpus / "text_only.txt", out / "text_only.txt")
    return {"utterances": len(rows), "frames": offsets[-1], "bytes": sum(f.stat().st_size for f in out.glob("*.*"))}


def load_corpus(path: Path | None = None) -> Corpus:
    """A pre-tokenized corpus; no audio, no espeak-ng needed. Default: $MINI_MOST_CORPUS when set
    (how the notebooks and CLIs run on another corpus, e.g. LibriSpeech with EnCodec), else the
    copy in data_samples/corpus."""
    path = Path(path if path is not None else os.environ.get("MINI_MOST_CORPUS") or SHIPPED_CORPUS)
    if not (path / "codes.safetensors").exists():
        raise FileNotFoundError(f"no pre-tokenized corpus in {path} (codes.safetensors missing): rebuild it with "
                                "`python -m mini_most.corpus build --out build/corpus && python -m mini_most.corpus encode`")
    if not (path / "utterances.json").exists():
        raise FileNotFoundError(f"{path} has codes but no utterances.json: re-run `python -m mini_most.corpus encode`")
    tensors, tmeta = load_tensors(path / "codes.safetensors", "pre-tokenized corpus")
    if {"codes", "offsets"} - set(tensors) or "codec" not in tmeta:
        raise ValueError(f"{path / 'codes.safetensors'} lacks its codes, offsets or codec: re-run the encode step")
    codes, offsets, codec = tensors["codes"].long(), tensors["offsets"].tolist(), json.loads(tmeta["codec"])
    meta = read_json(path / "utterances.json", "corpus index")
    if len(meta["rows"]) != len(offsets) - 1:
        raise ValueError(f"{path}: {len(meta['rows'])} texts but {len(offsets) - 1} code spans; re-run the encode step")
    bad = sorted({r[1] for r in meta["rows"]} - set(SPLITS))
    if bad:
        raise ValueError(f"{path / 'utterances.json'}: splits {bad} are not among {list(SPLITS)}; their utterances "
                         "would be in no split: fix the rows or re-run the encode step")
    utts = [Utterance(id=r[0], split=r[1], text=r[2], codes=codes[:, a:b], seconds=r[3], speaker=r[4])
            for r, a, b in zip(meta["rows"], offsets[:-1], offsets[1:])]
    if not (path / "text_only.txt").is_file():
        raise FileNotFoundError(f"{path} has no text_only.txt: re-run the encode step")
    text_only = (path / "text_only.txt").read_text().split("\n")
    return Corpus(utts, [t for t in text_only if t], codec, meta["corpus"])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mini_most.corpus", description="mini-MoST's speech-text corpus")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="speak the grammar's sentences with espeak-ng, or gather LibriSpeech")
    b.add_argument("--source", choices=("espeak", "librispeech"), default="espeak")
    b.add_argument("--out", type=Path, default=Path("build/corpus"))
    b.add_argument("--utterances", type=int, default=16000, help="espeak: utterances to speak")
    b.add_argument("--text-only", type=int, default=30000, help="espeak: extra text-only train sentences")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--subset", nargs="+", default=["train-clean-100", "dev-clean", "test-clean"],
                   help=f"librispeech: subsets, each its own split ({', '.join(LIBRISPEECH)})")
    b.add_argument("--root", type=Path, default=Path("build/librispeech_download"),
                   help="librispeech: the folder that holds LibriSpeech/<subset>/ (or receives it with --download)")
    b.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="librispeech: drop longer utterances")
    b.add_argument("--download", action="store_true", help="librispeech: fetch missing subsets from openslr.org")
    # nothing writes into data_samples/ unless --out says so: the README's recipes do
    e = sub.add_parser("samples", help="copy held-out utterances for listening")
    e.add_argument("--corpus", type=Path, default=Path("build/corpus"))
    e.add_argument("--out", type=Path, default=Path("build/samples"), help="the shipped ones: --out data_samples/corpus")
    e.add_argument("--per-split", type=int, default=12)
    c = sub.add_parser("encode", help="encode the corpus with a codec (default: the shipped one)")
    c.add_argument("--corpus", type=Path, default=Path("build/corpus"))
    c.add_argument("--out", type=Path, default=Path("build/corpus_tokens"), help="the shipped one: --out data_samples/corpus")
    c.add_argument("--codec", choices=("offline", "encodec", "encodec-untrained"), default="offline",
                   help="offline: the shipped mel-RVQ; encodec: pretrained EnCodec 24 kHz (downloads once); "
                        "encodec-untrained: its architecture, tiny and untrained (offline tests only: no real speech)")
    c.add_argument("--bandwidth", type=float, default=1.5, help="encodec: kbps, 1.5 = 2 codebooks (1.5, 3, 6, 12, 24)")
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    for name, least in (("utterances", 0), ("text_only", 0), ("per_split", 1)):
        if getattr(args, name, least) < least:
            ap.error(f"--{name.replace('_', '-')} must be a whole number >= {least}")
    if args.command == "build" and args.source == "librispeech":
        try:
            m = build_librispeech(args.out, args.root, args.subset, args.max_seconds, args.download)
        except (OSError, ValueError) as e:   # missing or broken files, a refused --out, a failed download
            ap.error(str(e))
        print(json.dumps({k: v for k, v in m.items() if k != "utterances"}, indent=1))
        print(f"dropped {sum(m['dropped_longer'].values())} utterances longer than {args.max_seconds} s: {m['dropped_longer']}")
    elif args.command == "build":
        m = build(args.out, args.utterances, args.text_only, args.seed)
        print(json.dumps({k: v for k, v in m.items() if k != "utterances"}, indent=1))
    elif args.command == "encode":
        from .codec import load_codec
        try:
            codec = load_codec(args.codec) if args.codec == "offline" else load_codec(args.codec, bandwidth=args.bandwidth)
        except (ValueError, RuntimeError) as e:    # a bandwidth EnCodec does not offer; no weights and no network
            ap.error(str(e))
        print(json.dumps(encode_corpus(args.corpus, args.out, codec)))
    else:
        print(f"copied {len(export_samples(args.corpus, args.out, args.per_split)['utterances'])} utterances to {args.out}")


if __name__ == "__main__":
    main()
