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

so with ``dt = 1`` (one time step, recorded as graph metadata ``dt``) the exported
parameters are ``tau = 1 / (1 - decay)``, ``r = tau`` (unit input gain), ``v_leak = 0``,
``v_threshold = v_th``, ``v_reset = 0``: a neuron that spiked starts the next step
from 0, which is what evsim's factor ``(1 - o[t-1])`` does. The default decay 0.2
gives ``tau = r = 1.25`` steps. evsim's *subtractive* reset
(``u[t] = decay u[t-1] - v_th o[t-1] + I[t]``) has no NIR equivalent: it is exported
with ``v_reset = 0`` and flagged in the metadata, so other NIR tools simulate it as a
hard reset; evsim's own import restores it.

**Metadata** (ignored by other tools) makes evsim's own round trip exact:

- graph: ``evsim_format``, ``evsim_lif`` (the exact :class:`LIFParameters` as JSON:
  ``tau`` only approximates ``decay`` in floating point), ``dt``;
- ``fcK``: ``evsim_indptr``, ``evsim_indices`` (the CSR structure, so the sparsity,
  including synapses whose weight is exactly 0, is not lost) and ``evsim_develops``;
- ``lifK``: ``evsim_alive`` (dead neurons; their weights and bias are 0, so they
  never fire in any simulator).

A graph without this metadata (from another tool) can be imported when it is a chain
of Affine/Linear -> LIF nodes whose LIF parameters are the same for every neuron,
with ``v_leak = v_reset = 0``: ``decay = 1 - dt/tau`` and the input gain
``dt r / tau`` is folded into the weights; synapses are the nonzero weights.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import nir
import numpy as np
import scipy.sparse as sp

from evsim.checkpoint import check_finite
from evsim.errors import CheckpointError, ConfigError, ShapeError
from evsim.files import write_bytes_atomic
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.synapses import SynapseStore, check_csr

NIR_FORMAT = 1


def network_to_nir(network: Network) -> nir.NIRGraph:
    """The NIR graph of ``network`` (see the module docstring for the mapping)."""
    lif = network.lif
    tau = 1.0 / (1.0 - lif.decay)
    nodes = {"input": nir.Input(input_type={"input": np.array([network.sizes[0]])})}
    edges, previous = [], "input"
    for k, layer in enumerate(network.layers):
        n = layer.n_out
        nodes[f"fc{k}"] = nir.Affine(
            weight=np.ascontiguousarray(layer.store.to_dense().T), bias=layer.bias.copy(),
            metadata={"evsim_indptr": layer.store.indptr.copy(), "evsim_indices": layer.store.indices.copy(),
                      "evsim_develops": bool(layer.develops)})
        nodes[f"lif{k}"] = nir.LIF(tau=np.full(n, tau), r=np.full(n, tau), v_leak=np.zeros(n),
                                   v_threshold=np.full(n, lif.v_th), v_reset=np.zeros(n),
                                   metadata={"evsim_alive": layer.alive.copy()})
        edges += [(previous, f"fc{k}"), (f"fc{k}", f"lif{k}")]
        previous = f"lif{k}"
    nodes["output"] = nir.Output(output_type={"output": np.array([network.sizes[-1]])})
    edges.append((previous, "output"))
    metadata = {"evsim_format": NIR_FORMAT, "evsim_lif": json.dumps(lif._asdict()), "dt": 1.0}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(path: Path, network: Network) -> None:
    """Write ``network`` as a NIR file (HDF5), atomically."""
    buffer = io.BytesIO()
    nir.write(buffer, network_to_nir(network))
    write_bytes_atomic(Path(path), buffer.getvalue())


def read_nir(path: Path, dt: float | None = None, path_option: str = "auto") -> Network:
    """Read a NIR file into a :class:`Network` (see :func:`network_from_nir`).

    Raises
    ------
    CheckpointError
        If the file is missing or is not a readable NIR graph.
    ConfigError
        If the graph is not one evsim can represent (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such NIR file")
    try:
        graph = nir.read(path)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable NIR graph ({first})") from None
    try:
        return network_from_nir(graph, dt, path_option)
    except (ConfigError, ShapeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _chain(graph: nir.NIRGraph) -> list[tuple[str, nir.NIRNode]]:
    """The graph's nodes in order from its Input to its Output, or ConfigError if it is not a chain."""
    successors: dict[str, list[str]] = {}
    for source, target in graph.edges:
        successors.setdefault(source, []).append(target)
    inputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise ConfigError(f"NIR graph has {len(inputs)} Input nodes; evsim imports feed-forward chains with one")
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
        raise ConfigError(f"NIR chain ends at {chain[-1][0]!r}, not at an Output node")
    return chain


