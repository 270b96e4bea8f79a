"""Experiment tracking: mirror a run to TensorBoard, Weights & Biases and/or Trackio (`output.report_to`).

What is logged, per tracker:
- every metrics.jsonl row, under metrics.jsonl's own keys (loss, reward_mean, kl, ...) at the row's `step`
  (rlbench's MetricsCallback feeds the trackers, not TRL's report_to, whose key names differ);
- the run config: the resolved recipe and the run manifest (the manifest again at the end, with the final status
  and model hash; trackio keeps the one from the start);
- eval summaries, when `rlbench eval` finishes a benchmark of the run: `eval/<benchmark>/<metric>`.

Where it goes: tensorboard → `<run>/tensorboard/` (`tensorboard --logdir results/`); wandb → `<run>/wandb/`
(online by default; WANDB_MODE=offline keeps it local for `wandb sync`); trackio → its local store
(TRACKIO_DIR, default ~/.cache/huggingface/trackio; `trackio show`). wandb and trackio runs are named after the
run folder and share one id per run (so `rlbench eval` later adds to the same run); the project is
`output.tracking_project`.

Trainers reach the open tracker through `log_row(metrics_path, row)`: one run per process writes one
metrics.jsonl, so a registry keyed by that path spares every runner an extra argument.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.records import sha256_text

TRACKERS = ("tensorboard", "wandb", "trackio")
# The module each tracker imports and the exact pin the `tracking` extra installs.
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard==2.21.0"), "wandb": ("wandb", "wandb==0.31.0"),
             "trackio": ("trackio", "trackio==0.43.0")}
_ACTIVE: dict[Path, Tracker] = {}
log = logging.getLogger("rlbench")


def check_available(report_to: list[str], where: str = "output.report_to") -> None:
    """Refuse, before any work, a tracker whose package is not installed."""
    from importlib.util import find_spec

    for name in report_to:
        if name not in _PACKAGES:
            raise UserError(f"unknown tracker {name!r}", where=where, fix=f"use any of: {', '.join(TRACKERS)}")
        module, pin = _PACKAGES[name]
        if find_spec(module) is None:
            raise UserError(f"{where} names {name}, but the {module} package is not installed", where=where,
                            fix=f"pip install 'rlbench[tracking]' (or pip install {pin}), or drop {name} from "
                                f"{where}")


def run_id(run_dir: Path, started_at: str) -> str:
    """One id per run folder and start: a resumed run or a later eval continues it, --overwrite starts anew."""
    return sha256_text(f"{Path(run_dir).resolve()}|{started_at}")[:16]


def _scalars(values: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


class _TensorBoard:
    def __init__(self, run_dir: Path, *, config: dict[str, Any], **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.config(config)

    def config(self, config: dict[str, Any]) -> None:
        import json

        for key, value in config.items():  # fenced, so TensorBoard's markdown keeps the JSON's layout
            self.writer.add_text(f"config/{key}", "```\n" + json.dumps(value, indent=2, default=str) + "\n```")
        self.writer.flush()

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a killed run keeps what it logged

    def summary(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, *, name: str, run_id: str, project: str, config: dict[str, Any]) -> None:
        import wandb

        settings = wandb.Settings(console="off", silent=True, disable_git=True, x_disable_stats=True)
        self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir),
                              config=config, settings=settings, reinit="create_new")

    def config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, values: dict[str, float], step: int) -> None:
        # W&B steps only grow, and a resumed run is already past `step`: summaries carry no step.
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


class _Trackio:
    def __init__(self, run_dir: Path, *, name: str, run_id: str, project: str, config: dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        with _quiet():  # trackio prints a dashboard banner on stdout
            self.run = trackio.init(project=project, name=name, config=config, resume="allow",
                                    auto_log_gpu=False, auto_log_cpu=False)

    def config(self, config: dict[str, Any]) -> None:
        pass  # trackio stores a run's config once, from init (the manifest as the run started)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        with _quiet():  # trackio.finish also forgets the current run, so its atexit hook does not finish it again
            self.trackio.finish()


@contextlib.contextmanager
def _quiet() -> Any:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    if buf.getvalue().strip():
        log.info("%s", buf.getvalue().strip())


_BACKENDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "trackio": _Trackio}


class Tracker:
    """The open trackers of one run; `log` takes a metrics.jsonl row."""

    def __init__(self, run_dir: Path, report_to: list[str], *, name: str, run_id: str, project: str,
                 config: dict[str, Any]) -> None:
        check_available(report_to)
        self.backends: list[Any] = []
        try:
            for kind in dict.fromkeys(report_to):  # each tracker once, in the given order
                try:
                    self.backends.append(_BACKENDS[kind](run_dir, name=name, run_id=run_id, project=project,
                                                         config=config))
                except Exception as e:  # noqa: BLE001 - each library has its own error types (login, network)
                    hint = "run `wandb login`, or set WANDB_MODE=offline" if kind == "wandb" else \
                        f"check the {kind} installation, or drop it from output.report_to"
                    raise UserError(f"cannot start {kind} tracking ({type(e).__name__}: {e})",
                                    where="output.report_to", fix=hint) from e
        except BaseException:
            self.close()
            raise
        self.last_step = 0

    def log(self, row: dict[str, Any]) -> None:
        step = int(row.get("step") or 0)
        self.last_step = max(self.last_step, step)
        values = _scalars(row, skip=("step",))
        for backend in self.backends:
            backend.log(values, step)

    def config(self, config: dict[str, Any]) -> None:
        for backend in self.backends:
            backend.config(config)

    def summary(self, values: dict[str, float], step: int) -> None:
        for backend in self.backends:
            backend.summary(values, step)

    def close(self) -> None:
        for backend in self.backends:
            with contextlib.suppress(Exception):  # closing must not hide the run's own outcome
                backend.close()
        self.backends = []


# ---------------------------------------------------------------- entry points for train and eval


def open_for_training(recipe: Any, run_dir: Path, manifest: dict[str, Any], metrics_path: Path) -> Tracker | None:
    """Start the recipe's trackers (None when output.report_to is empty) and route metrics rows to them."""
    report_to = list(recipe.output.report_to)
    if not report_to:
        return None
    rid = run_id(run_dir, str(manifest.get("started_at")))
    tracker = Tracker(run_dir, report_to, name=run_dir.name, run_id=rid, project=recipe.output.tracking_project,
                      config={"recipe": recipe.model_dump(mode="json"), "manifest": manifest})
    manifest["tracking"] = {"report_to": report_to, "project": recipe.output.tracking_project, "run_id": rid}
    _ACTIVE[Path(metrics_path)] = tracker
    return tracker


