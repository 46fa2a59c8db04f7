"""Data-parallel training with FSDP2 under torchrun: the same loop as mini_most.train, sharded.

    torchrun --standalone --nproc-per-node 8 -m mini_most.distributed --preset full --steps 1000 \\
        --batch-size 64 --precision bf16 --checkpointing --out runs/full          # one node, 8 GPUs
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m mini_most.distributed --preset full ...                                 # several nodes

Every block is wrapped by `fully_shard` (parameters, gradients and AdamW state are split over the
ranks and gathered one block at a time), then the whole model. Every rank reads the same seeded
global batch and keeps its own slice of rows, and each rank's loss is scaled so the averaged
gradient is the gradient of the global token mean: with the same global batch, the losses equal a
single process's (tested on CPU with 2 gloo processes, in fp32). `--precision bf16` computes in bf16
with fp32 gradient reduction (FSDP's MixedPrecisionPolicy; the sharded master weights stay fp32);
`--checkpointing` recomputes each block's activations in the backward pass. Checkpoints are
sharded (torch.distributed.checkpoint: one file per rank, plus trainer.json), and load on any
in a single process without torchrun (`load_sharded`); resuming under torchrun is not implemented.
For `full`, each rank builds the model on the meta device, shards it, and only then allocates and
initialises its own shards (`--meta-init`, the default for full), so no rank ever holds the whole
model; such an initialisation differs from a single process's with the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.utils.checkpoint

from .corpus import Corpus, load_corpus
from .files import read_json, write_text_atomic
from .model import MoST, MoSTConfig
from .tokens import IGNORE, Batch, config_for
from .train import TrainConfig, Trainer
from .utils import set_seed


def setup() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU): rank, world, device."""
    if "RANK" not in os.environ:
        raise RuntimeError("mini_most.distributed runs under torchrun: torchrun --standalone --nproc-per-node N "
                           "-m mini_most.distributed ... (for one process, use python -m mini_most.train)")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def checkpoint_blocks(model: MoST) -> None:
    """Activation checkpointing: each block keeps only its input and recomputes the rest in backward.
    (Patched on the instance, so parameter names, and with them checkpoints, are unchanged.)"""
    for block in model.layers:
        inner = block.forward
        block.forward = lambda *a, _f=inner, **k: torch.utils.checkpoint.checkpoint(_f, *a, use_reentrant=False, **k)


def shard(model: MoST, precision: str) -> MoST:
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    if isinstance(model, FSDPModule):   # already sharded (e.g. built on meta and sharded before init)
        return model
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" else None
    kw = {"mp_policy": mp} if mp else {}
    for block in model.layers:
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


