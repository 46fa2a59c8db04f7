"""Prove a GPU machine in one command: mini-MoST's GPU paths, checked and timed, the evidence in two files.

A GPU is lent only sometimes, for minutes, on a bare machine: torch, transformers, safetensors, numpy,
tqdm and matplotlib, but no audio packages, no network and no `make setup`. This script runs there as
it is. Each part runs in its own process under its own time limit, so a crash, a hang or a slow part
costs only itself:

1. device (20 s): the GPU, torch and CUDA versions, free memory.
2. dispatch (40 s): the sorted MoE dispatch against the reference dispatch, outputs and gradients, at
   full width on 4,096 tokens: bf16 at MoST's expert width (torch._grouped_mm), fp32 and a width that
   is not a multiple of 8 (the loop fallback on CUDA), and dispatch="loop"; the path each one took.
3. full (75 s): `full` (15.7B parameters) built in bf16 from the meta device with MoST's routing,
   forward + backward on 4,096 mixed text and audio ids with activation checkpointing; the loss at
   init, the routing mask, finite gradients, peak memory beside memory_estimate's weights + gradients.
4. moe_layer (95 s): one MoE layer at full width, 512 and 16,384 tokens, against the dense MLP of
   equal active width and transformers' DeepseekV2Moe, timed by benchmarks/moe_layer.py: ms and
   TFLOP/s on active parameters. The goal: the sorted dispatch at >= 50% of dense's TFLOP/s at 16k.
5. train (55 s): 300 steps of the small preset's stage-1 training (the Trainer, bf16): steps/s and
   tokens/s beside the committed CPU figure (benchmarks/train_step_cpu.json).

    PYTHONPATH=. python3 tools/gpu_check.py --out benchmarks/gpu        # make gpu-check
    PYTHONPATH=. python3 tools/gpu_check.py --out /tmp/gpu --only dispatch full
    python tools/gpu_check.py --toy --out /tmp/toy    # every part at toy size on the CPU: ~20 s on 2 cores

The limits add up to 285 s, so the whole stays under 5 minutes. It writes gpu_check_<GPU>.json (every
number, each check passed or failed) and gpu_check_<GPU>.txt (a short table) into --out, then exits 1
if a check failed or a part crashed or ran out of time, else 0. Goals (speed) are reported, not
enforced. Without a GPU (and without --toy) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mini_most import MoST, MoSTConfig, set_seed  # noqa: E402
from mini_most.corpus import SHIPPED_CORPUS, load_corpus  # noqa: E402
from mini_most.distributed import checkpoint_blocks  # noqa: E402
from mini_most.memory import GiB, memory_estimate  # noqa: E402
from mini_most.model import MoE, use_grouped_mm  # noqa: E402
from mini_most.train import TrainConfig, Trainer  # noqa: E402
from mini_most.utils import bf16_works  # noqa: E402


def load_benchmark(name: str):
    """A script from benchmarks/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


moe_layer = load_benchmark("moe_layer")

# what the parts run: MoST's sizes on the GPU; with --toy the same code at toy size on the CPU
SIZES = {
    "gpu": {"device": "cuda", "preset": "full", "tokens": 4096, "moe_sizes": ["full", "full16k"],
            "train_preset": "small", "train_steps": 300},
    "toy": {"device": "cpu", "preset": "toy", "tokens": 512, "moe_sizes": ["toy"],
            "train_preset": "toy", "train_steps": 20},
}
LIMITS = {"device": 20, "dispatch": 40, "full": 75, "moe_layer": 95, "train": 55}   # seconds per part
# relative error (norm of the difference / norm of the reference) allowed between two dispatches
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def check(name: str, passed: bool, detail: str, **numbers) -> dict:
    """One asserted property, recorded with its numbers (not raised, so the part's other checks still run)."""
    return {"name": name, "passed": bool(passed), "detail": detail, **numbers}


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# the parts: each returns a summary line, its checks and its numbers