def close_training(tracker: Tracker | None, metrics_path: Path, manifest: dict[str, Any]) -> None:
    """Log the final manifest (status, steps, model hash) as config and close the trackers."""
    _ACTIVE.pop(Path(metrics_path), None)
    if tracker is None:
        return
    try:
        tracker.config({"manifest": manifest})
    except Exception:  # noqa: BLE001 - the run's own outcome matters more than its last config update
        log.exception("could not log the final manifest to the trackers")
    finally:
        tracker.close()


def log_row(metrics_path: Path, row: dict[str, Any]) -> None:
    """Called by MetricsCallback after each metrics.jsonl line; a no-op without trackers."""
    tracker = _ACTIVE.get(Path(metrics_path))
    if tracker is not None:
        tracker.log(row)


def eval_values(summaries: dict[str, dict[str, Any]]) -> dict[str, float]:
    """`eval/<benchmark>/<metric>` for every numeric metric of every completed summary."""
    out: dict[str, float] = {}
    for bench, summary in summaries.items():
        if summary.get("status") == "completed":
            out.update({f"eval/{bench}/{k}": v for k, v in _scalars(summary.get("metrics") or {}).items()})
    return out


def log_eval(run_dir: Path, manifest: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Add eval summaries to the trackers the run was trained with (manifest["tracking"]); returns their names."""
    tracking = manifest.get("tracking")
    values = eval_values(summaries)
    if not isinstance(tracking, dict) or not tracking.get("report_to") or not values:
        return []
    report_to = [str(t) for t in tracking["report_to"]]
    tracker = Tracker(run_dir, report_to, name=str(manifest.get("name") or run_dir.name),
                      run_id=str(tracking.get("run_id")), project=str(tracking.get("project") or "rlbench"),
                      config=_run_config(run_dir, manifest))
    try:
        steps = manifest.get("steps")
        tracker.summary(values, int(steps) if isinstance(steps, int) else 0)
    finally:
        tracker.close()
    return report_to


def _run_config(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The config a resumed tracker run gets again (trackio replaces a run's config on resume)."""
    import yaml

    try:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        recipe = None
    return {"recipe": recipe, "manifest": manifest} if isinstance(recipe, dict) else {"manifest": manifest}


def mirror_eval(run_dir: Path, manifest: dict[str, Any], summaries: dict[str, dict[str, Any]], console: Any) -> None:
    """log_eval for `rlbench eval`: a tracker failure is a warning, since the eval itself is done and written."""
    try:
        logged = log_eval(run_dir, manifest, summaries)
    except UserError as e:
        console.print(f"warning: eval summaries not sent to the trackers: {e}", markup=False, highlight=False,
                      soft_wrap=True)
        return
    if logged:
        console.print(f"eval summaries logged to {', '.join(logged)}", markup=False, highlight=False)
