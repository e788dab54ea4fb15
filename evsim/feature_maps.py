"""What the first layers of a network make of one sample: for a convolutional network,
the spike-count map of every filter of its convolutions and the pooled maps, up to the
first fully connected layer; for a fully connected one, its first layer's spikes as
neurons x steps.

>>> rec, drive = evsim.inspect.record_sample(network, dataset, "test", 3)
>>> pictures = plot_feature_maps(rec, network, "maps.png", label=3, drive=drive)
>>> pictures[1].values.shape      # conv1: [filters, H, W], spikes summed over the steps

:func:`layer_pictures` computes what is drawn (no plotting); ``evsim data show --run RUN``
draws it next to the sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evsim.inspect import Recording, analog_outputs, dense_drive
from evsim.kernels.events import Events, StaticDrive
from evsim.network import Network
from evsim.plots import _pyplot, save_figure

# Panels per row: every block has this many columns, so panels are one size in the whole
# figure (the paper's 40 filters make 4 rows of 10).
COLUMNS = 10
PANEL_INCHES = 1.3
PRUNED_GREY = "#d4d4d4"
MAP_CMAP = "viridis"


@dataclass(frozen=True)
class LayerPicture:
    """One block of the figure: what one layer (or the input) did with one sample.

    Attributes
    ----------
    name : what the block shows: ``"input 2x32x32"``, ``"conv1 15C3"``, ``"pool1 AP2"``,
        ``"hidden1 300"``.
    layer : its index in ``network.layers`` (-1: the input).
    values : float64 ``[C, H, W]``, each channel's map summed over the steps (analog values:
        their value at each step); or, for a
        fully connected layer, ``[n, T]``, each neuron's spike at each step (a raster).
    pruned : bool ``[C]`` (``[n]`` for a raster): channels (neurons) that are not
        simulated: a dead filter, or the pooling of one. Their values are all zero.
    title : the block's title.
    scale : what the colour bar measures.
    panel_titles : one per channel (none for a raster).
    """

    name: str
    layer: int
    values: np.ndarray
    pruned: np.ndarray
    title: str
    scale: str
    panel_titles: tuple[str, ...] = ()

    @property
    def is_raster(self) -> bool:
        return self.values.ndim == 2


def _spatial(layer) -> bool:
    return len(getattr(layer, "out_shape", ())) == 3


def layer_labels(network: Network) -> list[str]:
    """Short names of the layers: ``conv1 15C3``, ``pool1 AP2``, ``hidden1 300``, ``output 10``."""
    labels, seen = [], {}
    for k, layer in enumerate(network.layers):
        if k == len(network.layers) - 1:
            labels.append(f"output {layer.describe()}")
            continue
        stem = {"conv2d": "conv", "pool2d": "pool"}.get(getattr(layer, "kind", ""), "hidden")
        seen[stem] = seen.get(stem, 0) + 1
        labels.append(f"{stem}{seen[stem]} {layer.describe()}")
    return labels


def spatial_layers(network: Network) -> list[int]:
    """The indices of the leading layers that output a map (convolutions and poolings,
    up to the first fully connected layer)."""
    shown = []
    for k, layer in enumerate(network.layers):
        if not _spatial(layer):
            break
        shown.append(k)
    return shown


def pruned_channels(network: Network, k: int) -> np.ndarray:
    """bool ``[C]``: the channels of layer ``k``'s map that are not simulated (a
    convolution's dead filters; a pooling's channels that pool one)."""
    layer = network.layers[k]
    if hasattr(layer, "filters"):
        return ~np.asarray(layer.alive, dtype=bool)
    if k > 0 and _spatial(network.layers[k - 1]):
        return pruned_channels(network, k - 1)
    return np.zeros(layer.out_shape[0], dtype=bool)


def _pruned_note(pruned: np.ndarray, what: str) -> str:
    return f"; {int(pruned.sum())} of {pruned.size} {what} pruned" if pruned.any() else ""


def _map_picture(rec: Recording, network: Network, k: int, sample: int, labels: list[str]) -> LayerPicture:
    """Layer ``k``'s map for ``sample``: spikes (pooled values) summed over the steps."""
    layer = network.layers[k]
    steps = rec.time_steps
    values = rec.spikes[k][:, sample, :].sum(axis=0, dtype=np.float64).reshape(layer.out_shape)
    analog = analog_outputs(rec, network)[k]  # a pooling of direct-encoded input: one value per step
    if analog:
        values /= steps
    pruned = pruned_channels(network, k)
    # A pooled channel keeps the number of the filter it pools, to be found in the row above.
    unit = "filter" if any(hasattr(network.layers[j], "filters") for j in range(k + 1)) else "channel"
    panels = tuple(f"{unit} {c}" + (" (pruned)" if dead else "") for c, dead in enumerate(pruned))
    if hasattr(layer, "filters"):
        title = f"{labels[k]}: spikes per cell over {steps} steps" + _pruned_note(pruned, "filters")
        scale = "spikes per cell"
    else:
        side = layer.geometry.kernel
        source = labels[k - 1].split()[0] if k > 0 else "the input"
        if analog:
            how = "averaged" if layer.mode == "avg" else "maximum"
            title = f"{labels[k]}: {source}'s values, {how} over each {side}x{side} window (the same at every step)"
            scale = f"input value, window {'mean' if layer.mode == 'avg' else 'maximum'}"
        elif layer.mode == "avg":
            title = f"{labels[k]}: {source} averaged over each {side}x{side} window, summed over {steps} steps"
            scale = "spikes per cell, window mean"
        else:
            title = f"{labels[k]}: {source}'s maximum over each {side}x{side} window, summed over {steps} steps"
            scale = "steps with a spike in the window"
        title += _pruned_note(pruned, f"{unit}s")
    return LayerPicture(labels[k], k, values, pruned, title, scale, panels)


