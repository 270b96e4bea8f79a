"""Temperature schedule and ProRL reference-reset timing."""

from __future__ import annotations

import pytest

from rlbench_cli.algorithms.schedules import reference_reset_due, temperature_at


@pytest.mark.parametrize(("step", "kind", "expected"), [
    (0, "linear", 1.2), (5, "linear", 1.0), (10, "linear", 0.8),
    (0, "cosine", 1.2), (5, "cosine", 1.0), (10, "cosine", 0.8),
    (2, "cosine", 1.2 - 0.4 * 0.5 * (1 - 0.8090169943749475)),  # cos(pi * 0.2)
    (7, "constant", 1.2),
])
def test_temperature_at(step, kind, expected) -> None:  # noqa: ANN001
    assert temperature_at(step, 11, 1.2, 0.8, kind) == pytest.approx(expected)


def test_step_schedule_and_errors() -> None:
    assert [temperature_at(s, 100, 1.0, 1.2, "step", step_every=10, step_size=0.1) for s in (0, 9, 10, 25, 99)] == \
        pytest.approx([1.0, 1.0, 1.1, 1.2, 1.2])  # clamped at the end value
    with pytest.raises(ValueError):
        temperature_at(1, 10, 1.0, None, "linear")
    with pytest.raises(ValueError):
        temperature_at(1, 10, 1.0, 1.1, "step")
    with pytest.raises(ValueError):
        temperature_at(1, 10, 1.0, 1.1, "exp")
    assert temperature_at(0, 1, 1.0, 0.5, "linear") == 1.0  # a one-step run never moves


def test_reference_reset_due() -> None:
    assert [s for s in range(0, 10) if reference_reset_due(s, 3)] == [3, 6, 9]
    assert not any(reference_reset_due(s, 0) for s in range(10))
