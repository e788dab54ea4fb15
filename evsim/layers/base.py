"""The two protocols every layer kind implements, and what passes between layers.

:class:`Layer` is all that the network, optimizer, trainer, energy counter,
checkpoints and NIR export know of a layer; :class:`Developing` is all that a
structure controller (SD-SNN and the baselines) knows of a layer it may edit.

Backward is a function: it takes the trace of its forward pass, what the layer above
sent down, and one :class:`BackwardRequest`, and *returns* a :class:`LayerGrads`. No
gradient is left on a layer for another object to pull.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from evsim.errors import ShapeError
from evsim.kernels.events import Events, StaticDrive
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
    """

    params: list[np.ndarray]
    input: Any = None
    would_be: np.ndarray | None = None
    dead_error_below: InputGradFactors | np.ndarray | None = None


class Parameter(NamedTuple):
    """A trainable array and its optimizer state (moments aligned with it on axis 0)."""

    values: np.ndarray
    state: dict


@runtime_checkable
class Layer(Protocol):
    """A spiking layer: events (or a static drive) in, spike events out."""

    n_in: int
    n_out: int
    develops: bool
    alive: np.ndarray          # bool [n_out]: units that can fire
    alive_index: np.ndarray    # int32: the alive units, ascending

    def forward(self, drive: Events | StaticDrive, lif: LIFParameters, record: bool = True) -> tuple[Events, Any]:
        """Output spike events (flat unit indices) and the trace backward needs; with
        ``record`` False (inference) the trace need only serve counting and inspection,
        and a layer may skip recording what only backward reads (the membrane)."""

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


_PLAN_IDS = itertools.count(1)


def next_plan_id() -> int:
    """A number no layer's plan has had in this process."""
    return next(_PLAN_IDS)


class StructuralEdits:
    """The :class:`Developing` edits shared by every layer kind with synapses: a unit is a
    neuron (linear) or a filter (convolution), a synapse a weight or a kernel. The layer
    has ``store``, ``alive``, ``bias``, ``bias_state`` and ``rebuild()`` (its plan after an
    edit), which gives each plan it builds a number no other plan of any layer has
    (``plan_id``, from :func:`next_plan_id`): a forward pass's trace names its plan, and
    backward refuses a trace of another, whether an edit or another network made it."""

    plan_id: int = 0

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

