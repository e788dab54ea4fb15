"""NIR export and import (Neuromorphic Intermediate Representation, the ``nir`` package).

An evsim network of L layers becomes the NIR graph::

    input -> fc0 (Affine) -> lif0 (LIF) -> fc1 (Affine) -> lif1 (LIF) -> ... -> output

**Affine** ``fcK``: ``weight`` float32 ``[n_out, n_in]`` (NIR's ``y = W x + b``; evsim
stores the transpose, rows = presynaptic), with pruned synapses as zeros, and ``bias``.

**LIF** ``lifK``. NIR's LIF is ``tau dv/dt = (v_leak - v) + r I``, a spike when
``v > v_threshold``, after which ``v = v_reset``. Forward Euler with step ``dt`` gives
``v[t] = (1 - dt/tau) v[t-1] + (dt r / tau) I[t]``. evsim's discrete LIF
(:mod:`evsim.neuron`) is::

    u[t] = decay * u[t-1] * (1 - o[t-1]) + I[t],   o[t] = [u[t] > v_th]   (hard reset)

so with a step of ``dt`` seconds (:data:`NIR_DT`, recorded as graph metadata ``dt``)
the exported parameters are ``tau = dt / (1 - decay)``, ``r = tau / dt`` (unit input
gain), ``v_leak = 0``, ``v_threshold = v_th``, ``v_reset = 0``: a neuron that spiked
starts the next step from 0, which is what evsim's factor ``(1 - o[t-1])`` does. The
default decay 0.2 gives ``tau = 0.125 ms``, ``r = 1.25``. The step is 0.1 ms because
that is what snnTorch's NIR import assumes for every graph (it ignores ``dt``); evsim
reads ``dt``, and graphs it wrote with ``dt = 1`` (one step) import as before. evsim's *subtractive* reset
(``u[t] = decay u[t-1] - v_th o[t-1] + I[t]``) has no NIR equivalent: it is exported
with ``v_reset = 0`` and flagged in the metadata, so other NIR tools simulate it as a
hard reset; evsim's own import restores it.

**Metadata** (ignored by other tools) makes evsim's own round trip exact:

- graph: ``evsim_format``, ``evsim_lif`` (the exact :class:`LIFParameters` as JSON:
  ``tau`` only approximates ``decay`` in floating point), ``dt``;
- ``fcK``: ``evsim_indptr``, ``evsim_indices`` (the CSR structure, so the sparsity,
  including synapses whose weight is exactly 0, is not lost) and ``evsim_develops``;
- ``lifK``: ``evsim_alive`` (dead neurons; their weights and bias are exported as 0,
  so they never fire in any simulator, and a graph that gives one a synapse or a bias
  is refused).

A graph without this metadata (from another tool) can be imported when it is a chain
of Affine/Linear -> LIF nodes whose LIF parameters are the same for every neuron,
with ``v_leak = v_reset = 0``: ``decay = 1 - dt/tau`` and the input gain
``dt r / tau`` is folded into the weights; synapses are the nonzero weights. evsim
computes in float32, so it refuses what float32 cannot hold or what makes no neuron:
``tau < dt`` (or so long that the leak is 1), ``r <= 0``, a threshold, gain or weight
beyond float32's range, and every NaN or infinity, naming the node.

A graph whose evsim metadata is malformed (``evsim_lif`` not a JSON object of every
:class:`LIFParameters` field with valid values, another ``evsim_format``, a broken CSR
structure or alive mask), or disagrees with its nodes (a graph edited after the export:
the metadata would silently win, or weights outside the CSR structure would vanish), is
refused with one line naming the node and the fix.
"""
from __future__ import annotations

import errno
import io
import json
import math
import os
from pathlib import Path

import h5py
import nir
from nir.serialization import hdf2dict
import numpy as np

from evsim.checkpoint import check_writable_network
from evsim.config import FLOAT32_MAX
from evsim.errors import CheckpointError, ConfigError, ShapeError
from evsim.files import write_bytes_atomic
from evsim.layers import Pool2d, SparseLinear, SpikingConv2d
from evsim.memory import refuse_beyond_memory
from evsim.network import Network
from evsim.readers import cannot_read, reads, reason
from evsim.neuron import NIR_DT, LIFParameters, lif_constants
from evsim.synapses import SynapseStore, check_csr

NIR_FORMAT = 1


