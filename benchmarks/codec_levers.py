"""What each lever buys the offline codec on voices it was not fitted on (issue 15's pilots).

    apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
        alsa-utils bible-kjv
    python -m mini_most.corpus build --out build/corpus          # the eSpeak corpus (once)
    git show 709ed5f:data_samples/codec/mel_rvq.safetensors > build/mel_rvq_0.4.1.safetensors
    python benchmarks/codec_levers.py --corpus build/corpus      # ~50 minutes on 2 quiet cores

Each lever is a codec fitted (k-means, 1024 entries per codebook, 2 codebooks unless it says
otherwise) on a pool of frames and judged, with codebook 0 alone and with each larger prefix of its
codebooks, on four sources of speech the codebooks never heard:
- espeak: eSpeak test-split utterances of the corpus (sentences never fitted on), grammar judge;
- festival: the held-out synthesiser (kal, ked, slt-hts) speaking test-split sentences, grammar judge;
- alsa: the development set, Debian alsa-utils' eight recordings of a human voice ("Front Center"...),
  stock recogniser (PocketSphinx's generic English model);
- most: MoST's four clips (data_samples/reference), stock recogniser.
Every row shows the recogniser's WER on the round trip and the level-matched multi-scale mel
distance to the original; the "original" and "unquantised" rows (the log-mel frames straight
into the decoder) bound what the codebooks can do. Fitted pools and synthesised audio are cached
in build/codec_levers/, results in build/codec_levers/results.json (levers already measured are kept;
the README's table is benchmarks/codec_levers_cpu.json, a copy of it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from codec import grammar_sentences, measure, read, sources, table  # benchmarks/codec.py: the per-source table

from mini_most.codec import SHIPPED, MelRVQCodec, clip_level, kmeans, pool_frames, rvq_encode
from mini_most.corpus import PITCHES, SPEEDS, VARIANTS, VOICES
from mini_most.judge import SphinxJudge, StockRecogniser
from mini_most.voices import SYNTHESISERS, kjv_verses, speak

FLITE = [("flite", v) for v in SYNTHESISERS["flite"]["voices"]]
ESPEAK = [("espeak", "")]


LEVERS = {   # name: (pool, or "first pool/pool for the rest", codec config, codebooks fitted)
    "today (shipped)": ("0.4.1", {}, 2),
    "refit: espeak corpus": ("espeak corpus", {}, 2),
    "espeak+flite": ("espeak+flite grammar", {}, 2),
    "espeak+flite+kjv": ("espeak+flite grammar+kjv", {}, 2),
    "espeak+flite+kjv, level": ("espeak+flite grammar+kjv", {"level": None}, 2),
    "espeak+flite+kjv, level, 4 codebooks": ("espeak+flite grammar+kjv", {"level": None}, 4),
    "espeak+flite+kjv, level, GL 256": ("espeak+flite grammar+kjv", {"level": None, "griffin_lim_iters": 256}, 2),
    "espeak+flite+kjv, level, floor 5": ("espeak+flite grammar+kjv", {"level": None, "floor": 5.0}, 2),
    "espeak+flite+kjv, level, floor 3.5": ("espeak+flite grammar+kjv", {"level": None, "floor": 3.5}, 2),
    "half espeak, level, 3 codebooks": ("half espeak+flite grammar+kjv", {"level": None}, 3),
    "shipped 0.4.2: half espeak, level, 3 codebooks": ("0.4.2", {}, 3),
    "codebook 0 on espeak, 1-2 on half espeak, level": ("espeak corpus/half espeak+flite grammar+kjv", {"level": None}, 3),
}


def cached(path: Path, make):
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make(), path)
    return torch.load(path)


def espeak_pool(corpus: Path, seconds: float, seed: int = 0) -> list[torch.Tensor]:
    """The corpus's own train-split clips, shuffled, `seconds` of them: what today's codec was fitted on."""
    items = [it for it in json.loads((corpus / "manifest.json").read_text())["utterances"] if it["split"] == "train"]
    random.Random(seed).shuffle(items)
    out, total = [], 0.0
    for it in items:
        out.append(read(corpus / it["path"]))
        total += len(out[-1]) / 16000
        if total >= seconds:
            break
    return out


def synth_pool(texts: list[str], voices: list[tuple[str, str]], seconds: float, seed: int = 0) -> list[torch.Tensor]:
    """Texts spoken round-robin by the voices ((synth, voice) pairs; eSpeak's with random settings)."""
    rng = random.Random(seed)
    out, total = [], 0.0
    for i, text in enumerate(texts):
        synth, voice = voices[i % len(voices)]
        if synth == "espeak":
            out.append(speak(text, "espeak", f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}", rng.choice(SPEEDS), rng.choice(PITCHES)))
        else:
            out.append(speak(text, synth, voice))
        total += len(out[-1]) / 16000
        if total >= seconds:
            break
    return out


def fit_stagewise(first: torch.Tensor, rest: torch.Tensor, n_books: int, seed: int = 0, **config) -> MelRVQCodec:
    """Codebook 0 fitted on the frames `first`, codebooks 1.. on what codebook 0 leaves of the frames `rest`."""
    g = torch.Generator().manual_seed(seed)
    books = [kmeans(first, 1024, 25, g)]
    residual = rest - books[0][rvq_encode(rest, books[0][None])[:, 0]]
    for _ in range(n_books - 1):
        books.append(kmeans(residual, 1024, 25, g))
        residual = residual - books[-1][rvq_encode(residual, books[-1][None])[:, 0]]
    return MelRVQCodec(torch.stack(books), **config)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("build/corpus"))
    ap.add_argument("--cache", type=Path, default=Path("build/codec_levers"))
    ap.add_argument("--espeak", type=int, default=100, help="eSpeak test utterances")
    ap.add_argument("--festival", type=int, default=60, help="held-out festival clips")
    ap.add_argument("--frames", type=int, default=90_000)
    ap.add_argument("--only", nargs="*", help="levers to run (default: all not yet measured)")
    args = ap.parse_args(argv)
    for name in ("espeak", "festival", "frames"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: give at least 1")
    if not (args.corpus / "manifest.json").exists():
        ap.error(f"no corpus at {args.corpus}: build it first with python -m mini_most.corpus build --out {args.corpus}")
    if args.only and set(args.only) - set(LEVERS):
        ap.error(f"unknown levers {sorted(set(args.only) - set(LEVERS))}: choose from {list(LEVERS)}")
    results_path = args.cache / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    grammar = grammar_sentences(args.corpus)
    judges = {"grammar": SphinxJudge(grammar), "stock": StockRecogniser()}
    clips = sources(args.corpus, args.espeak, args.festival, cache=args.cache)
    seconds = args.frames / 50 * 1.3     # audio to gather per pool: a little more than the frames it keeps
    texts = grammar[:]
    random.Random(1).shuffle(texts)
    pools = {
        "espeak corpus": lambda: espeak_pool(args.corpus, seconds),
        "espeak+flite grammar": lambda: espeak_pool(args.corpus, seconds / 2) + synth_pool(texts, FLITE, seconds / 2),
        "espeak+flite grammar+kjv": lambda: espeak_pool(args.corpus, seconds / 3) + synth_pool(texts, FLITE, seconds / 3)
        + synth_pool(kjv_verses(1533), FLITE + ESPEAK * 2, seconds / 3, seed=2),
        "half espeak+flite grammar+kjv": lambda: espeak_pool(args.corpus, seconds / 2) + synth_pool(texts, FLITE, seconds / 4)
        + synth_pool(kjv_verses(1533), FLITE + ESPEAK * 2, seconds / 4, seed=2),
    }
    for name, (pool, config, n_books) in LEVERS.items():
        if (args.only and name not in args.only) or (not args.only and name in results):
            continue
        t = time.perf_counter()
        if pool in ("0.4.1", "0.4.2"):   # a shipped codec: 0.4.1's from git (see the README), 0.4.2's the one in data_samples
            codec = MelRVQCodec.load(SHIPPED if pool == "0.4.2" else args.cache.parent / "mel_rvq_0.4.1.safetensors")
        else:
            names = pool.split("/")    # one pool, or the first codebook's pool and the others' pool
            pool_clips = [cached(args.cache / f"pool_{p.replace(' ', '_').replace('+', '-')}.pt", pools[p]) for p in names]
            if "level" in config:     # the level: the median speech level of the (last) pool's clips
                probe = MelRVQCodec(torch.zeros(1, 1, 80))
                config = {**config, "level": round(torch.stack([clip_level(probe.log_mel(w[None, None]))[0]
                                                                for w in pool_clips[-1]]).median().item(), 3)}
            probe = MelRVQCodec(torch.zeros(1, 1, 80), **config)
            if len(names) == 1:
                codec = MelRVQCodec.fit(pool_frames(probe, pool_clips[0], args.frames), n_books, 1024, 25, 0, **config)
            else:
                codec = fit_stagewise(pool_frames(probe, pool_clips[0], args.frames),
                                      pool_frames(probe, pool_clips[1], args.frames), n_books, **config)
        fit_s = time.perf_counter() - t
        res = measure(codec, clips, judges, ks=tuple(range(1, n_books + 1)), unquantised=pool not in ("0.4.1", "0.4.2"))
        results[name] = {"pool": pool, "config": config, "fit_seconds": round(fit_s),
                         "eval_seconds": round(time.perf_counter() - t - fit_s), "sources": res}
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(f"== {name}  (fit {fit_s:.0f} s, eval {time.perf_counter() - t - fit_s:.0f} s)\n{table(res)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