def layer_pictures(rec: Recording, network: Network, sample: int = 0) -> list[LayerPicture]:
    """What the first layers did with sample ``sample`` of ``rec``: one picture per layer
    that outputs a map (up to the first fully connected layer), or, when the first layer
    is fully connected, its raster of neurons x steps."""
    labels = layer_labels(network)
    spatial = spatial_layers(network)
    if spatial:
        return [_map_picture(rec, network, k, sample, labels) for k in spatial]
    raster = rec.spikes[0][:, sample, :].T.astype(np.float64)
    pruned = ~rec.alive[0]
    title = (f"{labels[0]}: each neuron's spikes at each of {rec.time_steps} steps "
             f"({int(raster.sum())} spikes{_pruned_note(pruned, 'neurons')})")
    return [LayerPicture(labels[0], 0, raster, pruned, title, "spike")]


def input_picture(drive: Events | StaticDrive, network: Network, sample: int = 0,
                  channel_names: tuple[str, ...] | None = None, unit: str = "events") -> LayerPicture | None:
    """The input map the first layer received, per channel: events summed over the steps
    (the analog values themselves for a :class:`StaticDrive`), counted as ``unit``
    (``"spikes"`` for rate coding); None when the first layer takes a flat vector (no
    map to draw)."""
    first = network.layers[0]
    shape = getattr(first, "in_shape", None)
    if shape is None:
        return None
    fed = dense_drive(drive, first.n_in)[:, sample]
    analog = isinstance(drive, StaticDrive)
    values = (fed[0] if analog else fed.sum(axis=0)).astype(np.float64).reshape(shape)
    name = f"input {'x'.join(map(str, shape))}"
    title = f"{name}: " + ("the value fed at every one of" if analog else f"{unit} per pixel over") + \
        f" {fed.shape[0]} steps"
    names = channel_names if channel_names and len(channel_names) == shape[0] else \
        tuple(f"channel {c}" for c in range(shape[0]))
    return LayerPicture(name, -1, values, np.zeros(shape[0], dtype=bool), title,
                        "input value" if analog else f"{unit} per pixel", tuple(names))


def prediction_text(counts: np.ndarray, label: int | None = None) -> str:
    """``label 3, network predicts 3 (5 of 9 output spikes): right``."""
    counts = np.asarray(counts)
    guess = int(np.argmax(counts))
    if counts.max() > 0:
        text = f"network predicts {guess} ({counts[guess]:g} of {counts.sum():g} output spikes)"
    else:  # argmax of a tie: say so, not a confident-looking class
        text = f"network predicts {guess} (no output spike; a tie goes to the lowest class)"
    if label is None:
        return text
    return f"label {label}, {text}: " + ("right" if guess == int(label) else "wrong")