def network_to_nir(network: Network, trained_on: dict | None = None) -> nir.NIRGraph:
    """The NIR graph of ``network`` (see the module docstring for the mapping);
    ``trained_on`` (``dataset``, ``data_source``, ``run_id``) is recorded as the graph's
    ``evsim_trained_on`` metadata (JSON), so that a network trained on an emulation is
    never taken for one trained on the real data.

    Raises
    ------
    ConfigError
        If ``network`` is not a Network.
    """
    if not isinstance(network, Network):
        raise ConfigError(f"network_to_nir takes a Network, got {type(network).__name__}")
    lif = network.lif
    shape = getattr(network.layers[0], "in_shape", (network.sizes[0],))
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges, previous = [], "input"
    for k, layer in enumerate(network.layers):
        if len(shape) == 3 and not hasattr(layer, "in_shape"):
            # Events carry flat indices; a NIR graph says where the map becomes a vector.
            nodes[f"flatten{k}"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
            edges.append((previous, f"flatten{k}"))
            previous = f"flatten{k}"
        shape = getattr(layer, "out_shape", (layer.n_out,))
        layer_nodes, layer_edges, entry, exit_ = layer.nir_nodes(str(k), lif)
        nodes.update(layer_nodes)
        edges += [(previous, entry), *layer_edges]
        previous = exit_
    nodes["output"] = nir.Output(output_type={"output": np.array([network.sizes[-1]])})
    edges.append((previous, "output"))
    metadata = {"evsim_format": NIR_FORMAT, "evsim_lif": json.dumps(lif._asdict()), "dt": NIR_DT}
    if trained_on:
        metadata["evsim_trained_on"] = json.dumps(trained_on)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(path: Path, network: Network, trained_on: dict | None = None) -> None:
    """Write ``network`` as a NIR file (HDF5), atomically (``trained_on``: see :func:`network_to_nir`).

    Raises
    ------
    ConfigError
        If ``network`` is not a Network (the arguments swapped: the path comes first) or
        ``path`` is a folder.
    """
    check_writable_network(path, network, "write_nir")
    buffer = io.BytesIO()
    nir.write(buffer, network_to_nir(network, trained_on))
    write_bytes_atomic(Path(path), buffer.getvalue())


@reads("NIR graph", CheckpointError, "write it again with nir.write")
def read_nir(path: Path, dt: float | None = None, path_option: str = "auto") -> Network:
    """Read a NIR file into a :class:`Network` (see :func:`network_from_nir`).

    Raises
    ------
    CheckpointError
        If the file is missing (or a broken link, or a loop of links) or is not a readable
        NIR graph.
    ConfigError
        If a node has no type, a type NIR does not have, or lacks a field or holds text
        where evsim needs numbers; the nodes disagree (nir's own checks); the arrays would
        not fit in memory once imported; the graph is not one evsim can represent, or its
        evsim metadata is malformed (the message names the file).
    """
    graph = _read_graph(Path(path))
    try:
        return network_from_nir(graph, dt, path_option)
    except (ConfigError, ShapeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


@reads("NIR graph", CheckpointError, "write it again with nir.write")
def holds_evsim_lif(path: Path) -> bool:
    """Whether a NIR file holds evsim's exact LIF parameters (``evsim_lif``), which the
    import uses instead of the LIF nodes' time constants, so that no ``dt`` applies."""
    return "evsim_lif" in _read_graph(Path(path)).metadata


# What an exported graph's evsim_trained_on metadata may say of the data, each a string.
TRAINED_ON_KEYS = ("dataset", "data_source", "run_id")


@reads("NIR graph", CheckpointError, "write it again with nir.write")
def read_nir_trained_on(path: Path) -> dict | None:
    """The data a NIR file's network was trained on, as ``evsim export`` records it (its
    ``evsim_trained_on`` metadata: ``dataset``, ``data_source``, ``run_id``), or None for a
    graph that says nothing of it (one from another tool).

    Raises
    ------
    CheckpointError
        If the file is missing or is not a readable NIR graph.
    ConfigError
        If the metadata is there but is not such a record.
    """
    text = _read_graph(Path(path)).metadata.get("evsim_trained_on")
    if text is None:
        return None
    try:
        record = json.loads(str(text.decode() if isinstance(text, bytes) else text))
    except ValueError:
        record = None
    if not (isinstance(record, dict) and record and set(record) <= set(TRAINED_ON_KEYS)
            and all(isinstance(value, str) for value in record.values())):
        raise ConfigError(f"{path}: metadata evsim_trained_on must be a JSON object of {', '.join(TRAINED_ON_KEYS)} "
                          f"(strings), got {_show(text)}; export the network again with evsim export")
    return record


def _read_graph(path: Path) -> nir.NIRGraph:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not os.path.islink(path):
            raise CheckpointError(f"{path}: no such NIR file") from None
        raise CheckpointError(cannot_read(path, "NIR graph", exc)) from None
    if not h5py.is_hdf5(path):
        raise CheckpointError(f"{path}: not a readable NIR graph (not an HDF5 file); give a file written by nir.write")
    _check_nodes(path)
    # nir.read's two steps apart: a damaged file is read again from its source, a graph
    # whose nodes disagree (sizes, types) is fixed where it was made.
    try:
        with h5py.File(path, "r") as file:
            values = hdf2dict(file["node"])
    except Exception as exc:  # h5py raises whatever a damaged file trips: OSError, KeyError...
        raise CheckpointError(f"{path}: not a readable NIR graph ({reason(exc)}); write it again with "
                              "nir.write") from None
    try:
        return nir.dict2NIRNode({**values, "type_check": True})
    except Exception as exc:  # nir's nodes check themselves with assert, ValueError, KeyError...
        raise ConfigError(f"{path}: not a consistent NIR graph ({reason(exc)}); fix it where the graph was "
                          "made") from None


# The fields nir.read needs of each node type evsim imports, and those of them that hold numbers.
_NODE_FIELDS = {"Input": ("shape",), "Output": ("shape",), "Affine": ("weight", "bias"), "Linear": ("weight",),
                "LIF": ("tau", "r", "v_leak", "v_threshold"),
                "Conv2d": ("weight", "stride", "padding", "dilation", "groups", "bias"),
                "AvgPool2d": ("kernel_size", "stride", "padding"), "Flatten": ("start_dim", "end_dim")}
_NUMERIC_FIELDS = {"shape", "weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"}
_NIR_TYPES = {name for name, value in vars(nir).items()
              if isinstance(value, type) and issubclass(value, nir.NIRNode) and value is not nir.NIRNode}
# Peak memory of an import per value of the graph's arrays (nir.read's copy, the weights
# as float32 times the input gain, the CSR structure, the store's check and copy of it),
# whatever the file stores them as: measured 26 B for float16, 28 for float32 and 32 for
# float64 on 1000x1000 and 2000x2000 Affine graphs (tests/test_nir_hostile.py checks it
# stays below).
IMPORT_BYTES_PER_VALUE = 36


def _check_nodes(path: Path) -> None:
    """Refuse, before nir.read loads any array, a graph whose nodes nir.read would trip
    on (no type, a type NIR does not have, a field evsim needs missing or not numbers),
    naming the node, or whose arrays would not fit in memory once imported."""
    def dataset_bytes(name, item):
        if isinstance(item, h5py.Dataset):
            sizes.append(item.size)

    sizes: list[int] = []
    with h5py.File(path, "r") as file:
        nodes = file.get("node/nodes")
        if not isinstance(nodes, h5py.Group) or not isinstance(file.get("node/edges"), h5py.Dataset):
            raise CheckpointError(f"{path}: not a NIR graph (an HDF5 file without NIR's node/nodes and node/edges); "
                                  "give a file written by nir.write")
        for name, node in nodes.items():
            kind = node.get("type") if isinstance(node, h5py.Group) else None
            if not isinstance(kind, h5py.Dataset) or kind.shape != () or kind.dtype.kind not in "OSU":
                raise ConfigError(f"{path}: NIR node {name!r} has no type (a string such as 'Affine' or 'LIF'): "
                                  "fix it where the graph was made")
            kind = kind[()]
            kind = kind.decode("utf-8", "replace") if isinstance(kind, bytes) else str(kind)
            if kind not in _NIR_TYPES:
                raise ConfigError(f"{path}: NIR node {name!r} has type {kind!r}, which NIR does not have; evsim "
                                  f"imports {', '.join(_NODE_FIELDS)} nodes: fix it where the graph was made")
            for field in _NODE_FIELDS.get(kind, ()):
                value = node.get(field)
                if not isinstance(value, h5py.Dataset):
                    raise ConfigError(f"{path}: NIR {kind} node {name!r} has no {field}: fix it where the graph was "
                                      "made")
                if field in _NUMERIC_FIELDS and value.dtype.kind not in "biuf":
                    raise ConfigError(f"{path}: {name}.{field} must hold real numbers, got {value.dtype} values (NIR "
                                      f"{kind} node {name!r}): fix it where the graph was made")
        file["node"].visititems(dataset_bytes)
    refuse_beyond_memory(f"importing {path}", {"the graph's arrays, as evsim computes with them":
                                               IMPORT_BYTES_PER_VALUE * sum(sizes)},
                         "import it on a machine with more memory, or make the network smaller where the graph "
                         "was made")


def _show(value) -> str:
    """A short repr of a metadata or parameter value (NumPy values shown as plain Python)."""
    text = repr(value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value)
    return text if len(text) <= 60 else text[:57] + "..."


# What to do about evsim metadata that is malformed or disagrees with the graph.
_REEXPORT = "export the network again with evsim export"
_FIX_LIF = f"{_REEXPORT}, or delete the graph's evsim_lif metadata to import the LIF nodes' own parameters"


def _chain(graph: nir.NIRGraph) -> list[tuple[str, nir.NIRNode]]:
    """The graph's nodes in order from its Input to its Output, or ConfigError if it is not a chain."""
    successors: dict[str, list[str]] = {}
    for source, target in graph.edges:
        successors.setdefault(source, []).append(target)
    inputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        names = (f" ({', '.join(map(repr, inputs))}; nir.read adds one before each node no edge reaches)"
                 if inputs else "")
        raise ConfigError(f"NIR graph has {len(inputs)} Input nodes{names}; evsim imports one feed-forward chain "
                          "Input -> ... -> Output: check that an edge links each node to the next")
    chain, name = [], inputs[0]
    while True:
        chain.append((name, graph.nodes[name]))
        nexts = successors.get(name, [])
        if not nexts:
            break
        if len(nexts) > 1 or len(chain) > len(graph.nodes):
            raise ConfigError(f"NIR node {name!r} branches or loops; evsim imports feed-forward chains only")
        if nexts[0] not in graph.nodes:
            raise ConfigError(f"NIR edge {name!r} -> {nexts[0]!r} leads to a node the graph does not have")
        name = nexts[0]
    if not isinstance(chain[-1][1], nir.Output):
        raise ConfigError(f"NIR chain ends at {chain[-1][0]!r}, not at an Output node: check that an edge links "
                          "each node to the next")
    return chain


def _layer_groups(graph: nir.NIRGraph) -> list[tuple]:
    """The chain's layers in order: ``(synapses, LIF)`` pairs of ``(name, node)`` for
    Affine/Linear/Conv2d nodes followed by a LIF node, ``(pool,)`` for an AvgPool2d node;
    Flatten nodes are dropped (evsim's events carry flat indices)."""
    inner = [(name, node) for name, node in _chain(graph)[1:-1] if not isinstance(node, nir.Flatten)]
    groups, k = [], 0
    while k < len(inner):
        node = inner[k][1]
        if isinstance(node, nir.AvgPool2d):
            groups.append((inner[k],))
            k += 1
        elif isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)) and k + 1 < len(inner) and \
                isinstance(inner[k + 1][1], nir.LIF):
            groups.append((inner[k], inner[k + 1]))
            k += 2
        else:
            groups = []
            break
    if not groups or len(groups[-1]) != 2 or isinstance(groups[-1][0][1], nir.Conv2d):
        found = " -> ".join(type(node).__name__ for _, node in _chain(graph)[1:-1])
        raise ConfigError(f"evsim imports chains of Affine/Linear -> LIF layers, with Conv2d -> LIF and AvgPool2d "
                          f"(and Flatten) before them; this graph has {found or 'none'}")
    return groups


