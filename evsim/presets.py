"""Per-dataset defaults for training (the paper's values where it gives them).

A CLI option left unset takes the value from the dataset's preset; anything the
user sets wins.
"""
from __future__ import annotations

COMMON = {
    "epochs": 15,
    "batch_size": 100,
    "time_steps": 20,
    "hidden": (800,),
    "lr": 1e-3,
    "optimizer": "adam",
    "loss": "mse",
}

PRESETS: dict[str, dict] = {
    "mnist": {},
    "cifar10": {"hidden": (1024, 512)},
    "nmnist": {},
    "dvsgesture": {"time_steps": 64, "batch_size": 16, "hidden": (512,)},
}


def preset(dataset: str) -> dict:
    """The full default option dict for ``dataset`` (COMMON overlaid with its preset)."""
    return {**COMMON, **PRESETS.get(dataset, {})}
