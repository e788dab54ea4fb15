"""Network: a stack of spiking layers run for T steps, with BPTT.

The output is the spike count of the last layer over the T steps (rate = count / T).
The network talks to its layers only through :class:`~evsim.layers.base.Layer`.

A training step, written by hand::

    counts, traces = network.forward(drive)
    loss, grad_counts = loss_fn(counts, labels, T)
    grads = network.backward(traces, grad_counts)
    optimizer.step(network.parameters(grads), lr)

The next forward runs on the updated weights: layers refresh their execution copies
themselves.
"""
from __future__ import annotations

import re
import secrets

import numpy as np

from evsim.errors import ConfigError, ShapeError
from evsim.kernels.conv_geometry import conv_geometry, pool_geometry
from evsim.kernels.conv_lif_pool import window_events
from evsim.kernels.events import INT32_MAX, Events, StaticDrive, all_finite, dense_to_events
from evsim.kernels.forks import check_not_forked
from evsim.layers import (BackwardRequest, Layer, LayerGrads, LayerTrace, Pool2d, PoolTrace, SparseLinear,
                          SpikingConv2d)
from evsim.layers.base import check_nonempty, check_recorded, checked_drive, checked_lif
from evsim.layers.linear import check_path
from evsim.memory import SYNAPSE_BYTES, refuse_beyond_memory
from evsim.neuron import LIFParameters


