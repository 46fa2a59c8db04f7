"""The routing ablation: does routing by modality beat one shared pool of experts, and a dense MLP?

MoST's protocol, shrunk to a classroom: start from a text model, then add speech.

    stage 0  a text-only base, trained on the corpus's text with routing="vanilla" over all routed
             experts (as DeepSeek-V2-Lite was), and a dense base trained the same way. The small
             bases ship in data_samples/bases (Hugging Face folders, read by convert.load_pretrained).
    stage 1  speech-text post-training from the base, one run per arm and seed, with MoST's stage-1
             task mix, the same data order (the seed) and the same number of steps in every arm.

    arm        base    routing in stage 1
    modality   MoE     MoST: text tokens pick text experts (0..n/2-1), audio tokens audio experts
    vanilla    MoE     DeepSeek: every token picks among all routed experts
    dense      dense   one MLP as wide as the k routed + shared experts a token uses

The arms have equal active parameters per token (up to the gates: 9,216 weights in small);
the two MoE arms have equal totals, the dense arm has fewer (it has no idle experts). The two MoE
arms load identical weights, but they are not the same function at step 0: modality routing keeps
text tokens off experts the vanilla base had sent them to, so its text loss starts higher.

Each run is evaluated on held-out data: validation loss on text and on audio targets, text-LM loss
before and after stage 1 (how much text ability survives), ASR (batched greedy decoding with the KV
cache, CER and WER on test sentences), TTS (audio-token accuracy under teacher forcing, and the WER
that the independent PocketSphinx judge gets on generated speech), and routing (expert load per
modality and layer, its entropy). Arms are compared on paired seeds.

    python -m mini_most.ablate --seeds 3                      # the full grid (make ablation), ~75 min on 2 cores
    python -m mini_most.ablate --arms dense --seeds 1 --first-seed 2 --out results/students/ana   # one student's run
    python -m mini_most.ablate --merge results/students/*/results.json --out results/class       # the class's grid
    python -m mini_most.ablate --smoke --out build/smoke      # seconds: the toy preset, a few steps
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .corpus import SHIPPED_CORPUS, Corpus, load_corpus

# the evaluation functions live in mini_most.evaluate; speak, target_stats and transcribe stay importable from here
from .evaluate import load_divergence, routing_stats, speak, target_stats, transcribe  # noqa: F401
from .files import read_json, write_text_atomic
from .model import ROUTING_MODES, MoST, MoSTConfig
from .tokens import Tokenizer, config_for
from .train import TrainConfig, Trainer
from .utils import DATA_SAMPLES, device_here, set_seed

ARMS = ROUTING_MODES                  # one arm per routing mode: modality, vanilla, dense
BASE_OF = {"modality": "moe", "vanilla": "moe", "dense": "dense"}   # which stage-0 base an arm starts from
BASE_ROUTING = {"moe": "vanilla", "dense": "dense"}
SHIPPED_BASES = DATA_SAMPLES / "bases"
COMMITTED = DATA_SAMPLES.parent / "results" / "ablation_small"      # the committed full grid (README, notebook 05)
FORMAT = "mini_most.ablate/1"


@dataclass
class AblationConfig:
    preset: str = "small"
    steps: int = 600                    # stage-1 optimizer steps per run (every arm, every seed)
    base_steps: int = 800               # stage-0 steps (text only)
    batch_size: int = 32
    lr: float = 2e-3                    # peak lr of both stages (warmup, then cosine to 10%)
    warmup_steps: int = 50
    dropout: float = 0.1
    # stage 1's task mix: more ASR than MoST's 0.4/0.4/0.2 (tokens.STAGE1_MIX), so that a 600-step run
    # clears the 40% CER floor (the README's ablation section has the pilots behind this choice)
    mix: dict = field(default_factory=lambda: {"asr": 0.8, "tts": 0.1, "text": 0.1})
    eval_every: int = 100               # validation-loss curve every N steps
    eval_batches: int = 4
    asr_sentences: int = 200            # test sentences transcribed
    tts_sentences: int = 32             # test sentences spoken by the model and judged
    tts_temperature: float = 0.8        # sampling for TTS (greedy audio decoding tends to loop)
    text_sentences: int = 256           # validation sentences for the text-LM loss
    precision: str = "auto"             # "auto": bf16 autocast where the CPU runs it, else fp32

    def __post_init__(self):
        if min(self.steps, self.base_steps, self.batch_size, self.asr_sentences, self.tts_sentences,
               self.text_sentences, self.eval_batches) < 1 or self.eval_every < 0:
            raise ValueError(f"AblationConfig: counts must be >= 1 (eval_every >= 0); got {self}")

    def train_config(self, seed: int, stage: int, codebooks: int = 1) -> TrainConfig:
        # stage 0 reads text only: its codebooks stay 1, whatever the codec
        return TrainConfig(steps=self.steps if stage == 1 else self.base_steps, batch_size=self.batch_size,
                           lr=self.lr, warmup_steps=self.warmup_steps, seed=seed,
                           codebooks=codebooks if stage == 1 else 1,
                           mix=dict(self.mix) if stage == 1 else {"text": 1.0},
                           eval_every=self.eval_every if stage == 1 else 0, eval_batches=self.eval_batches,
                           precision=self.precision)


# the smoke scale (CI, `--smoke`): the toy preset, a few steps, a handful of sentences
SMOKE = dict(preset="toy", steps=6, base_steps=6, batch_size=8, warmup_steps=2, eval_every=3, eval_batches=1,
             asr_sentences=4, tts_sentences=2, text_sentences=8)


# ----------------------------------------------------------------------------------------------
# stage 0: the text bases

def _shipped_or(corpus: Corpus | None) -> Corpus:
    # 0.4.0 called base_settings(cfg) and base_folder(kind, cfg, None, cache): the shipped corpus, by its own path
    return corpus if corpus is not None else load_corpus(SHIPPED_CORPUS)


def model_config(cfg: AblationConfig, corpus: Corpus, **overrides) -> MoSTConfig:
    """The preset sized to the corpus's codec (tokens.config_for): the preset itself on the shipped corpus."""
    return config_for(corpus, cfg.preset, dropout=cfg.dropout, **overrides)