def _pair(value, name: str, field: str) -> int:
    """One integer for both dimensions of a Conv2d or pooling parameter."""
    values = np.atleast_1d(np.asarray(value)).ravel()
    if values.size not in (1, 2) or values.dtype.kind not in "iu" or values.min() != values.max():
        raise ConfigError(f"{name}.{field} must be one integer for both dimensions, got {_show(value)}; evsim "
                          "supports square kernels, strides and paddings")
    return int(values[0])


def _conv_layer(name: str, conv: nir.Conv2d, l_name: str, neurons: nir.LIF, in_shape: tuple, gain: float):
    """The spiking convolution of ``conv`` (dense ``[F, C, K, K]`` weights; the evsim block
    CSR metadata, if present, says which kernels exist) over ``in_shape``."""
    shape = _real(name, "weight", conv.weight).shape
    if len(shape) != 4 or shape[2] != shape[3] or 0 in shape:
        raise ConfigError(f"{name}.weight must be [F, C, K, K] square kernels, got shape {shape}: fix it where the "
                          "graph was made")
    if _pair(conv.dilation, name, "dilation") != 1 or int(conv.groups) != 1:
        raise ConfigError(f"{name}: evsim supports dilation 1 and groups 1")
    if isinstance(conv.padding, str):
        raise ConfigError(f"{name}.padding {conv.padding!r}: give the padding as a number of cells")
    filters, channels = shape[0], shape[1]
    if len(in_shape) != 3 or in_shape[0] != channels:
        raise ConfigError(f"{name} takes {channels} channels but its input is {'x'.join(map(str, in_shape))}")
    _check_bias(name, conv.bias, shape)
    bias = _float32(name, "bias", conv.bias, gain)
    blocks = np.ascontiguousarray(_float32(name, "weight", conv.weight, gain).transpose(1, 0, 2, 3))  # [C, F, K, K]
    indptr, indices = _structure(name, conv.metadata, np.any(blocks != 0, axis=(2, 3)))
    rows = np.repeat(np.arange(channels), np.diff(indptr))
    store = SynapseStore.from_blocks(indptr, indices, blocks[rows, indices], (channels, filters))
    try:
        layer = SpikingConv2d(store, in_shape, _pair(conv.stride, name, "stride"), _pair(conv.padding, name, "padding"),
                              bias)
    except ShapeError as exc:
        raise ConfigError(f"{name}: {exc}; fix its stride or padding where the graph was made") from None
    for field in _LIF_FIELDS:
        if np.size(getattr(neurons, field)) != layer.n_out:
            raise ConfigError(f"{l_name}.{field} has {np.size(getattr(neurons, field))} values but {name} feeding it "
                              f"has {layer.n_out} outputs ({'x'.join(map(str, layer.out_shape))})")
    if "evsim_alive" in neurons.metadata:
        alive = np.asarray(neurons.metadata["evsim_alive"])
        if alive.shape != (filters,) or alive.dtype.kind != "b" or (store.nnz and not np.all(alive[store.indices])):
            raise ConfigError(f"{l_name}.evsim_alive must be {filters} booleans, one per filter, none dead with "
                              f"kernels; {_REEXPORT}, or delete it")
        _refuse_dead_bias(l_name, alive, bias, name)
        layer.set_alive(alive)
    return layer


