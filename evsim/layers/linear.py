"""Fully connected spiking layer (the :class:`~evsim.layers.base.Layer` and
:class:`~evsim.layers.base.Developing` protocols); no I/O, no datasets.

A :class:`SparseLinear` layer holds a :class:`~evsim.synapses.SynapseStore` (the
truth), a bias, and an *execution plan* rebuilt whenever the structure changes:

- which postsynaptic neurons are alive (a neuron with no incoming synapse left
  after neuronal pruning is dead: it is compacted away, costs nothing and never
  fires; its bias is frozen);
- the propagation path: ``rows`` (a dense ``[n_pre, N_alive]`` matrix: the CSR data
  itself when every alive neuron has all its synapses and N_alive is a whole number of
  cache lines, else an execution copy with rows padded to whole lines, refreshed from
  the CSR data after every optimizer step) or ``csr`` (the CSR arrays themselves,
  with compacted column indices).

The plan is rebuilt whenever the store's :attr:`~evsim.synapses.SynapseStore.version`
changes and the execution copy is refreshed at the start of every forward pass, so no
public operation (an optimizer step, a structural edit, weights written into
``store.data``) can leave the layer running stale weights.
"""
from __future__ import annotations

from typing import NamedTuple

import nir
import numpy as np
import scipy.sparse as sp
from numba import get_num_threads

from evsim.aligned import aligned_empty, aligned_zeros, line_width
from evsim.errors import ConfigError, ShapeError
from evsim.kernels.events import Events, EventsByRow, StaticDrive, alive_events, group_by_row
from evsim.kernels.grad import (
    _gather_csr,
    _input_grad_csr,
    input_grad_rows,
    _scatter_csr,
    _weight_grad_csr,
    weight_grad_rows,
    weight_strips,
)
from evsim.kernels.lif import NO_FACTORS, NO_POOL_CHANNELS, NO_POOL_SHAPE, _lif_backward
from evsim.kernels.propagate import propagate_csr, propagate_rows, propagate_static
from evsim.layers.base import (BackwardRequest, InputGradFactors, LayerGrads, Parameter, StructuralEdits,
                               attach_state, checked_drive, checked_lif, next_plan_id, state_arrays)
from evsim.neuron import SURROGATES, LIFParameters, lif_constants
from evsim.synapses import SynapseStore, check_csr, check_real

PATHS = ("auto", "rows", "csr")
# Below this density of synapses among the alive neurons, scattering the synapses
# that exist beats adding whole rows of alive neurons in training. Measured on the
# 2312-800-10 network at 2-10 % input activity, 2 threads (benchmarks/RESULTS.md, table
# of changes): forward + backward on csr took 0.58-0.66x the rows time at
# 1 % density, 0.81-0.85x at 2 %, 0.95-1.08x at 3 % and 1.17-1.56x at 5 % (16 synapses
# per AVX-512 gather and scatter against vectorised rows, whose time does not depend
# on density).
CSR_DENSITY_THRESHOLD = 0.025


def check_path(path) -> str:
    """``path`` if it is one of :data:`PATHS`, else ConfigError."""
    if path not in PATHS:
        raise ConfigError(f"unknown propagation path {path!r}; choose one of {', '.join(PATHS)}")
    return path


# Up to this many alive neurons, a layer hands the layer below its input gradient as
# factors (its dL/du and weights) that the LIF backward below multiplies lane by lane,
# in parallel and without writing the [T, B, n_in] product. That costs one multiply-add
# per input cell and neuron, where BLAS blocks wider layers far better: with 800 inputs
# at 2 threads (BLAS at one), factors took 0.35-0.49 against 0.61-0.67 ms for 8-16
# neurons and 0.80 against 0.69 ms for 20 (benchmarks/RESULTS.md).
FACTORED_MAX_NEURONS = 16


