"""Per-dataset defaults for training (the paper's values where it gives them).

Each preset overrides some of the defaults declared with the options
(:data:`evsim.config.OPTIONS`); :func:`evsim.config.preset` gives a dataset's full set.
An option set on the command line or in a config file wins over its preset.
"""
from __future__ import annotations

PRESETS: dict[str, dict] = {
    "mnist": {"arch": "paper", "rho_init": 35.0, "rho_max": 55.0},
    "cifar10": {"hidden": (1024, 512), "rho_init": 35.0},
    # 25 epochs: 21-22 more after pruning at epoch 3 bring SD-SNN within 0.3 points of the
    # unpruned network, and the run stays under 10 minutes on 2 cores (benchmarks/RESULTS.md).
    "nmnist": {"arch": "paper", "epochs": 25, "rho_init": 45.0, "rho_max": 55.0},
    # Evaluation in the training batches, as the default's 100 and 100: the buffer pool's maps
    # are reused (TrainConfig.eval_batch_size), where a batch of 100 would take 7.6 GiB at T = 64.
    "dvsgesture": {"arch": "paper", "time_steps": 64, "batch_size": 16, "eval_batch_size": 16, "hidden": (512,),
                   "rho_init": 60.0, "rho_max": 75.0},
    # Not in the SD-SNN paper: sizes that suit these datasets (evsim/data/tonic_sets.py).
    "shd": {"time_steps": 50, "batch_size": 64, "hidden": (256,)},
    "cifar10dvs": {"batch_size": 32, "hidden": (512,)},
    "pokerdvs": {"batch_size": 8, "hidden": (128,)},
}

# The networks of the SD-SNN paper (the authors' code), for --arch paper. N-MNIST's 34x34
# frames are cropped by one pixel on each side.
PAPER_ARCHS: dict[str, str] = {
    "mnist": "1x28x28-15C3-AP2-40C3-AP2-300-10",
    "nmnist": "2x32x32-15C3-AP2-40C3-AP2-300-10",
    "dvsgesture": "2x128x128-15C3-AP2-40C3-AP2-300-11",
}
