"""What LibriSpeech with EnCodec costs on this machine, against the shipped setup, side by side.

    python benchmarks/real_speech.py                         # ~3 minutes on 2 cores; run it alone
    python benchmarks/real_speech.py --json benchmarks/real_speech_cpu.json

Two measurements, each a ratio to a baseline run in the same process, in interleaved rounds:
1. Codec speed, in times real time: EnCodec 24 kHz at 1.5 kbps (the full architecture, built with
   random weights: the pretrained weights cost the same arithmetic and cannot be downloaded here)
   against the shipped mel-RVQ codec, encoding and decoding the same 10 s of audio.
2. One training step (forward, backward, AdamW; small preset, bf16 autocast where the CPU runs it,
   modality routing) on a batch shaped like LibriSpeech train-clean-100 through EnCodec against a
   batch of the shipped corpus (MoST's stage-1 mix). LibriSpeech's shape: 12.7 s per utterance on
   average (100.6 h / 28,539 utterances) and about 15 characters of transcript per second, at
   75 frames/s x 2 codebooks = 150 audio ids per second. The batch is made of real task layouts
   (ASR, TTS, text LM in MoST's 0.4/0.4/0.2 mix) with random codes: speed does not depend on
   which codes they are.
From these it prints what a run would take: encoding train-clean-100, and one ablation run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from mini_most import MoST, MoSTConfig, set_seed
from mini_most.codec import EncodecCodec, load_codec
from mini_most.corpus import SHIPPED_CORPUS, load_corpus
from mini_most.tokens import STAGE1_MIX, Tokenizer, batches, collate, task_stream
from mini_most.utils import autocast, uses_bf16

LIBRI_SECONDS, LIBRI_CHARS_PER_S, TRAIN_CLEAN_100_HOURS = 12.7, 15, 100.6


def codec_speed(rounds: int) -> dict:
    from encodec import EncodecModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EncodecModel.encodec_model_24khz(pretrained=False)       # random weights, the real arithmetic
    codecs = {"mel-RVQ (shipped)": load_codec(), "EnCodec 1.5 kbps": EncodecCodec(1.5, model=model, weights="random")}
    gen = torch.Generator().manual_seed(0)
    times = {name: {"encode": [], "decode": []} for name in codecs}
    for i in range(rounds + 1):                                          # round 0 warms up
        for name, codec in codecs.items():
            wav = 0.1 * torch.randn(1, 1, 10 * codec.sample_rate, generator=gen)
            t0 = time.perf_counter()
            codes = codec.encode(wav)
            t1 = time.perf_counter()
            codec.decode(codes)
            t2 = time.perf_counter()
            if i:
                times[name]["encode"].append(t1 - t0)
                times[name]["decode"].append(t2 - t1)
    return {name: {k: round(10 / statistics.median(v), 1) for k, v in t.items()} for name, t in times.items()}


def libri_batches(tok: Tokenizer, batch_size: int, n: int, seed: int = 0) -> list:
    """Batches with LibriSpeech-through-EnCodec lengths: MoST's mix of ASR/TTS/text-LM layouts, random codes."""
    rng = random.Random(seed)
    words = "the of and to a in that he was it his i with as had for you her but not be".split()
    out = []
    for _ in range(n):
        examples = []
        for _ in range(batch_size):
            seconds = max(1.0, rng.gauss(LIBRI_SECONDS, 3.5))
            text = ""
            while len(text) < seconds * LIBRI_CHARS_PER_S:
                text += rng.choice(words) + " "
            codes = torch.randint(0, tok.cardinality, (tok.codebooks, int(seconds * 75)))
            task = rng.choices(list(STAGE1_MIX), list(STAGE1_MIX.values()))[0]
            examples.append(tok.asr(codes, text.strip()) if task == "asr" else
                            tok.tts(text.strip(), codes) if task == "tts" else tok.text_lm(text.strip()))
        out.append(collate(examples, tok.pad))
    return out


