"""Small training runs for the checkpoint, resume, eval and NIR tests.

``toy_dataset`` is a 4-class, 30-input rate-coded problem held in memory (trains in
well under a second); ``assert_same_run`` compares two run folders bit for bit,
leaving out only wall-clock fields.
"""
import json
from pathlib import Path

import numpy as np

from evsim.data.base import Dataset, Split
from evsim.structure import SDSNNConfig
from evsim.config import TrainConfig

TIMING = ("epoch_s", "wall_s")
# Short SD-SNN schedule (K = R = 1): ranges from step 1, pruning and regeneration from step 2.
FAST_SDSNN = SDSNNConfig(spine_steps=1, regrow_steps=1, rho_init=20.0, rho_max=40.0)
# The same run through the CLI on the 5,000-digit MNIST sample, a few seconds per run.
TINY_MNIST_NETWORK = ["--dataset", "mnist", "--epochs", "2", "--hidden", "24", "--time-steps", "4", "--batch-size",
                      "100", "--threads", "1", "--no-progress"]
TINY_MNIST = TINY_MNIST_NETWORK + ["--dev-interval", "4", "--spine-steps", "1", "--regrow-steps", "1"]


def toy_dataset(seed: int = 0, train: int = 400, test: int = 100, source: str = "toy") -> Dataset:
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, 4, n)
        inputs = rng.random((n, 30)) * 0.3 + 0.6 * (np.arange(30)[None] % 4 == labels[:, None])
        return Split(inputs.astype(np.float32), labels)

    return Dataset("toy", split(train), split(test), 4, (30,), "rate", source)


def toy_config(**changes) -> TrainConfig:
    values = dict(dataset="toy", epochs=3, batch_size=50, time_steps=4, hidden=(12,), structure="sdsnn",
                  dev_interval=2, sdsnn=FAST_SDSNN, threads=1, val_fraction=0.0)
    return TrainConfig(**{**values, **changes})


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_npz(a: Path, b: Path, source_pinned: bool = False) -> None:
    """Same members, arrays equal in value and dtype; in ``meta``, equal apart from timing, ``out`` and
    the run id (and, with ``source_pinned``, the data source: a repeat from config.toml names
    the source the first run's ``auto`` found)."""
    with np.load(a, allow_pickle=False) as fa, np.load(b, allow_pickle=False) as fb:
        assert sorted(fa.files) == sorted(fb.files)
        for key in fa.files:
            if key != "meta":
                assert fa[key].dtype == fb[key].dtype and np.array_equal(fa[key], fb[key]), key
        ma, mb = json.loads(str(fa["meta"])), json.loads(str(fb["meta"]))
    for meta in (ma, mb):
        meta.get("config", {}).pop("out", None)
        meta.pop("run_id", None)  # drawn afresh by every run
        if source_pinned:
            meta.get("config", {}).get("data", {}).pop("source", None)
        if "metrics" in meta:
            meta["metrics"] = _without_timing(meta["metrics"])
    assert ma == mb


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same training result (weights, structure, state, metrics)."""
    for name in ("checkpoint-latest.npz", "checkpoint-best.npz", "network.npz"):
        assert_same_npz(a / name, b / name)
    rows = [_without_timing([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()])
            for d in (a, b)]
    assert rows[0] == rows[1]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (a, b)]
    for summary in summaries:
        summary.pop("wall_s")
        summary.pop("peak_rss_mib")  # a measurement of the process, not a result
    assert summaries[0] == summaries[1]
