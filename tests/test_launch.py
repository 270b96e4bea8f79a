"""Launcher, shipped accelerate/DeepSpeed configs, vLLM seeds, paper recipes and a real 2-process CPU run."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import FIXTURES, tiny_recipe

from rlbench_cli.config import load_recipe, recipe_from_dict
from rlbench_cli.errors import UserError
from rlbench_cli.training import launch
from rlbench_cli.training.launch import (
    CONFIGS,
    check_launchable,
    config_files,
    launch_command,
    reference_departures,
    vllm_seed,
    vllm_seed_override,
)

REPO = Path(__file__).resolve().parents[1]
PAPER_RECIPES = [*sorted((REPO / "recipes").glob("*.yaml")),
                 *sorted((REPO / "recipes" / "paper-1.5b").glob("*.yaml"))]
PAPER_ALGORITHMS = ("sft", "raft", "raft_pp", "reinforce", "reinforce_rej", "grpo", "ppo", "dpo")

# accelerate refuses these next to a --deepspeed_config_file (DeepSpeedPlugin._deepspeed_config_checks)
DS_FIELDS_FORBIDDEN_WITH_FILE = {"gradient_accumulation_steps", "gradient_clipping", "zero_stage",
                                 "offload_optimizer_device", "offload_param_device", "zero3_save_16bit_model",
                                 "mixed_precision"}


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("stage", [None, "zero2", "zero3"])
def test_shipped_configs_parse(stage: str | None) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    yaml_file, ds_json = config_files(stage)
    assert yaml_file.parent == CONFIGS and yaml_file.is_file()
    data = yaml.safe_load(yaml_file.read_text())
    cluster = load_config_from_file(str(yaml_file))  # accelerate's own parser accepts it
    assert str(cluster.distributed_type).endswith("DEEPSPEED" if stage else "MULTI_GPU")
    assert data["use_cpu"] is False and data["num_machines"] == 1
    if stage is None:
        assert ds_json is None
        return
    assert not DS_FIELDS_FORBIDDEN_WITH_FILE & set(data["deepspeed_config"])
    assert data["deepspeed_config"]["zero3_init_flag"] is (stage == "zero3")
    ds = json.loads(ds_json.read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == int(stage[-1])
    # "auto" lets transformers fill these from the recipe's TrainingArguments (no second source of truth).
    for key in ("gradient_accumulation_steps", "gradient_clipping", "train_micro_batch_size_per_gpu"):
        assert ds[key] == "auto"
    assert ds["bf16"]["enabled"] == "auto"
    if stage == "zero3":
        # Without it, save_pretrained on rank 0 would write empty (partitioned) tensors.
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert "offload_param" in zero


def test_unknown_stage_is_a_user_error() -> None:
    with pytest.raises(UserError, match="zero2 or zero3"):
        config_files("zero1")


# ------------------------------------------------------------------------------------------------ commands


def _parse(cmd: list[str]):
    from accelerate.commands.launch import launch_command_parser

    start = cmd.index("accelerate.commands.launch") + 1
    return launch_command_parser().parse_args(cmd[start:])


@pytest.mark.parametrize(
    ("cpu", "stage", "procs", "want_config", "want_ds", "cpu_env"),
    [
        (True, None, 2, None, None, True),
        (False, None, 8, "accelerate_multi_gpu.yaml", None, False),
        (False, "zero2", 8, "deepspeed_zero2.yaml", "ds_zero2.json", False),
        (False, "zero3", 4, "deepspeed_zero3.yaml", "ds_zero3.json", False),
        (True, "zero3", 8, "deepspeed_zero3.yaml", "ds_zero3.json", False),  # printed as the GPU command
    ],
)
def test_launch_command(cpu: bool, stage: str | None, procs: int, want_config: str | None,
                        want_ds: str | None, cpu_env: bool) -> None:
    cmd = launch_command(Path("recipes/grpo.yaml"), ["optim.lr=2e-6", "seed=3"], num_processes=procs,
                         deepspeed=stage, overwrite=True, cpu=cpu, main_process_port=29999)
    assert (cmd[:2] == ["env", "ACCELERATE_USE_CPU=true"]) is cpu_env
    args = _parse(cmd)
    assert args.num_processes == procs and args.main_process_port == 29999
    assert args.module and args.training_script == "rlbench_cli.cli"
    want_args = ["train", "recipes/grpo.yaml", "optim.lr=2e-6", "seed=3", "--overwrite"]
    assert args.training_script_args == want_args
    assert (Path(args.config_file).name if args.config_file else None) == want_config
    assert (Path(args.deepspeed_config_file).name if args.deepspeed_config_file else None) == want_ds
    if cpu_env:
        # accelerate's --cpu would start a single process (multi-CPU needs mpirun): torchrun + gloo instead.
        assert args.multi_gpu and not args.cpu and args.mixed_precision == "no"
    for path in (args.config_file, args.deepspeed_config_file):
        assert path is None or Path(path).is_absolute() and Path(path).is_file()


def test_launch_command_rejects_zero_processes() -> None:
    with pytest.raises(UserError, match="num-processes"):
        launch_command(Path("r.yaml"), [], num_processes=0, deepspeed=None, cpu=True)


@pytest.mark.parametrize(("cuda", "installed", "match"),
                         [(False, True, "CUDA"), (True, False, "deepspeed package")])
def test_deepspeed_refused_where_it_cannot_run(monkeypatch, cuda: bool, installed: bool, match: str) -> None:
    monkeypatch.setattr(launch, "cuda_available", lambda: cuda)
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object() if installed else None)
    cmd = launch_command(Path("r.yaml"), [], num_processes=2, deepspeed="zero2", cpu=False)
    with pytest.raises(UserError, match=match):
        check_launchable(cmd)
    check_launchable(launch_command(Path("r.yaml"), [], num_processes=2, deepspeed=None, cpu=True))


# ------------------------------------------------------------------------------------------------ vLLM seeds


def test_vllm_seed_derivation() -> None:
    seeds = {(s, g): vllm_seed(s, g) for s in range(4) for g in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # distinct per (recipe seed, group)
    assert all(0 <= v < 2**31 for v in seeds.values())
    assert vllm_seed(3, 5) == vllm_seed(3, 5)
    assert vllm_seed(2**32 - 1, 0) < 2**31
    with pytest.raises(ValueError):
        vllm_seed(-1, 0)


def _fake_vllm_generation(process_index: int, tp: int):
    model = SimpleNamespace(name_or_path="m", named_modules=lambda: iter(()))
    accelerator = SimpleNamespace(process_index=process_index, local_process_index=process_index,
                                  num_processes=8, wait_for_everyone=lambda: None)
    return SimpleNamespace(model=model, accelerator=accelerator, mode="colocate", tensor_parallel_size=tp,
                           gpu_memory_utilization=0.3, max_model_length=64, max_num_seqs=8,
                           enable_sleep_mode=False, model_impl="vllm", trust_remote_code=False)


@pytest.mark.parametrize(("process_index", "recipe_seed"), [(0, 0), (3, 0), (3, 7), (5, 42)])
def test_vllm_colocate_seed_follows_recipe(monkeypatch, process_index: int, recipe_seed: int) -> None:
    """Runs TRL's real VLLMGeneration._init_vllm with a recording LLM: fails if TRL changes how it seeds."""
    from trl.generation import vllm_generation

    # _init_vllm writes these into os.environ: monkeypatch restores them afterwards.
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29501"}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    seen: list[dict] = []
    recorder = lambda **kw: seen.append(kw) or SimpleNamespace()  # noqa: E731
    monkeypatch.setattr(vllm_generation, "LLM", recorder, raising=False)
    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda *a, **k: True)
    fake = _fake_vllm_generation(process_index, tp=1)

    vllm_generation.VLLMGeneration._init_vllm(fake)
    assert seen[-1]["seed"] == process_index  # TRL 1.16: the process index, whatever the run seed
    with vllm_seed_override(recipe_seed):
        vllm_generation.VLLMGeneration._init_vllm(fake)
    assert seen[-1]["seed"] == vllm_seed(recipe_seed, process_index)
    assert seen[-1]["model"] == "m" and seen[-1]["gpu_memory_utilization"] == 0.3  # other kwargs untouched
    vllm_generation.VLLMGeneration._init_vllm(fake)
    assert seen[-1]["seed"] == process_index  # restored on exit
    with vllm_seed_override(recipe_seed, enabled=False):
        vllm_generation.VLLMGeneration._init_vllm(fake)
    assert seen[-1]["seed"] == process_index


