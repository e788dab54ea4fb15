"""Figures for run folders (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from evsim.files import write_bytes_atomic


def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported at the first figure: importing it
    took a quarter of a second, a third of every evsim command's start-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())


def plot_training(metrics: list[dict], path: Path, data_source: str) -> None:
    """Test/train accuracy, compression and pruned-neuron fraction over training."""
    epochs = [row for row in metrics if row.get("type") == "epoch"]
    dev = [row for row in metrics if row.get("type") == "development"]
    fig, (ax_acc, ax_struct) = _pyplot().subplots(1, 2, figsize=(11, 4))
    ax_acc.plot([r["epoch"] for r in epochs], [100 * r["test_acc"] for r in epochs], "o-", label="test")
    ax_acc.plot([r["epoch"] for r in epochs], [100 * r["train_acc"] for r in epochs], "s--", label="train")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"accuracy (data: {data_source})")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if dev:
        steps = [r["step"] for r in dev]
        ax_struct.plot(steps, [100 * r["compression"] for r in dev], label="compression (synapses)")
        ax_struct.plot(steps, [100 * r["neurons_pruned"] for r in dev], label="hidden neurons pruned")
        ax_struct.set(xlabel="development step")
    else:
        ax_struct.plot([r["epoch"] for r in epochs], [100 * r["compression"] for r in epochs], label="compression")
        ax_struct.set(xlabel="epoch")
    ax_struct.set(ylabel="%", title="structure", ylim=(0, 100))
    ax_struct.grid(alpha=0.3)
    ax_struct.legend()
    save_figure(fig, path)


def plot_energy(summary: dict, path: Path) -> None:
    """Per-layer SOPs (this network vs unpruned) and energy per sample of the three rows."""
    layers = summary["layers"]
    fig, (ax_ops, ax_energy) = _pyplot().subplots(1, 2, figsize=(11, 4))
    x = range(len(layers))
    this = [layer["sops_per_sample"] + layer["macs_per_sample"] for layer in layers]
    unpruned = [layer["sops_unpruned_per_sample"] for layer in layers]
    ax_ops.bar([i - 0.2 for i in x], unpruned, width=0.4, label="unpruned (same spikes)")
    ax_ops.bar([i + 0.2 for i in x], this, width=0.4, label="this network")
    ax_ops.set_xticks(list(x), [f"L{i}\n{l['n_in']}->{l['n_out']}" for i, l in enumerate(layers)])
    ax_ops.set(ylabel="operations per sample", title="synaptic operations per layer")
    ax_ops.legend()
    rows = summary["rows"]
    ax_energy.barh([r["network"] for r in rows], [r["energy_uj"] for r in rows])
    ax_energy.set(xlabel="energy per sample (uJ, estimate)",
                  title=f"{summary['energy_model']['e_ac_pj']} pJ/AC, {summary['energy_model']['e_mac_pj']} pJ/MAC"
                        + (f"; data: {summary['data_source']}" if summary["data_source"] else ""))
    ax_energy.invert_yaxis()
    save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    """Confusion matrix (rows: true class, columns: predicted), shaded by the fraction of
    each true class, with the counts written in when there are few classes."""
    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    totals = confusion.sum(axis=1, keepdims=True)
    fraction = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    size = min(3 + 0.45 * n, 14)
    fig, ax = _pyplot().subplots(figsize=(size + 1.2, size))
    image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if fraction[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title=title,
           xticks=range(n) if n <= 20 else [], yticks=range(n) if n <= 20 else [])
    save_figure(fig, path)
