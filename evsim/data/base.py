"""The dataset interface shared by every loader.

A loader returns a :class:`Dataset`: two :class:`Split` objects plus metadata.
Inputs are stored in one of three encodings:

``"rate"``   static intensities in [0, 1], shape ``[N, D]``; each time step draws
             Bernoulli spikes with that probability (the paper's MNIST encoding).
``"direct"`` static analog values, shape ``[N, D]``; the same vector is fed at every
             time step (the first layer then performs MACs, not accumulates).
``"frames"`` event-count frames, shape ``[N, T, C, H, W]``; the frame count T is fixed
             by the framing, and a value k counts as k events. The event loaders keep
             them as :class:`~evsim.data.frames.SparseFrames` (an event store); a dense
             array works too.

Loaders own file I/O; everything downstream (encoders, layers, the trainer) only
sees these arrays.
"""
from __future__ import annotations

import os

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError, DataError, ShapeError

ENCODINGS = ("rate", "direct", "frames")
SOURCES = ("auto", "real", "emulated")
# DataOptions fields that only some datasets take (each says which at registration,
# see evsim.data.register); every other dataset needs them at their default.
FRAMING_OPTIONS = ("slicing", "crop", "denoise_us", "downsample")

# Frame count T per dataset when the user gives no --time-steps (SD-SNN paper values).
DEFAULT_TIME_STEPS = {"nmnist": 20, "dvsgesture": 64, "mnist": 20, "cifar10": 20, "shd": 50}


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    Attributes
    ----------
    inputs : ndarray or SparseFrames
        ``[N, D]`` float32 for static encodings; for ``"frames"``, ``[N, T, C, H, W]``
        counts: :class:`~evsim.data.frames.SparseFrames` (what the event loaders give),
        or a dense float32 or unsigned integer array.
    labels : ndarray
        ``[N]`` int64 class indices.
    """

    inputs: np.ndarray | SparseFrames
    labels: np.ndarray

    def __post_init__(self):
        inputs = self.inputs
        # The encoders and kernels take real arrays: a list or object values fail deep inside them.
        if not isinstance(inputs, SparseFrames) and not (isinstance(inputs, np.ndarray)
                                                          and inputs.dtype.kind in "fiub"):
            raise ShapeError("a split's inputs must be a NumPy array of real numbers (or SparseFrames), got "
                             + (f"{inputs.dtype} values" if isinstance(inputs, np.ndarray) else type(inputs).__name__)
                             + "; give np.asarray(inputs, dtype=np.float32)")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ShapeError(f"labels must be a vector of integer class indices, got {labels.dtype} {labels.shape}")
        if len(self.inputs) != labels.shape[0]:
            raise ShapeError(f"a split has {len(self.inputs)} inputs but {labels.shape[0]} labels")
        object.__setattr__(self, "labels", labels)  # a list of labels works as an array everywhere

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: train and test splits plus what describes them.

    Attributes
    ----------
    name : registry name, e.g. ``"mnist"``.
    train, test : the two splits.
    val : the validation split held out of the training data (:func:`hold_out`), or
        ``None``; loaders leave it ``None`` and the trainer sets it.
    n_classes : number of classes.
    sample_shape : shape of one sample without the time axis, ``(D,)`` or ``(C, H, W)``.
    encoding : one of :data:`ENCODINGS`.
    source : where the data came from: ``"real"``, ``"emulated"``, ``"mnist-5k"``, ...
        Recorded in every saved result so nobody mistakes emulated data for real.
    time_steps : frame count fixed by framing (``"frames"`` only), else ``None``.
    meta : free-form facts for reports (sensor size, framing parameters, notices), and,
        where the loader fingerprints its files (the event datasets), ``fingerprint``:
        ``{split: files_fingerprint}``, which a run records so that it is never evaluated
        or resumed on other data.
    """

    name: str
    train: Split
    test: Split
    n_classes: int
    sample_shape: tuple
    encoding: str
    source: str
    time_steps: int | None = None
    meta: dict = field(default_factory=dict)
    val: Split | None = None

    def __post_init__(self):
        if isinstance(self.n_classes, (bool, np.bool_)) or not isinstance(self.n_classes, (int, np.integer)) \
                or self.n_classes < 1:
            raise ShapeError(f"dataset {self.name!r}: n_classes must be a whole number >= 1, got {self.n_classes!r}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"dataset {self.name!r}: encoding must be one of {', '.join(ENCODINGS)}, got "
                              f"{self.encoding!r}")
        splits = (("train", self.train), ("test", self.test)) + (() if self.val is None else (("val", self.val),))
        for name, split in splits:
            if not isinstance(split, Split):
                raise ShapeError(f"dataset {self.name!r}: {name} must be a Split(inputs, labels), got "
                                 f"{type(split).__name__}")
            labels = np.asarray(split.labels)
            if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
                raise ShapeError(f"dataset {self.name!r}: {name} labels run {labels.min()}..{labels.max()}, "
                                 f"outside the {self.n_classes} classes 0..{self.n_classes - 1}")
            sample = _sample_shape(split.inputs, self.encoding)
            if int(np.prod(sample)) != self.n_inputs:
                raise ShapeError(f"dataset {self.name!r}: {name} samples hold {int(np.prod(sample))} values "
                                 f"(shape {tuple(sample)}) but sample_shape {tuple(self.sample_shape)} holds "
                                 f"{self.n_inputs}; give every split samples of sample_shape")

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.sample_shape))


