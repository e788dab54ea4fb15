"""Evaluating a network: the one loop (:func:`run_batches`) that training's test
evaluation, ``evsim eval`` and ``evsim profile`` share; accuracy, confusion matrix,
operations.

The predicted class is the output neuron with the most spikes (ties: the lowest
index), as in training. Rate-coded inputs are drawn from a generator seeded by
``seed``, so an evaluation is reproducible; it is not the trainer's generator, so for
rate-coded data the accuracy can differ slightly from the one logged during training
(frame and direct encodings have no randomness and match it exactly).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from evsim.data import Dataset, Split
from evsim.data.encoding import SampleSeeds, encode_events
from evsim.data.nmnist import crop_hint
from evsim.energy import EnergyModel, EnergyReport, count_network
from evsim.kernels.events import Events, StaticDrive
from evsim.errors import ConfigError
from evsim.memory import (EVAL_STEP_BYTES, batch_bytes, direct_membrane_bytes, input_events,
                          refuse_beyond_memory)
from evsim.network import Network


def eval_seeds(seed: int) -> tuple[int, int]:
    """The seed key of rate coding's draws in evaluation, profiling and inspection: the
    same spikes for a sample in all three."""
    return (seed, 3)


def check_whole(name: str, value, minimum: int) -> int:
    """``value`` as an int, if it is a whole number >= ``minimum``.

    Raises
    ------
    ConfigError
        Naming the argument and what it must be.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def encoding_steps(dataset: Dataset, time_steps: int | None) -> int:
    """The steps to encode ``dataset`` for: ``time_steps``, or, given None, the dataset's own.

    Raises
    ------
    ConfigError
        If ``time_steps`` is not a whole number >= 1, or is None for a static-image dataset.
    """
    if time_steps is None:
        if dataset.time_steps is None:
            raise ConfigError("time_steps is required to encode a static-image dataset")
        return dataset.time_steps
    return check_whole("time_steps", time_steps, 1)


def run_batches(network: Network, inputs, encoding: str, time_steps: int, rng: np.random.Generator | tuple,
                batch_size: int, model: EnergyModel = EnergyModel(),
                data_source: str = "") -> tuple[np.ndarray, EnergyReport | None]:
    """Output spike counts ``[N, n_out]`` of ``network`` on ``inputs`` (samples of a split,
    encoded batch by batch: rate coding drawn from ``rng``, or, given a seed key, from
    each sample's own generator, :class:`~evsim.data.encoding.SampleSeeds`, so that the
    result does not depend on ``batch_size``), and the exact operation counts of those
    forward passes (counting is O(events), cheap enough to stay on); the report is None
    for no input."""
    out, report = [], None
    for start in range(0, len(inputs), batch_size):
        draws = SampleSeeds(rng, start) if isinstance(rng, tuple) else rng
        counts, traces = network.forward(encode_events(inputs[start:start + batch_size], encoding, time_steps, draws),
                                         record=False)
        out.append(counts)
        batch = count_network(network, traces, encoding == "direct", counts.shape[0], model, data_source)
        report = batch if report is None else report.add(batch)
    return (np.concatenate(out) if out else np.zeros((0, network.sizes[-1]), np.float32)), report


