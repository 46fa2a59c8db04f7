"""The offline speech judge: a proper bigram LM, and a recogniser that works on held-out speech."""

import json
import math
import random

import soundfile as sf
import torch

from mini_most import DATA_SAMPLES
from mini_most import corpus as data
from mini_most.judge import SphinxJudge, bigram_arpa, wer

SAMPLES = DATA_SAMPLES / "corpus"


def parse_arpa(text):
    uni, bi, section = {}, {}, None
    for line in text.splitlines():
        if line.startswith("\\"):
            section = line
            continue
        parts = line.split("\t")
        if section == "\\1-grams:" and len(parts) == 3:
            uni[parts[1]] = (10 ** float(parts[0]), 10 ** float(parts[2]))
        elif section == "\\2-grams:" and len(parts) == 2:
            bi[tuple(parts[1].split())] = 10 ** float(parts[0])
    return uni, bi


def test_bigram_lm_is_a_distribution():
    rng = random.Random(0)
    uni, bi = parse_arpa(bigram_arpa([data.sentence(rng) for _ in range(300)]))
    words = [w for w in uni if w != "<s>"]
    assert math.isclose(sum(uni[w][0] for w in words), 1.0, rel_tol=1e-4)
    for h in ["<s>", "the", "went", "red"]:
        total = sum(bi.get((h, w), uni[h][1] * uni[w][0]) for w in words)  # seen, else backed off
        assert math.isclose(total, 1.0, rel_tol=1e-3), (h, total)


def test_judge_transcribes_held_out_speech():
    samples = json.loads((SAMPLES / "samples.json").read_text())
    rng = random.Random(0)
    judge = SphinxJudge([s for s in {data.sentence(rng) for _ in range(20000)} if data.split_of(s) == "train"])
    refs, hyps = [], []
    for it in samples["utterances"]:
        wav = torch.from_numpy(sf.read(str(SAMPLES / it["path"]), dtype="float32")[0])
        refs.append(it["text"])
        hyps.append(judge.transcribe(wav))
    assert wer(refs, hyps) < 0.3, list(zip(refs, hyps))[:5]   # 0.19 measured
    assert judge.transcribe(torch.zeros(16000)) == ""  # silence: nothing