class Network:
    """Feed-forward spiking network of :class:`~evsim.layers.base.Layer` layers.

    Parameters
    ----------
    layers : the layers, input to output; consecutive sizes must match, and the last
        must have neurons (its spike counts are the output).
    lif : neuron parameters shared by all layers.

    :attr:`layers` is a list that checks every change: replacing a layer by one that does
    not chain (or removing the last spiking layer) raises ShapeError and leaves it as it was.
    """

    def __init__(self, layers: list[Layer], lif: LIFParameters = LIFParameters()):
        self.layers = layers
        self.lif = checked_lif(lif)

    @property
    def layers(self) -> "LayerList":
        return self._layers

    @layers.setter
    def layers(self, layers: list[Layer]) -> None:
        self._layers = LayerList(check_chain(list(layers) if isinstance(layers, (list, tuple)) else layers))

    @classmethod
    def mlp(cls, sizes: list[int], rng: np.random.Generator, lif: LIFParameters = LIFParameters(),
            path: str = "auto") -> "Network":
        """Fully connected network with layer sizes ``sizes`` (input first); the output layer does not develop."""
        layers = [SparseLinear.uniform(n_in, n_out, rng, path=path, develops=k < len(sizes) - 2)
                  for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]
        return cls(layers, lif)

    @classmethod
    def from_spec(cls, spec: str, rng: np.random.Generator | int = 0, lif: LIFParameters = LIFParameters(),
                  path: str = "auto") -> "Network":
        """The network an architecture string in the paper's notation describes.

        ``"2312-800-10"``: 2312 inputs, a fully connected layer of 800 neurons, 10 outputs.
        ``"2x32x32-15C3-AP2-40C3-AP2-300-10"``: a 2-channel 32x32 input map; ``15C3`` a
        spiking convolution of 15 filters of 3x3 (stride 1, zero padding ``K // 2``; a suffix
        ``s2`` sets the stride, ``p0`` the padding: ``15C3s2p0``); ``AP2`` / ``MP2`` average /
        max pooling over 2x2 windows; integers are fully connected layers (the map is
        flattened in channel-major order). Which layers develop is the authors' choice
        (:func:`developing_layers` ``"auto"``): every convolution but the first and every
        hidden fully connected layer; :meth:`set_developing` changes it.

        Raises
        ------
        ConfigError
            If the string is not in that notation or its layers do not chain (a pooling
            larger than its map, a convolution after a fully connected layer), naming the
            layer.
        """
        if not isinstance(rng, np.random.Generator) and (isinstance(rng, (bool, np.bool_))
                                                         or not isinstance(rng, (int, np.integer)) or rng < 0):
            raise ConfigError(f"rng must be a numpy Generator or a seed (an integer >= 0), got {rng!r}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(int(rng))
        parts = parse_spec(spec)
        shapes = spec_shapes(spec)
        n_fc = sum(1 for part in parts[1:] if isinstance(part, int))
        # Weights with their optimizer state, as a training run without SD-SNN counts them.
        refuse_beyond_memory(f"architecture {spec!r}", {"weights": SYNAPSE_BYTES * spec_footprint(spec)[1]},
                             "give smaller layers")
        layers, fc_seen = [], 0
        for part, shape in zip(parts[1:], shapes):
            if isinstance(part, int):
                fc_seen += 1
                layers.append(SparseLinear.uniform(int(np.prod(shape)), part, rng, path=path, develops=fc_seen < n_fc))
            elif part[0] == "conv":
                _, filters, kernel, stride, pad = part
                layers.append(SpikingConv2d.uniform(shape, filters, kernel, rng, stride=stride, pad=pad))
            else:
                layers.append(Pool2d(shape, part[2], part[1]))
        network = cls(layers, lif)
        network.set_developing(AUTO_DEVELOP)
        return network

    def set_developing(self, develop: str) -> None:
        """Mark the layers structural development may edit (see :func:`developing_layers`)."""
        for layer, flag in zip(self.layers, developing_layers(self, develop)):
            if hasattr(layer, "store"):
                layer.develops = flag

    def set_path(self, path: str) -> None:
        """Run the fully connected layers on ``path`` (``auto``, ``rows``, ``csr``). The paths
        sum in different orders, so a run is evaluated and resumed on the path it trained on."""
        check_path(path)
        for layer in self.layers:
            if isinstance(layer, SparseLinear):
                layer.path_option = path
                layer.rebuild()

    def layer_labels(self) -> list[str]:
        """``conv1``, ``pool1``, ``fc1``, ...: each layer's kind and its rank among its kind."""
        seen: dict[str, int] = {}
        labels = []
        for layer in self.layers:
            kind = {"conv2d": "conv", "pool2d": "pool", "linear": "fc"}.get(getattr(layer, "kind", None), "layer")
            seen[kind] = seen.get(kind, 0) + 1
            labels.append(f"{kind}{seen[kind]}")
        return labels

    def describe(self) -> str:
        """The architecture string of this network (see :meth:`from_spec`)."""
        first = self.layers[0]
        head = "x".join(map(str, first.in_shape)) if hasattr(first, "in_shape") else str(first.n_in)
        return "-".join([head] + [layer.describe() if hasattr(layer, "describe") else type(layer).__name__
                                  for layer in self.layers])

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    @property
    def synapses(self) -> int:
        """Number of existing synapses."""
        return sum(layer.store.nnz for layer in self.layers if hasattr(layer, "store"))

    @property
    def dense_synapses(self) -> int:
        """Synapses of the same architecture fully connected."""
        return sum(layer.store.shape[0] * layer.store.shape[1] for layer in self.layers if hasattr(layer, "store"))

    @property
    def weights(self) -> int:
        """Existing weights (a kernel synapse holds K x K), biases excluded."""
        return sum(layer.store.nnz * layer.store.block_size for layer in self.layers if hasattr(layer, "store"))

    @property
    def dense_weights(self) -> int:
        """Weights of the same architecture with every synapse present."""
        return sum(layer.dense_weights for layer in self.layers if hasattr(layer, "store"))

    def forward(self, drive: np.ndarray | Events, record: bool = True) -> tuple[np.ndarray, list[LayerTrace]]:
        """Run the network.

        Parameters
        ----------
        drive : ``[T, B, n_in]`` input (float32 spikes, counts or analog values, or
            integer counts), or the same already as :class:`Events`, or analog values
            that are the same at every step as a :class:`StaticDrive`.
        record : record the membrane potentials :meth:`backward` needs. False for
            inference: the traces then hold events and spikes (enough for counting
            operations) but no membrane, and convolutions run a faster one-pass kernel.

        Returns
        -------
        counts : float32 ``[B, n_out]`` output spike counts.
        traces : one :class:`LayerTrace` per layer, for :meth:`backward`.
        """
        events = self._input_events(drive)
        traces: list = []
        k = 0
        while k < len(self.layers):
            events, ran = self._forward_layer(k, events, record)
            traces += ran
            k += len(ran)
        last = self.layers[-1]
        counts = np.zeros((events.batch, last.n_out), dtype=np.float32)
        counts[:, last.alive_index] = traces[-1].spikes.sum(axis=0, dtype=np.float32)
        return counts, _one_pass(traces)

    def forward_layer(self, k: int, events: Events | StaticDrive, record: bool = True) -> tuple[Events, list]:
        """One step of :meth:`forward`: layer ``k`` on its input ``events``, or, where it is a
        convolution whose forward takes the direct kernel and a 2 x 2 average pooling
        follows, both in one pass (:meth:`SpikingConv2d.forward_and_pool`, the same
        spikes, membrane and pooled events as one by one). Returns the next layer's
        input and the traces of the layers run (one or two).

        Raises
        ------
        ShapeError
            If ``k`` is not a layer's index, or ``events`` are not events (or a static
            drive) that layer can read (checked as :meth:`forward` checks its input).
        """
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.layers):
            raise ShapeError(f"forward_layer takes a layer index 0..{len(self.layers) - 1}, got {k!r}")
        return self._forward_layer(int(k), checked_drive(events, self.layers[k].n_in), record)

    def _forward_layer(self, k: int, events: Events | StaticDrive, record: bool) -> tuple[Events, list]:
        """:meth:`forward_layer` on events already checked (the network's input, or the
        output of the layer below, which is valid by construction)."""
        layer = self.layers[k]
        above = self.layers[k + 1] if k + 1 < len(self.layers) else None
        if isinstance(layer, SpikingConv2d) and isinstance(above, Pool2d):
            fused = layer.forward_and_pool(events, self.lif, above, record, checked=True)
            if fused is not None:
                counts, trace = fused
                pooled = window_events(counts)
                return pooled, [trace, PoolTrace(None, pooled, None, (trace.spikes, layer.alive_index))]
        events, trace = _run(layer, events, self.lif, record)
        return events, [trace]

    def predict(self, drive: np.ndarray | Events) -> np.ndarray:
        """Output spike counts float32 ``[B, n_out]``, as :meth:`forward` gives them, by the
        fastest inference: a stride-1 convolution and the 2 x 2 average pooling after it
        run as one pass (:meth:`SpikingConv2d.forward_pooled`), handing the next layer each
        window's spike count instead of events. No traces: nothing to count operations
        from or to backpropagate (use :meth:`forward` for those).

        The counts are :meth:`forward`'s up to float32 rounding of the currents: a fused
        pass may run another kernel than :meth:`forward` would (the event path where
        :meth:`forward` takes the direct convolution, or Winograd's F(4x4, 3x3): the fused
        pass's own cost model, :func:`evsim.kernels.conv_paths.pooled_path`, chooses; or,
        within a few tenths of a point of a crossover, the other side of it, as the density
        that picks a kernel is read from every 61st row of a map handed on dense), so a unit
        whose membrane lands within a rounding of the threshold may spike in one and not
        the other.
        """
        x: Events | StaticDrive | np.ndarray = self._input_events(drive)
        k, trace = 0, None
        while k < len(self.layers):
            layer = self.layers[k]
            if (isinstance(layer, SpikingConv2d) and k + 2 < len(self.layers)
                    and isinstance(self.layers[k + 1], Pool2d) and not isinstance(x, StaticDrive)):
                pooled = layer.forward_pooled(x, self.lif, self.layers[k + 1], checked=True)
                if pooled is not None:
                    x, k = pooled, k + 2
                    continue
            if isinstance(x, np.ndarray):
                x = window_events(x)
            x, trace = _run(layer, x, self.lif, False)  # not recorded
            k += 1
        last = self.layers[-1]
        counts = np.zeros((trace.spikes.shape[1], last.n_out), dtype=np.float32)
        counts[:, last.alive_index] = trace.spikes.sum(axis=0, dtype=np.float32)
        return counts

    def _input_events(self, drive: np.ndarray | Events | StaticDrive) -> Events | StaticDrive:
        """The network's input as events (or the static drive), checked: the kernels index
        memory unchecked (and would kill a process forked from one running them)."""
        check_not_forked()
        if isinstance(drive, np.ndarray):
            if drive.ndim != 3 or drive.shape[2] != self.layers[0].n_in:
                raise ShapeError(f"input must be [T, B, {self.layers[0].n_in}], got shape {drive.shape}")
            if drive.dtype.kind not in "biuf":
                raise ShapeError(f"input must be real numbers (bool, integer or float), got dtype {drive.dtype}")
            if drive.dtype.kind in "ui":  # integer counts: nothing to check, no float copy (native byte order)
                events = dense_to_events(np.ascontiguousarray(drive, dtype=drive.dtype.newbyteorder("=")))
            else:
                with np.errstate(over="ignore"):  # a value past float32's range becomes inf: refused below
                    values = np.ascontiguousarray(drive, dtype=np.float32)
                if not all_finite(values):
                    raise ShapeError("input contains NaN or infinite values (in float32, the kernels' type)")
                events = dense_to_events(values)
            check_nonempty(events.n_steps, events.batch)
        elif isinstance(drive, (StaticDrive, Events)):
            events = checked_drive(drive, self.layers[0].n_in, "network")
        else:
            raise ShapeError(f"input must be a NumPy array [T, B, {self.layers[0].n_in}] or Events, got "
                             f"{type(drive).__name__}")
        return events

    def backward(self, traces: list, grad_counts: np.ndarray, would_be_grad: bool = False) -> list[LayerGrads]:
        """Backpropagate dL/d(counts) ``[B, n_out]`` through time; one :class:`LayerGrads` per layer.

        ``would_be_grad`` also computes, in developing layers, the gradients missing
        synapses would have (for synaptic regeneration); see :meth:`SparseLinear.backward`.
        """
        check_not_forked()
        n_steps, batch = self._check_traces(traces)
        last = self.layers[-1]
        if not isinstance(grad_counts, np.ndarray) or grad_counts.shape != (batch, last.n_out) \
                or grad_counts.dtype.kind not in "biuf":
            raise ShapeError(f"grad_counts must be [batch, outputs] = [{batch}, {last.n_out}] (the counts' shape) "
                             "real numbers, got " + (f"{grad_counts.shape} of {grad_counts.dtype}"
                                                     if isinstance(grad_counts, np.ndarray)
                                                     else type(grad_counts).__name__))
        if not np.all(np.isfinite(grad_counts)):
            raise ShapeError("grad_counts holds NaN or infinite values: check the loss that gave them")
        # count = sum_t o[t], so every step receives the same gradient.
        grad_out = np.ascontiguousarray(
            np.broadcast_to(grad_counts[:, last.alive_index].astype(np.float32), traces[-1].u.shape[1:])[None]
            .repeat(n_steps, axis=0))
        grads: list[LayerGrads] = [None] * len(self.layers)
        dead_error = None
        for k in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[k]
            below = self.layers[k - 1] if k > 0 else None
            all_alive = below is None or below.alive_index.size == below.n_out
            # Dead units below need the error they would receive if revived (regeneration),
            # as factors; the alive ones get the input gradient.
            dead_need_error = would_be_grad and below is not None and below.develops and not all_alive
            request = BackwardRequest(
                input_grad=k > 0, input_units=None if all_alive else below.alive_index,
                factors_ok=below is not None and getattr(below, "accepts_factors", False),
                pooled_ok=below is not None and getattr(below, "accepts_pooled", False),
                would_be=would_be_grad and layer.develops, dead_error=dead_error,
                dead_units_below=_dead_units(below) if dead_need_error else None)
            grads[k] = layer.backward(traces[k], grad_out, self.lif, request)
            grad_out, dead_error = grads[k].input, grads[k].dead_error_below
        return grads

    def _check_traces(self, traces) -> tuple[int, int]:
        """``(T, B)`` of ``traces`` if they are one forward pass's of this network's present
        structure (each layer's of its plan, all of the same T and B, of the alive units'
        width), else ShapeError: the kernels read the traces unchecked. Shapes only: O(layers)."""
        n = len(self.layers)
        if not isinstance(traces, (list, tuple)) or len(traces) != n:
            raise ShapeError(f"backward takes the {n} traces forward returned (one per layer), got "
                             + (f"{len(traces)}" if isinstance(traces, (list, tuple)) else type(traces).__name__))
        for trace in traces:
            check_recorded(trace)
        if len({trace.pass_id for trace in traces if isinstance(trace, (LayerTrace, PoolTrace))}) > 1:
            raise ShapeError("these traces come from different forward passes; pass one forward's traces, in order")
        # evsim's own layers' traces are checked here; a layer of one's own checks its trace itself
        last = next((trace for layer, trace in zip(reversed(self.layers), reversed(traces))
                     if isinstance(layer, OWN_LAYERS) and not isinstance(layer, Pool2d)), None)
        if last is not None and not isinstance(last, LayerTrace):
            raise ShapeError("the traces do not fit the network's layers; pass forward's traces as they came, in order")
        n_steps, batch = last.u.shape[:2] if last is not None else (None, None)
        for k, (layer, trace) in enumerate(zip(self.layers, traces)):
            if not isinstance(layer, OWN_LAYERS):
                continue
            if isinstance(layer, Pool2d):
                out = trace.events_out if isinstance(trace, PoolTrace) else None
                fits = out is not None and (out.n_steps, out.batch) == (n_steps, batch)
            else:
                layer.check_trace(trace)
                fits = (isinstance(trace, LayerTrace) and trace.u.shape == (n_steps, batch, layer.alive_index.size)
                        and trace.spikes.shape == trace.u.shape
                        and (trace.events_in.n_steps, trace.events_in.batch) == (n_steps, batch))
            if not fits:
                raise ShapeError(f"trace {k} does not fit layer {k} ({self.layer_labels()[k]}) for a pass of {n_steps} "
                                 f"steps x {batch} samples (traces of different forward passes, or out of order); "
                                 "pass one forward's traces")
        return n_steps, batch

    def parameters(self, grads: list[LayerGrads] | None = None) -> list[tuple[np.ndarray, np.ndarray | None, dict]]:
        """``(values, grads, state)`` triples for the optimizer, every layer's parameters in
        order, with the gradients of :meth:`backward` (None without them).

        Raises
        ------
        ShapeError
            If ``grads`` are not one per layer, or a layer's were taken before a structural
            edit of it (they would update other synapses): run forward and backward again.
        """
        n = len(self.layers)
        if grads is not None and (not isinstance(grads, (list, tuple)) or len(grads) != n
                                  or not all(isinstance(g, LayerGrads) for g in grads)):
            raise ShapeError(f"parameters takes the {n} LayerGrads backward returned (one per layer), got "
                             + (f"{len(grads)} items" if isinstance(grads, (list, tuple)) else type(grads).__name__))
        params = []
        for k, layer in enumerate(self.layers):
            arrays = layer.parameters()
            if grads is not None and not getattr(layer, "grads_fit", lambda g: True)(grads[k]):
                raise ShapeError(f"the gradients of layer {k} ({self.layer_labels()[k]}) were taken before a "
                                 "structural edit of it (or on another network); run forward and backward again after "
                                 "the edit")
            if grads is not None and len(grads[k].params) != len(arrays):
                raise ShapeError(f"layer {k} ({self.layer_labels()[k]}) has {len(arrays)} parameter arrays but its "
                                 f"gradients {len(grads[k].params)}; pass the grads backward returned")
            for j, (values, state) in enumerate(arrays):
                params.append((values, None if grads is None else grads[k].params[j], state))
        return params


