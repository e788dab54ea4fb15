"""Average and max pooling of spike maps on events (the :class:`~evsim.layers.base.Layer` protocol).

As in the SD-SNN authors' networks, pooling has no neurons: average pooling of a spike
map hands the next layer values in {0, 1/k², ..., 1} (0.25 steps for k = 2), max pooling
a 1 where any cell of the window spiked. A window with no input event sends nothing, so
pooling is as sparse as the spikes it pools. It has no synapses and no parameters, and
counts no synaptic operation (the next layer's accumulates are counted there).
"""
from __future__ import annotations

import nir
import numpy as np

from evsim.errors import ConfigError, ShapeError
from evsim.kernels.avg_pool import avg_pool_backward, avg_pool_events
from evsim.kernels.conv_geometry import PoolGeometry, pool_geometry
from evsim.kernels.events import Events, StaticDrive, dense_to_events
from evsim.kernels.max_pool import max_pool_backward, max_pool_events
from evsim.layers.base import BackwardRequest, LayerGrads, Parameter, PooledGrad, checked_drive
from evsim.neuron import LIFParameters

POOLS = ("avg", "max")


class PoolTrace:
    """What a pooling's forward pass keeps: its input events, and for max pooling its
    output events with the input unit of each maximum.

    Run inside the convolution below it (:meth:`~evsim.network.Network.forward`), a
    pooling never sees its input as events: it keeps that layer's spikes ``[T, B, N]``
    and their units, ``spikes_below``, and makes them :attr:`events_in` when first read
    (counting operations reads them; the backward never does)."""

    def __init__(self, events_in: Events | None, events_out: Events, argmax: np.ndarray | None,
                 spikes_below: tuple[np.ndarray, np.ndarray] | None = None):
        if (events_in is None) == (spikes_below is None):
            raise ValueError("a PoolTrace takes its input events or the spikes below, one of the two")
        self._events_in = events_in
        self.events_out = events_out
        self.pass_id = 0  # Network.forward's number for the pass (0: a layer run alone)
        self.argmax = argmax
        self._spikes_below = spikes_below

    @property
    def events_in(self) -> Events:
        if self._events_in is None:
            self._events_in = dense_to_events(*self._spikes_below)
        return self._events_in


def _whole_channels(units: np.ndarray, cells: int) -> np.ndarray | None:
    """The channels of ``units`` when they are whole channels of ``cells`` units, in order
    (a convolution's alive or dead filters), else None."""
    channels = units[::cells] // cells
    if units.size == channels.size * cells and np.array_equal(
            units, (channels[:, None] * cells + np.arange(cells)[None, :]).ravel()):
        return channels
    return None


def _select_units(grad_in: np.ndarray, units: np.ndarray, cells: int) -> np.ndarray:
    """``grad_in[:, units]``, contiguous. The units below a pooling are a convolution's
    alive filters, whole channels of ``cells`` units: taken channel by channel, a copy of
    contiguous runs, where a column gather over the ``[T*B, C*H*W]`` map took 20x longer
    (263 against 12 ms for the paper's conv2 with 4 of 40 filters dead)."""
    channels = _whole_channels(units, cells)
    if channels is not None:
        slots = grad_in.shape[0]
        return np.ascontiguousarray(grad_in.reshape(slots, -1, cells)[:, channels]).reshape(slots, -1)
    return np.ascontiguousarray(grad_in[:, units])


