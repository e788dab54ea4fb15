"""Evaluating a trained network on a dataset split: accuracy, confusion matrix, operations.

The predicted class is the output neuron with the most spikes (ties: the lowest
index), as in training. Rate-coded inputs are drawn from a generator seeded by
``seed``, so an evaluation is reproducible; it is not the trainer's generator, so for
rate-coded data the accuracy can differ slightly from the one logged during training
(frame and direct encodings have no randomness and match it exactly).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evsim.data import Dataset
from evsim.data.encoding import encode_events
from evsim.energy import EnergyReport, count_network
from evsim.errors import ConfigError
from evsim.network import Network


@dataclass
class Evaluation:
    """What a network did on one split.

    Attributes
    ----------
    split : ``"test"`` or ``"train"``.
    confusion : int64 ``[n_classes, n_classes]``, rows = true class, columns = predicted.
    energy : exact operation counts of the forward passes (with energy estimates).
    counts : float32 ``[N, n_classes]`` output spike counts of each sample, in split order.
    labels : int64 ``[N]`` the samples' labels.
    """

    split: str
    confusion: np.ndarray
    energy: EnergyReport
    counts: np.ndarray | None = None
    labels: np.ndarray | None = None

    def predictions(self) -> list[dict]:
        """Per sample: index in the split, label, predicted class, output spike counts."""
        predicted = np.argmax(self.counts, axis=1)
        return [{"index": i, "label": int(label), "predicted": int(guess), "counts": row.tolist()}
                for i, (label, guess, row) in enumerate(zip(self.labels, predicted, self.counts))]

    @property
    def samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion)) / self.samples

    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class (None for a class absent from the split)."""
        totals = self.confusion.sum(axis=1)
        return [float(self.confusion[k, k] / n) if n else None for k, n in enumerate(totals)]

    def summary(self) -> dict:
        """JSON-ready summary (operations per sample)."""
        energy = self.energy.summary()
        return {
            "split": self.split,
            "samples": self.samples,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy(),
            "confusion": self.confusion.tolist(),
            "sops_per_sample": energy["sops_per_sample"],
            "macs_per_sample": energy["macs_per_sample"],
            "energy_uj_per_sample": energy["energy_uj_per_sample"],
            "energy_note": energy["note"],
            "data_source": energy["data_source"],
        }


def evaluate(network: Network, dataset: Dataset, time_steps: int, split: str = "test", batch_size: int = 500,
             seed: int = 0) -> Evaluation:
    """Run ``network`` over ``dataset``'s ``split`` and tally predictions and operations.

    Raises
    ------
    ConfigError
        If ``split`` is unknown or empty, or the network does not fit the dataset.
    """
    if split not in ("test", "train", "val"):
        raise ConfigError(f"unknown split {split!r}; choose test, train or val")
    data = getattr(dataset, split)
    if data is None:
        raise ConfigError(f"{dataset.name} has no validation split (the run trained with --val-fraction 0)")
    if len(data) == 0:
        raise ConfigError(f"the {split} split of {dataset.name} is empty")
    if network.sizes[0] != dataset.n_inputs or network.sizes[-1] != dataset.n_classes:
        raise ConfigError(f"network {network.sizes} does not fit {dataset.name} "
                          f"({dataset.n_inputs} inputs, {dataset.n_classes} classes)")
    rng = np.random.default_rng([seed, 3])
    confusion = np.zeros((dataset.n_classes, dataset.n_classes), dtype=np.int64)
    report, all_counts = None, []
    for start in range(0, len(data), batch_size):
        events = encode_events(data.inputs[start:start + batch_size], dataset.encoding, time_steps, rng)
        counts, traces = network.forward(events)
        np.add.at(confusion, (data.labels[start:start + batch_size], np.argmax(counts, axis=1)), 1)
        all_counts.append(counts)
        batch = count_network(network, traces, dataset.encoding == "direct", counts.shape[0],
                              data_source=dataset.source)
        report = batch if report is None else report.add(batch)
    return Evaluation(split, confusion, report, np.concatenate(all_counts), np.asarray(data.labels))
