"""``evsim data ...``: inspect, show and emulate datasets."""
from __future__ import annotations

import dataclasses

from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource

from evsim.cli.options import DATASET_OPTION_NAMES, NonEmptyPath, data_options_from, dataset_options, integer
from evsim.cli.runs import check_outputs, imported_trained_on, load_run_network, run_config, with_crop_default
from evsim.data import dvsgesture, load_dataset, nmnist
from evsim.data.base import DEFAULT_TIME_STEPS
from evsim.data.emulate import EmulatorParams, write_emulated_nmnist
from evsim.data.frames import SparseFrames
from evsim.data.tonic_sets import SAMPLE_EVENTS, event_transform
from evsim.errors import ConfigError
from evsim.feature_maps import plot_feature_maps
from evsim.inspect import dense_drive, record_sample, sample_drive
from evsim.plots import _pyplot, figure_format, save_figure

EVENT_DATASETS = ("nmnist", "dvsgesture")


@click.group()
def data():
    """Inspect, show and emulate datasets."""


def _load(kwargs: dict, time_steps: int | None = None):
    """Load the dataset chosen by the shared options (T: ``--time-steps``, else
    ``time_steps``, else the dataset's default); print its notice, if any."""
    name = kwargs.pop("dataset")
    steps = kwargs.get("time_steps") or time_steps or DEFAULT_TIME_STEPS.get(name, 20)
    return _load_named(name, data_options_from(kwargs, steps))


def _load_named(name: str, options):
    dataset = load_dataset(name, options)
    if dataset.meta.get("notice"):
        click.echo(f"NOTICE: {dataset.meta['notice']}")
    return dataset, options


def _class_counts(labels: np.ndarray, n_classes: int) -> str:
    counts = np.bincount(np.asarray(labels), minlength=n_classes)
    return " ".join(f"{k}:{int(c)}" for k, c in enumerate(counts))


@data.command()
@dataset_options
def info(**kwargs):
    """Source found, sample counts per split and class, sensor size, event statistics."""
    dataset, _ = _load(kwargs)
    meta = dataset.meta
    click.echo(f"dataset      {dataset.name}")
    click.echo(f"data_source  {dataset.source}" + (f"  ({meta['root']})" if meta.get("root") else ""))
    if "sensor_size" in meta:
        click.echo(f"sensor       {'x'.join(str(s) for s in meta['sensor_size'])} (width x height x channels)")
    shape = dataset.train.inputs.shape[1:]
    click.echo(f"inputs       {list(shape)} {dataset.train.inputs.dtype}, encoding {dataset.encoding}"
               + (f", T = {dataset.time_steps}" if dataset.time_steps else ""))
    if isinstance(dataset.train.inputs, SparseFrames):
        cells = sum(len(split.inputs) for split in (dataset.train, dataset.test)) * int(np.prod(shape))
        stored = sum(split.inputs.val.size for split in (dataset.train, dataset.test))
        click.echo(f"stored as    events: {stored} active frame cells ({100 * stored / max(cells, 1):.1f} % of all)")
    click.echo(f"classes      {dataset.n_classes}")
    click.echo(f"arch input   {'x'.join(map(str, dataset.sample_shape))} (an --arch for this data begins with it and "
               f"ends with {dataset.n_classes})")
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        click.echo(f"{name:<12} {len(split)} samples; per class {_class_counts(split.labels, dataset.n_classes)}")
    for name, stats in meta.get("event_stats", {}).items():
        click.echo(f"events {name:<5} {stats['events_per_sample']:.0f} per sample, ON fraction "
                   f"{stats['on_fraction']:.3f}, {stats['duration_ms']:.0f} ms per recording")
    if meta.get("framing"):
        click.echo(f"framing      {meta['framing']}")
    if meta.get("cache"):
        click.echo(f"cache        {meta['cache']}")


def _picture_path(ctx, param, out: Path) -> Path:
    """``--out`` checked before any data is loaded: its suffix names a figure format
    (no suffix: PNG, and the path says so)."""
    if not out.suffix:
        return out.with_suffix(".png")
    try:
        figure_format(out)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return out


@data.command()
@dataset_options
@click.option("--index", type=integer(0), default=0, show_default=True, help="Sample index.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--out", type=NonEmptyPath(dir_okay=False, path_type=Path), required=True, callback=_picture_path,
              help="Picture to write; its suffix picks the format (.png, .pdf, .svg, ...; none: .png).")