def _real(name: str, field: str, value) -> np.ndarray:
    """``value`` as an array, or ConfigError unless it holds real numbers."""
    values = np.asarray(value)
    if values.dtype.kind not in "biuf":
        raise ConfigError(f"{name}.{field} must hold real numbers, got {values.dtype} values {_show(value)}: fix it "
                          "where the graph was made")
    return values


def _check_bias(name: str, bias, weight_shape: tuple) -> None:
    """ConfigError unless ``bias`` holds one value per output (the weight's first dimension)."""
    if np.shape(bias) != weight_shape[:1]:
        raise ConfigError(f"{name}.bias has shape {np.shape(bias)} but its weight {weight_shape} has {weight_shape[0]} "
                          "outputs: give one bias per output where the graph was made")


def _float32(name: str, field: str, value, gain: float) -> np.ndarray:
    """``value`` times the LIF input ``gain`` as float32, in which evsim computes; ConfigError
    if a value is NaN or infinite, or float32 cannot hold it (checked before the cast, which
    would print NumPy's overflow warning and give infinity, or round it to 0)."""
    values = _real(name, field, value)
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{name}.{field} holds NaN or infinite values; evsim cannot run a graph with NaN or "
                          "infinite parameters: fix them where the graph was made")
    scaled = np.empty(values.shape, dtype=np.float32)
    flat, out = values.reshape(-1), scaled.reshape(-1)
    for start in range(0, flat.size, _CHUNK):  # in float64 a chunk at a time: no float64 copy of a whole matrix
        part = flat[start:start + _CHUNK].astype(np.float64)
        lost = np.abs(part) > FLOAT32_MAX / gain  # divided, not multiplied: no float64 overflow either
        if not np.any(lost):
            out[start:start + _CHUNK] = part * gain
            lost = (out[start:start + _CHUNK] == 0) & (part != 0)
        if np.any(lost):
            times = f" (times the LIF input gain dt r / tau = {gain:.6g})" if gain != 1 else ""
            raise ConfigError(f"{name}.{field} holds {part[lost][0]:.6g}{times}, which float32, evsim's arithmetic, "
                              "turns into infinity or 0: fix it where the graph was made")
    return scaled