def test_vllm_override_without_vllm_is_a_no_op() -> None:
    from trl.generation import vllm_generation

    before = getattr(vllm_generation, "LLM", None)
    with vllm_seed_override(1):
        assert getattr(vllm_generation, "LLM", None) is before


# ------------------------------------------------------------------------------------------------ recipes


def test_every_paper_algorithm_has_both_recipes() -> None:
    names = {p.stem for p in PAPER_RECIPES if p.parent.name == "recipes"}
    assert set(PAPER_ALGORITHMS) <= names
    small = {p.stem for p in PAPER_RECIPES if p.parent.name == "paper-1.5b"}
    assert set(PAPER_ALGORITHMS) <= small and "grpo_math_train" in small


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_paper_recipe(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# rlbench train recipes/{path.relative_to(REPO / 'recipes')}")
    assert lines[1].startswith("# ") and len(lines[1]) > 10
    recipe = load_recipe(path)
    from rlbench_cli.training.batching import plan

    for procs in (1, 8):
        plan(recipe, procs)
    departures = [n for n in reference_departures(recipe) if not n.startswith("note:")]
    if path.parent.name == "recipes":
        assert departures == [], departures  # the 7B recipes are the paper's settings
        assert recipe.model.path == "Qwen/Qwen2.5-Math-7B"
    else:
        assert recipe.model.path == "Qwen/Qwen2.5-Math-1.5B"
        if recipe.algorithm.name not in ("sft", "dpo"):
            assert recipe.steps_per_rollout == 4 and recipe.rollout.max_prompt_tokens == 1024
    assert recipe.data.prompt_template == "paper"
    assert recipe.eval.benchmarks == ["math500", "minerva_math", "olympiadbench"]
    assert (recipe.eval.k, recipe.eval.temperature, recipe.eval.max_new_tokens) == (16, 1.0, 4096)


def test_paper_recipes_dry_run_through_cli() -> None:
    from typer.testing import CliRunner

    from rlbench_cli.cli import app

    runner = CliRunner()
    paths = [str(p) for p in PAPER_RECIPES]
    res = runner.invoke(app, ["validate", *paths])
    assert res.exit_code == 0, res.output
    assert res.output.count("ok") == len(paths)
    res = runner.invoke(app, ["train", str(REPO / "recipes" / "grpo.yaml"), "--launcher", "accelerate",
                              "--num-processes", "8", "--deepspeed", "zero3", "--dry-run"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "--deepspeed_config_file" in flat and "ds_zero3.json" in flat and "--num_processes 8" in flat
    assert "gradient_accumulation_steps" in flat


def _paper_grpo() -> dict:
    return yaml.safe_load((REPO / "recipes" / "grpo.yaml").read_text())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"optim": {"lr": 1e-5}}, "optim.lr = 1e-05"),
        ({"optim": {"weight_decay": 0.0}}, "optim.weight_decay"),
        ({"rollout": {"n": 8}}, "rollout.n = 8"),
        ({"rollout": {"prompts_per_batch": 512}}, "rollout.prompts_per_batch = 512"),
        ({"optim": {"mini_batch_prompts": 1024}}, "optimizer_steps_per_rollout = 1"),
        ({"rollout": {"temperature": 0.7}}, "rollout.temperature"),
        ({"rollout": {"top_p": 0.9}}, "rollout.top_p"),
        ({"rollout": {"max_new_tokens": 1024}}, "rollout.max_new_tokens = 1024"),
        ({"algorithm": {"kl_coef": 0.0}}, "algorithm.kl_coef = 0.0"),
        ({"algorithm": {"clip_high": 0.28}}, "algorithm.clip_high = 0.28"),
        ({"reward": {"incorrect": 0.0}}, "note: reward {0, 1}"),
        ({"reward": {"incorrect": -0.5}}, "reward.incorrect = -0.5"),
        ({"model": {"lora": {"enabled": True}}}, "model.lora.enabled"),
        ({"rollout": {"use_vllm": True}}, "vllm_seed(seed="),
        ({"rollout": {"use_vllm": True, "vllm_mode": "server"}}, "--seed"),
        ({"eval": {"k": 4}}, "eval.k = 4"),
    ],
)
def test_reference_departures_name_the_key(override: dict, expected: str) -> None:
    base = recipe_from_dict(_paper_grpo(), "grpo.yaml")
    assert not [n for n in reference_departures(base) if not n.startswith("note:")]
    data = _paper_grpo()
    for section, values in override.items():
        for key, value in values.items():
            if isinstance(value, dict):
                data.setdefault(section, {}).setdefault(key, {}).update(value)
            else:
                data.setdefault(section, {})[key] = value
    notes = reference_departures(recipe_from_dict(data, "grpo.yaml"))
    assert any(expected in n for n in notes), notes