def base_settings(cfg: AblationConfig, corpus: Corpus | None = None) -> dict:
    """What a base depends on (the preset, dropout, stage 0's whole TrainConfig, the text it reads
    and any model field the corpus's codec changes): a shipped base is used only when these match.
    corpus=None: the shipped corpus."""
    corpus = _shipped_or(corpus)
    settings = {"preset": cfg.preset, "dropout": cfg.dropout, **asdict(cfg.train_config(seed=0, stage=0)),
                "text_sha256": hashlib.sha256("\n".join(corpus.text_only).encode()).hexdigest()}
    preset, sized = asdict(MoSTConfig.preset(cfg.preset, dropout=cfg.dropout)), asdict(model_config(cfg, corpus))
    changed = {k: v for k, v in sized.items() if preset[k] != v}
    if changed:                                              # e.g. a codec with more codebooks: a wider vocabulary
        settings["model_changes"] = changed
    return json.loads(json.dumps(settings))                  # as base.json holds them (tuples become lists)


def train_base(kind: str, cfg: AblationConfig, corpus: Corpus, progress: bool = True,
               device: str = "cpu") -> tuple[MoST, dict]:
    """Stage 0: a text-only model, kind "moe" (vanilla routing over all experts) or "dense"."""
    set_seed(0)                                                  # one base per kind, shared by every seed
    model = MoST(model_config(cfg, corpus, routing=BASE_ROUTING[kind])).to(device)
    trainer = Trainer(model, corpus, cfg.train_config(seed=0, stage=0))
    t0 = time.perf_counter()
    trainer.train(progress=progress)
    info = {"kind": kind, "settings": base_settings(cfg, corpus), "seconds": round(time.perf_counter() - t0, 1),
            "final_train_loss": trainer.history[-1]["loss"], "params": model.num_params()}
    return model.cpu(), info