# Elements a step of the import's loops over a weight matrix handles: their temporaries stay small.
_CHUNK = 1 << 18


def _gather(matrix: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``matrix``'s entries at the CSR structure ``(indptr, indices)``, in its order (a
    few rows at a time: no int64 row index per synapse)."""
    values = np.empty(len(indices), dtype=matrix.dtype)
    step = max(1, _CHUNK // max(1, matrix.shape[1]))
    for start in range(0, matrix.shape[0], step):
        stop = min(start + step, matrix.shape[0])
        lo, hi = indptr[start], indptr[stop]
        rows = np.repeat(np.arange(stop - start), np.diff(indptr[start:stop + 1]))
        values[lo:hi] = matrix[start:stop][rows, indices[lo:hi]]
    return values


def _uniform(name: str, node: nir.LIF, field: str) -> float:
    """The one value of LIF parameter ``field`` that every neuron of ``node`` (named ``name``) shares."""
    values = _real(name, field, getattr(node, field)).astype(np.float64).ravel()
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{name}: LIF parameter {field} is not finite (NaN or infinite); evsim needs finite neuron "
                          "parameters: fix them where the graph was made")
    if values.size == 0 or np.any(values != values[0]):
        raise ConfigError(f"{name}: LIF parameter {field} differs between neurons; evsim uses one value per network")
    return float(values[0])


_LIF_FIELDS = ("tau", "r", "v_leak", "v_threshold", "v_reset")


def _check_sizes(affine: tuple[str, nir.NIRNode], lif: tuple[str, nir.LIF]) -> None:
    """ConfigError unless the weight is a [n_out, n_in] matrix and the bias and every LIF
    parameter hold n_out values (nir.read checks this for files; a graph built in memory
    is not checked)."""
    (a_name, node), (l_name, neurons) = affine, lif
    shape = _real(a_name, "weight", node.weight).shape
    if len(shape) != 2 or 0 in shape:
        raise ConfigError(f"{a_name}.weight must be a matrix [n_out, n_in] with at least one of each, got shape "
                          f"{shape}; evsim imports fully connected layers of 1-D neuron populations")
    if isinstance(node, nir.Affine):
        _check_bias(a_name, node.bias, shape)
    for field in _LIF_FIELDS:
        if np.shape(getattr(neurons, field)) != shape[:1]:
            raise ConfigError(f"{l_name}.{field} has shape {np.shape(getattr(neurons, field))} but {a_name} feeding "
                              f"it has {shape[0]} outputs: one value per neuron, and the sizes must agree")


def _time_step(dt, metadata: dict) -> float:
    """The time step the graph's time constants refer to: ``dt``, else the graph's ``dt`` metadata, else 1."""
    if dt is not None:
        source, value = "dt", dt
    elif "dt" in metadata:
        source, value = "the graph's dt metadata", metadata["dt"]
    else:
        return 1.0
    values = np.asarray(value)
    if values.shape != () or values.dtype.kind not in "iuf" or not (math.isfinite(values) and values > 0):
        raise ConfigError(f"{source} must be one positive finite number (the time step of the LIF time constants), "
                          f"got {_show(value)}; give the time step: evsim import-nir --dt DT")
    return float(values)


def _lif_from_nodes(lifs: list[tuple[str, nir.LIF]], dt: float) -> tuple[LIFParameters, float]:
    """Neuron parameters shared by ``lifs`` and the input gain to fold into the weights
    (module docstring: ``decay = 1 - dt/tau``, ``v_th = v_threshold``, gain ``dt r / tau``)."""
    params = [{field: _uniform(name, node, field) for field in _LIF_FIELDS} for name, node in lifs]
    for (name, _), p in zip(lifs, params):
        if p != params[0]:
            raise ConfigError(f"{name}'s LIF parameters ({_shown(p)}) differ from {lifs[0][0]}'s "
                              f"({_shown(params[0])}); evsim uses one set per network")
    name, p = lifs[0][0], params[0]
    fix = "fix it where the graph was made"
    if p["v_leak"] != 0 or p["v_reset"] != 0:
        raise ConfigError(f"{name}: evsim's LIF has v_leak = v_reset = 0; this graph has v_leak = {p['v_leak']}, "
                          f"v_reset = {p['v_reset']}: evsim cannot import this neuron model")
    if not p["tau"] > 0:
        raise ConfigError(f"{name}: LIF tau must be > 0 (a membrane time constant), got {p['tau']}: {fix}")
    if not p["tau"] >= dt:
        raise ConfigError(f"{name}: tau = {p['tau']} is shorter than the time step dt = {dt}: no discrete leak in "
                          "[0, 1); give the graph's dt (evsim import-nir --dt)")
    if 1.0 - dt / p["tau"] == 1.0:
        raise ConfigError(f"{name}: tau = {p['tau']:g} is so much longer than the time step dt = {dt:g} that the "
                          "leak 1 - dt/tau is 1 (no leak), but evsim's LIF leaks: give the graph's dt "
                          "(evsim import-nir --dt), or fix tau where the graph was made")
    if not _positive_float32(p["v_threshold"]):
        raise ConfigError(f"{name}: LIF v_threshold must be a positive number float32 holds, at most "
                          f"{FLOAT32_MAX:.3g} and not 0 in float32 (evsim's neurons fire above a positive float32 "
                          f"threshold), got {p['v_threshold']:g}: {fix}")
    if not p["r"] > 0:
        raise ConfigError(f"{name}: LIF r must be > 0 (the input resistance; 0 would silence every synapse and a "
                          f"negative r would flip every weight's sign), got {p['r']:g}: {fix}")
    gain = dt * p["r"] / p["tau"]
    if not _positive_float32(gain):
        raise ConfigError(f"{name}: the input gain dt r / tau = {gain:g} (r = {p['r']:g}, tau = {p['tau']:g}, "
                          f"dt = {dt:g}), which evsim folds into the weights, is beyond float32's range: fix r or tau "
                          "where the graph was made")
    return LIFParameters(decay=1.0 - dt / p["tau"], v_th=p["v_threshold"]), gain


def _positive_float32(value: float) -> bool:
    """Whether ``value`` is positive in float32 (the rule evsim's options follow), tested
    without NumPy's overflow warning."""
    return 0 < value <= FLOAT32_MAX and np.float32(value) > 0


def _shown(params: dict) -> str:
    """LIF parameters as ``tau 4, r 2, ...``."""
    return ", ".join(f"{field} {value:.6g}" for field, value in params.items())


def _evsim_lif(metadata: dict) -> LIFParameters:
    """The exact neuron parameters an evsim export stored in the graph's metadata.

    Raises ConfigError if the format is not this evsim's, or ``evsim_lif`` is not a JSON
    object of every :class:`LIFParameters` field with valid values.
    """
    if "evsim_format" not in metadata:
        raise ConfigError(f"graph metadata has evsim_lif but no evsim_format (damaged); {_FIX_LIF}")
    fmt = np.asarray(metadata["evsim_format"])
    if fmt.shape != () or fmt.dtype.kind not in "iu" or int(fmt) != NIR_FORMAT:
        raise ConfigError(f"graph metadata evsim_format is {_show(metadata['evsim_format'])}, but this evsim reads "
                          f"format {NIR_FORMAT} (a graph from another evsim version, or damaged); {_FIX_LIF}")
    text = metadata["evsim_lif"]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        raise ConfigError(f"graph metadata evsim_lif must be a JSON string, got {_show(text)}; {_FIX_LIF}")
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"graph metadata evsim_lif is not JSON ({exc.msg} at character {exc.pos}); "
                          f"{_FIX_LIF}") from None
    try:
        return LIFParameters.from_dict(values, "graph metadata evsim_lif")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {_FIX_LIF}") from None