@dataclass
class Evaluation:
    """What a network did on one split.

    Attributes
    ----------
    split : ``"test"``, ``"train"`` or ``"val"``.
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


def checked_split(network: Network, dataset: Dataset, split: str) -> Split:
    """``dataset``'s ``split`` ("test", "train" or "val"), once it exists, holds samples
    and fits ``network``: as many inputs, of the shape a convolution takes (a flat
    sample fits any shape of its size), and as many classes.

    Raises
    ------
    ConfigError
        Naming what is missing or does not fit.
    """
    if split not in ("test", "train", "val"):
        raise ConfigError(f"unknown split {split!r}; choose test, train or val")
    data = getattr(dataset, split)
    if data is None:
        raise ConfigError(f"{dataset.name} has no validation split (the run trained with --val-fraction 0)")
    if len(data) == 0:
        raise ConfigError(f"the {split} split of {dataset.name} is empty")
    takes = getattr(network.layers[0], "in_shape", None)
    gives = tuple(int(n) for n in dataset.sample_shape)
    # A map of the same size but another shape would run, on scrambled pixels.
    same_shape = takes is None or len(gives) == 1 or tuple(takes) == gives
    if network.sizes[0] != dataset.n_inputs or network.sizes[-1] != dataset.n_classes or not same_shape:
        network_text = network.describe() if takes is not None else str(network.sizes)
        inputs = (f"{'x'.join(map(str, gives))} = " if len(gives) > 1 else "") + f"{dataset.n_inputs} inputs"
        raise ConfigError(f"network {network_text} does not fit {dataset.name} ({inputs}, {dataset.n_classes} classes)"
                          + crop_hint(dataset.name, gives, network.sizes[0]))
    return data


def check_batch_memory(network: Network, inputs, encoding: str, time_steps: int, batch_size: int) -> None:
    """Refuse, before the first batch, an evaluation whose batch of ``inputs`` would not fit
    in memory (the same estimate as training's, :mod:`evsim.memory`).

    Raises
    ------
    ConfigError
        Saying about how much it needs and what to reduce.
    """
    batch = min(batch_size, len(inputs))
    traces, events = batch_bytes(sum(network.sizes[1:]), time_steps, batch, EVAL_STEP_BYTES,
                                 input_events(inputs, encoding, time_steps))
    traces += direct_membrane_bytes(network.sizes, time_steps, batch, encoding)
    refuse_beyond_memory(f"a batch of {batch} samples over {time_steps} steps",
                         {"traces": traces, "input events": events}, "reduce --time-steps or --batch-size")


def evaluate(network: Network, dataset: Dataset, time_steps: int, split: str = "test", batch_size: int = 500,
             seed: int = 0) -> Evaluation:
    """Run ``network`` over ``dataset``'s ``split`` and tally predictions and operations.

    Raises
    ------
    ConfigError
        If ``split`` is unknown or empty, or the network does not fit the dataset.
    """
    data = checked_split(network, dataset, split)
    time_steps = check_whole("time_steps", time_steps, 1)
    batch_size, seed = check_whole("batch_size", batch_size, 1), check_whole("seed", seed, 0)
    check_batch_memory(network, data.inputs, dataset.encoding, time_steps, batch_size)
    counts, report = run_batches(network, data.inputs, dataset.encoding, time_steps, eval_seeds(seed), batch_size,
                                 data_source=dataset.source)
    confusion = np.zeros((dataset.n_classes, dataset.n_classes), dtype=np.int64)
    np.add.at(confusion, (data.labels, np.argmax(counts, axis=1)), 1)
    return Evaluation(split, confusion, report, counts, np.asarray(data.labels))


def profile(network, data, analog_input: bool | None = None, model: EnergyModel = EnergyModel(),
            data_source: str = "", time_steps: int | None = None, split: str = "test", samples: int | None = None,
            batch_size: int = 250, seed: int = 0) -> EnergyReport:
    """Run ``network`` and count every operation it performs.

    Parameters
    ----------
    data : a :class:`~evsim.data.Dataset` (its ``split`` is encoded for ``time_steps``
        steps, rate coding seeded by ``seed``), or one ``[T, B, n_in]`` array, or an
        iterable of such arrays / :class:`Events`.
    analog_input : count the first synaptic layer's work as MACs (direct-encoded input); taken
        from the dataset's encoding when ``data`` is a Dataset; by default, true for a
        :class:`StaticDrive` and false for spikes (as :func:`evsim.record` counts).

    Returns
    -------
    EnergyReport accumulated over all batches.

    Raises
    ------
    ConfigError
        If ``model`` is not an :class:`EnergyModel` or ``data`` holds no batches. For a
        Dataset: if ``split`` is unknown or empty, the network does not fit the dataset
        (as :func:`evaluate` refuses it), or ``time_steps``, ``samples``, ``batch_size``
        (>= 1) or ``seed`` (>= 0) is not a whole number in range.
    """
    if not isinstance(model, EnergyModel):
        raise ConfigError(f"model must be an EnergyModel, got {type(model).__name__}")
    if isinstance(data, Dataset):
        steps = encoding_steps(data, time_steps)
        batch_size, seed = check_whole("batch_size", batch_size, 1), check_whole("seed", seed, 0)
        samples = None if samples is None else check_whole("samples", samples, 1)
        inputs = checked_split(network, data, split).inputs[:samples]
        check_batch_memory(network, inputs, data.encoding, steps, batch_size)
        _, report = run_batches(network, inputs, data.encoding, steps, eval_seeds(seed), batch_size, model,
                                data_source or data.source)
        if report is None:
            raise ConfigError("nothing to profile: no input batches")
        return report
    if isinstance(data, (np.ndarray, Events, StaticDrive)):  # one batch
        batches = [data]
    elif not isinstance(data, (str, bytes, Mapping)) and isinstance(data, Iterable):
        batches = data
    else:  # a mapping or a string would iterate over its keys or characters
        raise ConfigError(f"profile takes a Dataset, one [T, B, n_in] array or Events, or a list or iterator of "
                          f"them, got {type(data).__name__}")
    report = None
    for drive in batches:
        counts, traces = network.forward(drive, record=False)
        analog = isinstance(drive, StaticDrive) if analog_input is None else analog_input
        batch_report = count_network(network, traces, analog, counts.shape[0], model, data_source)
        report = batch_report if report is None else report.add(batch_report)
    if report is None:
        raise ConfigError("nothing to profile: no input batches")
    return report