class LayerList(list):
    """:attr:`Network.layers`: a list whose every change is checked as ``Network(layers)``
    checks its layers (:func:`check_chain`), before it is made."""

    def __reduce__(self):  # a copy is built whole: appended one by one, a part would not chain
        return LayerList, (list(self),)


def _checked_change(name: str):
    change = getattr(list, name)

    def checked(self, *args, **kwargs):
        trial = list(self)
        change(trial, *args, **kwargs)
        check_chain(trial)
        return change(self, *args, **kwargs)
    checked.__name__ = name
    return checked


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop", "remove",
              "clear", "sort", "reverse"):
    setattr(LayerList, _name, _checked_change(_name))


def check_chain(layers: list) -> list:
    """``layers`` if they make a network, else ShapeError naming the layer: each a
    :class:`~evsim.layers.base.Layer`, consecutive sizes (and map shapes) matching, the
    last with neurons (its spike counts are the output)."""
    if not isinstance(layers, list) or not layers:
        raise ShapeError("a network needs a list of at least one layer, input to output")
    for k, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ShapeError(f"layer {k} is a {type(layer).__name__}, not a layer (SparseLinear, SpikingConv2d, "
                             "Pool2d)")
    for k, (a, b) in enumerate(zip(layers, layers[1:]), start=1):
        if a.n_out != b.n_in:
            raise ShapeError(f"layer sizes do not chain: layer {k - 1}'s {a.n_out} outputs feed layer {k}'s "
                             f"{b.n_in} inputs")
        # A map of the same size but another shape would run, on scrambled cells.
        gives, takes = getattr(a, "out_shape", None), getattr(b, "in_shape", None)
        if gives is not None and takes is not None and tuple(gives) != tuple(takes):
            raise ShapeError(f"layer {k + 1} takes {'x'.join(map(str, takes))} maps but layer {k} gives "
                             f"{'x'.join(map(str, gives))}")
    if not getattr(layers[-1], "spiking", True):
        raise ShapeError(f"the last layer is a pooling ({layers[-1].describe()}), which has no neurons to count; end "
                         "the network with a spiking layer (a fully connected one for classes)")
    return layers


