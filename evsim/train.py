"""Training: epochs, batches, evaluation, metrics, checkpoints and the run folder.

Python owns epochs and batches (progress, schedules, files); Numba kernels own one
batch's time loop. A run folder holds::

    config.json             the resolved configuration (and config.toml, see evsim.config)
    metrics.jsonl           one JSON object per epoch and per development step
    summary.json            the final result
    network.npz             the trained network after the last finished epoch
    checkpoint-latest.npz   the full training state after the last finished epoch
                            (or after the last batch, when stopped with Ctrl-C or SIGTERM)
    checkpoint-best.npz     the full training state at the best validation accuracy (test
                            accuracy when there is no validation split, --val-fraction 0)

Exact resume: everything that changes during training (network and per-synapse
state, optimizer steps, structure controller, the trainer's random generator, the
position in an interrupted epoch) is in the checkpoint, and the kernels are
deterministic for a given thread count, so ``resume(run_dir)`` ends bit-identical to
the same run uninterrupted (timing fields apart).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numba
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from evsim.checkpoint import (
    CHECKPOINT_BEST,
    CHECKPOINT_LATEST,
    NETWORK_FILE,
    CheckpointWriter,
    EpochProgress,
    TrainingState,
    load_checkpoint,
    save_network,
    stored_config,
    trained_on,
)
from evsim.config import (
    AUTO,
    CHECKPOINT_POLICIES,
    CONFIG_TOML,
    TrainConfig,
    auto_dev_interval,
    config_toml,
    with_added_keys,
)
from evsim.data import Dataset, load_dataset
from evsim.data.base import with_validation
from evsim.data.encoding import encode_events
from evsim.data.nmnist import crop_hint
from evsim.divergence import WEIGHT_CHECK_EVERY, check_finite_training
from evsim.compression import developing_sparsity, layer_report, units_with_input, zero_or_absent
from evsim.energy import EnergyReport
from evsim.evaluate import run_batches
from evsim.errors import CheckpointError, ConfigError, DataError
from evsim.kernels import conv_paths
from evsim.files import clean_stale_temporaries, write_bytes_atomic, write_json_atomic, write_jsonl_atomic
from evsim.loss import get_loss
from evsim.memory import (EVAL_STEP_BYTES, SDSNN_SYNAPSE_BYTES, SYNAPSE_BYTES, TRAIN_STEP_BYTES, batch_bytes,
                          direct_membrane_bytes, input_events, refuse_beyond_memory)
from evsim.network import Network, developing_layers, parse_spec, spec_footprint
from evsim.optim import Optimizer, Schedule
from evsim.plots import plot_training
from evsim.runfiles import (check_belongs, check_data_dir_exists, check_loaded_from, check_moved_data_dir,
                            check_run_data, folder_data_fingerprint, new_run_id, recorded_data_dir, repair_best,
                            without_evsim_data)
from evsim.readers import check_regular
from evsim.runlock import check_lock_in_place, locked_writes, run_lock
from evsim.structure import make_structure
from evsim.structure.sdsnn import check_filter_rate



def check_memory(config: TrainConfig, n_inputs: int = 0, n_classes: int = 0, events_per_sample: int = 0,
                 encoding: str | None = None) -> None:
    """Refuse a run whose network, BPTT traces and input events would not fit in physical
    memory (the sizes per item: :mod:`evsim.memory`).

    Without the dataset's sizes (before loading it) the input and output layers count
    as empty, and the input events as none: a lower bound that still catches impossible
    ``hidden``/``time_steps``. ``events_per_sample``: the most input events a sample gives
    (:func:`~evsim.memory.input_events`); ``encoding``: the dataset's, once known.

    Raises
    ------
    ConfigError
        Saying about how much the run needs and what to reduce.
    """
    if config.arch:
        sizes, n_weights = spec_footprint(config.arch)
    else:
        sizes = [n_inputs, *config.hidden, n_classes]
        n_weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    train = batch_bytes(sum(sizes[1:]), config.time_steps, config.batch_size, TRAIN_STEP_BYTES, events_per_sample)
    traces, events = batch_bytes(sum(sizes[1:]), config.time_steps, config.eval_batch_size, EVAL_STEP_BYTES,
                                 events_per_sample)
    evaluate = (traces + direct_membrane_bytes(sizes, config.time_steps, config.eval_batch_size,
                                               encoding or config.data.encoding), events)
    (traces, events), batch, kind = max((train, "--batch-size", "BPTT traces"),
                                        (evaluate, "--eval-batch-size", "evaluation traces"), key=lambda b: sum(b[0]))
    per_synapse = SDSNN_SYNAPSE_BYTES if config.structure == "sdsnn" else SYNAPSE_BYTES
    refuse_beyond_memory("this run", {"weights": per_synapse * n_weights, kind: traces, "input events": events},
                         f"reduce {'the layer sizes of --arch' if config.arch else '--hidden'}, --time-steps or "
                         f"{batch}" + (" (or --downsample the frames)" if config.dataset == "dvsgesture" else ""))


# Sample shapes and classes of the registered datasets as framed by default, for the checks
# before the data loads (--crop and --downsample change the shape, see expected_shape).
KNOWN_SHAPES = {"mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "nmnist": ((2, 34, 34), 10),
                "dvsgesture": ((2, 128, 128), 11), "cifar10dvs": ((2, 128, 128), 10), "pokerdvs": ((2, 35, 35), 4),
                "shd": ((700,), 20)}


def expected_shape(config: TrainConfig) -> tuple[tuple, int]:
    """``(sample_shape, n_classes)`` of the run's dataset before it loads; ``((), 0)``
    where unknown (a folder of one's own recordings)."""
    shape, n_classes = KNOWN_SHAPES.get(config.dataset, ((), 0))
    if config.data.crop:
        shape = (2, 32, 32)
    if config.data.downsample and config.dataset in ("dvsgesture", "cifar10dvs"):
        shape = (2, config.data.downsample, config.data.downsample)
    return shape, n_classes


def expected_sizes(config: TrainConfig) -> tuple[int, int]:
    """``(n_inputs, n_classes)`` of the run's dataset before it loads; ``(0, 0)`` (a lower
    bound) where unknown."""
    shape, n_classes = expected_shape(config)
    return (int(np.prod(shape)) if shape else 0), n_classes


def check_arch_fits(arch: str, dataset_name: str, gives: tuple, n_classes: int) -> None:
    """Refuse ``arch`` when its input is not a sample of shape ``gives`` (a map of the same
    size but another shape would run on scrambled pixels) or its outputs are not
    ``n_classes``; ``gives = ()`` or ``n_classes = 0``: not known yet.

    Raises
    ------
    ConfigError
        Saying what the data gives, with --crop where that would make it fit.
    """
    parts = parse_spec(arch)
    sizes = spec_footprint(arch)[0]
    takes = parts[0] if isinstance(parts[1], tuple) and parts[1][0] == "conv" else (sizes[0],)
    if gives and (sizes[0] != int(np.prod(gives)) or (len(takes) > 1 and len(gives) > 1 and takes != tuple(gives))):
        raise ConfigError(f"--arch {arch} takes input {'x'.join(map(str, takes))} but {dataset_name} gives "
                          f"{'x'.join(map(str, gives))}{crop_hint(dataset_name, gives, sizes[0])}")
    if n_classes and sizes[-1] != n_classes:
        raise ConfigError(f"--arch {arch} ends with {sizes[-1]} outputs but {dataset_name} has {n_classes} classes")


def check_before_loading(config: TrainConfig) -> None:
    """Refuse, without loading the data, what training ``config`` would refuse: the
    memory check, an architecture whose input or outputs differ from the dataset's
    (where known before it loads), and ``develop`` naming layers the network lacks.

    Raises
    ------
    ConfigError
        The trainer's own message.
    """
    shape, n_classes = expected_shape(config)
    if config.arch:  # before the memory: an input the data cannot give is the first thing to fix
        check_arch_fits(config.arch, config.dataset, shape, n_classes)
    check_memory(config, *expected_sizes(config))
    outline = _outline(config)
    develops = developing_layers(outline, config.develop)
    check_something_develops(config, outline.layer_labels(), develops)
    if config.structure == "sdsnn":
        check_filter_rate(config.sdsnn, any(d and layer.kind == "conv2d" for layer, d in zip(outline.layers, develops)))


def check_something_develops(config: TrainConfig, labels: list[str], develops: list[bool]) -> None:
    """Refuse a structure whose network has no layer ``--develop`` selects: it would
    report development steps that edit nothing.

    Raises
    ------
    ConfigError
        Naming the layers that can develop.
    """
    if config.structure == "none" or any(develops):
        return
    choices = [label for label in labels[:-1] if not label.startswith("pool")]
    rule = " (auto: every convolution but the first, and the hidden fully connected layers)" \
        if config.develop == "auto" else ""
    raise ConfigError(f"--structure {config.structure} with --develop {config.develop}: no layer of this network "
                      f"develops{rule}; " + (f"name the layers, e.g. --develop {','.join(choices)}, or "
                                             if choices else "") + "give --structure none")


def _outline(config: TrainConfig) -> "_Outline":
    parts = parse_spec(config.arch)[1:] if config.arch else [*config.hidden, 0]
    return _Outline([{"conv": "conv2d", "pool": "pool2d"}[part[0]] if isinstance(part, tuple) else "linear"
                     for part in parts])


class _Outline:
    """A network's layers as :func:`evsim.network.developing_layers` reads them (their
    kinds), without building their weights."""

    layer_labels = Network.layer_labels

    def __init__(self, kinds: list[str]):
        self.layers = [SimpleNamespace(kind=kind) for kind in kinds]


def _interval_words(interval: int) -> str:
    """``one per epoch``, ``every batch`` or ``every N batches``."""
    return "one per epoch" if interval == 0 else "every batch" if interval == 1 else f"every {interval} batches"


def build_network(config: TrainConfig, dataset: Dataset, rng: np.random.Generator) -> Network:
    """The run's network: ``config.arch`` (checked against the data's shape and classes),
    else fully connected ``<inputs>-<hidden>-<classes>``.

    Raises
    ------
    ConfigError
        If the architecture does not fit the dataset, saying what the data gives.
    """
    if not config.arch:
        network = Network.mlp([dataset.n_inputs, *config.hidden, dataset.n_classes], rng, config.lif, config.path)
    else:
        check_arch_fits(config.arch, dataset.name, tuple(dataset.sample_shape), dataset.n_classes)
        network = Network.from_spec(config.arch, rng, config.lif, config.path)
    network.set_developing(config.develop)
    if config.structure == "none":
        no_development(network)
    return network


def no_development(network: Network) -> None:
    """Mark no layer developing: under ``--structure none`` nothing edits the network, and
    the layer table, summary.json, checkpoints and NIR export say so."""
    for layer in network.layers:
        if hasattr(layer, "store"):  # layers with synapses; pooling has nothing to develop
            layer.develops = False


def accuracy(counts: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose most active output neuron is the label (ties: lowest index)."""
    return float(np.mean(np.argmax(counts, axis=1) == labels))


# training.png is redrawn at the end of an epoch only when this long has passed since the
# last drawing, and always after the last epoch: drawing it took 0.3-0.7 s, a tenth of an
# epoch of the default N-MNIST run (benchmarks/RESULTS.md). Long runs still see it every epoch.
PLOT_EVERY_S = 30.0
METRICS_FILE = "metrics.jsonl"
# Files of a run that trained (a new run refuses a folder holding one). config.toml and
# config.json alone are a run that stopped before its first epoch ended: it restarts there.
RUN_RESULTS = (METRICS_FILE, "summary.json", "training.png", NETWORK_FILE, CHECKPOINT_LATEST, CHECKPOINT_BEST)


def trained_results(run_dir: Path) -> list[str]:
    """The files of :data:`RUN_RESULTS` in ``run_dir``. training.png beside config.json
    and nothing else of them is no result: the figure of an epoch whose checkpoint could
    not be written (a full disk), drawn from metrics that never reached the disk; that run
    restarts in its folder. Without config.json it may be anyone's figure, and counts."""
    found = [name for name in RUN_RESULTS if (Path(run_dir) / name).exists()]
    return [] if found == ["training.png"] and (Path(run_dir) / "config.json").exists() else found


# The checkpoint files each --checkpoints policy keeps (CHECKPOINT_POLICIES); a save
# deletes the others, which would be stale beside it.
KEPT_CHECKPOINTS = {"all": (CHECKPOINT_LATEST, CHECKPOINT_BEST), "latest": (CHECKPOINT_LATEST,), "none": ()}


# Signals that stop training at the next batch boundary with a checkpoint (Ctrl-C, and what
# SLURM, timeout and docker stop send), and what a second one of each does: abort at once.
STOP_SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class TrainingInterrupted(Exception):
    """Training stopped at a batch boundary because of Ctrl-C (SIGINT) or SIGTERM
    (``signum``).

    The message says where. With a run folder, ``checkpoint-latest.npz`` holds the
    state at that point, and :func:`resume` continues from it exactly.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class Trainer:
    """Trains a :class:`Network` on a :class:`Dataset` with BPTT.

    Parameters
    ----------
    config : the run configuration.
    dataset : the loaded dataset (its ``time_steps``, if fixed by framing, must equal
        ``config.time_steps``).
    network : optional prebuilt network; default: an MLP ``n_inputs-hidden-n_classes``.
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, network: Network | None = None):
        config.validate()
        for name, split in (("train", dataset.train), ("test", dataset.test)):
            if not len(split):
                raise DataError(f"dataset {dataset.name!r}: the {name} split holds no samples; give it at least one")
        if dataset.encoding == "frames" and dataset.time_steps is not None and dataset.time_steps != config.time_steps:
            raise ConfigError(f"dataset is framed with T={dataset.time_steps} but time_steps={config.time_steps}")
        held = with_validation(dataset, config.val_fraction, config.seed)  # none held: _fit says so
        # A data set smaller than one batch trains in one smaller batch either way; one the
        # hold-out leaves below a batch was most likely a typo (0.9999 for 0.09999).
        if len(held.train) < config.batch_size <= len(dataset.train):
            raise ConfigError(f"--val-fraction {config.val_fraction:g} leaves {len(held.train)} of the "
                              f"{len(dataset.train)} training samples to train on, less than one batch "
                              f"(--batch-size {config.batch_size}); hold out less, or give a smaller --batch-size")
        dataset = held
        self.dataset = dataset
        self.config = config
        if config.dev_interval == AUTO:  # saved resolved, so that the saved run repeats on any data
            self.config = config = dataclasses.replace(config, dev_interval=auto_dev_interval(self.batches_per_epoch()))
        events = max(input_events(split.inputs, dataset.encoding, config.time_steps)
                     for split in (dataset.train, dataset.test))
        # a batch larger than its split holds the split (more memory would never be used)
        largest = max(len(dataset.test), len(dataset.val) if dataset.val is not None else 0)
        check_memory(dataclasses.replace(config, batch_size=min(config.batch_size, len(dataset.train)),
                                         eval_batch_size=min(config.eval_batch_size, largest)),
                     dataset.n_inputs, dataset.n_classes, events, dataset.encoding)
        init_rng = np.random.default_rng(config.seed)
        self.network = network or build_network(config, dataset, init_rng)
        self.optimizer = Optimizer(config.optimizer, config.lr, weight_decay=config.weight_decay)
        self.schedule = Schedule(config.schedule, config.step_epochs, warmup_epochs=config.warmup_epochs,
                                 total_epochs=config.epochs)
        self.loss_fn = get_loss(config.loss)
        self.rng = np.random.default_rng([config.seed, 1])
        check_something_develops(config, self.network.layer_labels(), [bool(getattr(layer, "develops", False))
                                                                       for layer in self.network.layers])
        self.structure = make_structure(config.structure, self.network, config.sdsnn, config.target_sparsity,
                                        self.development_steps() // 2, config.optimizer != "sgd", config.seed,
                                        self.batches_per_epoch() if config.dev_interval else None,
                                        config.dev_interval or None)
        self.metrics: list[dict] = []
        self.epoch = 0
        self.batches_seen = 0
        self.in_epoch: EpochProgress | None = None
        self.stop_signal: int | None = None  # the signal that asked training to stop
        # Polled before each batch where no signal can reach training (a Dask worker's
        # thread): True stops it as Ctrl-C does. See evsim.sweep.point.
        self.stop_when: Callable[[], bool] | None = None
        self.plotted_at = -math.inf
        self.checkpoints = CheckpointWriter()
        self.saving: int | None = None  # the epoch whose files are being taken for the writer
        self.run_id = new_run_id()
        self.keep_checkpoints = "all"  # one of CHECKPOINT_POLICIES

    def development_steps(self) -> int:
        """Development steps the whole run will take."""
        if self.config.dev_interval == 0:
            return self.config.epochs
        # Steps fire on batches_seen % dev_interval, counted across epochs.
        return self.batches_per_epoch() * self.config.epochs // self.config.dev_interval

    def batches_per_epoch(self) -> int:
        return -(-len(self.dataset.train) // self.config.batch_size)

    def compression(self) -> float:
        """The weights zero or absent over the weights of the same architecture with every
        synapse present (the whole network, biases excluded; a kernel counts its K x K
        weights), as the SD-SNN authors' code computes it."""
        return zero_or_absent(self.network)

    def developing_hidden(self) -> list[tuple[int, object]]:
        """``(index, layer)`` of the hidden layers with synapses of their own (pooling has none):
        their units (neurons; a convolution's filters) are what pruning removes."""
        return [(k, layer) for k, layer in enumerate(self.network.layers[:-1]) if hasattr(layer, "store")]

    def removed_neurons(self, rows: list[dict] = ()) -> dict[int, np.ndarray]:
        """Per hidden layer with synapses (by layer index), bool ``[n_out]``: the units that
        have lost every synapse of the original structure, i.e. that have been without any
        incoming synapse at some point (now, or at a development step: the ``neurons_removed``
        of the metrics rows, and of ``rows`` not yet appended). Synapses regrown onto such a
        unit later are new ones: it stays removed from the original structure, and counts as
        revived while it has them (see :func:`~evsim.compression.units_with_input`)."""
        masks = {k: ~units_with_input(layer) for k, layer in self.developing_hidden()}
        for row in [*self.metrics, *rows]:
            for k, neurons in row.get("neurons_removed", {}).items():
                masks[int(k)][neurons] = True
        return masks

    def neurons_pruned(self, rows: list[dict] = ()) -> float:
        """Fraction of hidden units (neurons; a convolution's filters) pruned from the original
        structure (:meth:`removed_neurons`), whether or not regrowth revived them since: the
        number users mean by "neurons pruned", which regrowth does not lower."""
        masks = self.removed_neurons(rows)
        total = sum(mask.size for mask in masks.values())
        return sum(int(mask.sum()) for mask in masks.values()) / total if total else 0.0

    def neurons_revived(self, rows: list[dict] = ()) -> float:
        """Fraction of hidden units pruned from the original structure that regrown synapses
        made alive again (they listen, with only regrown incoming synapses)."""
        masks = self.removed_neurons(rows)
        total = sum(mask.size for mask in masks.values())
        layers = dict(self.developing_hidden())
        revived = sum(int((mask & units_with_input(layers[k])).sum()) for k, mask in masks.items())
        return revived / total if total else 0.0

    def position(self) -> str:
        """Where training stands, e.g. ``"epoch 3/12, batch 8 of 40"``."""
        where = f"epoch {self.epoch + 1}/{self.config.epochs}"
        if self.in_epoch is not None:
            where += f", batch {-(-self.in_epoch.position // self.config.batch_size) + 1} of {self.batches_per_epoch()}"
        return where

    def develop(self, lr: float) -> dict:
        """One structural development step; returns its metrics row."""
        before = {k: units_with_input(layer) for k, layer in self.developing_hidden()}
        layers = self.structure.develop(self.network, lr)
        # Recorded so that "neurons pruned" counts them after regrowth revives them, and a
        # resumed run (which restores the metrics) counts them too.
        lost = {k: before[k] & ~units_with_input(layer) for k, layer in self.developing_hidden()}
        removed = {str(k): np.flatnonzero(mask).tolist() for k, mask in lost.items() if mask.any()}
        row = {"type": "development", "step": self.structure.step, "epoch": self.epoch + 1,
               "batch": self.batches_seen, "synapses": self.network.synapses,
               "compression": round(self.compression(), 6), **({"neurons_removed": removed} if removed else {})}
        return {**row, "neurons_pruned": round(self.neurons_pruned([row]), 6),
                "neurons_revived": round(self.neurons_revived([row]), 6), "layers": layers}

    def _events(self, inputs):
        return encode_events(inputs, self.dataset.encoding, self.config.time_steps, self.rng)

    def _check_finite(self, loss: float, where: str, lr: float | None = None, weights: bool = True) -> None:
        """:func:`~evsim.divergence.check_finite_training` at ``where``, with ``lr`` in use
        (default: this epoch's)."""
        in_use = self.config.lr * self.schedule.factor(self.epoch) if lr is None else lr
        check_finite_training(self.network, loss, where, in_use, self.config.lr, self.epoch, weights)

    def train_epoch(self, progress: bool = True) -> tuple[float, float]:
        """One pass over the shuffled training split, or what is left of an interrupted
        one (``self.in_epoch``); returns (mean loss, accuracy).

        Raises
        ------
        TrainingInterrupted
            Before a batch, when a stop was requested (Ctrl-C, SIGTERM): ``self.in_epoch`` then
            says where the epoch stands, so that it can be checkpointed and finished later.
        """
        split = self.dataset.train
        if self.in_epoch is None:
            self.in_epoch = EpochProgress(self.rng.permutation(len(split)))
        done = self.in_epoch
        lr = self.config.lr * self.schedule.factor(self.epoch)
        batch_size = self.config.batch_size
        # disable=None: no bar where stderr is not a terminal (a SLURM log), which gets the epoch lines only
        bar = tqdm(range(done.position, len(done.order), batch_size),
                   desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False, disable=None if progress else True,
                   unit="batch")
        for start in bar:
            if self.stop_signal is None and self.stop_when is not None and self.stop_when():
                self.stop_signal = signal.SIGINT
            if self.stop_signal is not None:
                bar.close()
                done_batches = start // batch_size
                raise TrainingInterrupted(f"stopped in epoch {self.epoch + 1}/{self.config.epochs} "
                                          + (f"after batch {done_batches} of {self.batches_per_epoch()}"
                                             if done_batches else "before its first batch"), self.stop_signal)
            batch = done.order[start:start + batch_size]
            labels = split.labels[batch]
            counts, traces = self.network.forward(self._events(split.inputs[batch]))
            loss, grad_counts = self.loss_fn(counts, labels, self.config.time_steps)
            if not np.isfinite(loss):
                self._check_finite(loss, self.position(), lr)
            would_be = self.structure is not None and self.structure.needs_would_be_grad
            grads = self.network.backward(traces, grad_counts, would_be_grad=would_be)
            if self.structure is not None:
                self.structure.observe(self.network, grads)
            self.optimizer.step(self.network.parameters(grads), lr)
            self.batches_seen += 1
            if self.structure is not None and self.config.dev_interval and self.batches_seen % self.config.dev_interval == 0:
                self.metrics.append(self.develop(lr))
            self._check_finite(loss, self.position(), lr, weights=self.batches_seen % WEIGHT_CHECK_EVERY == 0)
            done.position = start + len(batch)
            done.total_loss += loss * len(batch)
            done.correct += int(np.sum(np.argmax(counts, axis=1) == labels))
            bar.set_postfix(loss=f"{done.total_loss / done.position:.4f}", acc=f"{done.correct / done.position:.3f}")
        self.in_epoch = None
        return done.total_loss / done.position, done.correct / done.position

    def predict(self, inputs) -> tuple[np.ndarray, EnergyReport | None]:
        """Output spike counts ``[N, n_classes]`` for ``inputs`` (rate coding draws from the
        trainer's generator, so a resumed run draws the same), and their operation counts."""
        return run_batches(self.network, inputs, self.dataset.encoding, self.config.time_steps, self.rng,
                           self.config.eval_batch_size, data_source=self.dataset.source)

    def evaluate(self, split: str = "test") -> tuple[float, EnergyReport | None]:
        """Accuracy on ``split`` and its energy report."""
        data = getattr(self.dataset, split)
        counts, report = self.predict(data.inputs)
        return accuracy(counts, data.labels), report

    # ------------------------------------------------------------ checkpoints
    def training_state(self) -> TrainingState:
        """Everything needed to continue this run exactly (see :mod:`evsim.checkpoint`)."""
        return TrainingState(
            network=self.network, config=self.config.to_dict(), data_source=self.dataset.source,
            epoch=self.epoch, batches_seen=self.batches_seen, metrics=self.metrics,
            optimizer={"name": self.optimizer.name, "steps": self.optimizer.steps},
            rng={"trainer": self.rng.bit_generator.state},
            structure=None if self.structure is None else self.structure.state_dict(),
            in_epoch=None if self.in_epoch is None else dict(vars(self.in_epoch)),
            run_id=self.run_id,
        )

    def restore(self, state: TrainingState) -> None:
        """Continue from ``state``, a checkpoint of a run with this trainer's configuration and data.

        ``state`` is taken as checked by :func:`~evsim.checkpoint.load_checkpoint`; what
        depends on the data found now is checked here, before anything changes.

        Raises
        ------
        CheckpointError
            If the checkpoint belongs to another configuration, data source, network
            shape, optimizer or structure controller, or its position (in-epoch order,
            batches seen) does not fit the training split.
        """
        mine = {k: v for k, v in self.config.to_dict().items() if k != "out"}
        theirs = {k: v for k, v in with_added_keys(state.config).items() if k != "out"}
        if mine != theirs:
            changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            raise CheckpointError(f"checkpoint belongs to a run with a different configuration ({', '.join(changed)})")
        if state.data_source != self.dataset.source:
            raise CheckpointError(f"checkpoint was trained on {state.data_source!r} data but the data found now is "
                                  f"{self.dataset.source!r}; make the same data available (see --source, --data-dir)")
        if state.network.sizes != self.network.sizes or state.optimizer["name"] != self.optimizer.name:
            raise CheckpointError(f"checkpoint network {state.network.sizes} ({state.optimizer['name']}) does not match "
                                  f"the configuration: {self.network.sizes} ({self.optimizer.name})")
        if self.config.structure == "none":  # an older evsim marked the layers --develop names even so
            no_development(state.network)
        develops = [layer.develops for layer in self.network.layers]
        if [layer.develops for layer in state.network.layers] != develops:
            raise CheckpointError(f"checkpoint's developing layers (l<k>_develops) do not match the configuration's "
                                  f"{develops}; restore the file, or re-run training")
        self._check_position(state)
        if self.structure is not None:
            expected, saved = set(self.structure.state_dict()), set(state.structure or {})
            if expected != saved:
                raise CheckpointError(f"checkpoint structure state does not match this evsim's {self.config.structure} "
                                      f"controller (missing: {sorted(expected - saved)}, "
                                      f"unexpected: {sorted(saved - expected)})")
            self.structure.load_state_dict(state.structure)
        state.network.set_path(self.config.path)
        self.network = state.network
        self.optimizer.steps = state.optimizer["steps"]
        self.rng.bit_generator.state = state.rng["trainer"]
        self.metrics = list(state.metrics)
        self.epoch = state.epoch
        self.batches_seen = state.batches_seen
        self.in_epoch = None if state.in_epoch is None else EpochProgress(**state.in_epoch)
        self.run_id = state.run_id or self.run_id

    def _check_position(self, state: TrainingState) -> None:
        """The checkpoint's place in training must fit the training split: an interrupted
        epoch's order covers it, and the batches seen are those of its finished epochs
        and of the part of this one that is done."""
        samples, per_epoch = len(self.dataset.train), self.batches_per_epoch()
        expected = state.epoch * per_epoch
        if state.in_epoch is not None:
            if len(state.in_epoch["order"]) != samples:
                raise CheckpointError(f"checkpoint's in-epoch order (in_epoch.order) covers "
                                      f"{len(state.in_epoch['order'])} samples but the training split has {samples}; "
                                      "make the run's data available (see --source, --data-dir), or re-run training")
            expected += state.in_epoch["position"] // self.config.batch_size
        if state.batches_seen != expected:
            part = "" if state.in_epoch is None else " and the part of this one done"
            # a run saved without a data fingerprint gets here on changed data too
            raise CheckpointError(f"checkpoint's batches_seen is {state.batches_seen}, but {state.epoch} epochs of "
                                  f"{per_epoch} batches{part} make {expected}; restore the file, or re-run training "
                                  f"(or, if this training split of {samples} samples is not the run's, make the run's "
                                  "data available)")

    def _save_epoch_end(self, run_dir: Path, best: bool, plot: bool) -> None:
        """Checkpoint (latest; best too when ``best``), the network and the metrics, written
        on the writer's thread, and, with ``plot``, the plot."""
        names = [name for name in self.kept() if name != CHECKPOINT_BEST or best]
        check_lock_in_place(run_dir)
        self.saving = self.epoch
        self.checkpoints.save([run_dir / name for name in names], self.training_state(), run_dir / NETWORK_FILE,
                              run_dir / METRICS_FILE, remove=self.not_kept(run_dir),
                              check=lambda: check_lock_in_place(run_dir))
        self.saving = None
        if plot:
            self._plot(run_dir)

    def kept(self) -> tuple[str, ...]:
        """The checkpoint files this run's policy keeps."""
        return KEPT_CHECKPOINTS[self.keep_checkpoints]

    def not_kept(self, run_dir: Path) -> list[Path]:
        """The checkpoint files the policy does not keep (an earlier session's, under another one)."""
        return [run_dir / name for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST) if name not in self.kept()]

    def _save_results(self, run_dir: Path) -> None:
        save_network(run_dir / NETWORK_FILE, self.network, self.run_id,
                     trained_on(self.config.dataset, self.dataset.source))
        write_jsonl_atomic(run_dir / METRICS_FILE, self.metrics)
        self._plot(run_dir)

    def _plot(self, run_dir: Path) -> None:
        run = {**self.config.to_dict(), "name": Path(run_dir).resolve().name,
               "batches_per_epoch": self.batches_per_epoch()}
        with locked_writes(run_dir):
            plot_training(self.metrics, run_dir / "training.png", self.dataset.source, run)
        self.plotted_at = time.perf_counter()

    # --------------------------------------------------------------- the loop
    def fit(self, run_dir: Path | str | None = None, progress: bool = True,
            echo: Callable[[str], None] = print) -> dict:
        """Train until ``config.epochs`` epochs are done; write the run folder if ``run_dir`` is given.

        BLAS is held to one thread meanwhile: its only use here is a small matmul, and
        OpenBLAS threads spinning after it starve Numba's parallel kernels (measured:
        a 784-800-10 training batch takes about 2.2x longer with multithreaded BLAS).
        Numba's thread count is restored afterwards. Checkpoints, with the network and
        metrics files, are written on a background thread
        (:class:`~evsim.checkpoint.CheckpointWriter`) while the next epoch trains; fit
        returns once the last one is on disk.

        Raises
        ------
        TrainingInterrupted
            After Ctrl-C or SIGTERM: the current batch is finished and, with ``run_dir``, the
            state is saved to ``checkpoint-latest.npz`` first.
        CheckpointError
            If a checkpoint could not be written (disk full, no permission).
        """
        run_dir = None if run_dir is None else Path(run_dir)
        threads = numba.get_num_threads()
        self.stop_signal = None  # a fit after an interrupted one continues
        try:
            # The run lock (reentrant: train() and resume() hold it already) covers the
            # whole run, the cleaning of stale temporaries at its start included.
            with run_lock(run_dir), threadpool_limits(limits=1, user_api="blas"), self._stop_on_signals():
                return self._fit(run_dir, progress, echo)
        except MemoryError:  # what check_memory could not foresee (other processes, fragmentation)
            with contextlib.suppress(CheckpointError):  # the last epoch's checkpoint, which the message offers
                self.checkpoints.wait()
            raise ConfigError(self._out_of_memory(run_dir)) from None
        finally:
            numba.set_num_threads(threads)
            self.checkpoints.wait()  # an interrupted run's checkpoint is on disk before fit returns

    def _out_of_memory(self, run_dir: Path | None) -> str:
        """The one line for a MemoryError during training: what to reduce, and what still resumes."""
        where = f"while saving epoch {self.saving}" if self.saving is not None else f"at {self.position()}"
        line = (f"out of memory {where}; reduce --batch-size, --time-steps or the network's size"
                + ("" if run_dir is None else f" in a new run (evsim train --config {Path(run_dir) / CONFIG_TOML} "
                                              "--batch-size N --out NEW_DIR)"))
        if run_dir is not None and (Path(run_dir) / CHECKPOINT_LATEST).exists():
            line += f", or free memory and continue this one from its last checkpoint: evsim train --resume {run_dir}"
        return line

    @contextmanager
    def _stop_on_signals(self):
        """First Ctrl-C or SIGTERM: finish the current batch, then stop (see :meth:`train_epoch`);
        a second one aborts at once (KeyboardInterrupt; SIGTERM's default), without a checkpoint."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def request_stop(signum, frame):
            self.stop_signal = self.stop_signal or signum
            signal.signal(signum, STOP_SIGNALS[signum])

        # A signal the process was started ignoring stays ignored (Ctrl-C, for a background job).
        previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS
                    if signal.getsignal(signum) is not signal.SIG_IGN}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else STOP_SIGNALS[signum])

    def _fit(self, run_dir: Path | None, progress: bool, echo: Callable[[str], None]) -> dict:
        if self.config.threads:
            numba.set_num_threads(self.config.threads)
        if run_dir is not None:
            check_lock_in_place(run_dir)  # still the folder locked, after the data loaded
            # Under the run lock (fit holds it): no live writer of this folder leaves them.
            removed = clean_stale_temporaries(run_dir)
            if removed:
                echo(f"removed {len(removed)} temporary files that killed runs left in {run_dir}")
            # The run folder's first files, written only now that the data has loaded and the
            # network is built: a run that fails before leaves no folder behind.
            root = self.dataset.meta.get("root")
            root = None if root is None else str(Path(root).resolve())
            text = config_toml(self.config, self.dataset.source, root, self.dataset.encoding)
            write_bytes_atomic(run_dir / CONFIG_TOML, text.encode())
            write_json_atomic(run_dir / "config.json", {**self.config.to_dict(), "data_source": self.dataset.source,
                                                        "data_fingerprint": self.dataset.meta.get("fingerprint"),
                                                        "data_root": root,
                                                        "run_id": self.run_id, "checkpoints": self.keep_checkpoints,
                                                        "network": self.network.describe(),
                                                        "path_table": conv_paths.HOST.name})
            if self.epoch and self.in_epoch is None:
                self._save_results(run_dir)  # a run killed between its checkpoint and these files
                if self.epoch >= self.config.epochs:  # nothing left to train, so no save to tidy after
                    for path in self.not_kept(run_dir):
                        path.unlink(missing_ok=True)
                if self.keep_checkpoints == "all" and repair_best(run_dir, self.metrics, self.epoch,
                                                                  CHECKPOINT_LATEST, CHECKPOINT_BEST):
                    echo(f"linked {run_dir / CHECKPOINT_BEST} to the latest epoch, the best, which had none (a run "
                         "stopped before linking it, or one that kept only the latest checkpoint)")
        finished = [row for row in self.metrics if row.get("type") == "epoch"]
        # checkpoint-best is chosen on the validation split; without one, on the test split as before.
        chosen = "val_acc" if self.dataset.val is not None else "test_acc"
        best = max((row[chosen] for row in finished), default=None)
        # wall_s stays cumulative over resumed sessions (time while stopped is not counted).
        start = time.perf_counter() - (finished[-1]["wall_s"] if finished else 0.0)
        if self.config.val_fraction and self.dataset.val is None:
            echo(f"NOTE: --val-fraction {self.config.val_fraction} holds out no sample of the {len(self.dataset.train)} "
                 "training samples: no validation split; checkpoint-best is chosen on the test split")
        if self.structure is not None:
            echo(f"structure: {self.config.structure}, {self.development_steps()} development steps "
                 f"({_interval_words(self.config.dev_interval)})")
            prune_start = self.config.sdsnn.prune_start
            steps = self.development_steps()
            if steps == 0:
                echo(f"NOTE: --dev-interval {self.config.dev_interval} is longer than the run's "
                     f"{self.batches_per_epoch() * self.config.epochs} batches: no development step, so the structure "
                     "never develops; add epochs or lower --dev-interval")
            elif self.config.structure == "sdsnn" and steps < prune_start:
                echo(f"NOTE: SD-SNN prunes from development step {prune_start} (2 x --spine-steps) but this run has "
                     f"{steps}: only the spine constraint will run; add epochs or lower --dev-interval or "
                     "--spine-steps")
        while self.epoch < self.config.epochs:
            t0 = time.perf_counter()
            try:
                train_loss, train_acc = self.train_epoch(progress)
            except TrainingInterrupted:
                self._check_finite(0.0, self.position())
                if run_dir is not None and CHECKPOINT_LATEST in self.kept():
                    check_lock_in_place(run_dir)
                    self.checkpoints.save([run_dir / CHECKPOINT_LATEST], self.training_state(),
                                          metrics_path=run_dir / METRICS_FILE, remove=self.not_kept(run_dir),
                                          check=lambda: check_lock_in_place(run_dir))
                raise
            if self.structure is not None and self.config.dev_interval == 0:
                self.metrics.append(self.develop(self.config.lr * self.schedule.factor(self.epoch)))
            self._check_finite(0.0, f"the end of epoch {self.epoch + 1}")
            test_acc, energy = self.evaluate("test")
            val_acc = self.evaluate("val")[0] if self.dataset.val is not None else None
            energy_summary = energy.summary()
            row = {
                "type": "epoch",
                "epoch": self.epoch + 1,
                "data_source": self.dataset.source,
                "train_loss": round(train_loss, 6),
                "train_acc": round(train_acc, 5),
                **({} if val_acc is None else {"val_acc": round(val_acc, 5)}),
                "test_acc": round(test_acc, 5),
                "synapses": self.network.synapses,
                "compression": round(self.compression(), 6),
                "neurons_pruned": round(self.neurons_pruned(), 6),
                "neurons_revived": round(self.neurons_revived(), 6),
                "sops_per_sample": round(energy_summary["sops_per_sample"], 1),
                "energy_uj_per_sample": round(energy_summary["energy_uj_per_sample"], 6),
                # The same activity through every synapse of the architecture: what pruning saved.
                "sops_unpruned_per_sample": round(energy_summary["rows"][1]["acs"], 1),
                # A first layer on analog input (direct encoding) does MACs, not SOPs.
                "macs_per_sample": round(energy_summary["macs_per_sample"], 1),
                "macs_unpruned_per_sample": round(energy_summary["rows"][1]["macs"], 1),
                "energy_uj_unpruned_per_sample": round(energy_summary["rows"][1]["energy_uj"], 6),
                "lr": self.config.lr * self.schedule.factor(self.epoch),
                "epoch_s": round(time.perf_counter() - t0, 3),
                "wall_s": round(time.perf_counter() - start, 3),
            }
            self.metrics.append(row)
            self.epoch += 1
            improved = best is None or row[chosen] > best
            best = row[chosen] if improved else best
            if run_dir is not None:
                final_epoch = self.epoch == self.config.epochs
                self._save_epoch_end(run_dir, improved,
                                     final_epoch or time.perf_counter() - self.plotted_at >= PLOT_EVERY_S)
            echo(f"epoch {row['epoch']:3d}  loss {train_loss:.4f}  train {100 * train_acc:6.2f}%  "
                 + ("" if val_acc is None else f"val {100 * val_acc:6.2f}%  ")
                 + f"test {100 * test_acc:6.2f}%  synapses {row['synapses']} "
                 f"(compression {100 * row['compression']:.1f}%, neurons pruned {100 * row['neurons_pruned']:.1f}%"
                 + (f", {100 * row['neurons_revived']:.1f}% revived" if row["neurons_revived"] else "") + ")  "
                 f"{row['epoch_s']:.1f}s")
        self.checkpoints.wait()  # the summary is written once the last checkpoint is on disk
        finished = [row for row in self.metrics if row.get("type") == "epoch"]
        last = finished[-1]
        at_best = max(finished, key=lambda row: row[chosen])  # the first epoch of the best, as checkpoint-best
        summary = {
            "dataset": self.dataset.name,
            "data_source": self.dataset.source,
            "test_acc": last["test_acc"],
            # Model selection on the validation split: the honest estimate of the chosen network.
            "val_acc_best": at_best.get("val_acc"),
            "test_acc_at_best_val": at_best["test_acc"] if self.dataset.val is not None else None,
            "best_epoch": at_best["epoch"],
            # The highest test accuracy over epochs, as papers (SD-SNN's too) report it: optimistic,
            # since the test split chose the epoch.
            "best_test_acc": max(row["test_acc"] for row in finished),
            "val_samples": 0 if self.dataset.val is None else len(self.dataset.val),
            "epochs": self.epoch,
            "synapses": self.network.synapses,
            "dense_synapses": self.network.dense_synapses,
            "compression": round(self.compression(), 6),
            "developing_sparsity": round(developing_sparsity(self.network), 6),
            "neurons_pruned": round(self.neurons_pruned(), 6),
            "neurons_revived": round(self.neurons_revived(), 6),
            "sops_per_sample": last["sops_per_sample"],
            "energy_uj_per_sample": last["energy_uj_per_sample"],
            "sop_reduction": _reduction(last["sops_per_sample"], last.get("sops_unpruned_per_sample")),
            "mac_reduction": _reduction(last.get("macs_per_sample", 0.0), last.get("macs_unpruned_per_sample")),
            "energy_reduction": _reduction(last["energy_uj_per_sample"], last.get("energy_uj_unpruned_per_sample")),
            "layers": layer_report(self.network),
            "structure": {"name": self.config.structure,
                          "development_steps": self.structure.step if self.structure is not None else 0},
            "wall_s": round(time.perf_counter() - start, 3),
            "threads": numba.get_num_threads(),
            # ru_maxrss is in KiB on Linux: the process's peak resident memory so far.
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if run_dir is not None:
            check_lock_in_place(run_dir)
            write_json_atomic(run_dir / "summary.json", summary)
        if self.stop_signal is not None:  # it came after the last batch: nothing was cut short
            echo(f"NOTE: {'Ctrl-C' if self.stop_signal == signal.SIGINT else signal.Signals(self.stop_signal).name} "
                 "came after the last batch; the run finished and everything is saved")
        return summary


def _reduction(this: float, unpruned: float | None) -> float | None:
    """1 - this / unpruned (None without the unpruned count, in metrics written before it was)."""
    return round(1.0 - this / unpruned, 6) if unpruned else None


def _load_announced(config: TrainConfig, echo: Callable[[str], None]) -> Dataset:
    """Load the run's dataset and say where it came from."""
    dataset = load_dataset(config.dataset, config.data)
    notice = dataset.meta.get("notice")
    echo(f"data: {dataset.name} ({dataset.source}), {len(dataset.train)} train / {len(dataset.test)} test samples"
         + (f" -- NOTE: {notice}" if notice else ""))
    return dataset


def train(config: TrainConfig, run_dir: Path | None = None, progress: bool = True,
          echo: Callable[[str], None] = print, checkpoints: str = "all",
          stop_when: Callable[[], bool] | None = None) -> dict:
    """Check the configuration, load the dataset and announce its source, train, and
    return the summary. Nothing is written to ``run_dir`` before the data has loaded.
    ``stop_when``, polled before each batch, stops training as Ctrl-C does when it
    returns True (:class:`TrainingInterrupted`, with a checkpoint to resume from).

    Raises
    ------
    ConfigError
        For an invalid configuration or one that cannot fit in memory, before the data is loaded.
    """
    check_before_loading(config.validate())
    _check_policy(checkpoints)
    with run_lock(run_dir):
        if run_dir is not None:  # checked again under the lock: a run that finished while this one waited to start
            check_new_run_dir(Path(run_dir))
        trainer = Trainer(config, _load_announced(config, echo))
        trainer.keep_checkpoints = checkpoints
        trainer.stop_when = stop_when
        return trainer.fit(run_dir, progress, echo)


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a folder for a new run if it holds a run's results, saying what is there:
    a run to continue, a run that cannot be, or only some files of one.

    Raises
    ------
    ConfigError
        Naming what the folder holds and what works.
    """
    found = trained_results(run_dir)
    if not found:
        return
    if (run_dir / CHECKPOINT_LATEST).exists():
        raise ConfigError(f"{run_dir} already holds a training run; continue it with --resume {run_dir}, "
                          "or choose another --out")
    if (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} already holds a training run ({', '.join(found)}) without {CHECKPOINT_LATEST} "
                          "to continue from; choose another --out")
    raise ConfigError(f"{run_dir} holds files of a training run ({', '.join(found)}) but no run configuration "
                      f"(config.json) or {CHECKPOINT_LATEST}; choose another --out, or delete them")


def _check_policy(checkpoints: str) -> None:
    if checkpoints not in CHECKPOINT_POLICIES:
        raise ConfigError(f"unknown checkpoint policy {checkpoints!r}; choose one of {', '.join(CHECKPOINT_POLICIES)}")


def resume(run_dir: Path, progress: bool = True, echo: Callable[[str], None] = print, epochs: int | None = None,
           checkpoints: str | None = None, data_dir: Path | None = None,
           stop_when: Callable[[], bool] | None = None) -> dict:
    """Continue the run in ``run_dir`` exactly from its ``checkpoint-latest.npz``.

    The configuration is the checkpoint's own; the result is bit-identical to the
    same run uninterrupted (same seed and thread count; timing fields apart).

    Parameters
    ----------
    epochs : train until this many epochs instead of the run's own number: extends a
        finished run. The extended run is the run it would have been with ``epochs``
        from the start wherever nothing depends on the total: the cosine schedule and
        the magnitude baseline's pruning ramp are laid out over the total, so they change.
    checkpoints : one of :data:`CHECKPOINT_POLICIES`; default: the run's own (``config.json``).
    data_dir : where the run's data folder is now (moved, or copied to another machine):
        its files must be those the run trained on; the run records the new folder.
    stop_when : as for :func:`train`.

    Raises
    ------
    CheckpointError
        If there is no usable checkpoint, or the data found now is of another source.
    DataError
        If the data files differ from those the run trained on (by the fingerprint its
        ``config.json`` records), or its data folder no longer exists.
    """
    if not isinstance(run_dir, (str, Path)):
        raise CheckpointError(f"resume takes the run's folder, got {type(run_dir).__name__}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: {'is no folder' if run_dir.exists() else 'no such folder'}; give the "
                              "folder of the run to resume (the --out of evsim train)")
    if checkpoints is None:
        checkpoints = saved_checkpoint_policy(run_dir)
    _check_policy(checkpoints)
    with run_lock(run_dir):
        path = run_dir / CHECKPOINT_LATEST
        state = load_checkpoint(path)
        check_belongs(run_dir, path, state.run_id)
        config = dataclasses.replace(TrainConfig.from_dict(state.config), out=str(run_dir))
        check_same_threads(state.config.get("threads"), config.threads, path)
        extends = epochs is not None and epochs != config.epochs
        if extends and epochs <= state.epoch:
            raise ConfigError(f"{run_dir} has trained {state.epoch} epochs; --epochs must be more to extend it, "
                              f"got {epochs}")
        if data_dir is not None:
            check_moved_data_dir(run_dir, data_dir)
        # the place config.json records: a resume that moved the data and trained no epoch
        # rewrote it, not the checkpoint
        place = data_dir if data_dir is not None else recorded_data_dir(run_dir) or config.data.data_dir
        if place is not None and str(place) != str(config.data.data_dir):
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=Path(place)))
            state.config = {**state.config, "data": {**state.config["data"], "data_dir": str(place)}}
        if data_dir is None:
            check_data_dir_exists(run_dir, config.data.data_dir, f"evsim train --resume {run_dir} --data-dir NEW_PLACE",
                                  state.data_source)
        with without_evsim_data():  # the run folded it into its --data-dir when it trained
            dataset = _load_announced(config, echo)
        if data_dir is not None:
            check_loaded_from(run_dir, data_dir, dataset)
        if state.data_source == dataset.source:  # else restore names the other source
            # before anything that depends on the data (the network's size, the batches seen)
            check_run_data(run_dir, folder_data_fingerprint(run_dir), dataset,
                           "resuming would go on with other training samples, and test on other samples, "
                           "possibly some it trained on", data_dir is not None)
        if extends:  # said once the data is known to be the run's
            echo(f"{'extending' if epochs > config.epochs else 'shortening'} {run_dir} from {config.epochs} to "
                 f"{epochs} epochs")
            config = dataclasses.replace(config, epochs=epochs)
            state.config = {**state.config, "epochs": epochs}
        trainer = Trainer(config, dataset)
        trainer.keep_checkpoints = checkpoints
        trainer.stop_when = stop_when
        try:
            trainer.restore(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        note = other_machine_note(run_dir, trainer.network)
        if note:
            echo(note)
        echo(f"resuming {run_dir} at {trainer.position()}" if trainer.epoch < config.epochs
             else f"{run_dir} has finished all {config.epochs} epochs: nothing left to train")
        return trainer.fit(run_dir, progress, echo)


def other_machine_note(run_dir: Path, network: Network) -> str | None:
    """A NOTE where a convolutional run goes on on another kind of machine than it trained
    on (its config.json's ``path_table``): the convolutions then choose their paths by
    another table and sum in another order, so the run goes on, but not bit for bit."""
    path = Path(run_dir) / "config.json"
    try:
        check_regular(path, "run configuration (config.json)", CheckpointError)
        recorded = json.loads(path.read_text()).get("path_table")
    except (OSError, ValueError, AttributeError, CheckpointError):  # unreadable: the resume repairs the file
        return None
    here = conv_paths.HOST.name
    if not isinstance(recorded, str) or recorded == here or not any(hasattr(layer, "filters")
                                                                    for layer in network.layers):
        return None
    return (f"NOTE: {run_dir} trained on a machine with {recorded.upper()} and goes on here with {here.upper()}: "
            "its convolutions sum in another order, so it continues, but not bit for bit as it would have there")


def check_same_threads(saved, available: int, path: Path) -> None:
    """Refuse to resume on fewer Numba threads than the run trained with: the parallel
    kernels' sums would go another way, and the run would not be the one it was.

    Raises
    ------
    ConfigError
        Naming both counts and the fix.
    """
    if isinstance(saved, int) and saved != available:
        raise ConfigError(f"{path} was trained with {saved} Numba threads and only {available} are available here "
                          f"(NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}); an exact resume needs {saved}: "
                          f"resume on a machine with {saved} cores, or with NUMBA_NUM_THREADS unset or {saved}")


def saved_checkpoint_policy(run_dir: Path) -> str:
    """The ``checkpoints`` policy a run folder's ``config.json`` records ("all" if none,
    or if the file is unreadable: the reader of the whole file names that damage).

    Raises
    ------
    CheckpointError
        Naming the file, if it holds no object of options or no policy this evsim knows.
    """
    path = Path(run_dir) / "config.json"
    check_regular(path, "run configuration (config.json)", CheckpointError)  # a FIFO would block the read
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return "all"
    if not isinstance(values, dict):
        stored_config(values, path)  # refuses it in the words every command uses
    policy = values.get("checkpoints", "all")
    if policy not in CHECKPOINT_POLICIES:
        raise CheckpointError(f"{path}: invalid stored configuration (checkpoints must be one of "
                              f"{', '.join(CHECKPOINT_POLICIES)}, got {policy!r}); restore the file, or give "
                              "--checkpoints")
    return policy