@click.option("--run", "run_dir", type=NonEmptyPath(file_okay=False, path_type=Path), default=None,
              help="A trained run folder: also draw what its network (latest checkpoint) makes of the sample in "
                   "its first layers, into <stem>-layers<suffix> next to --out: each convolution filter's spike "
                   "counts and the pooled maps, up to the first fully connected layer (a fully connected network: "
                   "its first layer's spikes per step). The data is the run's own unless dataset options are given.")
@click.pass_context
def show(ctx, index, split, out, run_dir, **kwargs):
    """Draw one sample: its frames (and, for event data, an x-y-t view of its events);
    with --run, also what a trained network's first layers make of it."""
    network = config = loaded = layers_out = None
    if run_dir is not None:
        layers_out = out.with_name(f"{out.stem}-layers{out.suffix}")
    check_outputs(out, *([] if layers_out is None else [layers_out]))
    if run_dir is not None:
        network, config, loaded = load_run_network(run_dir, "latest")
        if config is None:  # a network alone (evsim import-nir): no dataset is assumed, as eval assumes none
            run_config(ctx, run_dir, network, None, kwargs)
    same_dataset = ctx.get_parameter_source("dataset") is not ParameterSource.COMMANDLINE or \
        config is not None and kwargs["dataset"] == config.dataset
    if config is not None and same_dataset:
        # What the run trained and is evaluated on, with the data options given here over it.
        given = {name: kwargs[name] for name in DATASET_OPTION_NAMES
                 if name != "dataset" and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
        data = dataclasses.replace(config.data, **given)
        dataset, options = _load_named(config.dataset, data)
        steps = data.time_steps
    else:
        if network is not None:
            kwargs = with_crop_default(ctx, kwargs, network)
        dataset, options = _load(kwargs, config.time_steps if config is not None else None)
        steps = options.time_steps
    if network is not None and config is None:  # an imported network: what its graph says it trained on
        recorded = imported_trained_on(run_dir)
        if recorded and (recorded.get("dataset"), recorded.get("data_source", dataset.source)) != \
                (dataset.name, dataset.source):
            click.echo(f"NOTE: {run_dir}'s network was trained on {recorded.get('dataset')}"
                       + (f" ({recorded['data_source']} data)" if "data_source" in recorded else "")
                       + f"; this sample is from {dataset.name} ({dataset.source} data)")
    chosen = dataset.train if split == "train" else dataset.test
    if index >= len(chosen):
        raise ConfigError(f"index {index} out of range: the {split} split has {len(chosen)} samples")
    label = int(chosen.labels[index])
    seed = config.seed if config is not None else 0
    what = f"{dataset.name} {split}[{index}], label {label}"
    drive = None
    if network is not None:
        rec, drive = record_sample(network, dataset, split, index, steps, seed)
        plot_feature_maps(rec, network, layers_out, label, 0,
                          f"{dataset.name} {split}[{index}] ({dataset.source} data) through {network.describe()}, "
                          f"run {run_dir.resolve().name} ({loaded})", drive, *_input_names(dataset))
        what += f", predicted {int(np.argmax(rec.counts[0]))} by {run_dir} ({loaded})"
    elif dataset.encoding == "rate":
        drive = sample_drive(chosen.inputs, index, dataset.encoding, steps, seed)
    # The spikes drawn are the drive the network was fed (without --run: would be fed, seed 0).
    spikes = dense_drive(drive, dataset.n_inputs)[:, 0] if dataset.encoding == "rate" else None
    _draw(dataset, chosen.inputs[index], label, _recording_events(dataset, options, split, index), out,
          steps, options.slicing, spikes)
    click.echo(f"wrote {out}" + (f" and {layers_out}" if layers_out is not None else "")
               + f" ({what}, data_source {dataset.source})")


def _input_names(dataset) -> tuple[tuple[str, ...] | None, str]:
    """The input channels' names (event frames: channel 0 OFF, 1 ON) and what the input's events are."""
    shape = tuple(dataset.sample_shape)
    polar = dataset.encoding == "frames" and len(shape) == 3 and shape[0] == 2
    return ("OFF", "ON") if polar else None, "spikes" if dataset.encoding == "rate" else "events"


def _recording_events(dataset, options, split: str, index: int):
    """The events of an event dataset's sample as they are framed, after the dataset's
    denoising, crop or downsampling (for the frames' times and the x-y-t view), or None."""
    if dataset.name in EVENT_DATASETS:
        module = nmnist if dataset.name == "nmnist" else dvsgesture
        events, transform = module.sample_events(options, split, index)[0], module.event_transform(options)[0]
    elif dataset.name in SAMPLE_EVENTS:
        events, _, sensor, _ = SAMPLE_EVENTS[dataset.name](options, split, index)
        transform = event_transform(options, sensor)[0]
    else:
        return None
    return transform(events)


def _draw(dataset, sample: np.ndarray, label: int, events, out: Path, time_steps: int, slicing: str,
          spikes: np.ndarray | None) -> None:
    """Save a picture of one sample, atomically, in the format of ``out``'s suffix.

    Event frames are drawn as ON minus OFF counts on one shared colour scale, each
    titled with the time it spans (from the recording's ``events``, when given, which
    also get an x-y-t view). A rate-coded image is drawn with ``spikes``, the spikes
    ``[T, n_inputs]`` the network receives at each of the ``time_steps`` steps (None
    for other encodings); a direct-coded one as the analog values fed at every step.
    """
    from matplotlib import colors

    plt = _pyplot()
    image, panels, titles, norm, cmap, scale_label = None, [], [], None, None, ""
    if dataset.encoding == "frames" and np.asarray(sample).shape[2] == 1:
        _draw_channels(dataset, np.asarray(sample, dtype=np.float32), label, events, out, slicing)
        return
    if dataset.encoding == "frames":
        frames = np.asarray(sample, dtype=np.float32)  # [T, C, H, W], channel 0 OFF, 1 ON
        polar = frames.shape[1] == 2
        panels = list(frames[:, 1] - frames[:, 0] if polar else frames.sum(axis=1))
        span = max(float(np.abs(np.asarray(panels)).max()), 1.0)
        norm, cmap = (colors.TwoSlopeNorm(0, -span, span), "RdBu_r") if polar else (colors.Normalize(0, span), "Greys")
        scale_label = "events per pixel: ON (+), OFF (\u2212)" if polar else "events per pixel"
        times = _frame_times_ms(events, len(panels), slicing) if events is not None else None
        titles = [f"{a:.0f}\u2013{b:.0f} ms" for a, b in times] if times else [f"frame {t + 1}" for t in range(len(panels))]
    else:
        image = np.asarray(sample, dtype=np.float32).reshape(tuple(dataset.sample_shape))
        if dataset.encoding == "rate":
            spikes = np.asarray(spikes).reshape((time_steps,) + tuple(dataset.sample_shape))
            channels = spikes.shape[1] if spikes.ndim == 4 else 1
            panels = [frame.sum(axis=0) if frame.ndim == 3 else frame for frame in spikes]
            norm, cmap = colors.Normalize(0, channels), "Greys"
            scale_label = "spikes per pixel" + (f" (of {channels} channels)" if channels > 1 else "")
            titles = [f"step {t + 1}" for t in range(time_steps)]
    n_frames = len(panels)
    cols = min(max(n_frames, 1), 10)
    rows = -(-n_frames // cols) if n_frames else 0
    lead = 1 if image is not None else 0
    extra = 1 if events is not None else 0
    heights = [3.0] * lead + [1.7] * rows + [3.6] * extra
    fig = plt.figure(figsize=(max(1.5 * cols + 1.0, 6.5), sum(heights) + 0.7))
    grid = fig.add_gridspec(len(heights), cols + 1, height_ratios=heights, width_ratios=[1] * cols + [0.08])
    if image is not None:
        ax = fig.add_subplot(grid[0, :max(cols // 2, 1)])
        colour = image.ndim == 3 and image.shape[0] in (3, 4)
        shown = np.moveaxis(image, 0, -1) if colour else image.reshape(image.shape[-2:]) if image.ndim == 3 else image
        if shown.ndim == 1:  # a flat vector: a square-ish picture of it is still readable
            side = int(np.ceil(np.sqrt(shown.size)))
            shown = np.pad(shown, (0, side * side - shown.size)).reshape(side, side)
        if colour:  # no single scale for a colour picture
            lo, hi = float(shown.min()), float(shown.max())
            ax.imshow((shown - lo) / (hi - lo) if hi > lo else shown * 0, interpolation="nearest")
        else:
            drawn = ax.imshow(shown, cmap="gray", interpolation="nearest")
            fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04,
                         label="spike probability per step" if dataset.encoding == "rate" else "input value")
        ax.set_title("the image" + (", fed as these values at every step" if dataset.encoding == "direct" else ""),
                     fontsize=8)
        ax.axis("off")
    drawn = None
    for t, panel in enumerate(panels):
        ax = fig.add_subplot(grid[lead + t // cols, t % cols])
        drawn = ax.imshow(panel, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(titles[t], fontsize=7)
        ax.axis("off")
    if drawn is not None:
        bar = fig.colorbar(drawn, cax=fig.add_subplot(grid[lead:lead + rows, cols]), label=scale_label)
        if dataset.encoding == "rate":  # whole spikes
            bar.set_ticks(range(int(norm.vmax) + 1))
    if events is not None:
        ax = fig.add_subplot(grid[lead + rows, :cols], projection="3d")
        on = events["p"].astype(bool)
        for mask, color, name in ((on, "tab:red", "ON"), (~on, "tab:blue", "OFF")):
            ax.scatter(events["x"][mask], events["t"][mask] / 1000.0, events["y"][mask], s=0.3, c=color, label=name)
        ax.set_xlabel("x")
        ax.set_ylabel("t (ms)")
        ax.set_zlabel("y")
        ax.invert_zaxis()
        ax.legend(loc="upper left", fontsize=7)
    what = {"frames": f"{n_frames} count frames", "rate": f"the spikes the network receives in T = {n_frames} steps",
            "direct": "direct (analog) input"}.get(dataset.encoding, dataset.encoding)
    fig.suptitle(f"{dataset.name} ({dataset.source}), label {label}: {what}", fontsize=10)
    save_figure(fig, out)


def _draw_channels(dataset, frames: np.ndarray, label: int, events, out: Path, slicing: str) -> None:
    """A one-row sensor (SHD's 700 cochlea channels): counts as channel x frame, one image."""
    plt = _pyplot()
    counts = frames.sum(axis=(1, 2)).T  # [W, T]
    fig, ax = plt.subplots(figsize=(8, 5))
    times = _frame_times_ms(events, frames.shape[0], slicing) if events is not None else None
    extent = (0.5, frames.shape[0] + 0.5, -0.5, counts.shape[0] - 0.5)
    drawn = ax.imshow(counts, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest", extent=extent)
    fig.colorbar(drawn, ax=ax, label="events per channel and frame")
    ax.set(xlabel="frame" + (f" (frame {frames.shape[0]} ends at {times[-1][1]:.0f} ms)" if times else ""),
           ylabel="channel")
    fig.suptitle(f"{dataset.name} ({dataset.source}), label {label}: {frames.shape[0]} count frames", fontsize=10)
    save_figure(fig, out)


def _frame_times_ms(events, n_frames: int, slicing: str) -> list[tuple[float, float]] | None:
    """The time each frame spans (ms from the recording's first event), as the framing cut
    it: equal event numbers (the remainder dropped, as tonic does) or equal durations."""
    t = np.sort(np.asarray(events["t"], dtype=np.float64)) / 1000.0
    if t.size == 0 or n_frames < 1:
        return None
    if slicing == "time":
        edges = np.linspace(t[0], t[-1], n_frames + 1)
        return [(a - t[0], b - t[0]) for a, b in zip(edges, edges[1:])]
    per = t.size // n_frames
    if per == 0:
        return None
    return [(t[k * per] - t[0], t[(k + 1) * per - 1] - t[0]) for k in range(n_frames)]


@data.command("emulate-nmnist")
@click.option("--out", type=NonEmptyPath(file_okay=False, path_type=Path), required=True,
              help="Folder to write Train/<digit>/*.bin and Test/<digit>/*.bin into.")
@click.option("--per-class", type=integer(1), default=None,
              help="Only the first N digits of each class in each split (default: all 5,000).")
@click.option("--seed", type=integer(0), default=0, show_default=True, help="Sensor and noise seed.")
def emulate_nmnist(out, per_class, seed):
    """Write emulated N-MNIST recordings (genuine 40-bit .bin files) from the 5,000 MNIST digits."""

    manifest, redone = write_emulated_nmnist(out, per_class=per_class, seed=seed, params=EmulatorParams())
    for folder, split in manifest["splits"].items():
        click.echo(f"{folder:<6} {split['samples']} recordings, {split['events'] / max(split['samples'], 1):.0f} "
                   f"events per recording")
    click.echo(("wrote" if redone else "already there (nothing redone):") + f" {out} (data_source emulated)")
