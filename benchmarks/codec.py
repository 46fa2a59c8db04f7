"""Quality and speed of the offline codec, per source of speech it was not fitted on.

    apt-get install espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts alsa-utils
    python -m mini_most.corpus build --out build/corpus       # the eSpeak corpus (once)
    python benchmarks/codec.py --corpus build/corpus        # ~8 minutes on 2 cores

Four sources, none of them in what the codebooks were fitted on:
- espeak:   the corpus's test-split utterances (eSpeak NG; sentences never fitted on), judged by the
            grammar judge (mini_most.judge.SphinxJudge: PocketSphinx + a bigram LM of the train sentences);
- festival: the held-out synthesiser (mini_most.voices: Festival's kal, ked and slt-hts voices) speaking
            test-split sentences, grammar judge;
- alsa:     the development set: Debian alsa-utils' eight recordings of a human voice ("Front Center",
            /usr/share/sounds/alsa; its Noise.wav is left out), stock recogniser (PocketSphinx's own
            generic English LM); the codec's levels were tuned on it and on MoST's clips;
- most:     MoST's four clips (data_samples/reference), stock recogniser.
For each: the recogniser's WER on the original and on the round trip with 1 and with all codebooks
(the same recogniser for all rows: only the difference means something) and the multi-scale mel
distance of the round trip to the original, level-matched (mean |log-mel difference| at FFT sizes
512/1024/2048 after an overall gain is taken out: the codec sets every clip to one speech level).
Also codebook usage on the eSpeak test set and encode / decode speed. A source whose program or
files are missing is skipped and says so. Writes build/codec_quality.json; the notebooks and the
README read the committed copy (write it with --json data_samples/codec/quality.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF

from mini_most import voices
from mini_most.codec import SHIPPED, MelRVQCodec, multiscale_mel_distance
from mini_most.judge import SphinxJudge, StockRecogniser, normalize, wer
from mini_most.utils import DATA_SAMPLES

ALSA = Path("/usr/share/sounds/alsa")
ALSA_CLIPS = ["Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right",
              "Side_Left", "Side_Right"]
FESTIVAL = voices.SYNTHESISERS["festival"]["voices"]
STOCK_JUDGED = ("alsa", "most")          # free speech: the stock recogniser; the others: the grammar judge


def read(path: Path) -> torch.Tensor:
    """Any audio file as a mono 16 kHz float waveform (T,)."""
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(wav).mean(1)
    return AF.resample(wav, sr, 16000) if sr != 16000 else wav


def sources(corpus: Path, n_espeak: int, n_festival: int, cache: Path | None = None) -> dict:
    """{source: [(wav (T,), reference text)]}; festival's clips are cached (synthesis takes a minute)."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    test = [it for it in manifest["utterances"] if it["split"] == "test"]
    out = {"espeak": [(read(corpus / it["path"]), it["text"]) for it in test[:n_espeak]]}
    if voices.available("festival"):
        sentences = sorted({it["text"] for it in test})
        random.Random(0).shuffle(sentences)
        # the cache is keyed by the sentences themselves: another corpus or count makes another file
        key = hashlib.sha256("\n".join(sentences[:n_festival]).encode()).hexdigest()[:12]
        path = (cache or corpus.parent) / f"festival_test_{n_festival}_{key}.pt"
        if not path.exists():
            clips = [(voices.speak(s, "festival", FESTIVAL[i % len(FESTIVAL)]), s) for i, s in enumerate(sentences[:n_festival])]
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(clips, path)
        out["festival"] = torch.load(path)
    else:
        print("festival is not installed: the held-out synthesiser is skipped (apt-get install "
              f"{voices.SYNTHESISERS['festival']['packages']})")
    if ALSA.is_dir():
        out["alsa"] = [(read(ALSA / f"{name}.wav"), name.replace("_", " ").lower()) for name in ALSA_CLIPS]
    else:
        print(f"no {ALSA}: the development set is skipped (apt-get install alsa-utils)")
    refs = json.loads((DATA_SAMPLES / "reference" / "transcripts.json").read_text())
    out["most"] = [(read(DATA_SAMPLES / "reference" / k), normalize(v)) for k, v in sorted(refs.items())]
    return out


def grammar_sentences(corpus: Path) -> list[str]:
    manifest = json.loads((corpus / "manifest.json").read_text())
    return sorted({it["text"] for it in manifest["utterances"] if it["split"] == "train"}
                  | set((corpus / "text_only.txt").read_text().split("\n")[:-1]))


