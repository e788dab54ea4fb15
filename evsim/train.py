"""Training: epochs, batches, evaluation, metrics and the run folder.

Python owns epochs and batches (progress, schedules, files); Numba kernels own one
batch's time loop. A run folder holds::

    config.json     the resolved configuration
    metrics.jsonl   one JSON object per epoch
    summary.json    the final result
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numba
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from evsim.data import DataOptions, Dataset, load_dataset
from evsim.checkpoint import NETWORK_FILE, save_network
from evsim.data.encoding import encode_batch
from evsim.energy import EnergyReport, count_network
from evsim.errors import ConfigError
from evsim.files import write_json_atomic, write_jsonl_atomic
from evsim.kernels.events import dense_to_events
from evsim.loss import get_loss
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.optim import Optimizer, Schedule
from evsim.plots import plot_training
from evsim.structure import STRUCTURES, SDSNNConfig, make_structure


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved as ``config.json``)."""

    dataset: str = "mnist"
    data: DataOptions = field(default_factory=DataOptions)
    epochs: int = 15
    batch_size: int = 100
    time_steps: int = 20
    hidden: tuple[int, ...] = (800,)
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_epochs: int = 30
    warmup_epochs: int = 0
    loss: str = "mse"
    lif: LIFParameters = LIFParameters()
    path: str = "auto"
    seed: int = 0
    threads: int = 0
    eval_batch_size: int = 500
    structure: str = "none"
    dev_interval: int = 0
    sdsnn: SDSNNConfig = SDSNNConfig()
    target_sparsity: float = 0.5
    out: str = ""

    def validate(self) -> "TrainConfig":
        for name in ("epochs", "batch_size", "time_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden layer sizes must be positive integers, got {self.hidden}")
        if self.structure not in STRUCTURES:
            raise ConfigError(f"unknown structure {self.structure!r}; choose one of {', '.join(STRUCTURES)}")
        if self.dev_interval < 0:
            raise ConfigError(f"dev_interval must be >= 0 (0 = once per epoch), got {self.dev_interval}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = all cores), got {self.threads}")
        get_loss(self.loss)
        Optimizer(self.optimizer, self.lr, weight_decay=self.weight_decay)
        Schedule(self.schedule)
        self.lif.validate()
        return self

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["data"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in out["data"].items()}
        out["lif"] = self.lif._asdict()
        out["sdsnn"] = dataclasses.asdict(self.sdsnn)
        out["hidden"] = list(self.hidden)
        return out


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"800"`` or ``"800,400"`` -> ``(800,)`` / ``(800, 400)``."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--hidden must be comma-separated integers like 800 or 800,400, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