def _check_exported_nodes(lifs: list[tuple[str, nir.LIF]], lif: LIFParameters, dt: float) -> None:
    """ConfigError unless the LIF nodes hold what evsim exports for ``lif`` at step ``dt``:
    the exact parameters come from the metadata, so nodes changed after the export would
    be ignored."""
    tau, r = lif_constants(lif, dt)
    expected = {"tau": tau, "r": r, "v_leak": 0.0, "v_threshold": lif.v_th, "v_reset": 0.0}
    for name, node in lifs:
        found = {field: _uniform(name, node, field) for field in _LIF_FIELDS}
        if not all(np.isclose(found[f], expected[f], rtol=1e-6, atol=0) for f in _LIF_FIELDS):
            raise ConfigError(f"{name} ({_shown(found)}) disagrees with the graph's evsim_lif metadata "
                              f"(tau = {tau:.6g}, r = {r:.6g}, v_threshold {lif.v_th:.6g}, v_leak = v_reset = 0): "
                              f"the graph was changed after evsim exported it; {_FIX_LIF}")


def _store(name: str, affine: nir.NIRNode, gain: float) -> tuple[SynapseStore, np.ndarray]:
    """Synapses and bias of layer ``name``: the exported CSR structure if present, else the nonzero weights."""
    weight = _float32(name, "weight", affine.weight, gain).T
    if isinstance(affine, nir.Affine):
        bias = _float32(name, "bias", affine.bias, gain)
    else:
        bias = np.zeros(weight.shape[1], dtype=np.float32)
    indptr, indices = _structure(name, affine.metadata, weight != 0)
    data, shape = _gather(weight, indptr, indices), weight.shape
    del weight  # before the store copies the structure: one float32 matrix fewer at the peak
    return SynapseStore.from_blocks(indptr, indices, data, shape), bias