class FSDPTrainer(Trainer):
    """Trainer on a sharded model: each rank trains its slice of every global batch."""

    def __init__(self, model: MoST, corpus: Corpus, config: TrainConfig, precision: str = "fp32"):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if config.batch_size % self.world:
            raise ValueError(f"batch_size={config.batch_size} must divide by the {self.world} ranks")
        self.mixed = precision
        # FSDP's policy does the bf16 compute; the loop's own autocast stays off
        super().__init__(shard(model, precision), corpus, replace(config, precision="fp32"))
        self.train_config = replace(config, precision=precision)   # what a resume should use

    def _next_batch(self) -> Batch:
        b = super()._next_batch()                      # the same global batch on every rank ...
        per = b.tokens.shape[0] // self.world
        rows = slice(self.rank * per, (self.rank + 1) * per)   # ... of which this rank keeps its rows
        return Batch(b.tokens[rows], b.modality[rows], b.attention_mask[rows], b.targets[rows], b.examples[rows])

    def _objective(self, out, b):
        # FSDP averages gradients over ranks; scale so the average is the gradient of the global
        # token mean (ranks hold different numbers of target tokens)
        n_local = (b.targets != IGNORE).sum().float()
        n_global = n_local.clone()
        dist.all_reduce(n_global)
        self._n = (n_local, n_global)
        return out.loss * n_local * self.world / n_global + out.aux_loss

    def _logged_loss(self, out, b) -> float:
        n_local, n_global = self._n
        total = out.loss.detach().float() * n_local
        dist.all_reduce(total)
        return (total / n_global).item()

    def save(self, path) -> Path:
        """A sharded checkpoint: a folder with one file per rank (torch.distributed.checkpoint) and
        trainer.json (configs, step, history, the dropout RNG), written by rank 0."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        path = Path(path)
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
        if self.rank == 0:
            meta = {"model_config": asdict(self.model.config), "train_config": asdict(self.train_config),
                    "step": self.step, "history": self.history, "evals": self.evals,
                    "rng": self._rng.tolist(), "format": "mini_most.distributed/1", "world": self.world}
            write_text_atomic(path / "trainer.json", json.dumps(meta))
        dist.barrier()
        return path

    @classmethod
    def load(cls, path, corpus, device=None, **overrides):
        raise NotImplementedError("resuming a sharded run under torchrun is not implemented; load the checkpoint "
                                  "in one process with mini_most.distributed.load_sharded")


def load_sharded(path, corpus: Corpus, **overrides) -> Trainer:
    """A sharded checkpoint into a single-process Trainer (no torchrun needed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    path = Path(path)
    if not (path / "trainer.json").exists():
        raise FileNotFoundError(f"{path} is not a sharded mini_most checkpoint (no trainer.json)")
    meta = read_json(path / "trainer.json", "sharded checkpoint's trainer.json")
    model = MoST(MoSTConfig(**meta["model_config"]))
    trainer = Trainer(model, corpus, TrainConfig(**{**meta["train_config"], **overrides}))
    model_sd, optim_sd = get_state_dict(model, trainer.opt)          # also creates AdamW's state to load into
    state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
    set_state_dict(model, trainer.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    trainer.step, trainer.history, trainer.evals = meta["step"], meta["history"], meta["evals"]
    trainer._rng = torch.tensor(meta["rng"], dtype=torch.uint8)
    return trainer


def main(argv=None):
    ap = argparse.ArgumentParser(prog="torchrun ... -m mini_most.distributed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--routing", default=None)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32, help="the global batch, split over the ranks")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block")
    ap.add_argument("--meta-init", action=argparse.BooleanOptionalAction, default=None,
                    help="build on the meta device, shard, then initialise each rank's shards (default: on for full)")
    ap.add_argument("--out", type=Path, default=None, help="sharded checkpoint folder to write at the end")
    ap.add_argument("--history", type=Path, default=None, help="rank 0 writes the loss history here (JSON)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="a corpus made by `python -m mini_most.corpus encode` (default: $MINI_MOST_CORPUS, else the shipped one)")
    args = ap.parse_args(argv)
    try:
        corpus = load_corpus(args.corpus)
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    rank, world, device = setup()
    try:
        set_seed(args.seed)                                    # the same initial weights on every rank
        overrides = {"routing": args.routing} if args.routing else {}
        cfg = config_for(corpus, args.preset, **overrides)    # the audio range and length sized to its codec
        meta_init = args.preset == "full" if args.meta_init is None else args.meta_init
        if meta_init:                                          # no rank ever holds the whole model
            with torch.device("meta"):
                model = MoST(cfg)
        else:
            model = MoST(cfg).to(device)
        if args.checkpointing:
            checkpoint_blocks(model)
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                             seed=args.seed, eval_every=0, precision=args.precision, codebooks=corpus.model_codebooks)
        if meta_init:
            shard(model, args.precision)
            model.to_empty(device=device)
            model.init_weights()
        trainer = FSDPTrainer(model, corpus, config, precision=args.precision)
        trainer.train(progress=rank == 0)
        if args.out:
            trainer.save(args.out)
        if rank == 0 and args.history:
            args.history.write_text(json.dumps(trainer.history))
        dist.barrier()                                         # without it, ranks abort at exit
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