def base_folder(kind: str, cfg: AblationConfig, corpus: Corpus, cache: Path, retrain: bool = False,
                progress: bool = True, device: str = "cpu") -> Path:
    """The folder of the stage-0 base for `kind`: the shipped one when its settings match `cfg`,
    else one trained now and kept under `cache` (trained again only when its settings change)."""
    from .convert import export_pretrained
    corpus = _shipped_or(corpus)
    name, want = f"{cfg.preset}_{kind}", base_settings(cfg, corpus)
    for folder in ([] if retrain else [SHIPPED_BASES / name, Path(cache) / name]):
        meta = folder / "base.json"
        if meta.exists() and read_json(meta, "base description").get("settings") == want:
            return folder
    folder = Path(cache) / name
    model, info = train_base(kind, cfg, corpus, progress, device)
    if folder.exists():
        shutil.rmtree(folder)                    # the cache's own folder: a base made with other settings
    # fp16 shards of at most 8 MiB: the small MoE base (11.5 MB) ships in two files under the 10 MiB limit
    export_pretrained(model, folder, max_shard_bytes=8 * 2**20, dtype=torch.float16)
    write_text_atomic(folder / "base.json", json.dumps(info, indent=1))
    return folder


def load_base(folder: Path, arm: str, dropout: float) -> MoST:
    """The base for `arm`, in fp32, with the arm's routing (the MoE base's experts 0..n/2-1 become
    the text experts and the rest the audio experts, as MoST splits DeepSeek-V2-Lite's 64)."""
    from .convert import load_pretrained
    return load_pretrained(folder, routing=arm, dropout=dropout)


# ----------------------------------------------------------------------------------------------
# evaluation

def judge_wer(references: list[str], heard: list[str]) -> float:
    """WER of what the judge heard, both sides normalised (lowercase words, no punctuation)."""
    from .judge import normalize, wer
    return wer([normalize(r) for r in references], [normalize(h) for h in heard])


