"""Algorithm math as pure functions: advantage estimators, policy/value/KL losses, DPO pair selection.

Import the submodules directly (`rlbench_cli.algorithms.advantages`, `.losses`, `.pairs`); this package
imports nothing itself, so `import rlbench_cli.algorithms.pairs` does not pull in torch.
"""