AUTO_DEVELOP = "auto"
FC_DEVELOP = "fc"


def parse_develop(value) -> str:
    """``"auto"``, ``"fc"`` or comma-separated layer labels like ``"conv2,fc1"``, normalised.

    Raises
    ------
    ConfigError
        If the value is none of these.
    """
    text = value.strip().lower().replace(" ", "") if isinstance(value, str) else None
    if text in (AUTO_DEVELOP, FC_DEVELOP):
        return text
    if text is None or not re.fullmatch(r"(conv|fc)[1-9][0-9]*(,(conv|fc)[1-9][0-9]*)*", text):
        raise ConfigError("must be 'auto' (the authors' choice: every convolution but the first, and the hidden fully "
                          "connected layers), 'fc' (the hidden fully connected layers) or layer names like conv2,fc1")
    names = text.split(",")
    repeated = next((name for k, name in enumerate(names) if name in names[:k]), None)
    if repeated:
        raise ConfigError(f"names {repeated} twice; name each developing layer once, like conv2,fc1")
    return text


def developing_layers(network: "Network", develop: str) -> list[bool]:
    """Per layer, whether it develops under ``develop`` (:func:`parse_develop`'s forms):
    ``"auto"`` every convolution but the first and every hidden fully connected layer;
    ``"fc"`` the hidden fully connected layers; else the layers named (``conv2,fc1``;
    the output layer never develops: pruning it would remove classes).

    Raises
    ------
    ConfigError
        If a name is not a layer of ``network`` that can develop.
    """
    develop = parse_develop(develop)
    labels = network.layer_labels()
    output = labels[-1]
    if develop == AUTO_DEVELOP:
        return [(label.startswith("conv") and label != "conv1") or (label.startswith("fc") and label != output)
                for label in labels]
    if develop == FC_DEVELOP:
        return [label.startswith("fc") and label != output for label in labels]
    names = develop.split(",")
    for name in names:
        if name == output:
            raise ConfigError(f"--develop {develop}: {name} is the output layer, which never develops (pruning it "
                              "would remove classes)")
        if name not in labels:
            choices = [label for label in labels if not label.startswith("pool") and label != output]
            raise ConfigError(f"--develop {develop}: this network has no layer {name}; it has "
                              f"{', '.join(choices)}")
    return [label in names for label in labels]


