"""Training: `run.py` dispatches a recipe to its runner (rl, ppo, sft, dpo); see run.py's docstring for the layers.

`run.RUNNERS` is a plain dict runner name -> function(recipe, run, console, *, rows, model_path, resume) -> final model
folder; which runner an algorithm uses is its entry in config.ALGORITHM_DEFAULTS.
"""