def _block_inches(picture: LayerPicture) -> float:
    if picture.is_raster:
        return 3.4
    rows = -(-picture.values.shape[0] // COLUMNS)
    return rows * PANEL_INCHES + 0.5


def _draw_maps(block, picture: LayerPicture) -> None:
    """One panel per channel on the layer's one colour scale; pruned channels grey."""
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.ticker import MaxNLocator

    channels = picture.values.shape[0]
    rows = -(-channels // COLUMNS)
    axes = block.subplots(rows, COLUMNS, squeeze=False)
    shown = picture.values[~picture.pruned]
    low = min(0.0, float(shown.min())) if shown.size else 0.0
    high = float(shown.max()) if shown.size else 0.0
    norm = colors.Normalize(low, high if high > low else low + 1.0)
    for c, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= channels:
            ax.set_visible(False)
            continue
        ax.set_title(picture.panel_titles[c] if picture.panel_titles else f"channel {c}", fontsize=8)
        if picture.pruned[c]:
            ax.set_facecolor(PRUNED_GREY)
            ax.text(0.5, 0.5, "pruned", ha="center", va="center", transform=ax.transAxes, fontsize=9,
                    color="0.35")
            continue
        ax.imshow(picture.values[c], cmap=MAP_CMAP, norm=norm, interpolation="nearest")
    bar = block.colorbar(ScalarMappable(norm, MAP_CMAP), ax=axes.ravel().tolist(), fraction=0.025, pad=0.01,
                         aspect=max(8, 12 * rows))
    bar.set_label(picture.scale, fontsize=8)
    if np.all(shown == np.round(shown)):  # whole counts: whole ticks
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    block.suptitle(picture.title, fontsize=11)


def _draw_raster(block, picture: LayerPicture) -> None:
    """Neurons x steps: black a spike, white none, grey a pruned neuron."""
    from matplotlib import colors
    from matplotlib.ticker import MaxNLocator

    ax = block.subplots()
    kinds = np.where(picture.pruned[:, None], 2, picture.values > 0).astype(np.int8)
    cmap = colors.ListedColormap(["white", "black", PRUNED_GREY])
    norm = colors.BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)
    steps = picture.values.shape[1]
    drawn = ax.imshow(kinds, cmap=cmap, norm=norm, aspect="auto", origin="lower", interpolation="nearest",
                      extent=(0.5, steps + 0.5, -0.5, picture.values.shape[0] - 0.5))
    ax.set(xlabel="time step", ylabel="neuron")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    bar = block.colorbar(drawn, ax=ax, ticks=[0, 1, 2], fraction=0.025, pad=0.01)
    bar.ax.set_yticklabels(["no spike", "spike", "pruned"], fontsize=8)
    block.suptitle(picture.title, fontsize=11)


def plot_feature_maps(rec: Recording, network: Network, path: Path, label: int | None = None, sample: int = 0,
                      title: str = "", drive: Events | StaticDrive | None = None,
                      channel_names: tuple[str, ...] | None = None, input_unit: str = "events") -> list[LayerPicture]:
    """Draw what the first layers of ``network`` made of sample ``sample`` of ``rec``
    (:func:`layer_pictures`, after the input map when ``drive``, the recording's drive,
    is given) in one figure, each layer with its own colour scale and bar, and save it
    atomically in the format of ``path``'s suffix.

    Parameters
    ----------
    rec : a recording of ``network`` (:func:`evsim.inspect.record`).
    path : the figure; its suffix picks the format (:func:`evsim.plots.save_figure`).
    label : the sample's class, for the title (with the network's prediction).
    title : the figure's first line, e.g. the dataset, sample and run.
    channel_names : names of the input channels (``("OFF", "ON")`` for event frames).
    input_unit : what the input's events are: ``"events"``, ``"spikes"`` (rate coding).

    Returns
    -------
    list[LayerPicture]
        What was drawn, block by block.
    """
    pictures = layer_pictures(rec, network, sample)
    first = input_picture(drive, network, sample, channel_names, input_unit) if drive is not None else None
    pictures = ([first] if first is not None else []) + pictures
    plt = _pyplot()
    heights = [_block_inches(picture) for picture in pictures]
    fig = plt.figure(figsize=(COLUMNS * PANEL_INCHES + 1.4, sum(heights) + 0.8), layout="constrained")
    blocks = fig.subfigures(len(pictures), 1, height_ratios=heights, squeeze=False)[:, 0]
    for block, picture in zip(blocks, pictures):
        (_draw_raster if picture.is_raster else _draw_maps)(block, picture)
    head = prediction_text(rec.counts[sample], label)
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=13)
    save_figure(fig, path)
    return pictures