@pytest.mark.parametrize(("algorithm", "override", "expected"), [
    ("ppo", "algorithm.kl_coef=0.001", "algorithm.kl_coef = 0.001 (reference: 0.0"),
    ("grpo", "algorithm.kl_coef=0.0", "algorithm.kl_coef = 0.0 (reference: 0.001"),
    ("raft", "algorithm.ratio_level=token", "algorithm.ratio_level = token (reference: none"),
    ("raft_pp", "algorithm.dual_clip_c=2", "algorithm.dual_clip_c = 2.0"),
    ("ppo", "algorithm.critic_lr=1e-6", "algorithm.critic_lr"),
    ("raft_pp", "optim.mini_batch_prompts=1024", "RAFT and RAFT++ are then identical"),
    ("reinforce_rej", "algorithm.filter_mode=drop", "paper text"),
])
def test_reference_departures_per_algorithm(algorithm: str, override: str, expected: str) -> None:
    path = REPO / "recipes" / f"{algorithm}.yaml"
    assert not any(expected in n for n in reference_departures(load_recipe(path)))
    notes = reference_departures(load_recipe(path, [override]))
    assert any(expected in n for n in notes), notes


# ------------------------------------------------------------------------------------------------ real runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run_matches_single_process(tiny_random_model_dir, tmp_path, monkeypatch) -> None:
    """A real `accelerate launch` of 2 CPU processes completes and logs what a 1-process run logs."""
    from rlbench_cli.records import read_jsonl
    from rlbench_cli.training.run import run_training

    data = tmp_path / "train.jsonl"
    rows = [{"problem": f"{i}+{i}=", "answer": str(2 * i)} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tiny_recipe("grpo", tiny_random_model_dir, tmp_path / "results",
                         data={"source": "jsonl", "path": str(data), "split": "train"},
                         optim={"micro_batch_size": 4, "max_steps": 2})
    recipe["data"].pop("split")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))

    single = run_training(recipe_from_dict({**recipe, "name": "one"}, "r.yaml"), command="pytest")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(FIXTURES) + ":" + ":".join(sys.path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cmd = launch_command(Path("r.yaml"), ["name=two"], num_processes=2, deepspeed=None, cpu=True,
                         main_process_port=_free_port())
    launch.run_launch(cmd)
    double = tmp_path / "results" / "two-s0"

    one_rows, two_rows = read_jsonl(single / "metrics.jsonl"), read_jsonl(double / "metrics.jsonl")
    assert len(one_rows) == len(two_rows) == 2
    assert [sorted(r) for r in one_rows] == [sorted(r) for r in two_rows]
    responses = 4 * 4  # prompts_per_batch × n: the same rollout size whatever the number of processes
    assert one_rows[0]["samples"] == two_rows[0]["samples"] == responses
    manifest = json.loads((double / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["steps"] == 2
    assert (double / "model" / "model.safetensors").is_file()
