"""Figures for run folders (matplotlib, Agg backend: no display needed).

Every figure is written in the format its file's suffix names: ``.png``, ``.pdf`` or
``.svg`` (:func:`save_figure`).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from evsim.errors import ConfigError
from evsim.files import write_bytes_atomic


def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported at the first figure: importing it
    took a quarter of a second, a third of every evsim command's start-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Formats a figure may be written in, chosen by the file's suffix (the first three are the
# ones to use; the others are what matplotlib also writes); raster formats at DPI.
FIGURE_FORMATS = ("png", "pdf", "svg", "eps", "ps", "svgz", "jpg", "jpeg", "tif", "tiff", "webp")
DPI = 150


# Marker shapes that tell series apart where colours alone do not (more than ten, or one drawn on another).
MARKERS = ("o", "s", "D", "v", "P", "X", "*", "<", ">", "h")


def figure_format(path: Path) -> str:
    """The format ``path``'s suffix names (``"png"``, ``"pdf"``, ``"svg"``, ...: :data:`FIGURE_FORMATS`).

    Raises
    ------
    ConfigError
        For any other suffix, or none.
    """
    fmt = Path(path).suffix[1:].lower()
    if fmt not in FIGURE_FORMATS:
        raise ConfigError(f"{path}: cannot write a figure as {Path(path).suffix or 'a file without a suffix'}; "
                          f"end the name with .png, .pdf or .svg (or {', '.join('.' + f for f in FIGURE_FORMATS[3:])})")
    return fmt


def save_figure(fig, path: Path) -> None:
    """Save ``fig`` atomically in the format of ``path``'s suffix (:func:`figure_format`),
    and close it (also when the suffix is refused)."""
    try:
        fmt = figure_format(path)
        buffer = io.BytesIO()
        # The dates and software PDF and SVG embed would make every figure a new file.
        metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt, {})
        fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
    finally:
        _pyplot().close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())


def run_title(config: dict, name: str = "") -> str:
    """One line naming a run and its key options, from its ``config.json`` values, e.g.
    ``"my-run: nmnist, hidden 800, structure sdsnn, adam lr 0.001, batch 100, T = 20, seed 0"``."""
    hidden = "-".join(str(h) for h in config.get("hidden", []))
    lr = config.get("lr")
    network = f"arch {config['arch']}" if config.get("arch") else f"hidden {hidden}"
    parts = [config.get("dataset", "?"), network, f"structure {config.get('structure', '?')}",
             f"{config.get('optimizer', '?')} lr {lr:g}" if isinstance(lr, (int, float)) else "",
             f"batch {config.get('batch_size', '?')}", f"T = {config.get('time_steps', '?')}",
             f"seed {config.get('seed', '?')}"]
    parts = [part for part in parts if part]
    return (f"{name}: " if name else "") + ", ".join(parts)


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick, not 0.96, 0.98, ...
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def _legend_below(ax, lines=None) -> None:
    """The legend under the axes: inside, wherever it goes, it can hide a curve."""
    lines = lines or ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.15), ncols=2, frameon=False)


def _dot_if_single(points: int) -> dict:
    """A marker for a curve of one point: a line through one point draws nothing."""
    return {"marker": "o"} if points == 1 else {}


def _has_structure(epochs: list[dict], dev: list[dict]) -> bool:
    return bool(dev) or any(row.get("compression", 0) > 0 for row in epochs)


def plot_training(metrics: list[dict], path: Path, data_source: str, run: dict | None = None) -> None:
    """The curves of a run: accuracy (train as the running mean over each epoch's batches,
    validation, test), loss and learning rate, and, when the structure develops,
    synapse compression and pruned hidden neurons.

    Parameters
    ----------
    metrics : the rows of ``metrics.jsonl``.
    path : the figure; its suffix picks the format (:func:`save_figure`).
    data_source : shown in the title (emulated data must never pass for real).
    run : optional ``config.json`` values with ``"name"`` (the run folder's name) and
        ``"batches_per_epoch"``: the title names the run and its key options, and
        development steps are placed on the epoch axis (else on their own).
    """
    run = run or {}
    epochs = [row for row in metrics if row.get("type") == "epoch"]
    dev = [row for row in metrics if row.get("type") == "development"]
    structure = _has_structure(epochs, dev)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3 if structure else 2, figsize=(15 if structure else 10.5, 4.2))
    x = [r["epoch"] for r in epochs]
    ax = axes[0]
    ax.plot(x, [100 * r["train_acc"] for r in epochs], "s--", color="tab:gray", label="train (running mean)")
    if any("val_acc" in r for r in epochs):
        ax.plot(x, [100 * r["val_acc"] for r in epochs], "^-", color="tab:orange", label="validation")
        best = max(epochs, key=lambda r: r["val_acc"])
        ax.plot([best["epoch"]], [100 * best["test_acc"]], "*", ms=14, color="tab:red", zorder=5,
                label=f"test at best val. ({100 * best['test_acc']:.2f}%)")
    ax.plot(x, [100 * r["test_acc"] for r in epochs], "o-", color="tab:blue", label="test")
    ax.set(ylabel="accuracy (%)", title="accuracy")
    _epoch_axis(ax)
    _legend_below(ax)
    ax = axes[1]
    ax.plot(x, [r["train_loss"] for r in epochs], "o-", color="tab:purple", label="train loss")
    ax.set(ylabel="training loss (running mean)", title="loss and learning rate")
    _epoch_axis(ax)
    lr_ax = ax.twinx()
    lr_ax.step(x, [r["lr"] for r in epochs], where="mid", color="tab:green", label="learning rate",
               **_dot_if_single(len(x)))
    lr_ax.set_ylabel("learning rate", color="tab:green")
    lr_ax.tick_params(axis="y", colors="tab:green")
    lr_values = [r["lr"] for r in epochs if r["lr"] > 0]
    if lr_values and max(lr_values) / min(lr_values) > 20:
        lr_ax.set_yscale("log")
    elif lr_values:
        lr_ax.set_ylim(0, 1.25 * max(lr_values))
    _legend_below(ax, ax.get_lines() + lr_ax.get_lines())
    if structure:
        ax = axes[2]
        per_epoch = run.get("batches_per_epoch")
        if dev and not per_epoch:
            dx = [r["step"] for r in dev]
            ax.set_xlabel("development step")
            ax.grid(alpha=0.3)
        else:  # development steps at their place within the epochs
            dx = [r["batch"] / per_epoch for r in dev] if dev else x
            _epoch_axis(ax)
        rows = dev or epochs
        ax.plot(dx, [100 * r["compression"] for r in rows], color="tab:blue", label="synapses removed",
                **_dot_if_single(len(rows)))
        ax.plot(dx, [100 * r["neurons_pruned"] for r in rows], color="tab:red", label="hidden neurons pruned",
                **_dot_if_single(len(rows)))
        ax.set(ylabel="% of the dense network", title="structure", ylim=(0, 100))
        _legend_below(ax)
    fig.suptitle((run_title(run, run.get("name", "")) if run else "training") + f" (data: {data_source})",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _log_if_spread(ax, values, axis: str = "y", ratio: float = 30.0) -> bool:
    """Log scale on ``axis`` when the positive ``values`` span more than ``ratio``."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > ratio:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        return True
    return False


def floor_at_zero(ax, values, axis: str = "y") -> None:
    """Start a linear axis at 0 when none of its ``values`` is negative (an axis of zeros
    is otherwise padded to negative values, e.g. firing rates of -0.04); call it when the
    axes are drawn in: it ends the axis' autoscaling."""
    scale = ax.get_yscale() if axis == "y" else ax.get_xscale()
    if scale == "linear" and (np.size(values) == 0 or np.min(values) >= 0):
        (ax.set_ylim if axis == "y" else ax.set_xlim)(0, None)


def zero_noted(label: str, ops) -> str:
    """A curve's legend ``label``, saying ": 0" when its ``ops`` are all 0: a log scale draws no zeros."""
    return label if np.any(ops) else f"{label}: 0"


def plot_energy(summary: dict, path: Path, layer_names: list[str] | None = None) -> None:
    """What ``evsim profile`` counted: operations per layer (this network against the same
    architecture unpruned), energy per sample of the three compared networks, operations
    per time step, and firing rates per layer.

    Parameters
    ----------
    summary : :meth:`~evsim.energy.EnergyReport.summary`; with ``run_dir``, ``checkpoint``,
        ``dataset`` and ``split`` (as ``evsim profile`` adds them) the title names them.
    path : the figure; its suffix picks the format (:func:`save_figure`).
    layer_names : what each layer is (:func:`evsim.inspect.layer_names`), for the layer axes
        [default: its inputs and outputs].
    """
    layers = summary["layers"]
    plt = _pyplot()
    fig, ((ax_ops, ax_energy), (ax_steps, ax_rate)) = plt.subplots(2, 2, figsize=(12, 8.5))
    x = np.arange(len(layers))
    kinds = layer_names or [f"{l['n_in']}\u2192 {l['n_out']}" for l in layers]
    # A word a line: a conv network's layer labels on one line are wider than their place.
    names = [f"L{i} {kind}".replace(" ", "\n") for i, kind in enumerate(kinds)]
    this = [layer["sops_per_sample"] + layer["macs_per_sample"] for layer in layers]
    unpruned = [layer["sops_unpruned_per_sample"] for layer in layers]
    ax_ops.bar(x - 0.2, unpruned, width=0.4, color="tab:gray", label="same architecture, unpruned (same spikes)")
    ax_ops.bar(x + 0.2, this, width=0.4, color="tab:blue", label="this network")
    ax_ops.set_xticks(x, names)
    log = _log_if_spread(ax_ops, this + unpruned)
    floor_at_zero(ax_ops, this + unpruned)
    ax_ops.set(ylabel="operations per sample" + (" (log)" if log else ""), title="synaptic operations per layer")
    ax_ops.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, frameon=False)
    ax_ops.grid(axis="y", alpha=0.3)

    rows = summary["rows"]
    labels = ["this network", "same architecture,\nunpruned", "dense non-spiking\nnetwork (ANN)"][:len(rows)]
    energy = [r["energy_uj"] for r in rows]
    bars = ax_energy.barh(range(len(rows)), energy, color=["tab:blue", "tab:gray", "tab:brown"][:len(rows)])
    ax_energy.set_yticks(range(len(rows)), labels)
    ax_energy.invert_yaxis()
    log = _log_if_spread(ax_energy, energy, axis="x")
    ax_energy.bar_label(bars, [f"{e:.3g} \u00b5J" for e in energy], padding=3, fontsize=8)
    ax_energy.margins(x=0.25)
    model = summary["energy_model"]
    ax_energy.set(xlabel="energy per sample (\u00b5J, estimate)" + (", log" if log else ""),
                  title=f"energy estimate: {model['e_ac_pj']} pJ/AC, {model['e_mac_pj']} pJ/MAC")
    ax_energy.grid(axis="x", alpha=0.3)

    per_step = [np.asarray(layer.get("ops_per_step", []), dtype=float) for layer in layers]
    for name, ops in zip(names, per_step):
        ax_steps.plot(np.arange(1, ops.size + 1), ops, "o-", ms=3, label=zero_noted(name.replace("\n", " "), ops))
    all_steps = np.concatenate(per_step) if per_step else np.zeros(0)
    log = _log_if_spread(ax_steps, all_steps)
    floor_at_zero(ax_steps, all_steps)
    ax_steps.set(xlabel="time step", ylabel="operations per sample" + (" (log)" if log else ""),
                 title="operations per time step")
    _integer_x(ax_steps)
    ax_steps.grid(alpha=0.3)
    ax_steps.legend(fontsize=8)

    rates = [100 * layer["firing_rate"] for layer in layers]
    bars = ax_rate.bar(x, rates, color="tab:red")
    ax_rate.bar_label(bars, [f"{r:.2f}%" for r in rates], padding=2, fontsize=8)
    ax_rate.set_xticks(x, names)
    ax_rate.margins(y=0.15)
    floor_at_zero(ax_rate, rates)
    ax_rate.set(ylabel="spikes per unit and step (%)",
                title="firing rate per layer (all neurons; pooling: mean output)")
    ax_rate.grid(axis="y", alpha=0.3)
    run = (f"{summary['run_dir']} ({summary['checkpoint']}), {summary['dataset']} {summary['split']} split: "
           if "run_dir" in summary else "")
    fig.suptitle(run + f"{summary['samples']} samples, T = {summary['time_steps']}"
                 + (f", data: {summary['data_source']}" if summary.get("data_source") else ""), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
