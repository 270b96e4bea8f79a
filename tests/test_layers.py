"""The shape of the package: no import circle anywhere in src/, no source file over 600 lines, the training layer's
order (context < callbacks < checkpoints/policy < runners < run), and no large or scratch file tracked by git.

The import graph is built with `ast` from every `import` / `from ... import` in src/rlbench_cli, at module level AND
inside functions (lazy imports of heavy libraries still make a circle a newcomer has to untangle), `TYPE_CHECKING`
blocks included. `from pkg import name` counts as an edge to pkg.name when that is a module, else to pkg.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rlbench_cli"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> rlbench_cli modules it imports (anywhere in the file)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a module inside a package
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_find_cycles_finds_a_circle_and_only_circles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_in_src() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles (module-level and function-level imports): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_training_layers_import_downward_only() -> None:
    """Lower training modules never import higher ones; a runner never imports dispatch."""
    order = {  # rank: a module may import only modules of a lower rank
        "context": 0, "batching": 0, "data": 0, "rewards": 0, "launch": 0, "resampling": 0, "sampler": 0,
        "callbacks": 1, "policy": 1, "guard": 1, "rollout_signals": 1, "ref_reset": 1, "checkpoints": 2,
        "rl": 3, "sft": 3, "dpo": 3, "ppo": 4,  # ppo builds on rl's public trainer
        "run": 5,
    }
    graph = import_graph()
    prefix = "rlbench_cli.training."
    training = {m.removeprefix(prefix) for m in graph if m.startswith(prefix)}
    assert training <= set(order), f"place new training modules in the layer order: {training - set(order)}"
    wrong = [f"{a} -> {b}" for a in training for b in (t.removeprefix(prefix) for t in graph[prefix + a]
                                                       if t.startswith(prefix)) if order[b] >= order[a]]
    assert not wrong, f"imports that go sideways or up: {wrong}"


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlbench_cli"):
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert not offenders, offenders


SOURCES = [str(p.relative_to(SRC.parent)) for p in sorted(PACKAGE.rglob("*.py"))]


@pytest.mark.parametrize("source", SOURCES)
def test_source_file_at_most_600_lines(source: str) -> None:
    n = len((SRC.parent / source).read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{source} has {n} lines (> {MAX_LINES}): split it by concern"


@pytest.mark.parametrize("module", ["rlbench_cli.config", "rlbench_cli.training.batching"])
def test_light_modules_do_not_import_torch(module: str) -> None:
    """`rlbench validate` and `--dry-run` stay instant: config and the batch arithmetic import no torch."""
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert out.stdout.strip() == "False"


MAX_TRACKED_KIB = 512  # the largest file we mean to track is bench/data's 268 KiB of completions


def test_repository_tracks_no_large_or_scratch_files() -> None:
    """A staging folder of wheels and model files (66 MB) was once committed by mistake; a tracked file over
    MAX_TRACKED_KIB, or anything under a GPU-bundle path, fails here so it cannot happen again unnoticed."""
    import shutil
    import subprocess

    repo = SRC.parent
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout (e.g. an sdist): nothing tracked to check")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    paths = [p for p in listed.decode().split("\0") if p]
    assert paths, "git ls-files listed nothing"
    scratch = [p for p in paths if p.startswith("bench/gpu_bundle")]
    assert not scratch, f"GPU-bundle files are tracked (git rm -r --cached them): {scratch[:3]}"
    large = [(p, (repo / p).stat().st_size // 1024) for p in paths
             if (repo / p).is_file() and (repo / p).stat().st_size > MAX_TRACKED_KIB * 1024]
    assert not large, f"tracked files over {MAX_TRACKED_KIB} KiB: {large[:5]}"
