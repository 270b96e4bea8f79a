"""Evaluation data layer: benchmark loading, answer grading and accuracy metrics.

Submodules are imported on demand so that `rlbench --help` stays light; import from them directly.
"""