def accuracy(counts: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose most active output neuron is the label (ties: lowest index)."""
    return float(np.mean(np.argmax(counts, axis=1) == labels))


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
        self.config = config.validate()
        if dataset.time_steps is not None and dataset.time_steps != config.time_steps:
            raise ConfigError(f"dataset is framed with T={dataset.time_steps} but time_steps={config.time_steps}")
        self.dataset = dataset
        init_rng = np.random.default_rng(config.seed)
        self.network = network or Network.mlp([dataset.n_inputs, *config.hidden, dataset.n_classes], init_rng,
                                              config.lif, config.path)
        self.optimizer = Optimizer(config.optimizer, config.lr, weight_decay=config.weight_decay)
        self.schedule = Schedule(config.schedule, config.step_epochs, warmup_epochs=config.warmup_epochs,
                                 total_epochs=config.epochs)
        self.loss_fn = get_loss(config.loss)
        self.rng = np.random.default_rng([config.seed, 1])
        self.structure = make_structure(config.structure, self.network, config.sdsnn, config.target_sparsity,
                                        self.development_steps() // 2, config.optimizer != "sgd", config.seed)
        self.metrics: list[dict] = []
        self.epoch = 0
        self.batches_seen = 0

    def development_steps(self) -> int:
        """Development steps the whole run will take."""
        per_epoch = 1 if self.config.dev_interval == 0 else -(-len(self.dataset.train) // self.config.batch_size) // self.config.dev_interval
        return per_epoch * self.config.epochs

    def compression(self) -> float:
        """1 - synapses / synapses of the same architecture fully connected (whole network)."""
        return 1.0 - self.network.synapses / self.network.dense_synapses

    def neurons_pruned(self) -> float:
        """Fraction of hidden neurons that are dead."""
        hidden = self.network.layers[:-1]
        total = sum(layer.n_out for layer in hidden)
        return sum(int((~layer.alive).sum()) for layer in hidden) / total if total else 0.0

    def develop(self, lr: float) -> dict:
        """One structural development step; returns its metrics row."""
        layers = self.structure.develop(self.network, lr)
        return {"type": "development", "step": self.structure.step, "epoch": self.epoch + 1,
                "batch": self.batches_seen, "synapses": self.network.synapses,
                "compression": round(self.compression(), 6), "neurons_pruned": round(self.neurons_pruned(), 6),
                "layers": layers}

    def _events(self, inputs: np.ndarray):
        drive = encode_batch(inputs, self.dataset.encoding, self.config.time_steps, self.rng)
        return dense_to_events(drive)

    def train_epoch(self, progress: bool = True) -> tuple[float, float]:
        """One pass over the shuffled training split; returns (mean loss, accuracy)."""
        split = self.dataset.train
        order = self.rng.permutation(len(split))
        lr = self.config.lr * self.schedule.factor(self.epoch)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(range(0, len(order), self.config.batch_size), desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                   leave=False, disable=not progress, unit="batch")
        for start in bar:
            batch = order[start:start + self.config.batch_size]
            labels = split.labels[batch]
            counts, traces = self.network.forward(self._events(split.inputs[batch]))
            loss, grad_counts = self.loss_fn(counts, labels, self.config.time_steps)
            if not np.isfinite(loss):
                raise ConfigError(f"training diverged (loss {loss}) at epoch {self.epoch + 1}; lower --lr")
            dense_grad = self.structure is not None and self.structure.needs_dense_grad
            self.network.backward(traces, grad_counts, dense_grad=dense_grad)
            if self.structure is not None:
                self.structure.observe(self.network)
            self.optimizer.step(self.network.parameters(), lr)
            self.network.sync_weights()
            self.batches_seen += 1
            if self.structure is not None and self.config.dev_interval and self.batches_seen % self.config.dev_interval == 0:
                self.metrics.append(self.develop(lr))
            total_loss += loss * len(batch)
            correct += int(np.sum(np.argmax(counts, axis=1) == labels))
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        return total_loss / seen, correct / seen

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, EnergyReport | None]:
        """Output spike counts ``[N, n_classes]`` for ``inputs``, and the exact operation
        counts of those forward passes (counting is O(events), cheap enough to stay on)."""
        out, report = [], None
        analog = self.dataset.encoding == "direct"
        for start in range(0, len(inputs), self.config.eval_batch_size):
            counts, traces = self.network.forward(self._events(inputs[start:start + self.config.eval_batch_size]))
            out.append(counts)
            batch = count_network(self.network, traces, analog, counts.shape[0], data_source=self.dataset.source)
            report = batch if report is None else report.add(batch)
        return (np.concatenate(out) if out else np.zeros((0, self.dataset.n_classes), np.float32)), report

    def evaluate(self, split: str = "test") -> tuple[float, EnergyReport | None]:
        """Accuracy on ``split`` and its energy report."""
        data = getattr(self.dataset, split)
        counts, report = self.predict(data.inputs)
        return accuracy(counts, data.labels), report

    def fit(self, run_dir: Path | None = None, progress: bool = True,
            echo: Callable[[str], None] = print) -> dict:
        """Train for ``config.epochs`` epochs; write the run folder if ``run_dir`` is given.

        BLAS is held to one thread meanwhile: its only use here is a small matmul, and
        OpenBLAS threads spinning after it starve Numba's parallel kernels (measured:
        a 784-800-10 training batch takes about 2.2x longer with multithreaded BLAS).
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(run_dir, progress, echo)

    def _fit(self, run_dir: Path | None, progress: bool, echo: Callable[[str], None]) -> dict:
        if self.config.threads:
            numba.set_num_threads(self.config.threads)
        if run_dir is not None:
            write_json_atomic(run_dir / "config.json", {**self.config.to_dict(), "data_source": self.dataset.source})
        start = time.perf_counter()
        best = max((row["test_acc"] for row in self.metrics if row.get("type") == "epoch"), default=0.0)
        if self.structure is not None:
            echo(f"structure: {self.config.structure}, {self.development_steps()} development steps "
                 f"({'one per epoch' if self.config.dev_interval == 0 else f'every {self.config.dev_interval} batches'})")
        while self.epoch < self.config.epochs:
            t0 = time.perf_counter()
            train_loss, train_acc = self.train_epoch(progress)
            if self.structure is not None and self.config.dev_interval == 0:
                self.metrics.append(self.develop(self.config.lr * self.schedule.factor(self.epoch)))
            test_acc, energy = self.evaluate("test")
            energy_summary = energy.summary()
            best = max(best, test_acc)
            row = {
                "type": "epoch",
                "epoch": self.epoch + 1,
                "train_loss": round(train_loss, 6),
                "train_acc": round(train_acc, 5),
                "test_acc": round(test_acc, 5),
                "synapses": self.network.synapses,
                "compression": round(self.compression(), 6),
                "neurons_pruned": round(self.neurons_pruned(), 6),
                "sops_per_sample": round(energy_summary["sops_per_sample"], 1),
                "energy_uj_per_sample": round(energy_summary["energy_uj_per_sample"], 6),
                "lr": self.config.lr * self.schedule.factor(self.epoch),
                "epoch_s": round(time.perf_counter() - t0, 3),
                "wall_s": round(time.perf_counter() - start, 3),
            }
            self.metrics.append(row)
            self.epoch += 1
            echo(f"epoch {row['epoch']:3d}  loss {train_loss:.4f}  train {100 * train_acc:6.2f}%  "
                 f"test {100 * test_acc:6.2f}%  synapses {row['synapses']} "
                 f"(compression {100 * row['compression']:.1f}%, neurons pruned {100 * row['neurons_pruned']:.1f}%)  "
                 f"{row['epoch_s']:.1f}s")
            if run_dir is not None:
                save_network(run_dir / NETWORK_FILE, self.network)
                write_jsonl_atomic(run_dir / "metrics.jsonl", self.metrics)
                plot_training(self.metrics, run_dir / "training.png", self.dataset.source)
        summary = {
            "dataset": self.dataset.name,
            "data_source": self.dataset.source,
            "test_acc": self.metrics[-1]["test_acc"],
            "best_test_acc": best,
            "epochs": self.epoch,
            "synapses": self.network.synapses,
            "dense_synapses": self.network.dense_synapses,
            "compression": round(self.compression(), 6),
            "neurons_pruned": round(self.neurons_pruned(), 6),
            "sops_per_sample": self.metrics[-1]["sops_per_sample"],
            "energy_uj_per_sample": self.metrics[-1]["energy_uj_per_sample"],
            "structure": {"name": self.config.structure,
                          "development_steps": self.structure.step if self.structure is not None else 0},
            "wall_s": round(time.perf_counter() - start, 3),
            "threads": numba.get_num_threads(),
        }
        if run_dir is not None:
            write_json_atomic(run_dir / "summary.json", summary)
        return summary


def train(config: TrainConfig, run_dir: Path | None = None, progress: bool = True,
          echo: Callable[[str], None] = print) -> dict:
    """Load the dataset, announce its source, train, and return the summary."""
    dataset = load_dataset(config.dataset, config.data)
    notice = dataset.meta.get("notice")
    echo(f"data: {dataset.name} ({dataset.source}), {len(dataset.train)} train / {len(dataset.test)} test samples"
         + (f" -- NOTE: {notice}" if notice else ""))
    return Trainer(config, dataset).fit(run_dir, progress, echo)