def measure(codec: MelRVQCodec, clips: dict, judges: dict, ks=(1, 2), unquantised: bool = False,
            codes_out: list | None = None, timing: dict | None = None) -> dict:
    """{source: {row: {"wer", "mel"}}} for the original, the round trip with each k in ks codebooks
    and (unquantised=True) the decoder fed the unquantised log-mel frames."""
    out = {}
    for source, items in clips.items():
        judge = judges["stock"] if source in STOCK_JUDGED else judges["grammar"]
        rows: dict[str, tuple[list, list]] = {}
        for wav, _ in items:
            x = wav[None, None]
            t = time.perf_counter()
            codes = codec.encode(x)
            t_enc = time.perf_counter() - t
            versions = {"original": x}
            if unquantised:
                versions["unquantised"] = codec.invert(codec.features(x))
            t = time.perf_counter()
            for k in ks:
                versions[f"{k} codebook{'s' if k > 1 else ''}"] = codec.decode(codes[:, :k])
            if timing is not None and source == "espeak":
                timing["seconds"] += x.shape[-1] / codec.sample_rate
                timing["encode"] += t_enc
                timing["decode"] += (time.perf_counter() - t) / len(ks)
                codes_out.append(codes[0])
            for name, w in versions.items():
                hyps, mels = rows.setdefault(name, ([], []))
                hyps.append(judge.transcribe(w))
                mels.append(0.0 if name == "original" else multiscale_mel_distance(x, w, match_level=True))
        refs = [ref for _, ref in items]
        out[source] = {name: {"wer": round(wer(refs, h), 4), "mel_distance": round(sum(m) / len(m), 4)}
                       for name, (h, m) in rows.items()}
        out[source]["clips"] = len(items)
        out[source]["seconds"] = round(sum(len(w) for w, _ in items) / 16000, 1)
    return out


def usage(codes: torch.Tensor, cardinality: int) -> dict:
    counts = torch.bincount(codes, minlength=cardinality).float()
    p = counts[counts > 0] / counts.sum()
    return {"distinct": int((counts > 0).sum()), "perplexity": round(float(torch.exp(-(p * p.log()).sum())), 1)}


def table(result: dict) -> str:
    rows = [r for r in next(iter(result.values())) if r not in ("clips", "seconds")]
    head = f"{'source':10}{'clips':>6}{'judge':>9}  " + "".join(f"{r + ' WER':>16}" for r in rows) \
        + "".join(f"{r + ' mel':>16}" for r in rows if r != "original")
    lines = [head]
    for source, res in result.items():
        judge = "stock" if source in STOCK_JUDGED else "grammar"
        lines.append(f"{source:10}{res['clips']:6d}{judge:>9}  " + "".join(f"{res[r]['wer']:16.3f}" for r in rows)
                     + "".join(f"{res[r]['mel_distance']:16.3f}" for r in rows if r != "original"))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("build/corpus"))
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--utterances", type=int, default=300, help="eSpeak test utterances to use, at most")
    ap.add_argument("--festival", type=int, default=60, help="held-out synthesiser clips")
    ap.add_argument("--json", type=Path, default=Path("build/codec_quality.json"))
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    for name in ("utterances", "festival"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: give at least 1 clip (the table needs something to measure)")
    if not (args.corpus / "manifest.json").exists():
        ap.error(f"no corpus at {args.corpus}: build it first with python -m mini_most.corpus build --out {args.corpus}")
    codec = MelRVQCodec.load(args.checkpoint)
    judges = {"grammar": SphinxJudge(grammar_sentences(args.corpus)), "stock": StockRecogniser()}
    clips = sources(args.corpus, args.utterances, args.festival, cache=Path("build"))
    timing, all_codes = {"seconds": 0.0, "encode": 0.0, "decode": 0.0}, []
    ks = (1, codec.num_codebooks) if codec.num_codebooks > 1 else (1,)
    per_source = measure(codec, clips, judges, ks, codes_out=all_codes, timing=timing)
    codes = torch.cat(all_codes, dim=-1)                                     # (K, frames)
    result = {
        "codec": {"checkpoint": str(args.checkpoint.name), **codec.config, "num_codebooks": codec.num_codebooks,
                  "cardinality": codec.cardinality, "frame_rate": codec.frame_rate,
                  "bitrate_bps": codec.frame_rate * codec.num_codebooks * math.log2(codec.cardinality)},
        "sources": per_source,
        "usage": {f"codebook {k}": usage(codes[k], codec.cardinality) for k in range(codec.num_codebooks)},
        "speed_x_realtime": {"encode": round(timing["seconds"] / timing["encode"], 1),
                             "decode": round(timing["seconds"] / timing["decode"], 1)},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(table(per_source))
    print("usage (eSpeak test)", result["usage"], "speed (x real time)", result["speed_x_realtime"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