def part_device(size: dict) -> dict:
    """The machine: what the other parts' numbers were measured on."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": package_version("transformers")}
    checks = [check("bf16 autocast runs a matmul", bf16_works(size["device"]), "the other parts compute in bf16")]
    if size["device"] == "cuda":
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        need = memory_estimate(MoSTConfig.preset(size["preset"]), context=size["tokens"])
        info |= {"name": props.name, "gpus": torch.cuda.device_count(), "capability": f"{props.major}.{props.minor}",
                 "free_gib": free / GiB, "total_gib": total / GiB, "cudnn": torch.backends.cudnn.version()}
        checks.append(check("free memory holds full's bf16 weights + gradients", free > need.weights + need.grads,
                            f"{free / GiB:.1f} GiB free, {(need.weights + need.grads) / GiB:.1f} GiB needed before activations",
                            free_gib=free / GiB, need_gib=(need.weights + need.grads) / GiB))
        where = f"{props.name} (sm {props.major}.{props.minor}), {free / GiB:.1f} of {total / GiB:.1f} GiB free"
    else:
        info["name"] = f"CPU ({platform.machine()}, torch threads: {torch.get_num_threads()})"
        where = info["name"]
    return {"summary": f"{where}; torch {torch.__version__}, CUDA {torch.version.cuda}, Python {info['python']}",
            "checks": checks, **info}


# name, dispatch, dtype, width added to MoST's expert width, the path expected on CUDA, and on the CPU.
# torch._grouped_mm needs 16-byte aligned rows: on CUDA it takes bf16 only, so fp32 loops there
DISPATCH_CASES = [
    ("bf16, MoST's width", "sorted", torch.bfloat16, 0, "grouped_mm", "grouped_mm"),
    ("fp32, MoST's width", "sorted", torch.float32, 0, "loop", "grouped_mm"),
    ("bf16, width + 4 (not a multiple of 8)", "sorted", torch.bfloat16, 4, "loop", "loop"),
    ("bf16, dispatch='loop'", "loop", torch.bfloat16, 0, "loop", "loop"),
]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def compare_dispatch(cfg: MoSTConfig, tokens: int, device: str, dtype: torch.dtype) -> dict:
    """cfg's dispatch against the reference dispatch with the same weights, on mixed text and audio
    tokens with some padding: relative errors of the output, of the input's gradient and of the worst
    parameter gradient, and the path the dispatch took."""
    set_seed(0)
    with torch.device(device):
        ref = MoE(replace(cfg, dispatch="reference")).to(dtype)
        moe = MoE(cfg).to(dtype)
        moe.load_state_dict(ref.state_dict())
        x = torch.randn(1, tokens, cfg.hidden_size, dtype=dtype)
        modality = (torch.rand(1, tokens) < 0.5).long()
        valid = torch.ones(1, tokens, dtype=torch.bool)
        valid[:, -tokens // 16:] = False                        # padding: routed to no expert
        probe = torch.randn(1, tokens, cfg.hidden_size)        # a random loss direction, so every output counts
    grads = {}
    for name, layer in (("reference", ref), ("test", moe)):
        xi = x.clone().requires_grad_()
        out = layer(xi, modality, valid).out
        (out.float() * probe).sum().backward()
        grads[name] = {"output": out, "input": xi.grad, **{n: p.grad for n, p in layer.named_parameters()}}
    errors = {k: relative_error(grads["test"][k], grads["reference"][k]) for k in grads["reference"]}
    worst = max((n for n, _ in moe.named_parameters()), key=errors.get)
    grouped = cfg.dispatch == "sorted" and use_grouped_mm(x, cfg.moe_intermediate_size)
    return {"path": "grouped_mm" if grouped else "loop", "output": errors["output"], "input_grad": errors["input"],
            "param_grad": errors[worst], "worst_param": worst}


def part_dispatch(size: dict) -> dict:
    device, checks, cases = size["device"], [], []
    for name, dispatch, dtype, extra, on_cuda, on_cpu in DISPATCH_CASES:
        width = MoSTConfig.preset(size["preset"]).moe_intermediate_size + extra
        cfg = MoSTConfig.preset(size["preset"], dispatch=dispatch, moe_intermediate_size=width)
        expected, tol = on_cuda if device == "cuda" else on_cpu, TOLERANCE[dtype]
        case = {"case": name, "dtype": str(dtype), "width": width, "dispatch": dispatch, "expected": expected, "tolerance": tol}
        try:
            case |= compare_dispatch(cfg, size["tokens"], device, dtype)
        except RuntimeError as e:     # an op this build refuses: a failed case, not a lost part
            cases.append(case | {"error": str(e)})
            checks.append(check(name, False, f"raised {type(e).__name__}: {str(e)[:200]}"))
            continue
        cases.append(case)
        worst = max(case["output"], case["input_grad"], case["param_grad"])
        checks.append(check(name, case["path"] == expected and worst <= tol,
                            f"path {case['path']} (expected {expected}); relative errors: output {case['output']:.1e}, "
                            f"input grad {case['input_grad']:.1e}, grads {case['param_grad']:.1e} ({case['worst_param']}); "
                            f"tolerance {tol:.0e}", path=case["path"], worst_error=worst, tolerance=tol))
    passed = sum(c["passed"] for c in checks)
    return {"summary": f"{passed} of {len(checks)} cases match the reference on the expected path "
                       f"({size['tokens']} tokens, hidden {cfg.hidden_size})", "checks": checks, "cases": cases}


def part_full(size: dict) -> dict:
    device, T = size["device"], size["tokens"]
    cfg = MoSTConfig.preset(size["preset"])                     # routing="modality": MoST's
    t0 = time.perf_counter()                                    # a fresh process: the peak counter starts here
    with torch.device("meta"):
        model = MoST(cfg).to(torch.bfloat16)                    # shapes only: no memory, no fp32 copy anywhere
    model.to_empty(device=device)
    set_seed(0)
    model.init_weights()
    # each block keeps only its input and recomputes the rest in backward: full's 58.5 GiB of
    # weights and gradients then leave room for activations on an 80 GB GPU too
    checkpoint_blocks(model)
    sync(device)
    build_s = time.perf_counter() - t0
    # half text ids, half audio ids, so both expert groups work; the target is the next id
    text = torch.randint(0, cfg.audio_token_start, (1, T // 2))
    audio = torch.randint(cfg.audio_token_start, cfg.audio_token_end, (1, T - T // 2))
    tokens = torch.cat([text, audio], dim=1).to(device)
    targets = torch.cat([tokens[:, 1:], tokens.new_full((1, 1), -100)], dim=1)
    t0 = time.perf_counter()
    out = model(tokens, targets=targets)
    (out.loss + out.aux_loss).backward()
    sync(device)
    step_s = time.perf_counter() - t0

    loss, aux = out.loss.item(), out.aux_loss.item()
    # at init the logits have variance hidden x std^2 (0.82 in full), which lifts the loss by half that above ln(vocab)
    expected_loss = math.log(cfg.vocab_size) + cfg.hidden_size * cfg.initializer_range ** 2 / 2
    modality = cfg.token_modality(tokens)[..., None]            # (1, T, 1)
    ids = torch.stack([r.expert_ids for r in out.routing])     # (MoE layers, 1, T, k)
    in_group = torch.where(modality == 1, ids >= cfg.n_text_experts, ids < cfg.n_text_experts)
    grads = {n: p.grad for n, p in model.named_parameters()}
    missing = [n for n, g in grads.items() if g is None]
    norms = {n: torch.linalg.vector_norm(g, dtype=torch.float32) for n, g in grads.items() if g is not None}
    norms = dict(zip(norms, torch.stack(list(norms.values())).tolist()))     # one transfer, not one per tensor
    not_finite = [n for n, v in norms.items() if not math.isfinite(v)]
    params = model.num_params()
    est = memory_estimate(cfg, context=T)
    checks = [
        check("loss at init", math.isfinite(loss) and abs(loss - expected_loss) < 0.1,
              f"{loss:.3f}; expected ln(vocab) + hidden x std^2 / 2 = {expected_loss:.3f} +- 0.1", loss=loss, expected=expected_loss),
        check("balance loss finite", math.isfinite(aux), f"{aux:.2e}", aux_loss=aux),
        check("every token routed inside its modality's experts", bool(in_group.all()),
              f"{len(out.routing)} MoE layers, {int((~in_group).sum())} of {in_group.numel()} choices outside the group"),
        check("every parameter has a finite gradient", not missing and not not_finite,
              f"{len(grads)} tensors; missing {missing[:3]}, not finite {not_finite[:3]}; "
              f"gradient norm {math.sqrt(sum(v * v for v in norms.values())):.3g}"),
    ]
    numbers = {"params": params["total"], "active_params": params["active"], "tokens": T, "loss": loss, "aux_loss": aux,
               "build_s": build_s, "forward_backward_s": step_s, "activation_checkpointing": True,
               "grouped_mm": use_grouped_mm(torch.empty(0, cfg.hidden_size, dtype=torch.bfloat16, device=device),
                                            cfg.moe_intermediate_size),
               "weights_plus_grads_gib": (est.weights + est.grads) / GiB}
    summary = (f"{params['total']:,} parameters in bf16 from meta in {build_s:.1f} s; {T} tokens forward + backward "
               f"in {step_s:.1f} s, loss {loss:.3f}")
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        floor = est.weights + est.grads
        numbers["peak_gib"] = peak / GiB
        # at least the weights and gradients; under 1.5x of them, so no fp32 copy of the weights was ever made
        checks.append(check("peak memory between weights + gradients and 1.5x that", floor <= peak < 1.5 * floor,
                            f"peak {peak / GiB:.1f} GiB; memory_estimate's weights + gradients {floor / GiB:.1f} GiB",
                            peak_gib=peak / GiB, estimate_gib=floor / GiB))
        summary += f", peak {peak / GiB:.1f} GiB (weights + gradients {floor / GiB:.1f} GiB)"
    return {"summary": summary, "checks": checks, **numbers}


def transformers_problem() -> str | None:
    """Why transformers' DeepseekV2Moe cannot join the comparison here, or None if it can."""
    try:  # any error: a transformers version whose config or layer differs must not cost the part's other numbers
        built = moe_layer.hf_moe(MoSTConfig.preset("toy"))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None if built is not None else "transformers' DeepseekV2Moe does not import"


