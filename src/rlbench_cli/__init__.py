"""rlbench: compare LLM post-training algorithms reproducibly.

The package is the library; `recipes/` beside it holds data-only YAML recipes. Entry point: `rlbench` (cli.py).
"""

__version__ = "0.1.0"
