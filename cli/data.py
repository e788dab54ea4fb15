"""``evsim data ...``: inspect, show and emulate datasets."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from evsim.cli.options import NonEmptyPath, data_options_from, dataset_options, integer
from evsim.data import dvsgesture, load_dataset, nmnist
from evsim.data.emulate import EmulatorParams, read_manifest, write_emulated_nmnist
from evsim.data.base import DEFAULT_TIME_STEPS
from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError
from evsim.files import write_bytes_atomic

EVENT_DATASETS = ("nmnist", "dvsgesture")


@click.group()
def data():
    """Inspect, show and emulate datasets."""


def _load(kwargs: dict):
    """Load the dataset chosen by the shared options; print its notice, if any."""
    name = kwargs.pop("dataset")
    time_steps = kwargs.get("time_steps") or DEFAULT_TIME_STEPS.get(name, 20)
    options = data_options_from(kwargs, time_steps)
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
    """``--out`` checked before any data is loaded: its suffix names a format matplotlib
    can write to memory (no suffix: PNG, and the path says so)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # pgf cannot hold the frames' raster images when written to memory
    formats = sorted(set(FigureCanvasAgg.get_supported_filetypes()) - {"pgf"})
    if not out.suffix:
        return out.with_suffix(".png")
    if out.suffix[1:].lower() not in formats:
        raise click.BadParameter(f"{out}: cannot write a {out.suffix} picture; end the name with one of: "
                                 + ", ".join(f".{fmt}" for fmt in formats), ctx, param)
    return out


@data.command()
@dataset_options
@click.option("--index", type=integer(0), default=0, show_default=True, help="Sample index.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--out", type=NonEmptyPath(dir_okay=False, path_type=Path), required=True, callback=_picture_path,
              help="Picture to write; its suffix picks the format (.png, .pdf, .svg, ...; none: .png).")
def show(index, split, out, **kwargs):
    """Draw one sample: its frames (and, for event data, an x-y-t view of its events)."""
    dataset, options = _load(kwargs)
    chosen = dataset.train if split == "train" else dataset.test
    if index >= len(chosen):
        raise ConfigError(f"index {index} out of range: the {split} split has {len(chosen)} samples")
    events = None
    if dataset.name in EVENT_DATASETS:

        module = nmnist if dataset.name == "nmnist" else dvsgesture
        events = module.sample_events(options, split, index)[0]
    _draw(dataset, chosen.inputs[index], int(chosen.labels[index]), events, out)
    click.echo(f"wrote {out} ({dataset.name} {split}[{index}], label {int(chosen.labels[index])}, "
               f"data_source {dataset.source})")


def _draw(dataset, sample: np.ndarray, label: int, events, out: Path) -> None:
    """Save a picture of one sample (frames grid plus optional x-y-t scatter), atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if dataset.encoding == "frames":
        frames = np.asarray(sample, dtype=np.float32)  # [T, C, H, W]
    else:
        frames = np.asarray(sample, dtype=np.float32).reshape((1,) + tuple(dataset.sample_shape))
    n_frames = frames.shape[0]
    cols = min(n_frames, 10)
    rows = -(-n_frames // cols)
    extra = 1 if events is not None else 0
    fig = plt.figure(figsize=(1.6 * cols, 1.7 * rows + 3.5 * extra))
    grid = fig.add_gridspec(rows + 2 * extra, cols)
    for t in range(n_frames):
        ax = fig.add_subplot(grid[t // cols, t % cols])
        ax.imshow(_frame_rgb(frames[t], dataset.encoding == "frames"), interpolation="nearest")
        ax.set_title(f"t={t}" if n_frames > 1 else f"label {label}", fontsize=7)
        ax.axis("off")
    if events is not None:
        ax = fig.add_subplot(grid[rows:, :], projection="3d")
        on = events["p"].astype(bool)
        for mask, color, name in ((on, "tab:red", "ON"), (~on, "tab:blue", "OFF")):
            ax.scatter(events["x"][mask], events["t"][mask] / 1000.0, events["y"][mask], s=0.3, c=color, label=name)
        ax.set_xlabel("x")
        ax.set_ylabel("t (ms)")
        ax.set_zlabel("y")
        ax.invert_zaxis()
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"{dataset.name} ({dataset.source}), label {label}"
                 + (" - frames: red ON, blue OFF" if dataset.encoding == "frames" else ""), fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=out.suffix[1:].lower(), dpi=110)
    plt.close(fig)
    write_bytes_atomic(out, buffer.getvalue())


def _frame_rgb(frame: np.ndarray, polar: bool) -> np.ndarray:
    """An ``[H, W, 3]`` image in [0, 1]: ON red / OFF blue for event frames, else the image."""
    if polar:
        scale = max(float(frame.max()), 1.0)
        rgb = np.zeros(frame.shape[1:] + (3,), dtype=np.float32)
        rgb[..., 0] = frame[1] / scale
        rgb[..., 2] = frame[0] / scale
        return rgb
    image = np.moveaxis(frame, 0, -1)
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else image * 0
    return image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)


@data.command("emulate-nmnist")
@click.option("--out", type=NonEmptyPath(file_okay=False, path_type=Path), required=True,
              help="Folder to write Train/<digit>/*.bin and Test/<digit>/*.bin into.")
@click.option("--per-class", type=integer(1), default=None,
              help="Only the first N digits of each class in each split (default: all 5,000).")
@click.option("--seed", type=integer(0), default=0, show_default=True, help="Sensor and noise seed.")
def emulate_nmnist(out, per_class, seed):
    """Write emulated N-MNIST recordings (genuine 40-bit .bin files) from the 5,000 MNIST digits."""

    before = read_manifest(out)
    manifest = write_emulated_nmnist(out, per_class=per_class, seed=seed, params=EmulatorParams())
    redone = before is None or before.get("key") != manifest["key"] or before.get("per_class") != per_class
    for folder, split in manifest["splits"].items():
        click.echo(f"{folder:<6} {split['samples']} recordings, {split['events'] / max(split['samples'], 1):.0f} "
                   f"events per recording")
    click.echo(("wrote" if redone else "already there (nothing redone):") + f" {out} (data_source emulated)")
