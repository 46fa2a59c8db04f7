"""The ablation protocol's pilots (issue 16): one stage-1 run each, measured as the grid will be.

    python benchmarks/ablation_pilots.py                    # every pilot not yet measured
    python benchmarks/ablation_pilots.py --only most-mix-1400

Each pilot is `mini_most.ablate.ablate` for one arm and seed 0, from the shipped seed-0 base, with
some AblationConfig fields changed, evaluated as issue 16 asks of a class-period run: ASR on all
750 test utterances (CER and WER) and the PocketSphinx judge on the model's speech for 200 test
sentences. What a pilot measured goes into benchmarks/ablation_pilots_cpu.json (a pilot already
there is skipped: delete its entry to measure it again); its whole ablate output stays in
build/pilots/<name>. Times are on 2 CPU threads: run pilots alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mini_most.ablate import AblationConfig, ablate
from mini_most.corpus import load_corpus
from mini_most.files import write_text_atomic

OUT = Path(__file__).resolve().parent / "ablation_pilots_cpu.json"
EVAL = dict(asr_sentences=750, tts_sentences=200)        # the protocol's evaluation (issue 16, item 4)

# name: (arm, AblationConfig fields changed, what the pilot asks)
PILOTS = {
    "most-mix-1400": ("modality", dict(mix={"asr": 0.4, "tts": 0.4, "text": 0.2}, steps=1400, **EVAL),
                      "MoST's stage-1 mix at the steps 20 minutes allow: does the best arm reach the task targets?"),
}

KEEP = ("arm", "seed", "steps", "train_seconds", "eval_seconds", "asr_cer", "asr_wer", "tts_audio_acc",
        "tts_audio_loss", "tts_judge_wer", "tts_frames_ratio", "val_text_loss", "val_audio_loss",
        "text_lm_before", "text_lm_after")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help=f"pilots to run, among {list(PILOTS)} (default: all not yet measured)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.only and set(args.only) - set(PILOTS):
        ap.error(f"unknown pilots {sorted(set(args.only) - set(PILOTS))}: choose from {list(PILOTS)}")
    torch.set_num_threads(args.threads)
    measured = json.loads(OUT.read_text()) if OUT.exists() else {}
    corpus = load_corpus()
    for name, (arm, fields, question) in PILOTS.items():
        if (args.only and name not in args.only) or (not args.only and name in measured):
            continue
        cfg = AblationConfig(**fields)
        t = time.perf_counter()
        results = ablate([arm], range(1), cfg, Path("build/pilots") / name, corpus, progress=sys.stderr.isatty())
        wall = time.perf_counter() - t
        r = results["runs"][-1]
        measured[name] = {"question": question, "changed": fields, **{k: r[k] for k in KEEP if k in r},
                          "wall_minutes": round(wall / 60, 1), "evals": r["evals"],
                          "reference": results["reference"], "machine": results["machine"],
                          "cpu": platform.processor() or platform.machine()}
        write_text_atomic(OUT, json.dumps(measured, indent=1))
        print(f"{name}: ASR CER {r['asr_cer']:.3f} on {cfg.asr_sentences}, judge WER {r.get('tts_judge_wer', float('nan')):.3f} "
              f"on {cfg.tts_sentences}, {r['train_seconds']:.0f} s training + {r['eval_seconds']:.0f} s evaluation", flush=True)


if __name__ == "__main__":
    sys.exit(main())