def part_moe_layer(size: dict) -> dict:
    problem = transformers_problem()
    rows = [moe_layer.run(s, problem is None, size["device"], torch.bfloat16) for s in size["moe_sizes"]]
    big = rows[-1]
    share = big["tflops"]["sorted"] / big["tflops"]["dense"]
    hf = f"transformers {big['ratio']['transformers']:.2f}x dense's time" if "transformers" in big["ratio"] \
        else f"transformers skipped ({problem})"
    return {"summary": f"{big['tokens']} tokens: dense {big['ms']['dense']:.3g} ms ({big['tflops']['dense']:.3g} TFLOP/s), "
                       f"sorted {big['ms']['sorted']:.3g} ms ({big['tflops']['sorted']:.3g} TFLOP/s, {share:.0%} of dense's); {hf}",
            "checks": [check(f"{r['size']}: the sorted dispatch ran torch._grouped_mm", r["grouped_mm"],
                             f"hidden {r['hidden']}, {r['experts']}, {r['dtype']}") for r in rows],
            "goals": [{"name": f"{big['tokens']} tokens: the sorted dispatch at >= 50% of dense's TFLOP/s", "met": share >= 0.5,
                       "detail": f"{share:.0%}"}],
            "transformers": problem or package_version("transformers"), "rows": rows}


