"""Check a model folder before eval loads it: one line for every broken model, never a loader traceback.

`check_model_folder` needs no torch: config.json must parse, weights must exist, and every safetensors file
must be whole (its header's tensor offsets end exactly at the file's end). `check_run_model` adds what a run
folder knows: its status must be `completed` (unless allowed), and the weights must hash to the manifest's
`final_model_sha256`, which catches flipped bytes that a length check cannot.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def _check_safetensors(path: Path) -> str | None:
    """None if the file is a whole safetensors file, else what is wrong with it."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is truncated ({size} bytes)"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8 or n > 100 << 20:
            return f"{path.name} is truncated or not a safetensors file (header of {n} bytes)"
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return f"{path.name} has a corrupt header"
    if not isinstance(header, dict):
        return f"{path.name} has a corrupt header"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    want = 8 + n + max(ends, default=0)
    if size != want:
        return f"{path.name} is truncated ({size} of {want} bytes)" if size < want else \
            f"{path.name} has {size - want} unexpected trailing bytes"
    return None


def check_model_folder(folder: Path, *, fix: str) -> None:
    """Raise UserError (one line) if `folder` cannot be a loadable Hugging Face model."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise UserError("the model folder is empty (was the run killed while saving?)", where=str(folder), fix=fix)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("the model folder has no config.json", where=str(folder), fix=fix) from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config.json is unreadable ({type(e).__name__})", where=str(folder), fix=fix) from None
    if not isinstance(config, dict):
        raise UserError("config.json is not a JSON object", where=str(folder), fix=fix)
    weights = sorted({p for pat in WEIGHT_PATTERNS for p in folder.glob(pat) if p.is_file()})
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserError("model.safetensors.index.json is unreadable", where=str(folder), fix=fix) from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise UserError(f"weight shard {missing[0]} is missing ({len(missing)} of {len(shards)})",
                            where=str(folder), fix=fix)
    if not weights:
        raise UserError("the model folder has no weights (model.safetensors is missing)", where=str(folder),
                        fix=fix)
    for path in weights:
        if path.suffix == ".safetensors" and (problem := _check_safetensors(path)):
            raise UserError(problem, where=str(folder), fix=fix)


def check_run_model(run_dir: Path, manifest: dict[str, Any], model_sha256: str, *, allow_incomplete: bool) -> None:
    """A run's model: completed status (unless allow_incomplete), whole files, hash equal to the manifest's."""
    status = manifest.get("status")
    retrain = f"retrain it: rlbench train {run_dir / 'recipe.yaml'} --overwrite"
    if status != "completed" and not allow_incomplete:
        raise UserError(f"this run is not completed (status: {status})", where=str(run_dir),
                        fix="resume or finish training first, or pass --allow-incomplete to evaluate it anyway")
    check_model_folder(run_dir / "model", fix=retrain)
    want = manifest.get("final_model_sha256")
    if want and model_sha256 != want:
        raise UserError(f"the model weights changed since training saved them (sha256 {model_sha256[:12]}… "
                        f"!= manifest final_model_sha256 {str(want)[:12]}…)", where=str(run_dir / "model"),
                        fix=f"restore the original weights or {retrain}")
