"""Training: run folders (run.py), prompt data (data.py), rewards (rewards.py) and one runner per algorithm family.

`RUNNERS` in run.py is a plain dict algorithm name -> function(recipe, run) -> final model folder.
"""