class Evaluator:
    """The held-out sets and the judge, built once and shared by every run."""

    def __init__(self, corpus: Corpus, tok: Tokenizer, cfg: AblationConfig, judge: bool = True):
        self.tok, self.cfg = tok, cfg
        test = corpus.split("test")
        # the first N utterances of a split (different speakers may say the same sentence)
        self.asr = [tok.asr(u.codes[:tok.codebooks], u.text) for u in test[:cfg.asr_sentences]]
        self.tts_forced = [tok.tts(u.text, u.codes[:tok.codebooks]) for u in test[:cfg.asr_sentences]]
        self.speak = test[:cfg.tts_sentences]
        self.text = [tok.text_lm(u.text) for u in corpus.split("validation")[:cfg.text_sentences]]
        self.corpus = corpus
        self._codec = None
        self.judge = self.judge_name = None
        if judge:
            from .judge import SphinxJudge, StockRecogniser
            if corpus.info.get("source", "espeak") == "espeak":
                # every test sentence is a grammar sentence: the bigram of the train sentences knows them all
                self.judge, self.judge_name = SphinxJudge([u.text for u in corpus.split("train")]), "PocketSphinx + grammar bigram"
            else:  # free text (LibriSpeech): a bigram of the train transcripts would not know the test sentences
                self.judge, self.judge_name = StockRecogniser(), "PocketSphinx, stock en-us LM"
        self._reference = None

    @property
    def codec(self):
        """The codec that made the corpus (it decodes the model's speech), loaded on first use."""
        if self._codec is None:
            self._codec = self.corpus.load_codec()
        return self._codec

    def text_lm_loss(self, model: MoST) -> float:
        return target_stats(model, self.tok, self.text, self.cfg.precision)["text_loss"]

    def judge_texts(self, codes: list[torch.Tensor]) -> list[str]:
        """What the judge hears in each utterance's codes ("" for ones too short to decode)."""
        out = []
        for c in codes:
            if c.shape[-1] < self.codec.min_frames:
                out.append("")
                continue
            out.append(self.judge.transcribe(self.codec.decode(c[None])[0], self.codec.sample_rate))
        return out

    def reference(self) -> dict:
        """The judge on the corpus's own codes for the same sentences: the best a model can expect."""
        if self._reference is None and self.judge is not None:
            refs = [u.text for u in self.speak]
            hyps = self.judge_texts([u.codes[:self.tok.codebooks] for u in self.speak])
            self._reference = {"judge_wer_on_corpus_codes": judge_wer(refs, hyps), "sentences": len(refs),
                               "judge": self.judge_name}
        return self._reference or {}

    def __call__(self, model: MoST, seed: int) -> dict:
        import jiwer
        cfg, tok = self.cfg, self.tok
        refs = [e.text for e in self.asr]
        longest = max(len(r.encode()) for r in refs) + 2                     # bytes + <eos>, and a spare
        hyps = transcribe(model, tok, self.asr, max_new_tokens=longest, precision=cfg.precision)
        tf = target_stats(model, tok, self.tts_forced, cfg.precision)
        out = {"asr_cer": jiwer.cer(refs, hyps), "asr_wer": jiwer.wer(refs, hyps),
               "asr_examples": [{"reference": r, "hypothesis": h} for r, h in list(zip(refs, hyps))[:6]],
               "tts_audio_acc": tf["audio_acc"], "tts_audio_loss": tf["audio_loss"]}
        if self.judge is not None:
            texts = [u.text for u in self.speak]
            frames = max(u.codes.shape[-1] for u in self.speak)
            limit = model.config.max_position_embeddings - max(len(tok.encode_text(t)) for t in texts) - 8
            codes = speak(model, tok, texts, min(int(frames * 1.5), limit // tok.codebooks), cfg.tts_temperature,
                          seed=seed, precision=cfg.precision)
            heard = self.judge_texts(codes)
            out.update({"tts_judge_wer": judge_wer(texts, heard),
                        "tts_frames_ratio": sum(c.shape[-1] for c in codes) / sum(u.codes.shape[-1] for u in self.speak),
                        "tts_examples": [{"text": t, "judge_heard": h, "codes": c.tolist()}
                                         for t, h, c in list(zip(texts, heard, codes))[:3]]})
        return out


# ----------------------------------------------------------------------------------------------
# stage 1: one run

def run(arm: str, seed: int, cfg: AblationConfig, corpus: Corpus, base: Path, evaluator: Evaluator,
        progress: bool = True, device: str = "cpu") -> dict:
    """Stage 1 for one arm and seed, from its base; returns every number measured."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose among {ARMS}")
    set_seed(seed)
    model = load_base(base, arm, cfg.dropout).to(device)
    trainer = Trainer(model, corpus, cfg.train_config(seed, stage=1, codebooks=evaluator.tok.codebooks), tokenizer=evaluator.tok)
    text_before = evaluator.text_lm_loss(model)
    trainer.evaluate()                                       # step 0 of the validation curve
    t0 = time.perf_counter()
    trainer.train(progress=progress)
    train_seconds = time.perf_counter() - t0
    if not trainer.evals or trainer.evals[-1]["step"] != trainer.step:
        trainer.evaluate()
    t1 = time.perf_counter()
    result = {"arm": arm, "seed": seed, "steps": trainer.step, "params": model.num_params(),
              "train_seconds": round(train_seconds, 1),
              "loss_curve": [round(h["loss"], 4) for h in trainer.history],
              "aux_curve": [round(h["aux_loss"], 5) for h in trainer.history],
              "evals": trainer.evals,
              "val_text_loss": trainer.evals[-1]["text_loss"], "val_audio_loss": trainer.evals[-1]["audio_loss"],
              "text_lm_before": text_before, "text_lm_after": evaluator.text_lm_loss(model),
              "routing": routing_stats(model, trainer.validation_batches(), cfg.precision)}
    result["text_lm_change"] = result["text_lm_after"] - result["text_lm_before"]
    result.update(evaluator(model, seed))
    result["eval_seconds"] = round(time.perf_counter() - t1, 1)
    return result


# ----------------------------------------------------------------------------------------------
# comparing arms

# (metric, what it is, True when higher is better; None: describes, neither better nor worse)
METRICS = [("val_text_loss", "validation loss, text targets", False),
           ("val_audio_loss", "validation loss, audio targets", False),
           ("text_lm_after", "text-LM loss after stage 1", False),
           ("text_lm_change", "text-LM loss change in stage 1", False),
           ("asr_cer", "ASR CER (test)", False),
           ("asr_wer", "ASR WER (test)", False),
           ("tts_audio_acc", "TTS audio-token accuracy", True),
           ("tts_judge_wer", "TTS WER by the judge", False),
           ("load_divergence", "text-audio expert-load divergence, bits", None)]
PAIRS = [("modality", "vanilla"), ("modality", "dense"), ("vanilla", "dense")]


def _has(run_: dict, key: str) -> bool:
    """Whether a run measured `key` (absent: e.g. no judge; NaN: e.g. no audio targets in a tiny validation set)."""
    return key in run_ and run_[key] is not None and math.isfinite(run_[key])


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def derived(run_: dict) -> dict:
    """A run with the metrics computed from what it stored: the mean over layers of load_divergence."""
    if run_.get("routing"):
        return {**run_, "load_divergence": statistics.fmean(load_divergence(run_["routing"]["load"]))}
    return run_


def summarize(results: dict) -> dict:
    """Per arm: mean and std over seeds of every metric. Per pair of arms: the per-seed differences
    (a - b on the same seed, so the same data order and, for the two MoE arms, the same start), their
    mean and std, and on how many seeds a came out better than b, and tied."""
    runs = [derived(r) for r in results["runs"]]
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    by = {(r["arm"], r["seed"]): r for r in runs}
    table = {}
    for key, _, _ in METRICS:
        table[key] = {}
        for a in arms:
            xs = [r[key] for r in runs if r["arm"] == a and _has(r, key)]
            if xs:
                m, s = _mean_std(xs)
                table[key][a] = {"mean": m, "std": s, "n": len(xs)}
    paired = {}
    for a, b in PAIRS:
        seeds = sorted({s for (arm, s) in by if arm == a} & {s for (arm, s) in by if arm == b})
        if not seeds:
            continue
        for key, _, higher in METRICS:
            d = [by[a, s][key] - by[b, s][key] for s in seeds if _has(by[a, s], key) and _has(by[b, s], key)]
            if d:
                m, s_ = _mean_std(d)
                paired.setdefault(f"{a}-{b}", {})[key] = {
                    "diffs": d, "mean": m, "std": s_, "n": len(d), "ties": sum(x == 0 for x in d),
                    "a_better": None if higher is None else sum((x > 0) if higher else (x < 0) for x in d)}
    return {"arms": arms, "seeds": sorted({r["seed"] for r in runs}), "table": table, "paired": paired}


def format_table(summary: dict) -> str:
    """Markdown: mean +- std per arm, then the paired differences."""
    arms = summary["arms"]
    lines = ["| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for key, label, higher in METRICS:
        cells = [f"{v['mean']:.3f} ± {v['std']:.3f}" if (v := summary["table"][key].get(a)) else "–" for a in arms]
        how = "" if higher is None else f" ({'higher' if higher else 'lower'} is better)"
        lines.append(f"| {label}{how} | " + " | ".join(cells) + " |")
    if summary["paired"]:
        pairs = list(summary["paired"])
        lines += ["", "paired differences a - b, per seed: mean ± std [seeds where a is better / seeds]", "",
                  "| metric | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
        for key, label, _ in METRICS:
            cells = []
            for p in pairs:
                v = summary["paired"][p].get(key)
                if not v:
                    cells.append("–")
                    continue
                tie = f", {v['ties']} tied" if v["ties"] else ""
                count = "" if v["a_better"] is None else f" [{v['a_better']}/{v['n']}{tie}]"
                cells.append(f"{v['mean']:+.3f} ± {v['std']:.3f}{count}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# what a results file from before 0.4.1 (which records no corpus) was made on: the shipped corpus of
# 0.4.1 and before, whose codes 0.4.2's codec remade (Corpus.fingerprint() of that corpus)
CORPUS_BEFORE_0_4_2 = "8879c75dbf29b48b48a9d924408b683be5cc48023b8af6a5654bb1e26c489707"


def shipped_fingerprint() -> str:
    """The corpus a results file without a corpus hash was made on (see CORPUS_BEFORE_0_4_2)."""
    return CORPUS_BEFORE_0_4_2


def merge(paths: list) -> dict:
    """Combine results files made on several machines (a class: one arm or seed each). They must
    share the ablation settings. A run (arm, seed) found twice is kept once, the first, with a
    warning when the copies disagree (another CPU may round bf16 differently)."""
    merged = None
    for p in paths:
        r = read_json(p, "ablation results file")
        if not isinstance(r, dict) or r.get("format") != FORMAT or not {"config", "runs"} <= set(r):
            got = r.get("format") if isinstance(r, dict) else type(r).__name__
            raise ValueError(f"{p} is not a mini_most.ablate results file (format {got!r}); "
                             "--merge takes the results.json files that ablate writes")
        if merged is None:
            merged = {**r, "runs": [], "sources": []}
        elif (r.get("corpus_sha256") or shipped_fingerprint()) != (merged.get("corpus_sha256") or shipped_fingerprint()):
            raise ValueError(f"{p} was made on another corpus than {merged['sources'][0]}: runs on different data "
                             "are not comparable")
        elif r["config"] != merged["config"]:
            diff = sorted(k for k in {*r["config"], *merged["config"]} if r["config"].get(k) != merged["config"].get(k))
            raise ValueError(f"{p} was made with other settings ({diff} differ): runs with different settings "
                             "are not comparable; rerun them with the same options")
        merged["sources"].append(str(p))
        for run_ in r["runs"]:
            twin = next((x for x in merged["runs"] if (x["arm"], x["seed"]) == (run_["arm"], run_["seed"])), None)
            if twin is None:
                merged["runs"].append(run_)
            elif abs(twin["asr_cer"] - run_["asr_cer"]) > 0.02 or abs(twin["val_audio_loss"] - run_["val_audio_loss"]) > 0.02:
                warnings.warn(f"{p}: arm {run_['arm']} seed {run_['seed']} is already there with other numbers "
                              f"(CER {twin['asr_cer']:.3f} vs {run_['asr_cer']:.3f}); keeping the first", stacklevel=2)
    if merged is None:
        raise ValueError("--merge needs at least one results file")
    merged["runs"].sort(key=lambda x: (ARMS.index(x["arm"]), x["seed"]))
    return merged


# ----------------------------------------------------------------------------------------------
# pictures

COLORS = {"modality": "tab:blue", "vanilla": "tab:orange", "dense": "tab:green"}


def plot_curves(results: dict, ax_text, ax_audio):
    """Validation loss per modality against step: each arm's mean over seeds, with a min-max band."""
    for arm in ARMS:
        runs = [r for r in results["runs"] if r["arm"] == arm]
        if not runs:
            continue
        steps = [e["step"] for e in runs[0]["evals"]]
        for ax, key in ((ax_text, "text_loss"), (ax_audio, "audio_loss")):
            ys = torch.tensor([[e[key] for e in r["evals"]] for r in runs])
            ax.plot(steps, ys.mean(0), color=COLORS[arm], label=f"{arm} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
            if len(runs) > 1:
                ax.fill_between(steps, ys.min(0).values, ys.max(0).values, color=COLORS[arm], alpha=0.2)
    for ax, what in ((ax_text, "text"), (ax_audio, "audio")):
        # log scale: step 0 (the text base, which never heard speech) sits far above the rest
        ax.set(xlabel="stage-1 step", ylabel="validation loss (log scale)", yscale="log", title=f"{what} targets")
        ax.legend()


def plot_metric(results: dict, key: str, ax, label: str):
    """One metric per arm: a bar at the mean, a dot per seed, seeds joined across arms (paired)."""
    arms = [a for a in ARMS if any(r["arm"] == a for r in results["runs"])]
    for i, a in enumerate(arms):
        xs = [r[key] for r in results["runs"] if r["arm"] == a and _has(r, key)]
        if xs:
            ax.bar(i, statistics.fmean(xs), color=COLORS[a], alpha=0.5)
    for seed in sorted({r["seed"] for r in results["runs"]}):
        pts = [(i, r[key]) for i, a in enumerate(arms) for r in results["runs"]
               if r["arm"] == a and r["seed"] == seed and _has(r, key)]
        if pts:
            ax.plot(*zip(*pts), "k.-", alpha=0.5, lw=0.8)
    ys = [r[key] for r in results["runs"] if _has(r, key)]
    if ys and min(ys) > 0 and max(ys) - min(ys) < 0.25 * max(ys):   # close values: zoom in, say so
        pad = max(max(ys) - min(ys), 1e-3 * max(ys))
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set_ylabel("(axis does not start at 0)")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_title(label)


def plot_load(results: dict, arm: str, axes):
    """Expert load per layer for text tokens and for audio tokens, averaged over seeds."""
    runs = [r for r in results["runs"] if r["arm"] == arm and r.get("routing")]
    load = torch.tensor([r["routing"]["load"] for r in runs]).mean(0)          # (L, 2, E)
    n_text = results["model_config"]["n_text_experts"]
    for m, ax in enumerate(axes):
        im = ax.imshow(load[:, m], aspect="auto", cmap="viridis", vmin=0)
        ax.set_yticks(range(load.shape[0]), [str(i + 1) for i in range(load.shape[0])])
        ax.axvline(n_text - 0.5, color="w", lw=1, ls="--")
        ax.set(xlabel=f"routed expert (0-{n_text - 1} text, {n_text}+ audio)", ylabel="MoE layer",
               title=f"{arm}: {'text' if m == 0 else 'audio'} tokens")
        ax.figure.colorbar(im, ax=ax, fraction=0.04)


def save_plots(results: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    plot_curves(results, axes[0], axes[1])
    plot_metric(results, "asr_cer", axes[2], "ASR CER on test sentences (lower is better)")
    plot_metric(results, "text_lm_after", axes[3], "text-LM loss after stage 1 (lower is better)")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    paths.append(out / "ablation.png")
    plt.close(fig)
    moe = [a for a in ("vanilla", "modality") if any(r["arm"] == a and r.get("routing") for r in results["runs"])]
    if moe:
        fig, axes = plt.subplots(len(moe), 2, figsize=(12, 3 * len(moe)), squeeze=False)
        for row, arm in zip(axes, moe):
            plot_load(results, arm, row)
        fig.tight_layout()
        fig.savefig(out / "expert_load.png", dpi=110)
        paths.append(out / "expert_load.png")
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------
# the command

def ablate(arms, seeds, cfg: AblationConfig, out: Path, corpus: Corpus | None = None, retrain_bases: bool = False,
           judge: bool = True, progress: bool = True, log=print, device: str = "cpu") -> dict:
    """Run every (arm, seed), writing out/results.json after each run. Runs already in that file
    (same settings) are kept and not run again, so an interrupted grid continues where it stopped.
    `device` trains and evaluates there (a GPU's numbers differ from a CPU's in the last bf16 bits:
    keep one device per grid). Returns the results."""
    arms = list(dict.fromkeys(arms))
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ValueError(f"arms {arms}: choose among {ARMS}")
    if cfg.preset not in ("toy", "small"):
        raise ValueError(f"preset {cfg.preset!r}: the ablation trains toy or small on a CPU (its byte tokenizer "
                         "and corpus are sized for them); full needs GPUs and DeepSeek-V2-Lite's weights and tokenizer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    done = []
    corpus = corpus or load_corpus()
    fingerprint = corpus.fingerprint()
    if path.exists():
        old = read_json(path, "ablation results file")
        if old.get("format") != FORMAT or old.get("config") != asdict(cfg):
            raise ValueError(f"{path} holds results made with other settings: choose another --out, or delete it")
        if (old.get("corpus_sha256") or shipped_fingerprint()) != fingerprint:   # files before 0.4.1: 0.4.1's shipped corpus
            raise ValueError(f"{path} holds results made on another corpus: choose another --out, or delete it")
        done = old["runs"]
    tok = Tokenizer(model_config(cfg, corpus), codebooks=corpus.model_codebooks)
    bases = {kind: base_folder(kind, cfg, corpus, out / "bases", retrain_bases, progress, device)
             for kind in sorted({BASE_OF[a] for a in arms})}
    evaluator = Evaluator(corpus, tok, cfg, judge=judge)
    results = {"format": FORMAT, "config": asdict(cfg),
               "model_config": asdict(model_config(cfg, corpus)), "codec": corpus.codec, "corpus_sha256": fingerprint,
               "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
                           "cpu": platform.processor() or platform.machine()},
               "bases": {k: read_json(v / "base.json", "base description") for k, v in bases.items()},
               "reference": evaluator.reference(), "runs": done}
    for seed in seeds:
        for arm in arms:
            if any((x["arm"], x["seed"]) == (arm, seed) for x in done):
                log(f"{arm:9s} seed {seed}: already in {path}, kept")
                continue
            r = run(arm, seed, cfg, corpus, bases[BASE_OF[arm]], evaluator, progress, device)
            results["runs"].append(r)
            write_text_atomic(path, json.dumps(results))      # a kill mid-write keeps the previous file
            log(f"{arm:9s} seed {seed}: ASR CER {r['asr_cer']:.3f}, val loss text {r['val_text_loss']:.3f} "
                f"audio {r['val_audio_loss']:.3f}, text-LM {r['text_lm_before']:.3f} -> {r['text_lm_after']:.3f}"
                + (f", TTS judge WER {r['tts_judge_wer']:.3f}" if "tts_judge_wer" in r else "")
                + f"  ({r['train_seconds']:.0f} s training, {r['eval_seconds']:.0f} s evaluation)")
    return results


def report(results: dict, out: Path) -> str:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(summarize(results))
    write_text_atomic(out / "table.md", table + "\n")
    save_plots(results, out)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m mini_most.ablate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="small (default) or toy")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds (default 3)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="stage-1 steps per run")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the budget is for 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="the toy preset, a few steps: seconds, for tests")
    ap.add_argument("--retrain-bases", action="store_true", help="redo stage 0 even where a shipped base matches")
    ap.add_argument("--no-judge", action="store_true", help="skip the TTS judge (PocketSphinx)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="combine results.json files; runs nothing")
    ap.add_argument("--out", type=Path, default=Path("results/ablation"))
    ap.add_argument("--corpus", type=Path, default=None,
                    help="a corpus made by `python -m mini_most.corpus encode` (default: $MINI_MOST_CORPUS, else the shipped one)")
    ap.add_argument("--device", default="cpu", help="where to train and evaluate: cpu (default, as the committed grid) or cuda")
    args = ap.parse_args(argv)
    if args.merge:
        target = args.out / "results.json"
        if target.exists() and target.resolve() not in {p.resolve() for p in args.merge}:
            ap.error(f"{target} exists and is not among the --merge inputs: add it to them to keep its runs, "
                     "or choose another --out")
        results = merge(args.merge)                     # the target's own runs, if it is an input, are kept
        write_text_atomic(target, json.dumps(results))
    else:
        if args.seeds < 1:
            ap.error("--seeds must be >= 1")
        torch.set_num_threads(args.threads)
        overrides = dict(SMOKE) if args.smoke else {}
        if args.preset:
            overrides["preset"] = args.preset
        if args.steps is not None:
            overrides["steps"] = args.steps
        cfg = AblationConfig(**overrides)
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        try:
            corpus = load_corpus(args.corpus)
        except (FileNotFoundError, ValueError) as e:
            ap.error(str(e))
        try:
            device = device_here(args.device)
        except ValueError as e:
            ap.error(f"--device {args.device}: {e.__cause__}")       # torch's reason
        results = ablate(args.arms, seeds, cfg, args.out, corpus, judge=not args.no_judge, progress=sys.stderr.isatty(),
                         device=device)
    print(report(results, args.out))
    print(f"wrote {args.out / 'results.json'}, table.md and plots")


if __name__ == "__main__":
    main()