def _input_grad_dense(grad_u2: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``grad_u2[:, :N] @ weights.T`` (``weights`` ``[n_in, N]``) on Numba's threads,
    skipping the slots whose dL/du is all zero (:func:`evsim.kernels.grad.input_grad_rows`,
    on the weights in strips: :func:`evsim.kernels.grad.weight_strips`). For the FC-300
    layer of the paper's N-MNIST network on AVX2, 20-21 ms at 1 thread and 10 at 2 against
    33 by BLAS on training's one BLAS thread (benchmarks/bench_fc_input_grad.py)."""
    n_in, n_alive = weights.shape
    strips = weight_strips(weights)
    width = strips.shape[0] * strips.shape[2]
    rows = np.flatnonzero(grad_u2[:, :n_alive].any(axis=1))
    out = aligned_empty((grad_u2.shape[0], width))
    input_grad_rows(grad_u2, n_alive, strips, rows, out)
    return out if width == n_in else np.ascontiguousarray(out[:, :n_in])


class LayerTrace(NamedTuple):
    """What a forward pass records for the backward pass (``[T, B, N_alive]``); ``u`` is
    None after a forward that recorded no membrane (inference)."""

    events_in: Events
    u: np.ndarray | None
    spikes: np.ndarray
    plan: int  # the layer's plan_id when it ran: its structure then
    pass_id: int = 0  # Network.forward's number for the pass (0: a layer run alone)


class SparseLinear(StructuralEdits):
    """Fully connected spiking layer with sparse, developing synapses.

    Parameters
    ----------
    store : the synapses, ``(n_in, n_out)``.
    bias : float32 ``[n_out]``; zeros by default.
    path : ``"auto"`` (choose by density), ``"rows"`` or ``"csr"``.
    develops : whether structural development may prune/regrow this layer.
    """

    kind = "linear"
    accepts_factors = True
    accepts_pooled = False

    def __init__(self, store: SynapseStore, bias: np.ndarray | None = None, path: str = "auto", develops: bool = True):
        check_path(path)
        if store.block_shape != ():
            raise ShapeError(f"a fully connected layer's synapses are single weights, got a store of "
                             f"{'x'.join(map(str, store.block_shape))} kernels (a convolution's: SpikingConv2d)")
        self.store = store
        self.bias = np.zeros(store.shape[1], dtype=np.float32) if bias is None else bias
        self.bias_state: dict[str, np.ndarray] = {}
        self.path_option = path
        self.develops = develops
        self.alive = np.ones(store.shape[1], dtype=bool)
        self.rebuild()

    @classmethod
    def uniform(cls, n_in: int, n_out: int, rng: np.random.Generator, density: float = 1.0, **kwargs) -> "SparseLinear":
        """Layer with uniform ±1/sqrt(n_in) weights and biases (PyTorch Linear's init)."""
        store = SynapseStore.uniform(n_in, n_out, rng, density)
        bound = 1.0 / np.sqrt(n_in)
        return cls(store, rng.uniform(-bound, bound, n_out).astype(np.float32), **kwargs)

    # --------------------------------------------------------------- structure
    @property
    def n_in(self) -> int:
        return self.store.shape[0]

    @property
    def n_out(self) -> int:
        return self.store.shape[1]

    def set_alive(self, alive: np.ndarray) -> None:
        """Mark which neurons are alive (a dead one must have no incoming synapse)."""
        alive = np.asarray(alive)
        if alive.shape != (self.n_out,):
            raise ShapeError(f"alive has shape {alive.shape}, expected ({self.n_out},)")
        self.alive = alive.astype(bool)
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the execution plan after any change of structure (done by every
        structural edit, and by forward and backward when the store changed under it)."""
        self.built_version = self.store.version
        self.plan_id = next_plan_id()
        self.alive_index = np.flatnonzero(self.alive).astype(np.int32)
        local = np.full(self.n_out, -1, dtype=np.int32)
        local[self.alive_index] = np.arange(self.alive_index.size, dtype=np.int32)
        if self.store.nnz and np.any(local[self.store.indices] < 0):
            raise ShapeError("a dead neuron still has incoming synapses; kill() must prune them")
        self.local_index = local
        self.columns = local[self.store.indices]
        self.incomplete = np.flatnonzero(self.store.fan_in() < self.n_in).astype(np.int64)
        # The rows path touches every alive neuron per event, so what matters is the
        # density among alive neurons (neuron-level pruning keeps it at 1).
        alive_density = self.store.nnz / max(self.n_in * self.alive_index.size, 1)
        self.path = self.path_option if self.path_option != "auto" else (
            "csr" if alive_density < CSR_DENSITY_THRESHOLD else "rows")
        # Every alive neuron has all its synapses (no pruning, or neuron-level pruning
        # only): the canonical CSR data *is* the row-major [n_in, N_alive] matrix, so the
        # rows path uses it in place, with no gradient to gather, and with no copy to
        # sync where its rows are whole cache lines (aligned.line_width).
        n_alive = self.alive_index.size
        self.complete = self.store.nnz == self.n_in * n_alive
        self.weight_rows = None  # [n_in, line_width(N_alive)]; columns past N_alive are 0
        self.rows_copied = self.path == "rows" and not (self.complete and line_width(n_alive) == n_alive)
        if self.path == "rows" and not self.rows_copied:
            self.weight_rows = self.store.data.reshape(self.n_in, n_alive)
        elif self.path == "rows":
            self.weight_rows = aligned_zeros((self.n_in, line_width(n_alive)))
            self._sync_weights()

    def _current_plan(self) -> None:
        """Bring the execution plan and copy up to date with the store (see the module docstring)."""
        if self.built_version != self.store.version:
            self.rebuild()
        else:
            self._sync_weights()

    def _sync_weights(self) -> None:
        """Refresh the dense execution copy from the CSR data (a copy only where rows are padded)."""
        if not self.rows_copied:
            return
        n_alive = self.alive_index.size
        if self.complete:
            self.weight_rows[:, :n_alive] = self.store.data.reshape(self.n_in, n_alive)
        else:
            _scatter_csr(self.store.data, self.store.indptr, self.columns, self.weight_rows)

    # ---------------------------------------------------------------- forward
    def forward(self, events: Events | StaticDrive, lif: LIFParameters, record: bool = True,
                checked: bool = False) -> tuple[Events, LayerTrace]:
        """Propagate ``events`` for ``T`` steps; return output spike events and the trace
        (without the membrane when ``record`` is False: the currents become the membrane
        in place, so skipping it saves no work here, but the trace says it cannot be
        backpropagated).

        ``events`` are checked (ShapeError for events the kernels cannot read: out of
        range, inconsistent, NaN) unless ``checked``: the network passes True for the
        events it made itself (its checked input, a layer's output spikes), which skips
        a few passes over them."""
        if not checked:
            events, lif = checked_drive(events, self.n_in), checked_lif(lif)
        self._current_plan()
        n_alive = self.alive_index.size
        u = aligned_empty((events.n_steps, events.batch, n_alive))
        spikes = aligned_empty((events.n_steps, events.batch, n_alive), np.uint8)
        bias = self.bias[self.alive_index]
        hard = lif.reset == "hard"
        decay, v_th = np.float32(lif.decay), np.float32(lif.v_th)
        if isinstance(events, StaticDrive):
            propagate_static(self._static_current(events.values), bias, decay, v_th, hard, u, spikes)
        elif self.path == "rows":
            propagate_rows(events.ptr, events.idx, events.val, self.weight_rows, bias, decay, v_th, hard, u, spikes)
        else:
            propagate_csr(events.ptr, events.idx, events.val, self.store.indptr, self.columns, self.store.data,
                          bias, decay, v_th, hard, u, spikes)
        trace = LayerTrace(events, u if record else None, spikes, self.plan_id)
        return alive_events(spikes, self.alive_index), trace

    def _static_current(self, values: np.ndarray) -> np.ndarray:
        """``[B, N_alive]``: the current of the same input at every step, one BLAS product
        (against the padded rows, contiguous, rather than a strided view of them)."""
        if self.path == "rows":
            return (values @ self.weight_rows)[:, :self.alive_index.size]
        return np.asarray(values @ self.store.matrix, dtype=np.float32)[:, self.alive_index]

    # --------------------------------------------------------------- backward
    def backward(self, trace: LayerTrace, grad_spikes: np.ndarray | InputGradFactors, lif: LIFParameters,
                 request: BackwardRequest = BackwardRequest()) -> LayerGrads:
        """BPTT through this layer.

        Parameters
        ----------
        trace : from :meth:`forward`.
        grad_spikes : float32 ``[T, B, N_alive]``, dL/d(output spikes), or the same as
            :class:`InputGradFactors` from the layer above.
        request : what to compute besides the weight and bias gradients:

            - ``input_grad``: dL/d(input) ``[T, B, n_in]`` (or of ``input_units`` only);
              as :class:`InputGradFactors` when ``factors_ok`` and the rows path has at
              most :data:`FACTORED_MAX_NEURONS` alive neurons.
            - ``would_be``: the gradient every *missing* synapse would have,
              ``[n_in, n_incomplete]`` over the columns that miss synapses
              (``self.incomplete``), summed from the events like the weight gradient (for
              dead neurons through the factors of ``dead_error``: the layer above's
              ``dead_error_below``, i.e. a revived neuron's dL/dI with the surrogate at 1;
              dead neurons get zero error without it). Complete columns cost nothing.
            - ``dead_units_below``: input neurons (the dead ones below, ascending) whose
              input gradient is also wanted, as factors.

        Returns
        -------
        LayerGrads with ``params = [weights (aligned with the CSR data), bias]``.
        """
        self.check_trace(trace)
        n_steps, batch, n_alive = trace.u.shape
        if isinstance(grad_spikes, InputGradFactors):
            g, w = grad_spikes
            if (g.dtype != np.float32 or w.dtype != np.float32 or g.ndim != 2 or w.ndim != 2
                    or not g.flags.c_contiguous or not w.flags.c_contiguous
                    or g.shape[0] != n_steps * batch or w.shape[1] != n_alive or g.shape[1] < w.shape[0]):
                raise ShapeError(f"the factors of dL/d(spikes) must be C-contiguous float32 grad_u "
                                 f"[T*B = {n_steps * batch}, >= M] and weights [M, {n_alive}]; got {g.dtype} {g.shape} "
                                 f"and {w.dtype} {w.shape}")
        elif not isinstance(grad_spikes, np.ndarray) or grad_spikes.shape != trace.u.shape:
            raise ShapeError(f"dL/d(spikes) must be [T, B, alive neurons] = {list(trace.u.shape)} (the trace's), got "
                             + (str(list(grad_spikes.shape)) if isinstance(grad_spikes, np.ndarray)
                                else type(grad_spikes).__name__))
        else:
            grad_spikes = np.ascontiguousarray(grad_spikes, dtype=np.float32)
        # Summed row by row for the weight gradient, so rows padded to whole cache lines
        # (columns past N_alive are never read).
        grad_u = aligned_empty((n_steps, batch, line_width(n_alive)))
        grad_u2 = grad_u.reshape(n_steps * batch, grad_u.shape[2])
        grad_bias_per_sample = aligned_empty((batch, n_alive))
        if isinstance(grad_spikes, InputGradFactors):
            dense, above, weights_above = None, grad_spikes.grad_u, grad_spikes.weights
        else:
            dense, above, weights_above = grad_spikes, NO_FACTORS, NO_FACTORS
        _lif_backward(dense, above, weights_above, NO_FACTORS, NO_POOL_CHANNELS, NO_POOL_SHAPE, trace.u,
                      trace.spikes, SURROGATES.index(lif.surrogate), np.float32(lif.width), np.float32(lif.decay),
                      np.float32(lif.v_th), lif.reset == "hard", lif.detach_reset, grad_u, grad_bias_per_sample,
                      get_num_threads())
        grad_bias = np.zeros(self.n_out, dtype=np.float32)
        grad_bias[self.alive_index] = grad_bias_per_sample.sum(axis=0)

        drive = trace.events_in
        by_row = None if isinstance(drive, StaticDrive) else group_by_row(drive, self.n_in)
        grad_data = np.empty(self.store.nnz, dtype=np.float32)
        if self.path == "rows" and self.complete:
            _input_times(drive, by_row, grad_u2, grad_data.reshape(self.n_in, n_alive))
        elif self.path == "rows" or by_row is None:
            dense = np.empty((self.n_in, n_alive), dtype=np.float32)
            _input_times(drive, by_row, grad_u2, dense)
            _gather_csr(dense, self.store.indptr, self.columns, grad_data)
        else:
            _weight_grad_csr(by_row.row_ptr, by_row.slot, by_row.val, self.store.indptr, self.columns, grad_u2,
                             grad_data)
        grads = LayerGrads([grad_data, grad_bias], plan=self.plan_id)
        if request.would_be:
            grads.would_be = self._would_be_grad(drive, by_row, grad_u2, request.dead_error)
        if request.dead_units_below is not None:
            grads.dead_error_below = InputGradFactors(
                grad_u2, np.ascontiguousarray(self._weights_from(request.dead_units_below).T))
        if request.input_grad:
            grads.input = self._input_grad(grad_u2, request, n_steps, batch)
        return grads

    def _input_grad(self, grad_u2: np.ndarray, request: BackwardRequest, n_steps: int,
                    batch: int) -> np.ndarray | InputGradFactors:
        """dL/d(input) ``[T, B, n_in or len(input_units)]`` from ``grad_u2`` ``[T*B, >= N_alive]``."""
        n_alive = self.alive_index.size
        units = request.input_units
        if self.path == "rows":
            weights = self.weight_rows[:, :n_alive] if units is None else self.weight_rows[units, :n_alive]
            if request.factors_ok and n_alive <= FACTORED_MAX_NEURONS:
                return InputGradFactors(grad_u2, np.ascontiguousarray(weights.T))
            grad_in = _input_grad_dense(grad_u2, weights)
        else:
            grad_in = np.empty((grad_u2.shape[0], self.n_in), dtype=np.float32)
            _input_grad_csr(grad_u2, self.store.indptr, self.columns, self.store.data, grad_in)
            if units is not None:
                grad_in = np.ascontiguousarray(grad_in[:, units])
        return grad_in.reshape(n_steps, batch, grad_in.shape[1])

    def _would_be_grad(self, drive: Events | StaticDrive, by_row: EventsByRow | None, grad_u2: np.ndarray,
                       dead_error: InputGradFactors | None) -> np.ndarray:
        """``[n_in, n_incomplete]``: sum over the events of each input of the error of every
        neuron that misses synapses; an alive one's is its dL/du, a dead one's comes from
        ``dead_error`` (zero without it)."""
        local = self.local_index[self.incomplete]
        alive = local >= 0
        n_alive = int(alive.sum())
        if dead_error is not None and n_alive < alive.size:
            # A dead neuron's error is its row of the input gradient above, dL/du_above @ W_dead.
            # Summed over the events first, (sum_e x_e dL/du_above[slot_e]) @ W_dead costs
            # events x M_above plus n_in x M_above x dead, instead of events x dead.
            if dead_error.weights.shape[1] != alive.size - n_alive:
                raise ShapeError(f"dead_error has {dead_error.weights.shape[1]} neurons, "
                                 f"expected {alive.size - n_alive}")
            summed = np.empty((self.n_in, dead_error.weights.shape[0]), dtype=np.float32)
            _input_times(drive, by_row, dead_error.grad_u, summed)
            weights = dead_error.weights
            if n_alive:
                # Zero weights in the alive columns, so one product fills every column: assigning
                # the dead columns through a boolean mask took 10x longer (7 against 0.7 ms).
                weights = np.zeros((summed.shape[1], alive.size), dtype=np.float32)
                weights[:, ~alive] = dead_error.weights
            out = summed @ weights
        else:
            out = np.zeros((self.n_in, self.incomplete.size), dtype=np.float32)
        if n_alive:  # revived neurons, and alive ones missing some synapses
            error = aligned_empty((grad_u2.shape[0], line_width(n_alive)))
            error[:, :n_alive] = grad_u2[:, local[alive]]
            part = np.empty((self.n_in, n_alive), dtype=np.float32)
            _input_times(drive, by_row, error, part)
            out[:, alive] = part
        return out

    def _weights_from(self, rows: np.ndarray) -> np.ndarray:
        """Dense ``[len(rows), N_alive]`` weights from input neurons ``rows`` to the alive neurons."""
        if self.path == "rows":
            return self.weight_rows[rows, :self.alive_index.size]
        return self.store.matrix[rows][:, self.alive_index].toarray().astype(np.float32, copy=False)


    # ------------------------------------------------------- the protocol's rest
    def parameters(self) -> list[Parameter]:
        """The CSR data (with the store's per-synapse state) and the bias."""
        return [Parameter(self.store.data, self.store.state), Parameter(self.bias, self.bias_state)]

    @property
    def dense_synapses(self) -> int:
        """Synapses of the same layer fully connected."""
        return self.n_in * self.n_out

    def describe(self) -> str:
        """The layer in the architecture notation: its size."""
        return str(self.n_out)

    @property
    def dense_weights(self) -> int:
        """Weights of the same layer fully connected (one per synapse)."""
        return self.n_in * self.n_out

    def fan_out(self) -> np.ndarray:
        """int64 ``[n_in]``: the synapses each input neuron has (one accumulate each per event)."""
        return np.diff(self.store.indptr).astype(np.int64)

    def fan_out_unpruned(self) -> np.ndarray:
        """int64 ``[n_in]``: the same, fully connected."""
        return np.full(self.n_in, self.n_out, dtype=np.int64)

    def ann_macs(self) -> int:
        """Multiply-accumulates of the same layer as a dense non-spiking layer, per sample."""
        return self.n_in * self.n_out

    def to_arrays(self, with_state: bool) -> dict[str, np.ndarray]:
        """The layer as named arrays (see :meth:`from_arrays`)."""
        arrays = {"indptr": self.store.indptr, "indices": self.store.indices, "data": self.store.data,
                  "shape": np.array(self.store.shape), "bias": self.bias, "alive": self.alive,
                  "develops": np.array(self.develops)}
        if with_state:
            arrays.update(state_arrays(self.store, self.bias_state))
        return arrays

    @classmethod
    def from_arrays(cls, arrays, path: str = "auto", with_state: bool = False) -> "SparseLinear":
        """The layer written by :meth:`to_arrays` (``arrays``: a mapping, e.g. an open npz
        viewed through a prefix). With ``with_state``, the saved state arrays are attached
        as read; the checkpoint checks them, naming the member.

        Raises
        ------
        ShapeError
            If the arrays are not a consistent layer.
        """
        shape = tuple(int(n) for n in arrays["shape"])
        indptr, indices = arrays["indptr"], arrays["indices"]
        check_csr(indptr, indices, shape)
        data = check_real(arrays["data"], "data")
        if data.shape != indices.shape:
            raise ShapeError(f"data has shape {data.shape}, expected {indices.shape} (one weight per synapse)")
        store = SynapseStore(sp.csr_matrix((data, indices, indptr), shape=shape))
        layer = cls(store, check_real(arrays["bias"], "bias"), path=path, develops=bool(arrays["develops"]))
        if with_state:
            attach_state(layer, arrays)
        layer.set_alive(arrays["alive"])
        return layer

    def nir_nodes(self, name: str, lif: LIFParameters) -> tuple[dict, list[tuple[str, str]], str, str]:
        """An ``Affine`` node (dense weights, with the CSR structure in its metadata so that
        pruning survives a round trip) followed by a ``LIF`` node."""
        n = self.n_out
        tau, r = lif_constants(lif)
        affine, neurons = f"fc{name}", f"lif{name}"
        nodes = {
            affine: nir.Affine(
                weight=np.ascontiguousarray(self.store.to_dense().T), bias=self.exported_bias(),
                metadata={"evsim_indptr": self.store.indptr.copy(), "evsim_indices": self.store.indices.copy(),
                          "evsim_develops": bool(self.develops)}),
            neurons: nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.zeros(n),
                             v_threshold=np.full(n, lif.v_th), v_reset=np.zeros(n),
                             metadata={"evsim_alive": self.alive.copy()}),
        }
        return nodes, [(affine, neurons)], affine, neurons


def _input_times(drive: Events | StaticDrive, by_row: EventsByRow | None, matrix: np.ndarray, out: np.ndarray) -> None:
    """``out`` ``[n_in, K]`` = (the input as ``[T*B, n_in]``)^T @ ``matrix[:, :K]``
    (``matrix`` ``[T*B, >= K]``): summed event by event from ``by_row``, or, for a static
    drive (``by_row`` None), its values^T times ``matrix`` summed over the steps, one
    BLAS product instead of T."""
    if by_row is None:
        # Only the K columns wanted: rows padded to whole cache lines hold garbage past them.
        summed = matrix.reshape(drive.n_steps, drive.batch, matrix.shape[1])[:, :, :out.shape[1]].sum(axis=0)
        np.matmul(drive.values.T, summed, out=out)
    else:
        weight_grad_rows(by_row.row_ptr, by_row.slot, by_row.val, matrix, out)