def step_speed(rounds: int, batch_size: int) -> dict:
    precision = "auto"
    shipped_cfg = MoSTConfig.preset("small")
    tok = Tokenizer(shipped_cfg)
    stream = batches(task_stream(load_corpus(SHIPPED_CORPUS), tok, seed=0), batch_size, tok.pad, seed=0,
                     max_len=shipped_cfg.max_position_embeddings)
    libri_cfg = MoSTConfig.preset("small", max_position_embeddings=4096)   # config_for raises it to the longest
    libri_tok = Tokenizer(libri_cfg, codebooks=2)
    data = {"shipped corpus (mel-RVQ, 1 codebook)": (shipped_cfg, [next(stream) for _ in range(rounds + 1)]),
            "LibriSpeech-shaped (EnCodec, 2 codebooks)": (libri_cfg, libri_batches(libri_tok, batch_size, rounds + 1))}
    models = {}
    for name, (cfg, _) in data.items():
        set_seed(0)
        model = MoST(cfg)
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    times = {name: [] for name in data}
    for i in range(rounds + 1):
        for name, (_, bs) in data.items():
            model, opt = models[name]
            b = bs[i]
            t0 = time.perf_counter()
            with autocast("cpu", precision):
                out = model(b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask)
            (out.loss + out.aux_loss).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:
                times[name].append(time.perf_counter() - t0)
    result = {}
    for name, (_, bs) in data.items():
        tokens = statistics.fmean(int(b.attention_mask.sum()) for b in bs[1:])
        result[name] = {"ms_per_step": round(1000 * statistics.median(times[name])), "tokens_per_step": round(tokens),
                        "longest": max(b.tokens.shape[1] for b in bs[1:])}
    result["bf16"] = uses_bf16(precision, "cpu")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="32, the ablation's, needs more than 24 GB at these lengths")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    codec = codec_speed(args.rounds)
    base, enc = codec["mel-RVQ (shipped)"], codec["EnCodec 1.5 kbps"]
    print("codec speed, times real time (10 s of audio, medians of", args.rounds, "rounds)")
    print(f"{'codec':22}{'encode':>9}{'decode':>9}")
    for name, v in codec.items():
        print(f"{name:22}{v['encode']:>8.1f}x{v['decode']:>8.1f}x")
    print(f"EnCodec / mel-RVQ time: encode {base['encode'] / enc['encode']:.2f}x, decode {base['decode'] / enc['decode']:.2f}x")
    step = step_speed(args.rounds, args.batch_size)
    names = [k for k in step if k != "bf16"]
    print(f"\ntraining step, small preset, batch {args.batch_size}, {'bf16' if step['bf16'] else 'fp32'}")
    print(f"{'batch':44}{'tokens':>9}{'longest':>9}{'ms/step':>9}")
    for name in names:
        v = step[name]
        print(f"{name:44}{v['tokens_per_step']:>9}{v['longest']:>9}{v['ms_per_step']:>9}")
    ratio = step[names[1]]["ms_per_step"] / step[names[0]]["ms_per_step"]
    print(f"LibriSpeech / shipped time per step: {ratio:.1f}x")
    encode_hours = TRAIN_CLEAN_100_HOURS / enc["encode"]
    run_hours = 600 * step[names[1]]["ms_per_step"] / 1000 / 3600
    print(f"\nencoding train-clean-100 ({TRAIN_CLEAN_100_HOURS} h) with EnCodec: ~{encode_hours:.1f} h on this machine")
    print(f"one 600-step stage-1 run at batch {args.batch_size}: ~{run_hours:.1f} h of training (before evaluation)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"codec_x_real_time": codec, "train_step": step, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "encode_train_clean_100_hours": round(encode_hours, 2),
                       "stage1_600_steps_hours": round(run_hours, 2)}, f, indent=1)


if __name__ == "__main__":
    main()