def _sample_shape(inputs, encoding: str) -> tuple:
    """The shape of one sample of a split's ``inputs`` without its time axis: ``[N, D]``
    static inputs, ``[N, T, C, H, W]`` frames (dense or :class:`SparseFrames`)."""
    if isinstance(inputs, SparseFrames):
        return inputs.sample_shape
    shape = np.shape(inputs)
    return tuple(shape[2:] if encoding == "frames" else shape[1:])


@dataclass(frozen=True)
class DataOptions:
    """Options that choose and shape a dataset (never enter a kernel).

    Attributes
    ----------
    data_dir : folder holding real data files; ``None`` means ``$EVSIM_DATA`` or none.
    cache_dir : where framed/emulated data is cached; ``None`` means the default
        (``$EVSIM_CACHE`` or ``~/.cache/evsim``).
    source : ``"auto"`` (real if present, else the offline substitute), ``"real"``
        or ``"emulated"``.
    time_steps : number of simulation steps / frames T.
    encoding : ``None`` for the dataset's default, else one of :data:`ENCODINGS`.
    slicing : event framing, ``"events"`` (equal event number) or ``"time"``.
    crop : crop N-MNIST's 34x34 sensor to 32x32.
    denoise_us : ``tonic.transforms.Denoise`` filter time in microseconds, 0 = off.
    downsample : target spatial size for DVS-Gesture (e.g. 32 or 48), 0 = native.
    seed : seed for the fixed train/test split and the emulator.
    download : let a loader download real data (tonic) when it is not on disk; the
        environment variable ``EVSIM_OFFLINE`` (any non-empty value) also turns it off.
    """

    data_dir: Path | None = None
    cache_dir: Path | None = None
    source: str = "auto"
    time_steps: int = 20
    encoding: str | None = None
    slicing: str = "events"
    crop: bool = False
    denoise_us: int = 0
    downsample: int = 0
    seed: int = 0
    download: bool = True


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified hold-out: ``(kept, held)``, each ascending.

    ``round(fraction * N)`` samples are held out, shared between the classes in
    proportion to their sizes (largest remainders get the rounding; among equal
    remainders, classes in order from the ``seed mod K``-th of the K, so that over seeds
    no class is favoured by its number), never a whole
    class (a class of one sample keeps it for training, and its share of the rounding
    goes to the next class in line). The result is a pure function of ``labels``,
    ``fraction`` and ``seed``.

    Raises
    ------
    ConfigError
        If ``fraction`` is not in [0, 1).
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1) (0 = no validation split), got {fraction}")
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    quota = fraction * sizes
    take = np.floor(quota).astype(np.int64)  # below each size, as fraction < 1
    extra = int(round(fraction * labels.size)) - int(take.sum())
    open_classes = np.flatnonzero(take < sizes - 1)
    ties = (open_classes - seed) % classes.size
    in_line = open_classes[np.lexsort((ties, -(quota - take)[open_classes]))]
    take[in_line[:max(extra, 0)]] += 1
    held = np.zeros(labels.shape[0], dtype=bool)
    rng = np.random.default_rng([seed, 4])  # its own stream: the trainer's draws stay unchanged
    for label, n in zip(classes, take):
        if n > 0:
            held[rng.choice(np.flatnonzero(labels == label), n, replace=False)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split ``split`` into ``(train, val)`` stratified by label (:func:`stratified_indices`).

    Selecting from a :class:`~evsim.data.frames.SparseFrames` copies no events.

    Raises
    ------
    ConfigError
        If ``fraction`` is not in [0, 1).
    """
    kept, held = stratified_indices(split.labels, fraction, seed)
    return (Split(split.inputs[kept], split.labels[kept]), Split(split.inputs[held], split.labels[held]))


def with_validation(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """``dataset`` with ``fraction`` of its training split held out as its validation split
    (:func:`hold_out`), as a run trained on it: a pure function of the seed and the data,
    so resumes and evaluations of the run hold out the same samples. Unchanged where it
    has a validation split already, ``fraction`` is 0, or too few samples leave none.

    Raises
    ------
    ConfigError
        If ``fraction`` is not in [0, 1).
    """
    if not fraction or dataset.val is not None:
        return dataset
    train, val = hold_out(dataset.train, fraction, seed)
    return replace(dataset, train=train, val=val) if len(val) else dataset


def first_steps(dataset: Dataset, time_steps: int) -> Dataset:
    """``dataset`` as a network sees it in only ``time_steps`` steps: for frames, the
    first ``time_steps`` of each sample's frames (the same recording, answered sooner);
    static images are encoded per step anyway and stay as they are.

    Raises
    ------
    ConfigError
        If the frames hold fewer than ``time_steps`` steps.
    """
    if dataset.encoding != "frames" or dataset.time_steps == time_steps:
        return dataset
    if dataset.time_steps is not None and time_steps > dataset.time_steps:
        raise ConfigError(f"--time-steps {time_steps}: {dataset.name}'s frames hold {dataset.time_steps} steps; give "
                          f"at most {dataset.time_steps} (the first T frames of each recording)")

    def cut(split: Split | None) -> Split | None:
        if split is None:
            return None
        inputs = split.inputs
        inputs = inputs.first_steps(time_steps) if isinstance(inputs, SparseFrames) else inputs[:, :time_steps]
        return Split(inputs, split.labels)

    return Dataset(dataset.name, cut(dataset.train), cut(dataset.test), dataset.n_classes, dataset.sample_shape,
                   dataset.encoding, dataset.source, time_steps, dataset.meta, cut(dataset.val))


def read_from(root, folder) -> bool:
    """Whether data read from ``root`` (a dataset's ``meta["root"]``) came from ``folder``:
    ``root`` is ``folder`` or inside it (``DIR/NMNIST`` of tonic's layout), symbolic links
    resolved. False where either is None."""
    return root is not None and folder is not None and Path(root).resolve().is_relative_to(Path(folder).resolve())


def data_dir_of(options: DataOptions) -> Path | None:
    """``options.data_dir``, else ``$EVSIM_DATA``, else ``None``."""
    if options.data_dir is not None:
        return Path(options.data_dir).expanduser()
    env = os.environ.get("EVSIM_DATA")
    return Path(env).expanduser() if env else None


def refuse_missing_data_dir(options: DataOptions, substitute: str) -> None:
    """Refuse a data folder given (``--data-dir`` or ``$EVSIM_DATA``) that does not exist or
    is not a folder, where the loader would otherwise fall back to ``substitute``: a
    mistyped path must not train on the substitute.

    Raises
    ------
    DataError
        Naming the folder and both fixes.
    """
    data_dir = data_dir_of(options)
    if data_dir is not None and not data_dir.is_dir():
        given = "--data-dir" if options.data_dir is not None else "$EVSIM_DATA"
        what = "is not a folder" if data_dir.exists() else "does not exist"
        leave = "leave --data-dir out" if given == "--data-dir" else "unset $EVSIM_DATA"
        raise DataError(f"{data_dir} ({given}) {what}; give the folder that holds the data, or {leave} "
                        f"(or use --source emulated) to use {substitute}")


def check_source(source: str) -> None:
    """Raise :class:`ConfigError` unless ``source`` is one of :data:`SOURCES`."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
