"""Grading many answers in worker processes, each answer under a hard wall-clock limit.

Math-Verify's own timeouts use `signal.alarm`, which fails outside the main thread, so they are off and the pool
kills a worker whose answer runs past the limit instead (the answer then counts as wrong, `timed_out`).

Each worker holds up to `_IN_FLIGHT` answers: the one it grades and the next, already in its pipe, so it never
waits a round trip through the parent between answers (on real completions an answer takes a few milliseconds).
An answer's limit runs from when the parent sees the previous one's verdict; when a worker is killed, the
answers queued behind the one that ran over go to another worker.

Answers to the same problem (same gold) go to the same worker while there are other problems to give the other
workers: that worker parses the gold once, and its LaTeX parser's prediction cache (ANTLR's DFA, most of the
grading time on real completions) has already seen the problem's vocabulary. On the 320 real completions (k=8)
this is ~7% less CPU in all than dealing answers out in turn.
"""

from __future__ import annotations

import pickle
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from rlbench_cli.evaluation.grader.compare import GRADERS, Verdict, error_verdict, grade_prepared
from rlbench_cli.evaluation.grader.extract import UNBOXED_TAIL_CHARS, prepare_pred
from rlbench_cli.evaluation.grader.mathverify import quiet_math_verify

_MAX_STARTUP_FAILURES = 3
_IN_FLIGHT = 2
# A queued answer waits in the pipe's buffer; only small ones are queued, so that sending never blocks the parent
# (which must keep watching the other workers' limits). A larger one is sent when its worker is idle.
_MAX_QUEUED_BYTES = 16_384
_STARTUP_HELP = (
    "grader worker processes keep dying at startup; if this is a script, put its top-level code under "
    "`if __name__ == '__main__':` (multiprocessing needs it)"
)
# The paper's grader sees the whole completion; bound it like rlbench's unboxed tail (x4: boxes sit near the end).
_MATH_VERIFY_CHARS = 4 * UNBOXED_TAIL_CHARS

Key = tuple[Any, ...]  # (pred source, how it was found, gold, multiple_answer, tolerance, unit, grader)


@dataclass(frozen=True)
class GradeItem:
    completion: str
    gold: str
    multiple_answer: bool = False
    tolerance: float | None = None
    unit: str | None = None

    @classmethod
    def for_problem(cls, problem: Any, completion: str) -> GradeItem:
        """One completion of a benchmark problem, with the problem's multi-answer, tolerance and unit fields."""
        meta = getattr(problem, "meta", None) or {}
        return cls(completion=completion, gold=problem.gold,
                   multiple_answer=bool(meta.get("multiple_answer", meta.get("is_multiple_answer", False))),
                   tolerance=meta.get("tolerance", meta.get("error")), unit=meta.get("unit"))


def make_key(item: GradeItem, grader: str = "rlbench") -> Key:
    """The dedup key of one answer: what is graded, and with which settings."""
    if grader == "math_verify":
        return (item.completion[-_MATH_VERIFY_CHARS:], "raw", item.gold, False, None, None, grader)
    pred_src, how = prepare_pred(item.completion)
    return (pred_src, how, item.gold, bool(item.multiple_answer), item.tolerance, item.unit, grader)


def grade_key(key: Key) -> Verdict:
    pred_src, how, gold, multi, tol, unit, grader = key
    try:
        return grade_prepared(pred_src, how, gold, multi, tol, unit, grader)[0]
    except Exception as e:  # noqa: BLE001 - a grader crash on odd input is a wrong answer, not a failed run
        return error_verdict(pred_src, how, e)


def grade_answer(completion: str, gold: str, *, multiple_answer: bool = False, tolerance: float | None = None,
                 unit: str | None = None, grader: str = "rlbench") -> Verdict:
    """Grade one completion in this process, with no time limit (use `Grader` for untrusted input)."""
    return grade_key(make_key(GradeItem(completion, gold, multiple_answer, tolerance, unit), grader))


# ---------------------------------------------------------------------------------------------------------


