"""Spiking 2-D convolution on events (the :class:`~evsim.layers.base.Layer` protocol).

A synapse is an (input channel, output channel) pair carrying a K x K kernel: the
layer's :class:`~evsim.synapses.SynapseStore` is a block CSR over channels (rows = input
channels, columns = filters). A pruned kernel is absent and costs nothing; a dead filter
has no kernel left, is compacted out of the output map, never fires and costs nothing.

Units are flat in channel-major order (PyTorch's flatten of ``[C, H, W]``), so a fully
connected layer can follow without an explicit flatten. The LIF dynamics, surrogate and
BPTT are the linear layer's (:mod:`evsim.kernels.propagate`, :mod:`evsim.kernels.lif`),
run on the ``[T, B, F_alive*Ho*Wo]`` map. Which kernel computes the currents and the
gradients (events or im2col + GEMM) is chosen per call from the activity, at the
crossovers measured by ``benchmarks/bench_conv_kernels.py`` (:mod:`evsim.kernels.conv_paths`).

Structural development edits a convolution through the
:class:`~evsim.layers.base.Developing` protocol: a unit is a filter (``kill`` removes all
its kernels), a synapse a kernel (``regrow`` restores whole kernels and revives their
filters), and backward returns the would-be gradients of missing kernels.
"""
from __future__ import annotations

import nir
import numpy as np
from numba import get_num_threads

from evsim.aligned import aligned_empty, line_width
from evsim.errors import ShapeError
from evsim.kernels.conv_geometry import ConvGeometry, conv_fan_out, conv_geometry
from evsim.kernels.conv_forward import conv_currents_static
from evsim.kernels.conv_lif import conv_lif_direct, conv_lif_events, conv_lif_winograd
from evsim.kernels.conv_lif_backward import lif_backward_weight_grad
from evsim.kernels.conv_lif_pool import conv_lif_pool
from evsim.kernels.conv_paths import (FORWARD_PATHS, INPUT_GRAD_PATHS, WEIGHT_GRAD_PATHS, event_density, forward_path,
                                      input_grad_path, nonzero_density, pooled_path, scatter_below, weight_grad_path)
from evsim.kernels.events import Events, StaticDrive, alive_events, dense_to_events
from evsim.kernels.lif import NO_FACTORS, NO_POOL_CHANNELS, NO_POOL_SHAPE, _lif_backward
from evsim.kernels.propagate import _lif_scan, propagate_static
from evsim.layers.base import (BackwardRequest, InputGradFactors, LayerGrads, Parameter, PooledGrad,
                               StructuralEdits, attach_state, checked_drive, checked_lif, next_plan_id, state_arrays)
from evsim.layers.linear import LayerTrace
from evsim.layers.pool import Pool2d
from evsim.neuron import SURROGATES, LIFParameters, lif_constants
from evsim.synapses import SynapseStore, check_csr, check_real


