"""Quality and speed of the offline codec on held-out speech, with 1 and with 2 codebooks.

    python -m mini_most.corpus build --out build/corpus      # the corpus (once)
    python benchmarks/codec.py --corpus build/corpus       # all 287 test utterances, ~4 minutes on 2 cores

For test-split utterances (sentences never seen when fitting the codebooks) it measures, for the
original audio and its round trips through the codec:
- multi-scale mel distance to the original (mean |log-mel difference| at FFT sizes 512/1024/2048);
- WER of an independent recogniser (mini_most.judge: PocketSphinx + a bigram LM of the train
  sentences), the same judge for the original and the round trips;
- codebook usage (distinct codes, perplexity) and encode / decode speed in times real time.
It prints a table and writes build/codec_quality.json; the notebooks read the committed copy,
data_samples/codec/quality.json (write it with --json data_samples/codec/quality.json).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import soundfile as sf
import torch

from mini_most.codec import SHIPPED, MelRVQCodec, multiscale_mel_distance
from mini_most.judge import SphinxJudge, wer


def usage(codes: torch.Tensor, cardinality: int) -> dict:
    counts = torch.bincount(codes, minlength=cardinality).float()
    p = counts[counts > 0] / counts.sum()
    return {"distinct": int((counts > 0).sum()), "perplexity": round(float(torch.exp(-(p * p.log()).sum())), 1)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("build/corpus"))
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--utterances", type=int, default=300, help="test utterances to use, at most")
    ap.add_argument("--json", type=Path, default=Path("build/codec_quality.json"))
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    test = [it for it in manifest["utterances"] if it["split"] == "test"][:args.utterances]
    train_sentences = sorted({it["text"] for it in manifest["utterances"] if it["split"] == "train"}
                             | set((args.corpus / "text_only.txt").read_text().split("\n")[:-1]))
    codec = MelRVQCodec.load(args.checkpoint)
    judge = SphinxJudge(train_sentences)
    rows = {name: {"hyps": [], "mel": []} for name in ("original", "1 codebook", "2 codebooks")}
    refs, all_codes, seconds, t_enc, t_dec = [], [], 0.0, 0.0, 0.0
    for i, it in enumerate(test):
        wav = torch.from_numpy(sf.read(str(args.corpus / it["path"]), dtype="float32")[0])[None, None]
        seconds += wav.shape[-1] / codec.sample_rate
        refs.append(it["text"])
        t = time.perf_counter()
        codes = codec.encode(wav)
        t_enc += time.perf_counter() - t
        all_codes.append(codes[0])
        versions = {"original": wav}
        for k in (1, 2):
            t = time.perf_counter()
            versions[f"{k} codebook{'s' if k > 1 else ''}"] = codec.decode(codes[:, :k])
            t_dec += (time.perf_counter() - t) / 2
        for name, w in versions.items():
            rows[name]["hyps"].append(judge.transcribe(w))
            rows[name]["mel"].append(0.0 if name == "original" else multiscale_mel_distance(wav, w))
        print(f"\r{i + 1}/{len(test)} utterances", end="", flush=True)
    print()
    codes = torch.cat(all_codes, dim=-1)                                     # (K, frames)
    result = {
        "codec": {"checkpoint": str(args.checkpoint.name), **codec.config, "num_codebooks": codec.num_codebooks,
                  "cardinality": codec.cardinality, "frame_rate": codec.frame_rate,
                  "bitrate_bps": codec.frame_rate * codec.num_codebooks * math.log2(codec.cardinality)},
        "held_out": {"utterances": len(test), "seconds": round(seconds, 1), "split": "test"},
        "wer": {name: round(wer(refs, r["hyps"]), 4) for name, r in rows.items()},
        "mel_distance": {name: round(sum(r["mel"]) / len(r["mel"]), 4) for name, r in rows.items()},
        "usage": {f"codebook {k}": usage(codes[k], codec.cardinality) for k in range(codec.num_codebooks)},
        "speed_x_realtime": {"encode": round(seconds / t_enc, 1), "decode": round(seconds / t_dec, 1)},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(f"{'':14}{'WER':>8}{'mel distance':>14}")
    for name in rows:
        print(f"{name:14}{result['wer'][name]:8.3f}{result['mel_distance'][name]:14.3f}")
    print("usage", result["usage"], "speed (x real time)", result["speed_x_realtime"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
