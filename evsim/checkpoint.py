"""Saving and loading networks and training checkpoints: plain NumPy ``.npz`` + JSON.

Nothing is pickled: arrays are stored as ``.npy`` members, everything else as one
JSON string (the ``meta`` member), and files are read with ``allow_pickle=False``.
Files are written atomically (temporary file beside the target, fsync, rename), so a
reader sees either the previous complete file or the new complete one: a write that
fails or is killed half-way leaves the previous checkpoint in place.

Two kinds of file share the network layout (``l<k>_indptr``, ``l<k>_indices``,
``l<k>_data``, ``l<k>_shape``, ``l<k>_bias``, ``l<k>_alive``, ``l<k>_develops``), so
:func:`load_network` reads either:

``network.npz``            the trained network only (inference, profiling, export).
``checkpoint-*.npz``       everything a run needs to continue bit for bit
                           (:class:`TrainingState`): per-synapse state arrays
                           (optimizer moments, dendritic-spine ranges and counters,
                           as ``l<k>_state__<name>``), bias moments
                           (``l<k>_bias_state__<name>``), the structure controller's
                           state (``structure__<name>``), the shuffled order of an
                           interrupted epoch (``epoch__order``), and in ``meta``: the
                           config, epoch, batches seen, metrics, optimizer steps and
                           the bit-generator states of every random generator.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from evsim.errors import CheckpointError, ConfigError, ShapeError
from evsim.files import link_atomic, write_bytes_atomic
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.synapses import SynapseStore, check_csr

NETWORK_FILE = "network.npz"
CHECKPOINT_LATEST = "checkpoint-latest.npz"
CHECKPOINT_BEST = "checkpoint-best.npz"
# 2: SD-SNN's regeneration counters are kept over the incomplete columns only.
CHECKPOINT_FORMAT = 2
# What np.load and the checks below raise on a damaged file.
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError)


@dataclass
class TrainingState:
    """Everything a training run needs to continue exactly where it stopped.

    Attributes
    ----------
    network : the network, with every per-synapse and bias state array.
    config : the run's ``TrainConfig.to_dict()``.
    data_source : where the data came from (resuming on other data is refused).
    epoch : finished epochs. batches_seen : optimizer steps taken by the trainer.
    metrics : the metric rows so far.
    optimizer : ``{"name", "steps"}`` (moments live in the network's state arrays).
    rng : name -> ``bit_generator.state`` (JSON) of every random generator.
    structure : the structure controller's ``state_dict()``, or None.
    in_epoch : for a run stopped inside an epoch, that epoch's ``order`` (array),
        ``position`` (samples done) and running totals; None at an epoch boundary.
    """

    network: Network
    config: dict
    data_source: str
    epoch: int
    batches_seen: int
    metrics: list[dict]
    optimizer: dict
    rng: dict
    structure: dict | None = None
    in_epoch: dict | None = None


# ------------------------------------------------------------------ networks
def _network_arrays(network: Network, with_state: bool) -> dict[str, np.ndarray]:
    arrays = {}
    for k, layer in enumerate(network.layers):
        arrays.update({f"l{k}_indptr": layer.store.indptr, f"l{k}_indices": layer.store.indices,
                       f"l{k}_data": layer.store.data, f"l{k}_shape": np.array(layer.store.shape),
                       f"l{k}_bias": layer.bias, f"l{k}_alive": layer.alive,
                       f"l{k}_develops": np.array(layer.develops)})
        if with_state:
            arrays.update({f"l{k}_state__{name}": values for name, values in layer.store.state.items()})
            arrays.update({f"l{k}_bias_state__{name}": values for name, values in layer.bias_state.items()})
    return arrays


def _network_from(f, meta: dict, path_option: str) -> Network:
    """Rebuild the network (with any saved state arrays) from an open npz file.

    Raises ValueError (ShapeError for the structure) unless the arrays are a consistent
    network with finite weights, biases and neuron parameters.
    """
    layers = []
    for k in range(meta["n_layers"]):
        indptr, indices, data = f[f"l{k}_indptr"], f[f"l{k}_indices"], f[f"l{k}_data"]
        shape = tuple(int(n) for n in f[f"l{k}_shape"])
        check_csr(indptr, indices, shape)
        matrix = sp.csr_matrix((data, indices, indptr), shape=shape)
        state = {key.split("__", 1)[1]: np.array(f[key]) for key in f.files if key.startswith(f"l{k}_state__")}
        layer = SparseLinear(SynapseStore(matrix, state), f[f"l{k}_bias"], path=path_option,
                             develops=bool(f[f"l{k}_develops"]))
        layer.bias_state = {key.split("__", 1)[1]: np.array(f[key])
                            for key in f.files if key.startswith(f"l{k}_bias_state__")}
        alive = f[f"l{k}_alive"]
        if alive.shape != (layer.n_out,):
            raise ShapeError(f"l{k}_alive has shape {alive.shape}, expected ({layer.n_out},)")
        layer.alive = alive.astype(bool)
        layer.rebuild()
        layers.append(layer)
    # Every field, checked: a default in place of a lost one, or a hard reset for a
    # subtractive one, would change every spike.
    network = Network(layers, LIFParameters.from_dict(meta["lif"]))
    check_finite(network)
    return network


def check_finite(network: Network) -> None:
    """Raise ValueError unless every weight, bias and LIF parameter is finite: one NaN
    would spread silently through every spike count and gradient after it."""
    lif = network.lif
    if not all(math.isfinite(value) for value in (lif.decay, lif.v_th, lif.width)):
        raise ValueError(f"LIF parameters are not finite numbers (decay {lif.decay}, v_th {lif.v_th}, "
                         f"width {lif.width})")
    for k, layer in enumerate(network.layers):
        for name, values in (("weights", layer.store.data), ("biases", layer.bias)):
            if not np.all(np.isfinite(values)):
                raise ValueError(f"layer {k} holds NaN or infinite {name}")


def _npz_bytes(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    return buffer.getvalue()


def _reason(exc: BaseException) -> str:
    """A one-line description of a read error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def save_network(path: Path, network: Network) -> None:
    """Write the network's synapses (CSR), biases, alive masks and neuron parameters."""
    meta = {"format": 1, "n_layers": len(network.layers), "lif": network.lif._asdict()}
    write_bytes_atomic(Path(path), _npz_bytes(meta, _network_arrays(network, with_state=False)))


def load_network(path: Path, path_option: str = "auto") -> Network:
    """Read a network written by :func:`save_network` or :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, corrupt or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained network here; train a run first (evsim train --out RUN_DIR)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return _network_from(f, json.loads(str(f["meta"])), path_option)
    except _READ_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt or truncated network file ({_reason(exc)}); "
                              "retrain or restore it") from None


# --------------------------------------------------------- stored configurations
# The JSON type of each value in a default TrainConfig.to_dict() -> (test, what it must be).
_CONFIG_TYPES = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            "a finite number"),
    str: (lambda v: isinstance(v, str), "a string"),
    type(None): (lambda v: v is None or isinstance(v, str), "a string or null"),
    list: (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
           "a list of integers"),
}


def _config_type_problem(values, reference: dict, where: str = "") -> str | None:
    """The first value in ``values`` whose type differs from the one in ``reference``, described
    (a missing key is :func:`_missing_config_key`'s to report)."""
    if not isinstance(values, dict):
        return f"{where.rstrip('.') or 'the configuration'} must be an object, got {values!r}"
    for key, default in reference.items():
        if key not in values:
            continue
        if isinstance(default, dict):
            problem = _config_type_problem(values[key], default, f"{where}{key}.")
        else:
            test, kind = _CONFIG_TYPES[type(default)]
            problem = None if test(values[key]) else f"{where}{key} must be {kind}, got {values[key]!r}"
        if problem:
            return problem
    return None


def _missing_config_key(values: dict, reference: dict, where: str = "") -> str | None:
    """The dotted name of the first key of ``reference`` (nested sections included) that
    ``values`` lacks. Keys ``values`` has beyond ``reference`` are not looked at: the writer
    adds some beside the configuration (``data_source``), and from_dict refuses unknown
    ones inside a section."""
    for key, default in reference.items():
        if key not in values:
            return f"{where}{key}"
        if isinstance(default, dict) and isinstance(values[key], dict):
            missing = _missing_config_key(values[key], default, f"{where}{key}.")
            if missing:
                return missing
    return None


def stored_config(values, path: Path):
    """The validated :class:`~evsim.train.TrainConfig` of a configuration read from ``path``
    (a checkpoint's ``meta`` or a run's ``config.json``): a hand-edited or damaged value
    must be refused here, not fail deep inside training or evaluation. So must a missing
    key: evsim writes every one, and a default put in its place would silently change
    the run.

    Raises
    ------
    CheckpointError
        Naming ``path`` and the first invalid value or missing key.
    """
    from evsim.train import TrainConfig  # here, not at the top: evsim.train imports this module

    reference = TrainConfig().to_dict()
    try:
        problem = _config_type_problem(values, reference)
        if problem is None:
            missing = _missing_config_key(values, reference)
            if missing is not None:
                raise CheckpointError(f"{path}: stored configuration has no {missing!r} (the file is damaged or "
                                      "was written by another evsim version); restore it, or re-run training to "
                                      "write one with this evsim")
            return TrainConfig.from_dict(values).validate()
    except ConfigError as exc:
        problem = str(exc)
    raise CheckpointError(f"{path}: invalid stored configuration ({problem}); restore the file, or start the run "
                          "again")


# ------------------------------------------------------- training checkpoints
def _pack(prefix: str, values: dict, arrays: dict[str, np.ndarray]) -> dict:
    """JSON description of ``values``: arrays and NumPy scalars go to ``arrays`` under
    ``prefix + name`` (so their dtype survives: a float32 scalar must not come back as
    a Python float, which NumPy would promote differently), everything else stays JSON."""
    spec = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, np.ndarray):
            arrays[key] = value
            spec[name] = {"array": key}
        elif isinstance(value, np.generic):
            arrays[key] = np.asarray(value)
            spec[name] = {"scalar": key}
        else:
            spec[name] = {"json": value}
    return spec


def _unpack(spec: dict, f) -> dict:
    out = {}
    for name, where in spec.items():
        if "array" in where:
            out[name] = np.array(f[where["array"]])
        elif "scalar" in where:
            out[name] = f[where["scalar"]][()]
        else:
            out[name] = where["json"]
    return out


def checkpoint_bytes(state: TrainingState) -> bytes:
    """Serialise ``state`` (the bytes of a ``checkpoint-*.npz`` file).

    Raises
    ------
    CheckpointError
        If some state value is neither an array, a NumPy scalar nor JSON-ready.
    """
    arrays = _network_arrays(state.network, with_state=True)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "kind": "training-checkpoint",
        "n_layers": len(state.network.layers),
        "lif": state.network.lif._asdict(),
        "config": state.config,
        "data_source": state.data_source,
        "epoch": state.epoch,
        "batches_seen": state.batches_seen,
        "optimizer": state.optimizer,
        "rng": state.rng,
        "structure": None if state.structure is None else _pack("structure__", state.structure, arrays),
        "in_epoch": None if state.in_epoch is None else _pack("epoch__", state.in_epoch, arrays),
        "metrics": state.metrics,
    }
    try:
        return _npz_bytes(meta, arrays)
    except TypeError as exc:
        raise CheckpointError(f"cannot checkpoint the training state: {exc}") from None