def _layer_pairs(graph: nir.NIRGraph) -> list[tuple[nir.NIRNode, nir.NIRNode]]:
    """(Affine or Linear, LIF) pairs along the chain."""
    inner = [node for _, node in _chain(graph)[1:-1]]
    pairs = list(zip(inner[0::2], inner[1::2]))
    if not pairs or len(inner) % 2 or not all(isinstance(a, (nir.Affine, nir.Linear)) and isinstance(b, nir.LIF)
                                              for a, b in pairs):
        found = " -> ".join(type(node).__name__ for node in inner)
        raise ConfigError(f"evsim imports chains of Affine/Linear -> LIF layers; this graph has {found or 'none'}")
    return pairs


def _uniform(node: nir.LIF, name: str) -> float:
    values = np.asarray(getattr(node, name), dtype=np.float64).ravel()
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"LIF parameter {name} is not finite (NaN or infinite); evsim needs finite neuron parameters")
    if values.size == 0 or np.any(values != values[0]):
        raise ConfigError(f"LIF parameter {name} differs between neurons; evsim uses one value per network")
    return float(values[0])


def _lif_from_nodes(lifs: list[nir.LIF], dt: float) -> tuple[LIFParameters, float]:
    """Neuron parameters shared by ``lifs`` and the input gain to fold into the weights."""
    params = [{name: _uniform(node, name) for name in ("tau", "r", "v_leak", "v_threshold", "v_reset")}
              for node in lifs]
    if any(p != params[0] for p in params):
        raise ConfigError("LIF parameters differ between layers; evsim uses one set per network")
    p = params[0]
    if p["v_leak"] != 0 or p["v_reset"] != 0:
        raise ConfigError(f"evsim's LIF has v_leak = v_reset = 0; this graph has v_leak = {p['v_leak']}, "
                          f"v_reset = {p['v_reset']}")
    if not p["tau"] >= dt:
        raise ConfigError(f"tau = {p['tau']} is shorter than the time step dt = {dt}: no discrete leak in [0, 1); "
                          "give the graph's dt (evsim import-nir --dt)")
    return LIFParameters(decay=1.0 - dt / p["tau"], v_th=p["v_threshold"]), dt * p["r"] / p["tau"]


def _store(affine: nir.NIRNode, gain: float) -> tuple[SynapseStore, np.ndarray]:
    """Synapses and bias of one layer: the exported CSR structure if present, else the nonzero weights."""
    weight = np.asarray(affine.weight, dtype=np.float32).T * np.float32(gain)
    bias = (np.asarray(affine.bias, dtype=np.float32) * np.float32(gain) if isinstance(affine, nir.Affine)
            else np.zeros(weight.shape[1], dtype=np.float32))
    meta = affine.metadata
    if "evsim_indptr" not in meta:
        return SynapseStore.from_dense(weight), bias
    indptr, indices = np.asarray(meta["evsim_indptr"]), np.asarray(meta["evsim_indices"])
    check_csr(indptr, indices, weight.shape)
    rows = np.repeat(np.arange(weight.shape[0]), np.diff(indptr))
    return SynapseStore(sp.csr_matrix((weight[rows, indices], indices, indptr), shape=weight.shape)), bias


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
        If the graph is not such a chain, its neurons cannot be represented, or a
        weight, bias or neuron parameter is NaN or infinite.
    ShapeError
        If an array has the wrong shape, or the CSR structure in the metadata is invalid.
    """
    pairs = _layer_pairs(graph)
    if "evsim_lif" in graph.metadata:
        lif, gain = LIFParameters(**json.loads(str(graph.metadata["evsim_lif"]))), 1.0
    else:
        lif, gain = _lif_from_nodes([node for _, node in pairs],
                                    float(dt if dt is not None else graph.metadata.get("dt", 1.0)))
    layers = []
    for k, (affine, node) in enumerate(pairs):
        store, bias = _store(affine, gain)
        develops = bool(affine.metadata.get("evsim_develops", k < len(pairs) - 1))
        layer = SparseLinear(store, bias, path=path_option, develops=develops)
        if "evsim_alive" in node.metadata:
            layer.alive = np.asarray(node.metadata["evsim_alive"], dtype=bool)
            layer.rebuild()
        layers.append(layer)
    network = Network(layers, lif)
    try:
        check_finite(network)
    except ValueError as exc:
        raise ConfigError(f"{exc}; evsim cannot run a graph with NaN or infinite parameters") from None
    return network
