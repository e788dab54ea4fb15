"""The two protocols every layer kind implements, and what passes between layers.

:class:`Layer` is what the network and the optimizer know of a layer (the trainer,
energy counter, checkpoints and NIR export know evsim's layers); :class:`Developing` is all that a
structure controller (SD-SNN and the baselines) knows of a layer it may edit.

Backward is a function: it takes the trace of its forward pass, what the layer above
sent down, and one :class:`BackwardRequest`, and *returns* a :class:`LayerGrads`. No
gradient is left on a layer for another object to pull.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from evsim.errors import ConfigError, ShapeError
from evsim.kernels.events import Events, StaticDrive, slot_order
from evsim.kernels.forks import check_not_forked
from evsim.neuron import LIFParameters
from evsim.synapses import SynapseStore


class InputGradFactors(NamedTuple):
    """A layer's input gradient ``[T, B, n]`` as the product ``(grad_u[:, :M] @ weights)``
    reshaped, not formed: ``grad_u`` float32 ``[T*B, >= M]`` C-contiguous (dL/du of the M
    alive neurons, rows padded past them), ``weights`` float32 ``[M, n]`` C-contiguous
    (their weights from the n inputs)."""

    grad_u: np.ndarray
    weights: np.ndarray


class PooledGrad(NamedTuple):
    """dL/d(spikes) ``[T, B, len(channels)*H*W]`` of a spike map under an average pooling,
    as the pooled gradient, not formed: ``grad_out`` float32 ``[T*B, C*Ho*Wo]``
    C-contiguous (dL/d(pooled output)), ``channels`` int64 (the map's channels the units
    below are, in order: a convolution's alive filters), ``geometry`` the pooling. The
    layer below forms each slot's row where it uses it: for conv1 of the paper's N-MNIST
    network the formed gradient is 123 MB a batch, written by the pooling and read back."""

    grad_out: np.ndarray
    channels: np.ndarray
    geometry: Any


@dataclass(frozen=True)
class BackwardRequest:
    """What the network asks of one layer's backward pass.

    Attributes
    ----------
    input_grad : send dL/d(input) down (False for the first layer).
    input_units : send it for these input units only (the alive units below, ascending),
        ``[T, B, len(input_units)]``; None: every input unit.
    factors_ok : the input gradient may come back as :class:`InputGradFactors`.
    pooled_ok : the input gradient may come back as :class:`PooledGrad`.
    would_be : also return, for synaptic regeneration, the gradients missing synapses
        would have.
    dead_error : the error the dead units of *this* layer would receive if revived, as
        the layer above returned it (:attr:`LayerGrads.dead_error_below`): factors from a
        linear layer, a dense ``[T*B, n_dead]`` array from a pooling.
    dead_units_below : input units (the dead ones below, ascending) whose error is wanted
        as factors, returned in :attr:`LayerGrads.dead_error_below`.
    """

    input_grad: bool = True
    input_units: np.ndarray | None = None
    factors_ok: bool = False
    pooled_ok: bool = False
    would_be: bool = False
    dead_error: InputGradFactors | np.ndarray | None = None
    dead_units_below: np.ndarray | None = None


@dataclass
class LayerGrads:
    """What one layer's backward pass returns.

    Attributes
    ----------
    params : one gradient per array of :meth:`Layer.parameters`, in its order and shape.
    input : dL/d(input) (dense ``[T, B, n]``, :class:`InputGradFactors` or
        :class:`PooledGrad`), or None.
    would_be : the would-be gradients of missing synapses, when requested (layout is the
        layer kind's; see its ``backward``), else None.
    dead_error_below : the error of the dead units below, when requested, else None.
    plan : the layer's ``plan_id`` when backward ran (None for a layer without synapses):
        :meth:`~evsim.network.Network.parameters` refuses gradients of another structure.
    """

    params: list[np.ndarray]
    input: Any = None
    would_be: np.ndarray | None = None
    dead_error_below: InputGradFactors | np.ndarray | None = None
    plan: int | None = None


class Parameter(NamedTuple):
    """A trainable array and its optimizer state (moments aligned with it on axis 0)."""

    values: np.ndarray
    state: dict


@runtime_checkable
class Layer(Protocol):
    """A spiking layer: events (or a static drive) in, spike events out.

    A layer of one's own that implements these trains in a :class:`~evsim.network.Network`
    (forward, backward, parameters, predict); it checks its own input and trace. Saving,
    NIR export and counting operations know evsim's layers only, and refuse others; the
    network reads ``kind``, ``describe()``, ``accepts_factors`` and ``accepts_pooled``
    where a layer has them."""

    n_in: int
    n_out: int
    develops: bool
    alive: np.ndarray          # bool [n_out]: units that can fire
    alive_index: np.ndarray    # int32: the alive units, ascending

    def forward(self, drive: Events | StaticDrive, lif: LIFParameters, record: bool = True) -> tuple[Events, Any]:
        """Output spike events (flat unit indices) and the trace backward needs, whose
        ``spikes`` are ``[T, B, alive units]`` (the network counts the output layer's); with
        ``record`` False (inference) the trace need only serve counting and inspection,
        and a layer may skip recording what only backward reads (the membrane). evsim's
        own layers also take ``checked=True``, which skips their check of ``drive``
        (:func:`checked_drive`): the network passes it for the events it made itself."""

    def backward(self, trace: Any, grad_out: Any, lif: LIFParameters, request: BackwardRequest) -> LayerGrads:
        """Gradients of the loss, given dL/d(output spikes) of the alive units."""

    def parameters(self) -> list[Parameter]:
        """The trainable arrays, in the order :attr:`LayerGrads.params` follows."""

    def fan_out(self) -> np.ndarray:
        """int64 ``[n_in]``: accumulates one event of value 1 at each input unit performs."""

    def to_arrays(self, with_state: bool) -> dict[str, np.ndarray]:
        """Everything that defines the layer, as named arrays (with optimizer and
        development state when ``with_state``)."""

    def nir_nodes(self, name: str, lif: LIFParameters) -> tuple[dict, list[tuple[str, str]], str, str]:
        """``(nodes, internal edges, entry node, exit node)`` of this layer in a NIR graph."""


@runtime_checkable
class Developing(Protocol):
    """A layer whose synapses and units structural development may edit."""

    store: SynapseStore
    develops: bool
    alive: np.ndarray
    incomplete: np.ndarray     # int64: postsynaptic units that miss synapses, ascending

    def kill(self, units: np.ndarray) -> int:
        """Remove every incoming synapse and the bias of ``units``; returns synapses removed."""

    def regrow(self, pre: np.ndarray, post: np.ndarray, weights: np.ndarray,
               initial_state: dict[str, float] | None = None) -> int:
        """Create synapses; a dead target unit is revived."""

    def prune(self, remove: np.ndarray) -> int:
        """Remove the synapses where ``remove`` (bool, aligned with the store's data) is True."""


def next_plan_id() -> int:
    """A number no other plan has: random 64 bits from the OS, so that neither another
    process (a pickled trace or network), a forked worker nor a copy draws the same."""
    return secrets.randbits(64)


class StructuralEdits:
    """The :class:`Developing` edits shared by every layer kind with synapses: a unit is a
    neuron (linear) or a filter (convolution), a synapse a weight or a kernel. The layer
    has ``store``, ``alive``, ``bias``, ``bias_state`` and ``rebuild()`` (its plan after an
    edit), which gives each plan it builds a number no other plan of any layer has
    (``plan_id``, from :func:`next_plan_id`): a forward pass's trace names its plan, and
    backward refuses a trace of another, whether an edit or another network made it.
    A copy or an unpickled layer rebuilds its plan (a new ``plan_id``; the rows path's view
    of the weights is of the copy's store), so it runs its own weights and refuses the
    original's traces."""

    plan_id: int = 0

    @property
    def bias(self) -> np.ndarray:
        """float32 ``[units]``; an assigned array is checked and copied (float32, writable)."""
        return self._bias

    @bias.setter
    def bias(self, values) -> None:
        n = self.store.shape[1]
        values = np.asarray(values)
        if values.dtype.kind not in "biuf" or values.shape != (n,):
            raise ShapeError(f"bias has shape {values.shape} ({values.dtype}), expected ({n},) real numbers, one per "
                             "unit")
        self._bias = np.array(values, dtype=np.float32)  # NaN is the loaders' and the trainer's to refuse, naming it

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("weight_rows", None)  # derived from the store: rebuilt on the copy
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.rebuild()

    def check_trace(self, trace) -> None:
        """ShapeError unless ``trace`` is of this layer's present plan and recorded its membrane."""
        check_recorded(trace)
        if getattr(trace, "plan", None) != self.plan_id or self.built_version != self.store.version:
            raise ShapeError("these traces are not of the layer's present structure (its synapses changed after the "
                             "forward pass, or they come from another network, a copy or another layer: pass "
                             "forward's traces in order); run forward again")

    def grads_fit(self, grads: "LayerGrads") -> bool:
        """Whether ``grads`` were taken on this layer's present structure (not before a
        structural edit, whose synapses they would update in another order)."""
        return grads.plan is None or (grads.plan == self.plan_id and self.built_version == self.store.version)

    def exported_bias(self) -> np.ndarray:
        """The bias with a dead unit's as 0: evsim never fires a dead unit, whatever its
        bias (the Python API can set one), and a NIR simulator must not either."""
        return np.where(self.alive, self.bias, 0).astype(self.bias.dtype)

    def kill(self, units: np.ndarray) -> int:
        """Remove every incoming synapse and the bias of ``units``; returns the synapses removed.

        A dead unit never fires and is compacted away. Its outgoing synapses stay (they
        receive no events, so they cost nothing) so that regeneration can revive it.

        Raises
        ------
        ShapeError
            If ``units`` are not indices of this layer's units (a boolean mask: pass
            ``np.flatnonzero(mask)``).
        """
        units = np.asarray(units)
        if units.size and (units.dtype.kind not in "iu" or units.min() < 0 or units.max() >= self.alive.size):
            raise ShapeError(f"kill takes indices of units 0..{self.alive.size - 1}, got {units.dtype} values"
                             + (" (a boolean mask: pass np.flatnonzero(mask))" if units.dtype.kind == "b" else "")
                             + (f" {units.min()}..{units.max()}" if units.dtype.kind in "iu" else ""))
        units = units.astype(np.int64).ravel()
        self.alive[units] = False
        self.bias[units] = 0.0
        for moments in self.bias_state.values():
            moments[units] = 0.0
        removed = self.store.prune_columns(units)
        self.rebuild()
        return removed

    def regrow(self, pre: np.ndarray, post: np.ndarray, weights: np.ndarray,
               initial_state: dict[str, float] | None = None) -> int:
        """Create synapses ``(pre[k], post[k])`` with ``weights[k]`` (a block each, see
        :meth:`SynapseStore.regrow`); a dead target unit is revived (its bias starts at 0)."""
        grown = self.store.regrow(pre, post, weights, initial_state)
        self.alive[np.asarray(post, dtype=np.int64)] = True
        self.rebuild()
        return grown

    def prune(self, remove: np.ndarray) -> int:
        """Remove the synapses where ``remove`` (bool, aligned with the store's data) is True."""
        removed = self.store.prune(remove)
        self.rebuild()
        return removed


def state_arrays(store: SynapseStore, bias_state: dict) -> dict[str, np.ndarray]:
    """A layer's optimizer and development state as named arrays (``state__<name>`` per
    synapse, ``bias_state__<name>`` per unit), for ``to_arrays``."""
    arrays = {f"state__{name}": values for name, values in store.state.items()}
    arrays.update({f"bias_state__{name}": values for name, values in bias_state.items()})
    return arrays


def attach_state(layer, arrays) -> None:
    """Put the state arrays :func:`state_arrays` wrote back on ``layer`` (its store and
    bias), as read: the checkpoint checks them, naming the member."""
    layer.store.state = {key.split("__", 1)[1]: np.array(arrays[key]) for key in arrays if key.startswith("state__")}
    layer.bias_state = {key.split("__", 1)[1]: np.array(arrays[key])
                        for key in arrays if key.startswith("bias_state__")}



def check_recorded(trace) -> None:
    """ShapeError if ``trace`` kept no membrane (a forward pass with ``record`` False)."""
    if getattr(trace, "u", True) is None:
        raise ShapeError("these traces come from forward(record=False), which keeps no membrane; run "
                         "forward(drive) to backpropagate")


def checked_lif(lif) -> LIFParameters:
    """``lif`` checked (:meth:`LIFParameters.validate`), or ConfigError if it is not one."""
    if not isinstance(lif, LIFParameters):
        raise ConfigError(f"neuron parameters must be evsim.LIFParameters, got {type(lif).__name__}")
    return lif.validate()


def checked_drive(drive, n_inputs: int, what: str = "layer") -> Events | StaticDrive:
    """``drive`` (:class:`Events` or :class:`StaticDrive`) if a layer of ``n_inputs``
    inputs can run on it, else ShapeError: the kernels index memory unchecked. Costs
    a few passes over the events (ordered, in range, finite). Refused in a process forked
    from one running the kernels (:func:`evsim.kernels.forks.check_not_forked`)."""
    check_not_forked()
    if isinstance(drive, StaticDrive):
        return _checked_static(drive, n_inputs)
    if isinstance(drive, Events):
        return _checked_events(drive, n_inputs, what)
    raise ShapeError(f"a {what} takes Events or a StaticDrive of {n_inputs} inputs, got {type(drive).__name__}")


def _whole_numbers(**counts) -> list[int]:
    """Every one of ``counts`` (``n_steps``, ``batch``) as a Python int (NumPy's int32 would
    wrap their product), or ShapeError unless each is an integer of at least 1."""
    numbers = []
    for name, value in counts.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ShapeError(f"{name} must be an integer, got {value!r}")
        numbers.append(int(value))
    return numbers


def check_nonempty(n_steps: int, batch: int) -> None:
    """ShapeError unless the input has a time step and a sample."""
    if n_steps < 1 or batch < 1:
        raise ShapeError(f"input has {n_steps} time steps and {batch} samples; give at least one of each")


def _checked_static(drive: StaticDrive, n_inputs: int) -> StaticDrive:
    (n_steps,) = _whole_numbers(n_steps=drive.n_steps)
    values = drive.values
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.shape[1] != n_inputs \
            or values.dtype != np.float32 or n_steps < 1:
        raise ShapeError(f"a static drive must be float32 [B, {n_inputs}] values for T >= 1 steps; got "
                         + (f"{values.dtype} {values.shape}" if isinstance(values, np.ndarray)
                            else type(values).__name__) + f" for T = {n_steps}")
    check_nonempty(n_steps, values.shape[0])
    if not np.all(np.isfinite(values)):
        raise ShapeError("input contains NaN or infinite values")
    return StaticDrive(np.ascontiguousarray(values), n_steps)


def _checked_events(events: Events, n_inputs: int, what: str) -> Events:
    n_steps, batch = _whole_numbers(n_steps=events.n_steps, batch=events.batch)
    check_nonempty(n_steps, batch)
    ptr, idx, val = events.ptr, events.idx, events.val
    if not all(isinstance(a, np.ndarray) for a in (ptr, idx, val)):
        raise ShapeError("events must hold NumPy arrays (build them with evsim.kernels.events.dense_to_events)")
    if ptr.ndim != 1 or ptr.size != n_steps * batch + 1 or idx.shape != val.shape or idx.ndim != 1:
        raise ShapeError(f"events must have T*B+1 = {n_steps * batch + 1} slot offsets and one value "
                         f"per index; got {ptr.size} offsets, {idx.size} indices, {val.size} values")
    if ptr.dtype != np.int64 or idx.dtype != np.int32 or val.dtype != np.float32:
        raise ShapeError(f"events must be int64 offsets, int32 indices and float32 values; got {ptr.dtype}, "
                         f"{idx.dtype}, {val.dtype} (build them with evsim.kernels.events.dense_to_events)")
    if ptr[0] != 0 or ptr[-1] != idx.size or np.any(ptr[1:] < ptr[:-1]):
        raise ShapeError("event slot offsets must start at 0, never decrease and end at the number of events")
    if idx.size and (idx.min() < 0 or idx.max() >= n_inputs):
        raise ShapeError(f"events index inputs {idx.min()}..{idx.max()}, but the {what} has {n_inputs} inputs")
    if not np.all(np.isfinite(val)):
        raise ShapeError("event values contain NaN or infinite values")
    repeated, ascending = slot_order(ptr, idx, n_inputs)
    if repeated >= 0:
        raise ShapeError(f"slot {repeated} of the events names one input twice; give each input once a slot, with "
                         "the sum of its values")
    if not ascending:  # the layers' kernels take each slot's events in ascending order
        order = np.lexsort((idx, np.repeat(np.arange(ptr.size - 1), np.diff(ptr))))
        idx, val = idx[order], val[order]
    return Events(ptr, idx, val, n_steps, batch)