def write_checkpoint(paths: list[Path], payload: bytes) -> None:
    """Write the bytes of a checkpoint atomically to the first path in ``paths``; the
    others become hard links to it (the default N-MNIST run's 45 MB checkpoint took
    0.05-0.65 s to write and fsync on the development machine, twice when the test
    accuracy improved)."""
    first, *others = [Path(path) for path in paths]
    write_bytes_atomic(first, payload)
    for path in others:
        link_atomic(first, path, payload)


def save_checkpoint(paths: list[Path], state: TrainingState) -> None:
    """Serialise ``state`` once and write it (see :func:`write_checkpoint`)."""
    write_checkpoint(paths, checkpoint_bytes(state))


class CheckpointWriter:
    """Saves checkpoints, writing them on a background thread.

    The state is serialised at once, so training can change it afterwards. The bytes
    then reach the disk while training goes on: on the development machine, a 34 MB
    checkpoint of the default N-MNIST run took 0.1-1.2 s to write and fsync, which was
    8 s of a 72 s run. One write runs at a time, and a new save waits for the last one.
    :meth:`wait` returns once the last write is on disk, and raises its error if it
    failed. The thread is not a daemon, so the interpreter lets a write finish before it
    exits.
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evsim-checkpoint")
        self._pending: tuple[Path, Future] | None = None

    def save(self, paths: list[Path], state: TrainingState) -> None:
        payload = checkpoint_bytes(state)
        self.wait()
        self._pending = Path(paths[0]), self._pool.submit(write_checkpoint, paths, payload)

    def wait(self) -> None:
        """Block until the last checkpoint is written.

        Raises
        ------
        CheckpointError
            If writing it failed (the previous checkpoint at that path is intact).
        """
        if self._pending is None:
            return
        (path, future), self._pending = self._pending, None
        try:
            future.result()
        except OSError as exc:
            raise CheckpointError(f"{path}: the checkpoint could not be written ({_reason(exc)}); the previous one "
                                  f"is intact; check the free space and permissions of {path.parent}") from None


def load_checkpoint(path: Path, path_option: str = "auto") -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a training checkpoint, or is truncated,
        corrupt or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; is {path.parent} a run folder written by evsim train?")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("kind") != "training-checkpoint":
                raise CheckpointError(f"{path}: not a training checkpoint (a network-only file?)")
            if meta["format"] != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path}: checkpoint format {meta['format']} is not supported by this "
                                      f"evsim (format {CHECKPOINT_FORMAT}); resume it with the evsim that wrote "
                                      f"it, or start the run again")
            stored_config(meta["config"], path)
            return TrainingState(
                network=_network_from(f, meta, path_option),
                config=meta["config"], data_source=meta["data_source"], epoch=meta["epoch"],
                batches_seen=meta["batches_seen"], metrics=meta["metrics"], optimizer=meta["optimizer"],
                rng=meta["rng"],
                structure=None if meta["structure"] is None else _unpack(meta["structure"], f),
                in_epoch=None if meta["in_epoch"] is None else _unpack(meta["in_epoch"], f),
            )
    except CheckpointError:
        raise
    except _READ_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_reason(exc)}); restore the file, or "
                              f"resume from {CHECKPOINT_BEST} by copying it to {CHECKPOINT_LATEST}") from None
