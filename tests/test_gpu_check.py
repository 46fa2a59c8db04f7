"""tools/gpu_check.py, the one command that proves a GPU machine, rehearsed on the CPU: every part at
toy size (the same code, tiny shapes) with the packages the GPU machine lacks made unimportable, so
the command cannot rot while no GPU is around."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "gpu_check.py"
MISSING_ON_GPU_MACHINE = ("soundfile", "torchaudio", "jiwer", "pocketsphinx", "encodec")


def run_tool(args, tmp_path, **env):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=240,
                          cwd=tmp_path, env={**os.environ, **env})


def test_gpu_check_toy_runs_every_part_on_the_cpu_without_audio_packages(tmp_path):
    # a sitecustomize on PYTHONPATH runs in the tool and in each part's child process: there the
    # GPU machine's missing packages fail to import, as they would on it
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({MISSING_ON_GPU_MACHINE!r}))\n")
    out = tmp_path / "out"
    # one thread: toy shapes gain nothing from two, and two spinning threads slow down badly on a busy machine
    r = run_tool(["--toy", "--out", str(out)], tmp_path, PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check_cpu-toy.json", "gpu_check_cpu-toy.txt"]
    report = json.loads((out / "gpu_check_cpu-toy.json").read_text())
    assert {"command", "toy", "date", "machine", "seconds", "limits_s", "parts", "failed", "passed"} <= set(report)
    assert report["passed"] and report["failed"] == [] and report["toy"]
    assert list(report["parts"]) == ["device", "dispatch", "full", "moe_layer", "train"]
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part)
        assert part["checks"] and all(c["passed"] for c in part["checks"]), (name, part["checks"])
        assert part["seconds"] <= part["limit_s"] == report["limits_s"][name]
    paths = {c["case"]: c["path"] for c in report["parts"]["dispatch"]["cases"]}
    assert set(paths.values()) == {"grouped_mm", "loop"}, paths                 # both paths ran
    assert report["parts"]["moe_layer"]["rows"][0]["tflops"]["sorted"] > 0
    assert report["parts"]["train"]["steps"] == 20 and report["parts"]["train"]["cpu"]["tokens_per_s"] > 0
    text = (out / "gpu_check_cpu-toy.txt").read_text()
    assert "PASSED" in text and all(name in text for name in report["parts"])


def test_gpu_check_only_runs_the_parts_asked_for(tmp_path):
    r = run_tool(["--toy", "--out", str(tmp_path), "--only", "full"], tmp_path, OMP_NUM_THREADS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    parts = json.loads((tmp_path / "gpu_check_cpu-toy.json").read_text())["parts"]
    assert {n: p["status"] for n, p in parts.items()} == {"device": "ok", "dispatch": "skipped", "full": "ok",
                                                         "moe_layer": "skipped", "train": "skipped"}


def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_0(tmp_path):
    r = run_tool(["--out", str(tmp_path / "out")], tmp_path, CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "no GPU" in r.stdout
    assert not (tmp_path / "out").exists()


def test_gpu_check_imports_nothing_the_gpu_machine_lacks():
    code = (f"import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('gpu_check', {str(TOOL)!r})\n"
            f"spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            f"print(sorted(m for m in {MISSING_ON_GPU_MACHINE!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
