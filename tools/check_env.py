"""Fail early, with a clear message, if the environment `make setup` built can't run mini-MoST."""

import sys

problems = []
try:
    import torch
except ImportError as e:
    problems.append(f"torch does not import ({e}); run `make setup` (it pins torch==2.14.1)")
else:
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
try:
    import encodec  # noqa: F401  (encodec itself imports torchaudio)
    import torchaudio
    print(f"torchaudio {torchaudio.__version__}, encodec imports")
except Exception as e:  # an extension that fails to load raises OSError/RuntimeError, not ImportError
    problems.append(
        f"`import torchaudio, encodec` failed: {type(e).__name__}: {e}\n"
        "  torchaudio's extension must match torch: use the pins in requirements.txt "
        "(torch==2.14.1 with torchaudio==2.11.0); torch 2.13.0's CPU wheel breaks torchaudio.")
try:
    import mini_most
    print(f"mini_most {mini_most.__version__} from {mini_most.__file__}")
except ImportError as e:
    problems.append(f"mini_most does not import ({e}); run `pip install -e .` in the repository")
if problems:
    print("environment check FAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
    sys.exit(1)
print("environment check passed")