def _structure(name: str, meta: dict, nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The synapses of node ``name`` as CSR ``(indptr, indices)`` over ``nonzero``'s
    ``[presynaptic, postsynaptic]`` shape, True where a weight (Affine) or kernel (Conv2d)
    is nonzero: its evsim_indptr/evsim_indices metadata (which keeps synapses of weight
    exactly 0), else the nonzero entries. ConfigError if the metadata is malformed or
    leaves out a nonzero entry: an edit after the export would silently lose weights."""
    if "evsim_indptr" not in meta and "evsim_indices" not in meta:
        indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(nonzero, axis=1))]).astype(np.int32)
        indices = np.empty(indptr[-1], dtype=np.int32)
        step = max(1, _CHUNK // max(1, nonzero.shape[1]))
        for start in range(0, nonzero.shape[0], step):  # a few rows at a time: no int64 index per synapse
            stop = min(start + step, nonzero.shape[0])
            indices[indptr[start]:indptr[stop]] = np.nonzero(nonzero[start:stop])[1]
        return indptr, indices
    fix = f"{_REEXPORT}, or delete {name}'s evsim_indptr and evsim_indices to import its nonzero weights"
    if "evsim_indptr" not in meta or "evsim_indices" not in meta:
        has, lacks = ("evsim_indptr", "evsim_indices") if "evsim_indptr" in meta else ("evsim_indices", "evsim_indptr")
        raise ConfigError(f"{name} has {has} but no {lacks} metadata; {fix}")
    indptr, indices = np.asarray(meta["evsim_indptr"]), np.asarray(meta["evsim_indices"])
    try:
        check_csr(indptr, indices, nonzero.shape)
    except ShapeError as exc:
        raise ConfigError(f"{name}: evsim_indptr/evsim_indices are not a valid CSR structure ({exc}); {fix}") from None
    # The structure's entries are distinct: it holds every nonzero entry where it holds as many.
    if np.count_nonzero(_gather(nonzero, indptr, indices)) != np.count_nonzero(nonzero):
        raise ConfigError(f"{name} has nonzero weights where its evsim_indptr/evsim_indices metadata has no synapse: "
                          f"the graph was changed after evsim exported it; {fix}")
    return indptr, indices


def _develops(name: str, metadata: dict, default: bool) -> bool:
    """Layer ``name``'s ``evsim_develops`` metadata (``default`` without it)."""
    if "evsim_develops" not in metadata:
        return default
    value = np.asarray(metadata["evsim_develops"])
    if value.shape != () or value.dtype.kind != "b":
        raise ConfigError(f"{name}.evsim_develops metadata must be true or false, got "
                          f"{_show(metadata['evsim_develops'])}; {_REEXPORT}, or delete it")
    return bool(value)


def _refuse_dead_bias(name: str, alive: np.ndarray, bias: np.ndarray, layer_name: str) -> None:
    """ConfigError if a unit ``evsim_alive`` marks dead has a bias: evsim would never fire it,
    the graph's own semantics would."""
    if np.any(bias[~alive] != 0):
        raise ConfigError(f"{name}.evsim_alive marks units dead that have a nonzero bias in {layer_name}: the graph "
                          f"was changed after evsim exported it; {_REEXPORT}, or delete {name}'s evsim_alive")


def _alive(name: str, value, layer_name: str, store: SynapseStore, bias: np.ndarray) -> np.ndarray:
    """LIF node ``name``'s ``evsim_alive`` metadata: one boolean per neuron; a dead neuron has no synapses."""
    alive = np.asarray(value)
    fix = f"{_REEXPORT}, or delete {name}'s evsim_alive to keep every neuron"
    if alive.shape != (store.shape[1],) or alive.dtype.kind != "b":
        raise ConfigError(f"{name}.evsim_alive metadata must be {store.shape[1]} booleans (one per neuron), got "
                          f"{alive.dtype} values of shape {alive.shape}; {fix}")
    if store.nnz and not np.all(alive[store.indices]):
        raise ConfigError(f"{name}.evsim_alive marks neurons dead that still have synapses in {layer_name}: the "
                          f"graph was changed after evsim exported it; {fix}")
    _refuse_dead_bias(name, alive, bias, layer_name)
    return alive


def network_from_nir(graph: nir.NIRGraph, dt: float | None = None, path_option: str = "auto") -> Network:
    """An evsim :class:`Network` from a NIR graph.

    Parameters
    ----------
    graph : a chain ``Input -> (Affine|Linear -> LIF)+ -> Output``.
    dt : the time step the graph's time constants are meant for; default: the graph's
        ``dt`` metadata, else 1.0. Ignored for graphs written by evsim (exact).
    path_option : propagation path of the layers.

    Raises
    ------
    ConfigError
        If the graph is not such a chain, its sizes disagree, its neurons cannot be
        represented, a weight, bias or neuron parameter is NaN or infinite, or its evsim
        metadata (``evsim_format``, ``evsim_lif``, ``evsim_indptr``/``evsim_indices``,
        ``evsim_develops``, ``evsim_alive``) is malformed or disagrees with the nodes.
    ShapeError
        If the layers do not chain (a graph built in memory; nir.read checks files).
    """
    if not isinstance(graph, nir.NIRGraph):
        raise ConfigError(f"network_from_nir takes a nir.NIRGraph, got {type(graph).__name__}")
    groups = _layer_groups(graph)
    for group in groups:
        if len(group) == 2 and not isinstance(group[0][1], nir.Conv2d):
            _check_sizes(*group)
    lifs = [group[1] for group in groups if len(group) == 2]
    if "evsim_lif" in graph.metadata:
        lif, gain = _evsim_lif(graph.metadata), 1.0
        _check_exported_nodes(lifs, lif, _time_step(None, graph.metadata))
    else:
        lif, gain = _lif_from_nodes(lifs, _time_step(dt, graph.metadata))
    chain = _chain(graph)
    input_node = chain[0][1]
    declared = input_node.output_type.get("output", input_node.input_type.get("input", []))
    shape = tuple(int(n) for n in np.atleast_1d(np.asarray(declared)))
    n_fc = sum(1 for group in groups if len(group) == 2 and not isinstance(group[0][1], nir.Conv2d))
    layers, fc_seen, conv_seen = [], 0, 0
    for group in groups:
        if len(group) == 1:
            (p_name, pool), = group
            kernel, stride = _pair(pool.kernel_size, p_name, "kernel_size"), _pair(pool.stride, p_name, "stride")
            if kernel != stride or _pair(pool.padding, p_name, "padding") != 0 or len(shape) != 3:
                raise ConfigError(f"{p_name}: evsim pools k x k windows with stride k and no padding, on a map")
            layer = Pool2d(shape, kernel)
        elif isinstance(group[0][1], nir.Conv2d):
            (c_name, conv), (l_name, node) = group
            conv_seen += 1
            layer = _conv_layer(c_name, conv, l_name, node, shape, gain)
            # Without the metadata, as from_spec's "auto": every convolution but the first.
            layer.develops = _develops(c_name, conv.metadata, conv_seen > 1)
        else:
            (a_name, affine), (l_name, node) = group
            fc_seen += 1
            store, bias = _store(a_name, affine, gain)
            layer = SparseLinear(store, bias, path=path_option,
                                 develops=_develops(a_name, affine.metadata, fc_seen < n_fc))
            if "evsim_alive" in node.metadata:
                layer.alive = _alive(l_name, node.metadata["evsim_alive"], a_name, store, bias)
                layer.rebuild()
        layers.append(layer)
        shape = getattr(layer, "out_shape", (layer.n_out,))
    network = Network(layers, lif)
    _check_declared_sizes(chain, network)
    return network


def _check_declared_sizes(chain: list, network: Network) -> None:
    """ConfigError unless the Input and Output nodes declare the sizes the layers have
    (``nir.read`` checks files; a graph built in memory is not checked)."""
    for (name, node), size in ((chain[0], network.sizes[0]), (chain[-1], network.sizes[-1])):
        for declared in ((node.input_type or {}).get("input"), (node.output_type or {}).get("output")):
            if declared is not None and np.size(declared) and int(np.prod(declared)) != size:
                raise ConfigError(f"NIR node {name!r} declares {'x'.join(map(str, np.atleast_1d(declared)))} values "
                                  f"but its layers have {size}: fix its shape where the graph was made")
