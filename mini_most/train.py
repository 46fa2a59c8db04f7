"""One training loop for notebooks and the command line.

    from mini_most.train import TrainConfig, Trainer
    trainer = Trainer(MoST(MoSTConfig.preset("small")), load_corpus(), TrainConfig(steps=600))
    trainer.train()                       # AdamW, warmup + cosine, clipping, loss + aux_loss, task mix
    trainer.save("runs/small.safetensors")
    trainer = Trainer.load("runs/small.safetensors", load_corpus())   # resumes exactly where it stopped

    python -m mini_most.train --preset toy --steps 200 --out runs/toy.safetensors
    python -m mini_most.train --resume runs/toy.safetensors --steps 400

Batches come from `task_stream` (MoST's stage-1 mix by default) through `batches`, both seeded, so
a run is a function of its seed (and of the weights it starts from: seed them with set_seed before
building the model). Dropout draws from the trainer's own RNG. A checkpoint holds the weights
(fp32), AdamW's state, that RNG and the step; on resume the data stream is rebuilt from the seed and
advanced to that step, so an interrupted run gives the same losses as an uninterrupted one (tested on
CPU; on CUDA the MoE's index_add_ uses atomic adds, so runs agree closely but not bit for bit).
Weights alone, in half precision for shipping, go through save_weights / load_weights.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .corpus import Corpus, load_corpus
from .evaluate import loss_by_modality, split_losses  # noqa: F401  (split_losses: 0.3.0 imported it from here)
from .files import check_finite, load_tensors, save_tensors
from .model import MoST, MoSTConfig, is_integer
from .tokens import IGNORE, STAGE1_MIX, Tokenizer, batches, config_for, task_stream
from .utils import PRECISIONS, autocast, bf16_works, device_here, set_seed, uses_bf16  # noqa: F401  (uses_bf16: 0.3.0's home)


@dataclass
class TrainConfig:
    steps: int = 1000                   # optimizer steps in all (train() may stop earlier)
    batch_size: int = 32                # sequences per step
    lr: float = 2e-3                    # peak learning rate
    min_lr_ratio: float = 0.1           # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 50              # linear warmup from lr / warmup_steps
    weight_decay: float = 0.1           # on matrices and embeddings, not on norms
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0              # max global gradient norm; 0 turns clipping off
    mix: dict = field(default_factory=lambda: dict(STAGE1_MIX))   # task weights (MoST's stage 1)
    codebooks: int | None = None        # codec codebooks per audio frame (tokens.Tokenizer); None: the corpus's choice
    eval_every: int = 200               # validation every N steps (0: only when asked)
    eval_batches: int = 4               # fixed validation batches
    checkpoint_every: int = 0           # with train(checkpoint=path): save every N steps (0: at the end only)
    seed: int = 0                       # data order and dropout (seed the weights: set_seed before MoST(...))
    precision: str = "auto"             # "bf16" autocast, "fp32", or "auto": bf16 where the CPU/GPU runs it

    def __post_init__(self):
        def need(ok, msg):
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")
        for f in ("steps", "batch_size", "warmup_steps", "eval_batches", "eval_every", "checkpoint_every", "codebooks", "seed"):
            v = getattr(self, f)
            if f == "codebooks" and v is None:          # resolved by the Trainer, from its corpus
                continue
            need(is_integer(v), f"{f} must be an integer, got {v!r}")
            setattr(self, f, int(v))                # a numpy or torch integer becomes a plain int
        for f in ("steps", "batch_size", "warmup_steps", "eval_batches", "codebooks"):
            need(getattr(self, f) is None or getattr(self, f) >= 1, f"{f} must be >= 1, got {getattr(self, f)}")
        for f in ("eval_every", "checkpoint_every"):
            need(getattr(self, f) >= 0, f"{f} must be >= 0 (0: off), got {getattr(self, f)}")
        for f in ("lr", "min_lr_ratio", "weight_decay", "grad_clip"):
            v = getattr(self, f)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                 f"{f} must be a finite number, got {v!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")
        self.betas = tuple(self.betas)
        need(len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), got {self.betas}")
        need(isinstance(self.mix, dict), f"mix must be a dict of task weights, e.g. {{'asr': 0.5, 'tts': 0.5}}, got {self.mix!r}")
        need(self.precision in PRECISIONS, f"precision={self.precision!r}: choose one of {PRECISIONS}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to the floor."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainer:
    def __init__(self, model: MoST, corpus: Corpus, config: TrainConfig | None = None, tokenizer: Tokenizer | None = None):
        self.model, self.corpus = model, corpus
        self.config = config or TrainConfig()
        if self.config.codebooks is None:     # the tokenizer's, else the corpus's codec's choice (EnCodec: all)
            self.config = replace(self.config, codebooks=tokenizer.codebooks if tokenizer else corpus.model_codebooks)
        self.tok = tokenizer or Tokenizer(model.config, codebooks=self.config.codebooks)
        self.device = next(model.parameters()).device
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]             # norms
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.config.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=self.config.lr, betas=self.config.betas)
        self.step = 0
        self.history: list[dict] = []       # one row per step: loss, aux, lr, grad norm, tokens, seconds
        self.evals: list[dict] = []         # one row per validation
        self._stream = None
        self._val = None                    # the fixed validation batches, built on first use
        # the trainer's own dropout stream, swapped in for its steps only, so two trainers (or a notebook's
        # other cells) never draw from each other's randomness; saved and restored with checkpoints
        self._rng = torch.Generator().manual_seed(self.config.seed).get_state()
        self._cuda_rng = None
        if self.config.precision == "bf16" and not bf16_works(self.device.type):
            raise ValueError(f"bf16 autocast does not run on this {self.device.type}: use precision='fp32' or 'auto'")

    # --- data ---
    def _batches(self, split: str, seed: int):
        return batches(task_stream(self.corpus, self.tok, self.config.mix, split, seed), self.config.batch_size,
                       self.tok.pad, seed=seed, max_len=self.model.config.max_position_embeddings)

    def _next_batch(self):
        if self._stream is None:  # (re)build the seeded stream and advance it to this step: exact resume
            self._stream = self._batches("train", self.config.seed)
            for _ in range(self.step):
                next(self._stream)
        return next(self._stream).to(self.device)

    @property
    def autocast(self) -> bool:
        """Whether this trainer's forward passes run under bf16 autocast."""
        return uses_bf16(self.config.precision, self.device.type)

    def validation_batches(self) -> list:
        """The fixed validation batches (same task mix, the validation split), built once."""
        if self._val is None:
            stream = self._batches("validation", seed=10_000 + self.config.seed)
            self._val = [next(stream) for _ in range(self.config.eval_batches)]
        return self._val

    def _forward(self, b):
        with autocast(self.device.type, self.config.precision):
            return self.model(b.tokens, b.modality, targets=b.targets, attention_mask=b.attention_mask)

    # --- training ---
    def train(self, steps: int | None = None, progress: bool = True, checkpoint=None) -> list[dict]:
        """Run `steps` MORE optimizer steps (default: until config.steps in all). With `checkpoint`
        (a path), save there every config.checkpoint_every steps and at the end."""
        from tqdm import tqdm
        end = self.config.steps if steps is None else self.step + steps
        if steps is not None and steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        self.model.train()
        bar = tqdm(total=end - self.step, desc="training", disable=not progress)
        while self.step < end:
            t0 = time.perf_counter()
            lr = lr_at(self.step, self.config)
            for g in self.opt.param_groups:
                g["lr"] = lr
            b = self._next_batch()
            out, logged = self._step_with_own_rng(b)
            # the logged loss is the same on every rank under FSDP, so every rank stops here together;
            # a NaN balance loss alone shows up in the gradient norm below
            if not math.isfinite(logged):
                self.opt.zero_grad(set_to_none=True)     # nothing is applied; the weights stay as they were
                raise FloatingPointError(f"step {self.step}: the loss is {logged}; "
                                         f"resume from the last checkpoint with a lower lr (now {lr:.2e}) or "
                                         "precision='fp32', and check the weights and data for NaN")
            clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm   # a DTensor under FSDP
            if not torch.isfinite(norm):
                self.opt.zero_grad(set_to_none=True)     # the batch is consumed; nothing was applied
                raise FloatingPointError(f"step {self.step}: gradient norm is {norm.item()}; lower lr "
                                         f"(now {lr:.2e}) or use precision='fp32'")
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.history.append({"step": self.step, "loss": logged, "aux_loss": out.aux_loss.item(), "lr": lr,
                                 "grad_norm": norm.item(), "tokens": int(b.attention_mask.sum()),
                                 "targets": int((b.targets != IGNORE).sum()),
                                 "seconds": time.perf_counter() - t0})
            bar.update(1)
            bar.set_postfix(loss=f"{logged:.3f}")
            if self.config.eval_every and self.step % self.config.eval_every == 0:
                self.evaluate()
            if checkpoint and self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save(checkpoint)
        bar.close()
        if checkpoint:
            self.save(checkpoint)
        return self.history

    def _step_with_own_rng(self, b):
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self._rng)
            if cuda:
                if self._cuda_rng is None:
                    with torch.cuda.device(self.device):
                        torch.cuda.manual_seed(self.config.seed)
                else:
                    torch.cuda.set_rng_state(self._cuda_rng, self.device)
            out = self._forward(b)
            self._objective(out, b).backward()
            self._rng = torch.get_rng_state()
            self._cuda_rng = torch.cuda.get_rng_state(self.device) if cuda else None
        return out, self._logged_loss(out, b)

    # the two places a data-parallel trainer differs (mini_most.distributed overrides them)
    def _objective(self, out, b):
        return out.loss + out.aux_loss

    def _logged_loss(self, out, b) -> float:
        return out.loss.item()

    def evaluate(self) -> dict:
        """Validation loss on the fixed validation batches, overall and split by target modality
        (text ids, audio ids); appended to self.evals."""
        stats = loss_by_modality(self.model, self.validation_batches(), self.config.precision)
        row = {"step": self.step, "loss": stats["loss"], "text_loss": stats["text_loss"], "audio_loss": stats["audio_loss"]}
        self.evals.append(row)
        return row

    # --- checkpoints ---
    def save(self, path) -> Path:
        """Weights (fp32), AdamW state, the dropout RNG and the step, in one safetensors file."""
        path = Path(path)
        tensors = {f"model.{k}": v.detach().float().contiguous().cpu() for k, v in self.model.state_dict().items()}
        names = {id(p): n for n, p in self.model.named_parameters()}
        for group in self.opt.param_groups:
            for p in group["params"]:
                state = self.opt.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        tensors[f"optim.{names[id(p)]}.{key}"] = state[key].contiguous().cpu()
        optim_step = {names[id(p)]: float(s["step"]) for p, s in self.opt.state.items() if "step" in s}
        tensors["rng.torch"] = self._rng
        if self._cuda_rng is not None:
            tensors["rng.cuda"] = self._cuda_rng.cpu()
        meta = {"model_config": json.dumps(asdict(self.model.config)), "train_config": json.dumps(asdict(self.config)),
                "step": str(self.step), "optim_step": json.dumps(optim_step),
                "history": json.dumps(self.history), "evals": json.dumps(self.evals), "format": "mini_most.train/1",
                "codec": json.dumps(self.corpus.codec)}      # what made the codes it trained on: checked on resume
        return save_tensors(tensors, path, meta)    # atomic: a crash mid-save keeps the previous checkpoint

    @classmethod
    def load(cls, path, corpus: Corpus, device=None, **overrides) -> Trainer:
        """Rebuild the model (on `device`), optimizer and RNG from a checkpoint. Overrides change
        TrainConfig fields: steps=... trains longer but stretches the cosine (the lr rises again from
        the floor); changing seed, mix or batch size changes the data, so it is no longer a resume."""
        path = Path(path)
        tensors, meta = load_tensors(path, "training checkpoint")
        if meta.get("format") != "mini_most.train/1":
            raise ValueError(f"{path} is not a mini_most.train checkpoint (no 'format' in its metadata); "
                             "weights-only files load with load_weights()")
        missing = [k for k in ("model_config", "train_config", "step", "optim_step", "history", "evals") if k not in meta]
        missing += [k for k in ("rng.torch",) if k not in tensors]
        if missing:
            raise ValueError(f"{path}: the checkpoint lacks {missing}; it was not written by Trainer.save")
        if "codec" in meta and json.loads(meta["codec"]) != corpus.codec:
            raise ValueError(f"{path} was trained on codes of the codec {json.loads(meta['codec'])}, but this corpus's codes "
                             f"come from {corpus.codec}: resume with the corpus it was trained on (--corpus)")
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        check_finite(weights, path)
        model = MoST(MoSTConfig(**json.loads(meta["model_config"])))
        result = model.load_state_dict(weights, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{path}: the weights do not fit the model its config describes: missing "
                             f"{result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}")
        if device is not None:
            model.to(device)
        saved = json.loads(meta["train_config"])
        if "steps" in overrides and overrides["steps"] < int(meta["step"]):
            raise ValueError(f"steps={overrides['steps']} is below the checkpoint's step {meta['step']}: "
                             "there would be nothing to train; give steps above it, or evaluate the loaded model")
        changed = sorted(k for k in overrides if k in saved and overrides[k] != saved[k])
        if changed:
            warnings.warn(f"resuming with changed {changed}: "
                          + ("the cosine schedule is stretched; " if "steps" in changed else "")
                          + ("the data or its randomness changes, so this is not an exact resume; "
                             if set(changed) & {"seed", "mix", "batch_size", "codebooks"} else "")
                          + "a straight run with these settings would differ", stacklevel=2)
        trainer = cls(model, corpus, TrainConfig(**{**saved, **overrides}))
        optim_step = json.loads(meta["optim_step"])
        for n, p in model.named_parameters():
            if n in optim_step:
                trainer.opt.state[p] = {"step": torch.tensor(optim_step[n]),
                                        "exp_avg": tensors[f"optim.{n}.exp_avg"].to(p.device, p.dtype),
                                        "exp_avg_sq": tensors[f"optim.{n}.exp_avg_sq"].to(p.device, p.dtype)}
        trainer._rng = tensors["rng.torch"]
        trainer._cuda_rng = tensors.get("rng.cuda")
        trainer.step = int(meta["step"])
        trainer.history, trainer.evals = json.loads(meta["history"]), json.loads(meta["evals"])
        return trainer