def _worker_main(conn: Any) -> None:
    """Worker loop: grade keys on this process's main thread until told to stop (None) or the pipe closes."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    quiet_math_verify()
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, key = msg
        conn.send((idx, asdict(grade_key(key))))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.ready = False
        self.tasks: deque[int] = deque()  # in flight: the first is being graded, the rest wait in the pipe
        self.group: Any = None  # the gold it is working through (see `_Todo`)
        self.deadline = 0.0  # of the first

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=5)
        finally:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


class _Todo:
    """The answers not yet sent, grouped by gold in first-seen order: a worker takes the next answer of its own
    group, else a group nobody started, else (near the end) one from the largest group left."""

    def __init__(self, keys: list[Key]) -> None:
        self._gold_of = [k[2] for k in keys]
        self._groups: dict[Any, deque[int]] = {}
        for i, gold in enumerate(self._gold_of):
            self._groups.setdefault(gold, deque()).append(i)
        self._fresh = deque(self._groups)
        self.left = len(keys)

    def take(self, w: _Worker) -> int | None:
        group = self._groups.get(w.group)
        if not group:
            while self._fresh and not self._groups[self._fresh[0]]:
                self._fresh.popleft()
            if self._fresh:
                w.group = self._fresh.popleft()
            else:
                w.group = max(self._groups, key=lambda g: len(self._groups[g]), default=None)
            group = self._groups.get(w.group)
            if not group:
                return None
        self.left -= 1
        return group.popleft()

    def put_back(self, indices: list[int]) -> None:
        """Answers that were sent but not graded (their worker was killed): next in their groups."""
        for i in reversed(indices):
            self._groups[self._gold_of[i]].appendleft(i)
        self.left += len(indices)


def _context() -> Any:
    import multiprocessing as mp

    # forkserver: workers fork from a clean server (no threads, no torch state) and start fast after a kill.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Takes effect only if the server is not running yet; then workers start with Math-Verify imported and its
        # parser warmed up (see `warmup`), also after a worker is killed at the limit.
        ctx.set_forkserver_preload(["rlbench_cli.evaluation.grader.warmup"])
        return ctx
    return mp.get_context("spawn")


class Grader:
    """Grades many answers in worker processes, each answer under a wall-clock limit.

    `workers=0` grades in this process (debugging, tests); it then has no time limit.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, grader: str = "rlbench") -> None:
        if grader not in GRADERS:
            raise ValueError(f"grader must be one of {', '.join(GRADERS)}, got {grader!r}")
        self.grader = grader
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.n_workers = workers
        self.timeout_s = timeout_s
        self._workers: list[_Worker] = []
        self._ctx: Any = None
        self._startup_failures = 0
        self.stats = {"graded": 0, "unique": 0, "timeouts": 0, "restarts": 0}

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (bench/bench_grader.py reads their CPU time)."""
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def _ensure_workers(self) -> None:
        if self._ctx is None:
            self._ctx = _context()
        while len(self._workers) < self.n_workers:
            self._workers.append(_Worker(self._ctx))

    def grade_many(self, items: list[GradeItem]) -> list[Verdict]:
        keys = [make_key(it, self.grader) for it in items]
        unique = list(dict.fromkeys(keys))
        self.stats["graded"] += len(items)
        self.stats["unique"] += len(unique)
        if self.n_workers == 0:
            results = {k: grade_key(k) for k in unique}
        else:
            results = dict(zip(unique, self._run_pool(unique), strict=True))
        # Copies, so callers can mutate one verdict without touching its duplicates.
        return [Verdict(**asdict(results[k])) for k in keys]

    def _run_pool(self, keys: list[tuple[Any, ...]]) -> list[Verdict]:
        from multiprocessing.connection import wait

        self._ensure_workers()
        out: list[Verdict | None] = [None] * len(keys)
        todo = _Todo(keys)
        remaining = len(keys)
        while remaining:
            for w in list(self._workers):
                self._dispatch(w, keys, todo)
            now = time.monotonic()
            busy = [w for w in self._workers if w.tasks]
            timeout = max(0.0, min((w.deadline for w in busy), default=now + 1.0) - now)
            ready = wait([w.conn for w in self._workers], timeout=timeout)
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):  # the worker died (e.g. out of memory): its answer is wrong
                        if w.tasks:
                            i = w.tasks.popleft()
                            out[i] = Verdict(pred=_pred_of(keys[i]), correct=False, error="worker died")
                            remaining -= 1
                        elif not w.ready:
                            self._startup_failures += 1
                            if self._startup_failures >= _MAX_STARTUP_FAILURES:
                                raise RuntimeError(_STARTUP_HELP) from None
                        self._replace(w, todo)
                        continue
                    tag, payload = msg
                    if tag == "ready":
                        w.ready = True
                        self._startup_failures = 0
                    elif w.tasks and w.tasks[0] == tag:
                        out[w.tasks.popleft()] = Verdict(**payload)
                        w.deadline = time.monotonic() + self.timeout_s  # the next one starts now
                        remaining -= 1
            now = time.monotonic()
            for w in list(self._workers):
                if w.tasks and now >= w.deadline:
                    i = w.tasks.popleft()
                    out[i] = Verdict(pred=_pred_of(keys[i]), correct=False, timed_out=True)
                    self.stats["timeouts"] += 1
                    remaining -= 1
                    self._replace(w, todo)
        return [v for v in out if v is not None]

    def _dispatch(self, w: _Worker, keys: list[tuple[Any, ...]], todo: _Todo) -> None:
        """Send `w` answers until it holds `_IN_FLIGHT` (only small ones queue behind another)."""
        while w.ready and todo.left and len(w.tasks) < _IN_FLIGHT:
            i = todo.take(w)
            if i is None:
                return
            buf = pickle.dumps((i, keys[i]), protocol=pickle.HIGHEST_PROTOCOL)
            if w.tasks and len(buf) > _MAX_QUEUED_BYTES:
                todo.put_back([i])
                return
            try:
                w.conn.send_bytes(buf)  # what `recv` in the worker unpickles
            except (OSError, ValueError):
                todo.put_back([i])
                if not w.tasks:
                    self._replace(w, todo)
                return  # else the worker's EOF is read (and handled) in `_run_pool`
            if not w.tasks:
                w.deadline = time.monotonic() + self.timeout_s
            w.tasks.append(i)

    def _replace(self, w: _Worker, todo: _Todo) -> None:
        """Kill `w` and start another; the answers still queued in its pipe go back to `todo`, next in line."""
        todo.put_back(list(w.tasks))
        w.tasks.clear()
        w.kill()
        self._workers.remove(w)
        new = _Worker(self._ctx)
        new.group = w.group  # it carries on with the killed worker's problem
        self._workers.append(new)
        self.stats["restarts"] += 1


def _pred_of(key: tuple[Any, ...]) -> str | None:
    return key[0] if key[1] in ("box", "final-answer sentence") else None
