"""Reading and writing the project's files without losing or trusting too much.

- `write_text_atomic` / `write_bytes_atomic`: a file is replaced whole or not at all (a kill mid-write keeps the old one).
- `read_json`: a missing, unreadable or truncated JSON file is refused by its path.
- `inside`: a name read from a manifest or an index must stay inside its folder.
- `save_tensors` / `load_tensors`: safetensors files with a content hash in their metadata
  (`mini_most.sha256`), written atomically; a file whose tensors no longer match its hash is
  refused by name. Files without the hash (Hugging Face's, older ones) load as before.
- `check_finite`: weights with NaN or inf are refused when they are loaded, by tensor name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

HASH_KEY = "mini_most.sha256"


def write_text_atomic(path, text: str) -> Path:
    return _replace_whole(path, lambda tmp: tmp.write_text(text))


def write_bytes_atomic(path, data: bytes) -> Path:
    return _replace_whole(path, lambda tmp: tmp.write_bytes(data))


def _replace_whole(path, write) -> Path:
    # write beside the target, then rename over it: a rename is all or nothing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def read_json(path, what: str = "JSON file"):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the {what} is truncated or corrupted; "
                         "rewrite it with the command that made it") from e


def inside(folder, name: str, what: str = "path") -> Path:
    """folder / name, refusing a name that would leave the folder (absolute, or with '..')."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{what} {name!r} must be a relative path inside {folder} (no absolute path, no '..')")
    return Path(folder) / name


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        update_digest(h, name, tensors[name])
    return h.hexdigest()


def update_digest(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def save_tensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> Path:
    """safetensors with the content hash in its metadata, written atomically."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={**(metadata or {}), HASH_KEY: tensors_digest(tensors)})
    os.replace(tmp, path)
    return path


def open_tensors(path, what: str = "safetensors file"):
    """safe_open, with a missing or unreadable file named."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return safe_open(str(path), "pt")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}): it is truncated or corrupted") from e


def load_tensors(path, what: str = "safetensors file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; its content hash is checked when present."""
    with open_tensors(path, what) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    check_digest(path, meta, tensors_digest(tensors))
    return tensors, meta


def check_digest(path, meta: dict, digest: str) -> None:
    if HASH_KEY in meta and meta[HASH_KEY] != digest:
        raise ValueError(f"{path} is corrupted: its tensors do not match the content hash it was written with; "
                         "restore the file or write it again")


def check_finite(tensors: dict[str, torch.Tensor], source) -> None:
    """Refuse weights with NaN or inf, naming the first such tensor."""
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{source}: tensor {name!r} holds NaN or inf values; these weights would give NaN "
                             "logits: load a good copy (an earlier checkpoint) instead")