class Pool2d:
    """``k x k`` pooling with stride ``k`` (PyTorch's floor rule for maps not divisible by ``k``).

    Parameters
    ----------
    in_shape : ``(C, H, W)`` of the input map.
    kernel : the window's side ``k``.
    mode : ``"avg"`` or ``"max"``.
    """

    kind = "pool2d"
    develops = False
    accepts_factors = False
    accepts_pooled = False
    spiking = False

    def __init__(self, in_shape: tuple[int, int, int], kernel: int, mode: str = "avg"):
        if mode not in POOLS:
            raise ShapeError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLS)}")
        if np.ndim(in_shape) != 1 or len(in_shape) != 3:
            raise ShapeError(f"in_shape must be (channels, height, width) of the input map, got {in_shape!r}")
        try:
            self.geometry: PoolGeometry = pool_geometry(*in_shape, kernel)
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        self.mode = mode
        self.alive = np.ones(self.n_out, dtype=bool)
        self.alive_index = np.arange(self.n_out, dtype=np.int32)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        g = self.geometry
        return (g.channels, g.height, g.width)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        g = self.geometry
        return (g.channels, g.out_height, g.out_width)

    @property
    def n_in(self) -> int:
        return self.geometry.n_in

    @property
    def n_out(self) -> int:
        return self.geometry.n_out

    def describe(self) -> str:
        """``AP2`` or ``MP2``."""
        return f"{'A' if self.mode == 'avg' else 'M'}P{self.geometry.kernel}"

    def forward(self, events: Events | StaticDrive, lif: LIFParameters, record: bool = True,
                checked: bool = False) -> tuple[Events | StaticDrive, PoolTrace]:
        """The pooled events of ``events``, or, for a network's analog input that is the same
        at every step, the pooled :class:`StaticDrive` (``record`` changes nothing: a
        pooling keeps no state). ``events`` are checked unless ``checked`` (as
        :meth:`SparseLinear.forward`)."""
        if not checked:
            events = checked_drive(events, self.n_in)
        if isinstance(events, StaticDrive):
            pooled = StaticDrive(self._pool_static(events.values), events.n_steps)
            return pooled, PoolTrace(events, pooled, None)
        if self.mode == "avg":
            ptr, idx, val = avg_pool_events(events.ptr, events.idx, events.val, self.geometry)
            argmax = None
        else:
            if events.val.size and events.val.min() < 0:  # a window's maximum over absent (zero) cells
                raise ShapeError(f"max pooling {self.describe()} takes nonnegative input (spikes or event counts), got "
                                 f"{events.val.min():g}; feed it a spiking layer's output, or use average pooling")
            ptr, idx, val, argmax = max_pool_events(events.ptr, events.idx, events.val, self.geometry)
        out = Events(ptr, idx, val, events.n_steps, events.batch)
        return out, PoolTrace(events, out, argmax)

    def _pool_static(self, values: np.ndarray) -> np.ndarray:
        """float32 ``[B, n_out]``: the windows of ``values`` ``[B, n_in]``. Averages by the
        event kernel, as one step of events, so a drive pools to the same values as the
        same input given at every step; maxima over every cell of the window, which a
        static drive has (signed values included)."""
        g = self.geometry
        batch = values.shape[0]
        if self.mode == "avg":
            events = dense_to_events(values[None])
            ptr, idx, val = avg_pool_events(events.ptr, events.idx, events.val, g)
            pooled = np.zeros((batch, g.n_out), dtype=np.float32)
            pooled[np.repeat(np.arange(batch), np.diff(ptr)), idx] = val
            return pooled
        k = g.kernel
        maps = values.reshape(batch, g.channels, g.height, g.width)[:, :, :g.out_height * k, :g.out_width * k]
        windows = maps.reshape(batch, g.channels, g.out_height, k, g.out_width, k)
        return np.ascontiguousarray(windows.max(axis=(3, 5)).reshape(batch, g.n_out), dtype=np.float32)

    def backward(self, trace: PoolTrace, grad_out: np.ndarray, lif: LIFParameters,
                 request: BackwardRequest = BackwardRequest()) -> LayerGrads:
        """dL/d(input) from dL/d(pooled output) ``[T, B, n_out]``; with
        ``request.dead_units_below``, also the part of it that goes to those (dead) units,
        float32 ``[T*B, len(dead_units_below)]``, in :attr:`LayerGrads.dead_error_below`.
        An average pooling over whole channels hands a layer that takes it
        (``request.pooled_ok``) a :class:`PooledGrad` instead of forming dL/d(input)."""
        out = trace.events_out
        if not isinstance(grad_out, np.ndarray) or grad_out.shape != (out.n_steps, out.batch, self.n_out):
            raise ShapeError("pooling takes dL/d(output) as a dense [T, B, N] = "
                             f"{[out.n_steps, out.batch, self.n_out]} array (the trace's T and B)")
        grads = LayerGrads([])
        if not request.input_grad:
            return grads
        steps, batch = grad_out.shape[:2]
        flat = np.ascontiguousarray(grad_out.reshape(steps * batch, -1), dtype=np.float32)
        cells = self.geometry.height * self.geometry.width
        if request.dead_units_below is not None:
            # What the dead units below (a developing convolution's dead filters) would
            # receive if revived, for their would-be gradients.
            grads.dead_error_below = self._input_grad(flat, trace, request.dead_units_below, cells)
        units = request.input_units
        if request.pooled_ok and self.mode == "avg":
            channels = np.arange(self.geometry.channels) if units is None else _whole_channels(units, cells)
            if channels is not None:
                grads.input = PooledGrad(flat, channels.astype(np.int64), self.geometry)
                return grads
        grad_in = self._input_grad(flat, trace, units, cells)
        grads.input = grad_in.reshape(steps, batch, grad_in.shape[1])
        return grads

    def _input_grad(self, flat: np.ndarray, trace: PoolTrace, units: np.ndarray | None, cells: int) -> np.ndarray:
        """dL/d(input) ``[T*B, len(units)]`` (every unit for None). Whole channels of an
        average pooling are computed alone: with a convolution's dead filters below, the
        full map's gradient and a copy of the alive channels took 223 against 24 ms
        (benchmarks/RESULTS.md)."""
        if self.mode == "avg":
            channels = None if units is None else _whole_channels(units, cells)
            if units is None or channels is not None:
                return avg_pool_backward(flat, self.geometry, channels=channels)
            grad_in = avg_pool_backward(flat, self.geometry)
        else:
            out = trace.events_out
            if isinstance(out, StaticDrive):  # the network's input: no layer below takes an error
                raise ShapeError(f"max pooling {self.describe()} of a static drive sends no error down")
            grad_in = max_pool_backward(flat, out.ptr, out.idx, trace.argmax, self.geometry)
        return grad_in if units is None else _select_units(grad_in, units, cells)

    def parameters(self) -> list[Parameter]:
        return []

    dense_synapses = 0
    dense_weights = 0

    def fan_out(self) -> np.ndarray:
        """No synaptic operations: zeros."""
        return np.zeros(self.n_in, dtype=np.int64)

    fan_out_unpruned = fan_out

    def ann_macs(self) -> int:
        return 0

    def to_arrays(self, with_state: bool) -> dict[str, np.ndarray]:
        g = self.geometry
        return {"geometry": np.array([g.channels, g.height, g.width, g.kernel]), "mode": np.array(self.mode)}

    @classmethod
    def from_arrays(cls, arrays, path: str = "auto", with_state: bool = False) -> "Pool2d":
        """The pooling written by :meth:`to_arrays`."""
        geometry = np.asarray(arrays["geometry"])
        if geometry.shape != (4,) or geometry.dtype.kind not in "iu":
            raise ShapeError(f"geometry must be 4 integers (channels, height, width, kernel), got {geometry!r}")
        channels, height, width, kernel = (int(n) for n in geometry)
        return cls((channels, height, width), kernel, str(arrays["mode"]))

    def nir_nodes(self, name: str, lif: LIFParameters) -> tuple[dict, list[tuple[str, str]], str, str]:
        """An ``AvgPool2d`` node (no padding, stride = window). NIR has no max pooling node.

        Raises
        ------
        ConfigError
            For max pooling.
        """
        if self.mode != "avg":
            raise ConfigError("NIR has no max-pooling node: only networks with average pooling (AP) export to NIR")
        k = self.geometry.kernel
        node = f"avgpool{name}"
        return {node: nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                    padding=np.array([0, 0]))}, [], node, node