def save_weights(model: MoST, path, dtype=torch.float16) -> Path:
    """Weights only, in half precision by default (small files to ship), with the model's config."""
    return save_tensors({k: v.to(dtype) for k, v in model.state_dict().items()}, path,
                        {"model_config": json.dumps(asdict(model.config)), "format": "mini_most.weights/1"})


def load_weights(path, **config_overrides) -> MoST:
    """A model from save_weights' file (fp32 in memory). Overrides change config fields that keep
    the parameter shapes, e.g. routing="vanilla" <-> "modality" or dropout."""
    tensors, meta = load_tensors(path, "weights file")
    if meta.get("format") != "mini_most.weights/1":
        raise ValueError(f"{path} is not a mini_most weights file; training checkpoints load with Trainer.load()")
    state = {k: v.float() for k, v in tensors.items()}
    check_finite(state, path)
    model = MoST(MoSTConfig(**{**json.loads(meta["model_config"]), **config_overrides}))
    model.load_state_dict(state)
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m mini_most.train", description="train a preset on a pre-tokenized corpus")
    ap.add_argument("--preset", default=None, help="toy (default), small or full")
    ap.add_argument("--routing", default=None, help="modality | vanilla | dense (default: the preset's)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--mix", type=_mix_argument, default=None, help='task weights, e.g. \'{"asr": 0.5, "tts": 0.5}\'')
    ap.add_argument("--precision", choices=PRECISIONS, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=None,
                    help="save the checkpoint every N steps as well as at the end (default 100; 0: only at the end)")
    ap.add_argument("--out", type=Path, default=None, help="the checkpoint (default runs/<preset>.safetensors)")
    ap.add_argument("--resume", type=Path, default=None, help="continue from a checkpoint (and keep saving there)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="a corpus made by `python -m mini_most.corpus encode` (default: $MINI_MOST_CORPUS, else the shipped "
                         "one); the model's audio range and maximum length are sized to its codec")
    ap.add_argument("--codebooks", type=int, default=None, help="codebooks per audio frame (default: the codec's choice)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when there is one, else cpu)")
    args = ap.parse_args(argv)
    if args.resume and (args.preset or args.routing):
        ap.error("--preset and --routing come from the checkpoint when resuming; drop them")
    given = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                               "mix": args.mix, "precision": args.precision,
                               "checkpoint_every": args.checkpoint_every}.items() if v is not None}
    if args.resume and args.codebooks is not None:
        ap.error("--codebooks comes from the checkpoint when resuming; drop it")
    try:
        device = device_here(args.device)
    except ValueError as e:
        ap.error(f"--device {args.device}: {e.__cause__}")           # torch's reason
    try:
        corpus = load_corpus(args.corpus)
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    if args.resume:
        trainer = Trainer.load(args.resume, corpus, device=device, **given)
    else:
        set_seed(given.get("seed", 0))
        overrides = {"routing": args.routing} if args.routing else {}
        preset = args.preset or "toy"
        given.setdefault("checkpoint_every", 100)   # a killed run keeps its last hundred steps
        codebooks = corpus.model_codebooks if args.codebooks is None else args.codebooks
        try:
            config = config_for(corpus, preset, codebooks, **overrides)
        except ValueError as e:
            ap.error(str(e))
        trainer = Trainer(MoST(config).to(device), corpus, TrainConfig(codebooks=codebooks, **given))
    out = args.out or args.resume or Path("runs") / f"{preset}.safetensors"
    trainer.train(checkpoint=out)
    if not trainer.evals or trainer.evals[-1]["step"] != trainer.step:
        trainer.evaluate()
    print(json.dumps(trainer.evals[-1]))
    print(f"saved {out} (step {trainer.step}); continue with --resume {out} --steps N")


def _mix_argument(text: str) -> dict:
    try:
        mix = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--mix must be a JSON object of task weights, e.g. '{{\"asr\": 0.5, "
                                         f"\"tts\": 0.5}}'; got {text!r} ({e})") from e
    if not isinstance(mix, dict):
        raise argparse.ArgumentTypeError(f"--mix must be a JSON object of task weights, got {type(mix).__name__}: {text!r}")
    return mix


if __name__ == "__main__":
    main()