def cpu_train_figure(preset: str) -> dict:
    """The committed CPU figure: benchmarks/train_step_cpu.json, bf16, MoST's routing (a training step
    of the stage-1 mix on pre-built batches; the Trainer's steps also build their batch)."""
    bench = json.loads((ROOT / "benchmarks" / "train_step_cpu.json").read_text())
    row = next(r for r in bench["rows"] if r["size"] == preset and r["precision"] == "bf16")
    return {"source": f"benchmarks/train_step_cpu.json ({bench['threads']} threads, torch {bench['torch']})",
            "batch": row["batch"], "steps_per_s": 1000 / row["ms"]["modality"], "tokens_per_s": row["tokens_per_s"]["modality"]}


def part_train(size: dict) -> dict:
    device, steps = size["device"], size["train_steps"]
    cpu = cpu_train_figure(size["train_preset"])
    set_seed(0)
    model = MoST(MoSTConfig.preset(size["train_preset"])).to(device)
    trainer = Trainer(model, load_corpus(SHIPPED_CORPUS), TrainConfig(steps=steps, batch_size=cpu["batch"], warmup_steps=steps // 10,
                                                        eval_every=0))
    start = time.perf_counter()
    # in chunks: a slow machine stops early with its numbers rather than running out of time
    while trainer.step < steps and time.perf_counter() - start < LIMITS["train"] / 2:
        trainer.train(steps=min(50, steps - trainer.step), progress=False)
    timed = trainer.history[5:]                                 # the first steps pay for start-up
    seconds = sum(h["seconds"] for h in timed)
    steps_per_s, tokens_per_s = len(timed) / seconds, sum(h["tokens"] for h in timed) / seconds
    quarter = max(1, trainer.step // 4)
    first = sum(h["loss"] for h in trainer.history[:quarter]) / quarter
    last = sum(h["loss"] for h in trainer.history[-quarter:]) / quarter
    early = "" if trainer.step == steps else f" (stopped early: {steps} steps would not fit the limit)"
    return {"summary": f"{size['train_preset']}, batch {cpu['batch']}, {trainer.step} steps{early}: {steps_per_s:.1f} steps/s, "
                       f"{tokens_per_s:,.0f} tokens/s = {tokens_per_s / cpu['tokens_per_s']:.1f}x the CPU's "
                       f"{cpu['tokens_per_s']:,} ({cpu['steps_per_s']:.2f} steps/s)",
            "checks": [check("the loss fell", last < first, f"mean of the first quarter {first:.3f}, of the last {last:.3f}",
                             first=first, last=last)],
            "preset": size["train_preset"], "steps": trainer.step, "batch": cpu["batch"], "bf16": trainer.autocast,
            "steps_per_s": steps_per_s, "tokens_per_s": tokens_per_s, "cpu": cpu,
            "speedup_tokens_per_s": tokens_per_s / cpu["tokens_per_s"]}


PARTS = {"device": part_device, "dispatch": part_dispatch, "full": part_full, "moe_layer": part_moe_layer, "train": part_train}


# ----------------------------------------------------------------------------------------------
# the driver: each part in a child process with a time limit; the files; the exit code


def run_part(name: str, toy: bool) -> dict:
    """Run one part in a child process (this script with --part): a CUDA hang or crash costs only this part."""
    limit = LIMITS[name]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--result", str(result)] + (["--toy"] if toy else [])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"status": "timed out", "seconds": time.perf_counter() - t0, "limit_s": limit,
                    "summary": f"no result within its {limit} s limit"}
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not result.exists():
            lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
            return {"status": "failed", "seconds": seconds, "limit_s": limit, "summary": lines[-1][:300],
                    "error": "\n".join(lines[-15:])}
        r = json.loads(result.read_text())
    ok = all(c["passed"] for c in r["checks"])
    return {"status": "ok" if ok else "failed", "seconds": seconds, "limit_s": limit, **r}