class SpikingConv2d(StructuralEdits):
    """Spiking convolution with block-sparse kernels.

    Parameters
    ----------
    store : the kernels, a block store of shape ``(C_in, F)`` with ``(K, K)`` blocks.
    in_shape : ``(C_in, H, W)`` of the input map.
    stride, pad : PyTorch's ``Conv2d`` stride and zero padding.
    bias : float32 ``[F]``; zeros by default.
    develops : whether structural development may prune filters and regrow kernels.
    """

    kind = "conv2d"
    accepts_factors = False
    accepts_pooled = True

    def __init__(self, store: SynapseStore, in_shape: tuple[int, int, int], stride: int = 1, pad: int = 0,
                 bias: np.ndarray | None = None, develops: bool = False):
        if len(store.block_shape) != 2 or store.block_shape[0] != store.block_shape[1]:
            raise ShapeError(f"a convolution's synapses are square kernels, got blocks of {store.block_shape}")
        if np.ndim(in_shape) != 1 or len(in_shape) != 3:
            raise ShapeError(f"in_shape must be (channels, height, width) of the input map, got {in_shape!r}")
        try:
            self.geometry: ConvGeometry = conv_geometry(*in_shape, store.block_shape[0], stride, pad)
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        if store.shape[0] != self.geometry.in_channels:
            raise ShapeError(f"the kernels come from {store.shape[0]} channels but the input has "
                             f"{self.geometry.in_channels}")
        self.store = store
        self.filters = store.shape[1]
        self.bias = np.zeros(self.filters, np.float32) if bias is None else bias
        self.bias_state: dict[str, np.ndarray] = {}
        self.develops = develops
        self.alive = np.ones(self.filters, dtype=bool)  # per filter
        self.rebuild()

    @classmethod
    def uniform(cls, in_shape: tuple[int, int, int], filters: int, kernel: int, rng: np.random.Generator,
                stride: int = 1, pad: int = 0, **kwargs) -> "SpikingConv2d":
        """Every kernel present, weights and biases uniform in ±1/sqrt(C*K*K) (PyTorch's Conv2d init)."""
        channels = int(in_shape[0])
        bound = 1.0 / np.sqrt(channels * kernel * kernel)
        data = rng.uniform(-bound, bound, (channels * filters, kernel, kernel)).astype(np.float32)
        indptr = np.arange(0, channels * filters + 1, filters, dtype=np.int32)
        indices = np.tile(np.arange(filters, dtype=np.int32), channels)
        store = SynapseStore.from_blocks(indptr, indices, data, (channels, filters))
        return cls(store, in_shape, stride, pad, rng.uniform(-bound, bound, filters).astype(np.float32), **kwargs)

    # --------------------------------------------------------------- shape
    @property
    def in_shape(self) -> tuple[int, int, int]:
        g = self.geometry
        return (g.in_channels, g.height, g.width)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        g = self.geometry
        return (self.filters, g.out_height, g.out_width)

    @property
    def n_in(self) -> int:
        return self.geometry.n_in

    @property
    def n_out(self) -> int:
        return self.filters * self.geometry.out_cells

    def describe(self) -> str:
        """The layer in the architecture notation, e.g. ``15C3`` (``s2``/``p0`` when not the default)."""
        g = self.geometry
        text = f"{self.filters}C{g.kernel}"
        text += f"s{g.stride}" if g.stride != 1 else ""
        return text + (f"p{g.pad}" if g.pad != g.kernel // 2 else "")

    # --------------------------------------------------------------- structure
    def rebuild(self) -> None:
        """Recompute the compacted filter indices and the alive units after a structural edit."""
        self.built_version = self.store.version
        self.plan_id = next_plan_id()
        alive_filters = np.flatnonzero(self.alive).astype(np.int32)
        local = np.full(self.filters, -1, dtype=np.int32)
        local[alive_filters] = np.arange(alive_filters.size, dtype=np.int32)
        if self.store.nnz and np.any(local[self.store.indices] < 0):
            raise ShapeError("a dead filter still has kernels; kill() must prune them")
        self.alive_filters = alive_filters
        self.local_index = local
        self.columns = local[self.store.indices]
        cells = self.geometry.out_cells
        self.alive_index = (alive_filters[:, None] * cells + np.arange(cells)[None, :]).ravel().astype(np.int32)
        self.incomplete = np.flatnonzero(self.store.fan_in() < self.geometry.in_channels).astype(np.int64)

    def set_alive(self, alive: np.ndarray) -> None:
        """Mark which filters are alive (a dead one must have no kernel)."""
        alive = np.asarray(alive)
        if alive.shape != (self.filters,):
            raise ShapeError(f"alive has shape {alive.shape}, expected ({self.filters},) (one per filter)")
        self.alive = alive.astype(bool)
        self.rebuild()

    def _current_plan(self) -> None:
        if self.built_version != self.store.version:
            self.rebuild()

    # ---------------------------------------------------------------- forward
    def forward(self, events: Events | StaticDrive, lif: LIFParameters, record: bool = True,
                checked: bool = False) -> tuple[Events, LayerTrace]:
        """Propagate ``events`` for ``T`` steps; return output spike events and the trace.
        ``events`` are checked unless ``checked`` (as :meth:`SparseLinear.forward`).

        The currents come from the event path or, where the input is dense enough, the
        direct convolution or Winograd's (:func:`evsim.kernels.conv_paths.forward_path`),
        fused with the LIF dynamics where a one-pass kernel exists
        (:mod:`evsim.kernels.conv_lif`). With ``record`` False (inference) the trace holds
        no membrane (``u`` None) and cannot be backpropagated.
        """
        if not checked:
            events, lif = checked_drive(events, self.n_in), checked_lif(lif)
        self._current_plan()
        n_units = self.alive_index.size
        steps, batch = events.n_steps, events.batch
        if isinstance(events, StaticDrive):
            path = "static"
        else:
            path = forward_path(event_density(events.ptr, self.n_in), self.geometry, self.alive_filters.size)
        # The one-pass kernels write the membrane only when it is recorded; the two passes
        # need it as the currents' buffer either way.
        one_pass = path in ("direct", "winograd") or (path == "events" and not record)
        spikes = aligned_empty((steps, batch, n_units), np.uint8)
        u = aligned_empty((steps, batch, n_units)) if record or not one_pass else None
        decay, v_th, hard = np.float32(lif.decay), np.float32(lif.v_th), lif.reset == "hard"
        bias = self.bias[self.alive_filters]
        kernels = (self.store.indptr, self.columns, self.store.data, self.geometry)
        if path == "static":
            current = conv_currents_static(events.values, *kernels, self.alive_filters.size)
            propagate_static(current, np.repeat(bias, self.geometry.out_cells), decay, v_th, hard, u, spikes)
        elif path == "direct":
            conv_lif_direct(events.ptr, events.idx, events.val, *kernels, bias, decay, v_th, hard, u, spikes)
        elif path == "winograd":
            conv_lif_winograd(events.ptr, events.idx, events.val, *kernels, bias, decay, v_th, hard, u, spikes)
        elif one_pass:
            conv_lif_events(events.ptr, events.idx, events.val, *kernels, bias, decay, v_th, hard, spikes)
        else:
            FORWARD_PATHS[path](events.ptr, events.idx, events.val, *kernels, u.reshape(steps * batch, n_units))
            _lif_scan(u, spikes, np.repeat(bias, self.geometry.out_cells), decay, v_th, hard, get_num_threads())
        trace = LayerTrace(events, u if record else None, spikes, self.plan_id)
        return alive_events(spikes, self.alive_index), trace

    def forward_pooled(self, drive: Events | np.ndarray, lif: LIFParameters, pool: Pool2d,
                       checked: bool = False) -> np.ndarray | None:
        """Inference through this layer and the 2 x 2 average pooling ``pool`` after it in
        one pass (:mod:`evsim.kernels.conv_lif_pool`): the spikes in each pooling window,
        uint8 ``[T, B, pool.n_out]`` (a quarter of each is what ``pool.forward`` hands on
        as events: :func:`evsim.kernels.conv_lif_pool.window_events`), or None where that
        pass does not apply (a stride, another pooling: use :meth:`forward`). ``drive``:
        events or an earlier pair's window counts. No trace is kept. The pass's kernel is
        the cheapest by :func:`evsim.kernels.conv_paths.pooled_path`: the events' taps or a
        dense kernel, which may be Winograd's F(4x4, 3x3) (for inputs up to
        :data:`evsim.kernels.conv_paths.WINOGRAD4_INPUT_LIMIT`), whose currents differ from
        :meth:`forward`'s by float32 rounding, exact with dyadic weights and inputs (as the
        direct convolution's do from the event path's).
        ``drive`` is checked unless ``checked`` (as :meth:`forward`)."""
        if not checked:
            drive, lif = self._checked_drive(drive), checked_lif(lif)
            self._check_pool(pool)
        if not self._pools_2x2(pool):
            return None
        self._current_plan()
        if isinstance(drive, Events):
            steps, batch, density = drive.n_steps, drive.batch, event_density(drive.ptr, self.n_in)
        elif isinstance(drive, np.ndarray):
            steps, batch = drive.shape[:2]
            density = nonzero_density(drive.reshape(steps * batch, -1))
        else:
            return None
        path = pooled_path(self.geometry, self.alive_filters.size, density)
        if path == "winograd4" and isinstance(drive, Events):  # window counts are at most 1
            path = pooled_path(self.geometry, self.alive_filters.size, density,
                               largest_input=float(np.abs(drive.val).max(initial=0.0)))
        if path is None:
            return None
        pooled = self._pooled_map(steps, batch, pool)
        conv_lif_pool(drive, self.store.indptr, self.columns, self.store.data, self.geometry,
                      self.bias[self.alive_filters], np.float32(lif.decay), np.float32(lif.v_th),
                      lif.reset == "hard", path, self.alive_filters, pooled)
        return pooled

    def forward_and_pool(self, events: Events | StaticDrive, lif: LIFParameters, pool: Pool2d,
                         record: bool = True, checked: bool = False) -> tuple[np.ndarray, LayerTrace] | None:
        """:meth:`forward` and the 2 x 2 average pooling ``pool`` after it in one pass,
        where :meth:`forward` would take the direct convolution
        (:func:`evsim.kernels.conv_lif_pool.conv_lif_pool`): the window counts, uint8
        ``[T, B, pool.n_out]`` (:func:`evsim.kernels.conv_lif_pool.window_events` makes them
        the events ``pool.forward`` hands on), and this layer's trace, both exactly what
        the two layers give run one by one. None where the pass does not apply (another
        kernel, pooling or stride): run the layers one by one. ``events`` are checked
        unless ``checked`` (as :meth:`forward`)."""
        if not checked:
            events, lif = checked_drive(events, self.n_in), checked_lif(lif)
            self._check_pool(pool)
        if not self._pools_2x2(pool) or isinstance(events, StaticDrive):
            return None
        self._current_plan()
        n_filters = self.alive_filters.size
        if forward_path(event_density(events.ptr, self.n_in), self.geometry, n_filters) != "direct":
            return None
        steps, batch, n_units = events.n_steps, events.batch, self.alive_index.size
        spikes = aligned_empty((steps, batch, n_units), np.uint8)
        u = aligned_empty((steps, batch, n_units)) if record else None
        pooled = self._pooled_map(steps, batch, pool)
        conv_lif_pool(events, self.store.indptr, self.columns, self.store.data, self.geometry,
                      self.bias[self.alive_filters], np.float32(lif.decay), np.float32(lif.v_th),
                      lif.reset == "hard", "direct", self.alive_filters, pooled, spikes, u)
        return pooled, LayerTrace(events, u, spikes, self.plan_id)

    def _checked_drive(self, drive: Events | np.ndarray) -> Events | np.ndarray:
        """:meth:`forward_pooled`'s input checked: events, or an earlier pair's window
        counts, uint8 ``[T, B, n_in]`` C-contiguous (the fused kernel reads them by offset)."""
        if not isinstance(drive, np.ndarray):
            return checked_drive(drive, self.n_in)
        if drive.dtype != np.uint8 or drive.ndim != 3 or drive.shape[2] != self.n_in or not drive.flags.c_contiguous \
                or drive.shape[0] < 1 or drive.shape[1] < 1:
            raise ShapeError(f"window counts must be C-contiguous uint8 [T, B, {self.n_in}], got {drive.dtype} "
                             f"{drive.shape}")
        return drive

    @staticmethod
    def _check_pool(pool) -> None:
        if not isinstance(pool, Pool2d):
            raise ShapeError(f"pool must be the Pool2d after this convolution, got {type(pool).__name__}")

    def _pools_2x2(self, pool: Pool2d) -> bool:
        """Whether ``pool`` is a 2 x 2 average pooling of this layer's whole output map."""
        g = pool.geometry
        return pool.mode == "avg" and g.kernel == 2 and tuple(pool.in_shape) == tuple(self.out_shape)

    def _pooled_map(self, steps: int, batch: int, pool: Pool2d) -> np.ndarray:
        """The window counts' array, dead filters' channels zero (the kernels write the alive ones')."""
        pooled = aligned_empty((steps, batch, pool.n_out), np.uint8)
        if not self.alive.all():
            pooled.reshape(steps * batch, self.filters, -1)[:, ~self.alive] = 0
        return pooled

    # --------------------------------------------------------------- backward
    def backward(self, trace: LayerTrace, grad_spikes: np.ndarray, lif: LIFParameters,
                 request: BackwardRequest = BackwardRequest()) -> LayerGrads:
        """BPTT through this layer.

        Parameters
        ----------
        trace : from :meth:`forward`.
        grad_spikes : float32 ``[T, B, N_alive]``, dL/d(output spikes) of the alive units
            (:attr:`alive_index`), or the same as a :class:`PooledGrad` from an average
            pooling above (its channels the alive filters), formed slot by slot.
        request : ``input_grad`` / ``input_units`` as for the linear layer, and:

            - ``would_be``: the gradient every *missing* kernel would have, float32
              ``[C_in, F, K, K]``, zeros where a kernel exists (a convolution has few
              kernels: 600 in the paper's conv2). An alive filter's error is its dL/du; a
              dead filter's is ``dead_error`` (zero without it).
            - ``dead_error``: float32 ``[T*B, n_dead_units]``, the error the dead filters'
              units would receive if revived (dL/d(spike) from above, the surrogate taken
              as 1, as for linear layers), units ascending, as the pooling or layer above
              returned it in :attr:`LayerGrads.dead_error_below`.

        Returns
        -------
        LayerGrads with ``params = [kernels (aligned with the store's data), bias]``.
        """
        self.check_trace(trace)
        steps, batch, n_units = trace.u.shape
        if isinstance(grad_spikes, PooledGrad):
            dense, pooled, channels, pool_shape = None, *self._pooled_source(grad_spikes, steps * batch, n_units)
        elif isinstance(grad_spikes, np.ndarray):
            if grad_spikes.shape != trace.u.shape:
                raise ShapeError(f"dL/d(spikes) must be [T, B, alive units] = {list(trace.u.shape)} (the trace's), "
                                 f"got {list(grad_spikes.shape)}")
            dense, pooled, channels, pool_shape = (np.ascontiguousarray(grad_spikes, dtype=np.float32), NO_FACTORS,
                                                   NO_POOL_CHANNELS, NO_POOL_SHAPE)
        else:
            raise ShapeError("a convolution takes dL/d(spikes) as a dense [T, B, N] array or a PooledGrad")
        sources = (dense, NO_FACTORS, NO_FACTORS, pooled, channels, pool_shape)
        surrogate = (SURROGATES.index(lif.surrogate), np.float32(lif.width))
        constants = (np.float32(lif.decay), np.float32(lif.v_th), lif.reset == "hard", lif.detach_reset)
        cells = self.geometry.out_cells
        grad_bias = np.zeros(self.filters, dtype=np.float32)
        weight_grad_path = self._weight_grad_path(trace.events_in, n_units // cells)
        if (not request.would_be and request.dead_units_below is None and self.columns.size
                and (weight_grad_path in ("events", "direct") if not request.input_grad
                     else weight_grad_path == "events" and self._sends_down_in_one_pass())):
            # Nothing else reads dL/du: the weight gradient and the error sent down take it
            # slot by slot from the cache.
            grad_in = aligned_empty((steps * batch, self.n_in)) if request.input_grad else None
            kernels, grad_bias_per_sample = lif_backward_weight_grad(
                sources, trace.u, trace.spikes, surrogate, constants, trace.events_in, self.store.indptr,
                self.columns, self.geometry, weight_grad_path,
                None if grad_in is None else (self.store.data, scatter_below(), grad_in))
            grad_bias[self.alive_filters] = grad_bias_per_sample.sum(axis=0).reshape(-1, cells).sum(axis=1)
            grads = LayerGrads([kernels, grad_bias], plan=self.plan_id)
            if grad_in is not None:
                units = grad_in if request.input_units is None else grad_in[:, request.input_units]
                grads.input = np.ascontiguousarray(units).reshape(steps, batch, -1)
            return grads
        grad_u_lines = aligned_empty((steps, batch, line_width(n_units)))
        grad_bias_per_sample = aligned_empty((batch, n_units))
        _lif_backward(*sources, trace.u, trace.spikes, *surrogate, *constants, grad_u_lines, grad_bias_per_sample,
                      get_num_threads())
        grad_u = np.ascontiguousarray(grad_u_lines.reshape(steps * batch, -1)[:, :n_units])
        grad_bias[self.alive_filters] = grad_bias_per_sample.sum(axis=0).reshape(-1, cells).sum(axis=1)
        kernels = self._kernel_grads(trace.events_in, grad_u, self.store.indptr, self.columns, steps)
        grads = LayerGrads([kernels, grad_bias], plan=self.plan_id)
        if request.would_be:
            grads.would_be = self._would_be_grad(trace.events_in, grad_u, request.dead_error, steps)
        if request.input_grad or request.dead_units_below is not None:
            grad_in = self._input_grad(grad_u)
            if request.input_grad:
                units = grad_in if request.input_units is None else grad_in[:, request.input_units]
                grads.input = np.ascontiguousarray(units).reshape(steps, batch, -1)
            if request.dead_units_below is not None:  # what the dead units below would receive if revived
                grads.dead_error_below = np.ascontiguousarray(grad_in[:, request.dead_units_below])
        return grads

    def _pooled_source(self, grad: PooledGrad, slots: int, n_units: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """``(pooled, channels, pool_shape)`` for :func:`~evsim.kernels.lif._lif_backward`,
        checked against this layer's output map (the kernel indexes unchecked)."""
        g = grad.geometry
        pooled = grad.grad_out
        channels = np.asarray(grad.channels, dtype=np.int64)
        if (g.channels, g.height, g.width) != self.out_shape \
                or channels.size * g.height * g.width != n_units \
                or pooled.dtype != np.float32 or not pooled.flags.c_contiguous or pooled.shape != (slots, g.n_out) \
                or (channels.size and (channels.min() < 0 or channels.max() >= g.channels)):
            raise ShapeError(f"a pooled gradient over {g} with {channels.size} channels and dL/d(pooled) "
                             f"{pooled.shape} does not fit this convolution's {n_units} alive units of {slots} slots")
        return pooled, channels, (g.height, g.width, g.kernel, g.out_height, g.out_width)

    def _kernel_grads(self, drive: Events | StaticDrive, grad_u: np.ndarray, indptr: np.ndarray,
                      columns: np.ndarray, steps: int) -> np.ndarray:
        """``[nnz, K, K]``: the gradient of the kernels ``(indptr, columns)`` (``columns``
        indexing the filter blocks of ``grad_u`` ``[T*B, G*Ho*Wo]``)."""
        if columns.size == 0:
            return np.zeros((0,) + self.store.block_shape, dtype=np.float32)
        if isinstance(drive, StaticDrive):
            # The same input at every step: sum dL/du over the steps, then one pass.
            once = dense_to_events(drive.values[None])
            summed = np.ascontiguousarray(grad_u.reshape(steps, drive.batch, -1).sum(axis=0))
            return WEIGHT_GRAD_PATHS["dense"](once.ptr, once.idx, once.val, summed, indptr, columns, self.geometry)
        path = self._weight_grad_path(drive, grad_u.shape[1] // self.geometry.out_cells)
        return WEIGHT_GRAD_PATHS[path](drive.ptr, drive.idx, drive.val, grad_u, indptr, columns, self.geometry)

    def _weight_grad_path(self, drive: Events | StaticDrive, n_blocks: int) -> str | None:
        """The weight gradient's kernel for this input (None for a static drive)."""
        if isinstance(drive, StaticDrive):
            return None
        return weight_grad_path(event_density(drive.ptr, self.n_in), n_blocks, self.geometry.stride,
                                geometry=self.geometry)

    def _would_be_grad(self, drive: Events | StaticDrive, grad_u: np.ndarray, dead_error: np.ndarray | None,
                       steps: int) -> np.ndarray:
        """``[C_in, F, K, K]``: the gradients of the missing kernels (zeros elsewhere),
        computed only over the filters that miss kernels (:attr:`incomplete`)."""
        g = self.geometry
        out = np.zeros((g.in_channels, self.filters, g.kernel, g.kernel), dtype=np.float32)
        filters = self.incomplete
        dead = ~self.alive[filters]
        if isinstance(dead_error, InputGradFactors):  # from a linear layer right above
            dead_error = dead_error.grad_u[:, :dead_error.weights.shape[0]] @ dead_error.weights
        if dead.any() and dead_error is not None:
            n_dead = int(np.sum(~self.alive))
            if dead_error.shape != (grad_u.shape[0], n_dead * g.out_cells):
                raise ShapeError(f"dead_error has shape {dead_error.shape}, expected "
                                 f"{(grad_u.shape[0], n_dead * g.out_cells)} (the dead filters' units)")
        else:
            filters = filters[~dead]
            dead = dead[~dead]
        if filters.size == 0:
            return out
        cells, slots = g.out_cells, grad_u.shape[0]
        error = np.empty((slots, filters.size, cells), dtype=np.float32)
        error[:, ~dead] = grad_u.reshape(slots, -1, cells)[:, self.local_index[filters[~dead]]]
        if dead.any():  # every dead filter misses kernels: they are the incomplete dead ones, in order
            error[:, dead] = dead_error.reshape(slots, -1, cells)
        missing = ~self.store.mask()[:, filters]  # [C_in, len(filters)]
        channels, slot = np.nonzero(missing)
        indptr = np.zeros(g.in_channels + 1, dtype=np.int32)
        np.cumsum(missing.sum(axis=1), out=indptr[1:])
        grads = self._kernel_grads(drive, error.reshape(slots, -1), indptr, slot.astype(np.int32), steps)
        out[channels, filters[slot]] = grads
        return out

    def _sends_down_in_one_pass(self) -> bool:
        """Whether the error sent down runs in the LIF backward's pass: where dL/du is dense
        this layer's transposed convolution is Winograd's, which that pass runs slot by
        slot (scattering slots whose dL/du is sparse, at the same crossover)."""
        return input_grad_path(1.0, stride=self.geometry.stride, geometry=self.geometry,
                               n_filters=self.alive_filters.size) == "winograd"

    def _input_grad(self, grad_u: np.ndarray) -> np.ndarray:
        """dL/d(input) ``[T*B, n_in]``: scattered from the nonzero entries of dL/du (the
        surrogate is zero for most units most of the time) or, where dL/du is dense enough
        that scattering loses, by the transposed convolution (direct or Winograd's; GEMM
        for strided ones)."""
        grad_in = aligned_empty((grad_u.shape[0], self.n_in))
        path = input_grad_path(nonzero_density(grad_u), stride=self.geometry.stride, geometry=self.geometry,
                               n_filters=self.alive_filters.size)
        INPUT_GRAD_PATHS[path](grad_u, self.store.indptr, self.columns, self.store.data, self.geometry, grad_in)
        return grad_in

    # ------------------------------------------------------- the protocol's rest
    def parameters(self) -> list[Parameter]:
        """The kernels (with the store's per-kernel state) and the bias."""
        return [Parameter(self.store.data, self.store.state), Parameter(self.bias, self.bias_state)]

    @property
    def dense_synapses(self) -> int:
        """Kernels of the same layer with every (channel, filter) pair present."""
        return self.geometry.in_channels * self.filters

    @property
    def dense_weights(self) -> int:
        """Weights of the same layer with every kernel present."""
        return self.dense_synapses * self.geometry.taps

    def fan_out(self) -> np.ndarray:
        """int64 ``[n_in]``: accumulates an event at each input cell performs (its stored
        kernels' taps that land inside the output map)."""
        g = self.geometry
        return conv_fan_out(self.store.indptr, g.kernel, g.height, g.width, g.out_height, g.out_width, g.stride,
                            g.pad).astype(np.int64)

    def fan_out_unpruned(self) -> np.ndarray:
        """The same with every kernel present."""
        g = self.geometry
        full = np.arange(0, (g.in_channels + 1) * self.filters, self.filters, dtype=np.int32)
        return conv_fan_out(full, g.kernel, g.height, g.width, g.out_height, g.out_width, g.stride,
                            g.pad).astype(np.int64)

    def ann_macs(self) -> int:
        """Multiply-accumulates of the same convolution, dense and non-spiking, per sample
        (border taps included, as a dense implementation computes them)."""
        return self.filters * self.geometry.out_cells * self.geometry.in_channels * self.geometry.taps

    def to_arrays(self, with_state: bool) -> dict[str, np.ndarray]:
        """The layer as named arrays (see :meth:`from_arrays`)."""
        g = self.geometry
        arrays = {"indptr": self.store.indptr, "indices": self.store.indices, "data": self.store.data,
                  "shape": np.array(self.store.shape), "bias": self.bias, "alive": self.alive,
                  "develops": np.array(self.develops),
                  "geometry": np.array([g.in_channels, g.height, g.width, g.stride, g.pad])}
        if with_state:
            arrays.update(state_arrays(self.store, self.bias_state))
        return arrays

    @classmethod
    def from_arrays(cls, arrays, path: str = "auto", with_state: bool = False) -> "SpikingConv2d":
        """The layer written by :meth:`to_arrays` (``path`` is the linear layers' option; unused).

        Raises
        ------
        ShapeError
            If the arrays are not a consistent convolution.
        """
        shape = tuple(int(n) for n in arrays["shape"])
        geometry = np.asarray(arrays["geometry"])
        if geometry.shape != (5,) or geometry.dtype.kind not in "iu":
            raise ShapeError(f"geometry must be 5 integers (channels, height, width, stride, pad), got {geometry!r}")
        channels, height, width, stride, pad = (int(n) for n in geometry)
        data = check_real(arrays["data"], "data")
        if data.ndim != 3 or data.shape[1] != data.shape[2]:
            raise ShapeError(f"data must be [nnz, K, K] kernels, got shape {data.shape}")
        check_csr(arrays["indptr"], arrays["indices"], shape)
        store = SynapseStore.from_blocks(arrays["indptr"], arrays["indices"], data, shape)
        layer = cls(store, (channels, height, width), stride, pad, check_real(arrays["bias"], "bias"),
                    develops=bool(arrays["develops"]))
        if with_state:
            attach_state(layer, arrays)
        layer.set_alive(arrays["alive"])
        return layer

    def nir_nodes(self, name: str, lif: LIFParameters) -> tuple[dict, list[tuple[str, str]], str, str]:
        """A ``Conv2d`` node (dense ``[F, C, K, K]`` weights, missing kernels as zeros, the
        block CSR structure in its metadata) followed by a ``LIF`` node over the output map."""
        g = self.geometry
        tau, r = lif_constants(lif)
        shape = self.out_shape
        weight = np.ascontiguousarray(self.store.to_dense().transpose(1, 0, 2, 3))  # [F, C, K, K]
        conv, neurons = f"conv{name}", f"lif{name}"
        nodes = {
            conv: nir.Conv2d(input_shape=(g.height, g.width), weight=weight, stride=g.stride, padding=g.pad,
                             dilation=1, groups=1, bias=self.exported_bias(),
                             metadata={"evsim_indptr": self.store.indptr.copy(),
                                       "evsim_indices": self.store.indices.copy(),
                                       "evsim_develops": bool(self.develops)}),
            neurons: nir.LIF(tau=np.full(shape, tau), r=np.full(shape, r), v_leak=np.zeros(shape),
                             v_threshold=np.full(shape, lif.v_th), v_reset=np.zeros(shape),
                             metadata={"evsim_alive": self.alive.copy()}),
        }
        return nodes, [(conv, neurons)], conv, neurons