def _dead_units(layer: Layer) -> np.ndarray:
    """The output units of ``layer`` that are not alive, ascending."""
    dead = np.ones(layer.n_out, dtype=bool)
    dead[layer.alive_index] = False
    return np.flatnonzero(dead)


def parse_spec(spec: str) -> list:
    """The parts of an architecture string (see :meth:`Network.from_spec`): the input shape
    (a tuple), then per layer an int (fully connected), ``("conv", filters, kernel,
    stride, pad)`` or ``("pool", "avg"|"max", kernel)``.

    Raises
    ------
    ConfigError
        Naming the part that is not in the notation.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"an architecture is a string like '2312-800-10', got {spec!r}")
    tokens = spec.strip().split("-")
    if len(tokens) < 2:
        raise ConfigError(f"architecture {spec!r} needs an input and at least one layer, like '2312-800-10'")
    shape = tokens[0].lower().split("x")
    if len(shape) not in (1, 3) or not all(re.fullmatch(r"[1-9][0-9]*", n) for n in shape):
        raise ConfigError(f"architecture {spec!r}: the input {tokens[0]!r} must be a size (2312) or a map "
                          "channels x height x width (2x32x32)")
    parts: list = [tuple(int(n) for n in shape)]
    if max(parts[0]) > INT32_MAX:
        raise ConfigError(f"architecture {spec!r}: the input {tokens[0]!r} has a number larger than {INT32_MAX}")
    for k, token in enumerate(tokens[1:], start=1):
        conv = re.fullmatch(r"([1-9][0-9]*)C([1-9][0-9]*)(?:s([1-9][0-9]*))?(?:p([0-9]+))?", token, re.IGNORECASE)
        pool = re.fullmatch(r"([AM])P([1-9][0-9]*)", token, re.IGNORECASE)
        if re.fullmatch(r"[1-9][0-9]*", token):
            parts.append(int(token))
        elif conv:
            kernel = int(conv[2])
            parts.append(("conv", int(conv[1]), kernel, int(conv[3] or 1),
                          kernel // 2 if conv[4] is None else int(conv[4])))
        elif pool:
            parts.append(("pool", "avg" if pool[1].upper() == "A" else "max", int(pool[2])))
        else:
            raise ConfigError(f"architecture {spec!r}: layer {k} ({token!r}) is not a layer: write a size (800), a "
                              "convolution (15C3, 15C3s2p0) or a pooling (AP2, MP2)")
        if max(int(n) for n in re.findall(r"[0-9]+", token)) > INT32_MAX:  # indices are int32
            raise ConfigError(f"architecture {spec!r}: layer {k} ({token!r}) has a number larger than {INT32_MAX}")
    return parts


def spec_shapes(spec: str) -> list[tuple[int, ...]]:
    """The input shape and every layer's output shape of the network ``spec`` describes,
    without building it.

    Raises
    ------
    ConfigError
        If ``spec`` is not in the notation or its layers do not chain (a pooling larger
        than its map, a convolution after a fully connected layer, no fully connected
        layer at the end), naming the layer.
    """
    parts = parse_spec(spec)
    shapes: list[tuple[int, ...]] = [parts[0]]
    for k, part in enumerate(parts[1:], start=1):
        shape = shapes[-1]
        if isinstance(part, int):
            shapes.append((part,))
            continue
        where = f"architecture {spec!r}: layer {k} ({_token(spec, k)})"
        if len(shape) != 3:
            raise ConfigError(f"{where} needs a map of channels x height x width, but follows a fully connected "
                              "layer; put convolutions and poolings before the fully connected layers")
        try:
            if part[0] == "conv":
                geometry = conv_geometry(*shape, part[2], part[3], part[4])
                shapes.append((part[1], geometry.out_height, geometry.out_width))
            else:
                geometry = pool_geometry(*shape, part[2])
                shapes.append((shape[0], geometry.out_height, geometry.out_width))
        except ValueError as exc:
            raise ConfigError(f"{where} does not fit its {'x'.join(map(str, shape))} input: {exc}") from None
    if len(shapes[-1]) != 1:
        raise ConfigError(f"architecture {spec!r} must end with a fully connected layer (the classes)")
    return shapes


def spec_footprint(spec: str) -> tuple[list[int], int]:
    """The units of each layer (input first) and the weights of the network ``spec``
    describes, without building it (for memory estimates)."""
    parts, shapes = parse_spec(spec), spec_shapes(spec)
    weights = 0
    for part, shape in zip(parts[1:], shapes):
        if isinstance(part, int):
            weights += int(np.prod(shape)) * part
        elif part[0] == "conv":
            weights += shape[0] * part[1] * part[2] * part[2]
    return [int(np.prod(shape)) for shape in shapes], weights


def _token(spec: str, k: int) -> str:
    return repr(spec.strip().split("-")[k])


def parse_sizes(spec: str) -> list[int]:
    """Layer sizes (input first) of a fully connected architecture string."""
    parts = parse_spec(spec)
    if any(not isinstance(part, int) for part in parts[1:]):
        raise ConfigError(f"architecture {spec!r} is not fully connected")
    return [int(np.prod(parts[0]))] + parts[1:]


# The layers of this package: they take ``checked`` (their input is the network's own,
# valid, events), and the network checks their traces and fuses their passes.
OWN_LAYERS = (SparseLinear, SpikingConv2d, Pool2d)


def _run(layer, events, lif: LIFParameters, record: bool):
    """``layer.forward`` on events the network made or checked: evsim's layers skip their
    own check; a layer of one's own takes the protocol's three arguments."""
    if isinstance(layer, OWN_LAYERS):
        return layer.forward(events, lif, record, checked=True)
    return layer.forward(events, lif, record)


def _one_pass(traces: list) -> list:
    """``traces`` numbered as one forward pass's (``pass_id``), so that backward can
    refuse traces of two passes mixed."""
    number = secrets.randbits(63) | 1
    for k, trace in enumerate(traces):
        if isinstance(trace, LayerTrace):
            traces[k] = trace._replace(pass_id=number)
        elif isinstance(trace, PoolTrace):
            trace.pass_id = number
    return traces