def table(report: dict) -> str:
    lines = [f"gpu_check on {report['machine']}, {report['date']}, {report['seconds']:.0f} s: "
             + ("PASSED" if report["passed"] else "FAILED: " + ", ".join(report["failed"])),
             f"{'part':10} {'status':10} {'time':>6} {'limit':>6}  summary"]
    for name, p in report["parts"].items():
        time_s = f"{p['seconds']:.0f} s" if "seconds" in p else "-"
        limit = f"{p['limit_s']} s" if "limit_s" in p else "-"
        lines.append(f"{name:10} {p['status']:10} {time_s:>6} {limit:>6}  {p['summary']}")
        lines += [f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}" for c in p.get("checks", [])]
        lines += [f"  goal {'met' if g['met'] else 'MISSED'}: {g['name']}: {g['detail']}" for g in p.get("goals", [])]
    return "\n".join(lines) + "\n"


def file_label(report: dict, toy: bool) -> str:
    """The machine in a file name: gpu_check_NVIDIA-H200.json."""
    if toy:
        return "cpu-toy"
    return re.sub(r"[^A-Za-z0-9.]+", "-", report["parts"]["device"].get("name", "unknown GPU")).strip("-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for gpu_check_<GPU>.json and .txt")
    ap.add_argument("--only", nargs="+", choices=list(PARTS)[1:], help="run only these parts (device always runs: it names the files)")
    ap.add_argument("--toy", action="store_true", help="every part at toy size on the CPU (the test's rehearsal)")
    ap.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)      # internal: one part, in this process
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size = SIZES["toy" if args.toy else "gpu"]
    if args.part:
        args.result.write_text(json.dumps(PARTS[args.part](size)))
        return 0
    if args.out is None:
        ap.error("--out is required")
    if not args.toy and not torch.cuda.is_available():
        print("gpu_check: no GPU here (torch.cuda.is_available() is False): nothing to check; --toy rehearses every part on the CPU")
        return 0

    start = time.perf_counter()
    report = {"command": " ".join(["tools/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]), "toy": args.toy,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "limits_s": LIMITS, "parts": {}}
    for name in PARTS:
        if name == "device" or args.only is None or name in args.only:
            report["parts"][name] = run_part(name, args.toy)
        else:
            report["parts"][name] = {"status": "skipped", "summary": "not in --only"}
        p = report["parts"][name]
        print(f"{name:10} {p['status']:10} {p.get('seconds', 0):5.1f} s  {p['summary']}", flush=True)
    report["machine"] = report["parts"]["device"].get("name", "an unknown GPU")
    report["seconds"] = time.perf_counter() - start
    report["failed"] = [n for n, p in report["parts"].items() if p["status"] not in ("ok", "skipped")]
    report["passed"] = not report["failed"]

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu_check_{file_label(report, args.toy)}"
    text = table(report)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{stem}.txt").write_text(text)
    print(f"\n{text}wrote {stem}.json and .txt")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
