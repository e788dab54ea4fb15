"""SD-SNN adaptive structural development (Han, Zhao, Zeng, Pan; arXiv 2211.12219).

Three mechanisms run once per *development step* ``s`` (1-based; once per epoch in
the paper, or every N batches) on each developing layer:

1. Dendritic-spine synaptic constraint. After the first epoch (step 1 in the paper;
   each step of the first epoch with several per epoch) every synapse gets a range
   ``[r-, r+] = [-m, m]``, m = the layer's largest |w|. A weight at or above r+ for K
   consecutive steps moves r+ up by its mean excess over those steps (likewise r-
   downward; with several steps per epoch, the excess an epoch's drift would make:
   ``excess_per_epoch``); a weight whose magnitude fell for K consecutive steps shrinks
   both bounds by 0.75; from step K on weights are clipped into their range.
2. Neuronal pruning (s >= 2K). Importance of a neuron = sum over its existing
   incoming synapses of the min-max normalised range width ``r+ + |r-|``. The
   ``floor(N rho / 100)`` least important neurons are dead (all incoming synapses
   removed). rho adapts by a neurotrophic rule:
   ``rho += alpha(s) * N_alive / N_next``, ``alpha(s) = exp(-(s - 2K - 1))`` while
   ``s <= 2K + 24``, then 0.00075; rho is capped at ``rho_max``.
3. Synaptic regeneration (s >= 2K). A missing synapse whose would-be update over about
   the last epoch exceeds the q(s) percentile of the layer's |w|,
   ``q(s) = min(60 + 1.1^(s - 2K - 1), 99)``, for R consecutive steps is created with
   that would-be weight (clipped into the layer's range). The would-be gradient is
   accumulated every batch (rows kernel over presynaptic events x postsynaptic error),
   only over the columns that miss synapses, and so are the counters; a dead neuron's
   error is what the next layer sends back to its row (its events summed against the
   next layer's dL/du, then times the row's weights), so regeneration can revive
   pruned neurons.

On a convolution (the authors' code) the unit is a filter and the synapse a kernel: the
constraint runs per weight; a filter's importance sums its kernels' normalised widths;
its rate starts at ``filter_rho_init`` (5 %) and adapts as
``rho += e^(-(s - 2K - 1) / filter_rho_decay) * F_alive / N_next_alive``, over the alive
units of the next developing layer (a pooling between is no layer of units); a missing
kernel scores the signed sum of its K x K would-be weights and qualifies above the
``q(s) = min(65 + 1.1^(s - 2K - 1), 99)`` percentile of every kernel's signed sum (the
existing kernels' weights, the missing ones' scores), regrowing after *more than*
``kernel_regrow_steps`` (18) consecutive qualifying steps. With ``constrain_output``
the output layer, which never develops, is held in its dendritic-spine ranges too.

The would-be *update* mirrors the optimizer: SGD ``lr * sum_b g_b``; Adam-family
``lr * sum_b g_b / (sqrt(mean_b g_b^2) + eps)`` (Adam's normalisation without momentum),
over the batches of the last epoch, as in the paper, where a development step *is* an
epoch. With development every N of an epoch's E batches the sums are a rolling window:
at every step they decay by ``1 - N / E``, so they weigh about the last E batches (a
gradient that keeps its sign sums to E times itself, as over an epoch) whatever N is.
Each column counts the batches its window holds: one that joins when its neuron dies
starts empty, and its first epoch's sums are not scaled up.
Scaling the last interval's sum by E / N instead would multiply its
noise by E / N where an epoch's sum grows it by sqrt(E / N): with N = 4 and the 600
batches of the real N-MNIST almost every missing synapse qualifies, hundreds of
thousands regrow at one step with weights at the range's bound, and the network falls
to chance (measured: benchmarks/RESULTS.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evsim.compression import units_with_input
from evsim.errors import ConfigError, ShapeError
from evsim.kernels.forks import check_not_forked
from evsim.kernels.regrowth import _abs_order_stats, _add_with_squares, _count_regrowth
from evsim.kernels.spines import _constrain
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.optim import check_lr

@dataclass(frozen=True)
class SDSNNConfig:
    """SD-SNN constants (the authors' code's defaults; counts are development steps).

    Attributes
    ----------
    spine_steps : K, consecutive steps before a range expands or shrinks (18).
    regrow_steps : R, consecutive qualifying steps before a synapse regrows (12).
    rho_init : initial pruning percentage (35 MNIST, 45 N-MNIST, 60 DVS-Gesture).
    rho_max : cap on the pruning percentage.
    shrink : range shrink factor (0.75).
    alpha_fast_steps : steps of exponentially decaying alpha after 2K (24).
    alpha_late : alpha afterwards (0.00075).
    q_base, q_growth, q_max : regeneration percentile 60 + 1.1^(...) capped at 99.
    filter_rho_init : a convolution's initial filter-pruning percentage (5; 0.5 in the
        authors' CIFAR-10 code).
    filter_rho_decay : the divisor of the filter rate's exponent (5).
    kernel_q_base : a convolution's regeneration percentile base (65).
    kernel_regrow_steps : a kernel regrows after *more than* this many consecutive
        qualifying steps (18).
    constrain_output : hold the output layer's weights in their dendritic-spine ranges
        (never pruned); configurations saved before it existed read False
        (:data:`evsim.config.ADDED_SDSNN_KEYS`).
    excess_per_epoch : with several development steps per epoch, a range widens by its
        weight's mean excess per epoch (the excess over one interval times the intervals
        in an epoch), as in the paper, where the weights move for an epoch between two
        clips; False widens it by the excess over one interval (and is what
        configurations saved before it existed did).
    """

    spine_steps: int = 18
    regrow_steps: int = 12
    rho_init: float = 45.0
    rho_max: float = 65.0
    shrink: float = 0.75
    alpha_fast_steps: int = 24
    alpha_late: float = 0.00075
    q_base: float = 60.0
    q_growth: float = 1.1
    q_max: float = 99.0
    filter_rho_init: float = 5.0
    filter_rho_decay: float = 5.0
    kernel_q_base: float = 65.0
    kernel_regrow_steps: int = 18
    constrain_output: bool = True
    excess_per_epoch: bool = True

    def __post_init__(self):
        for name, kind in self.__annotations__.items():
            value = getattr(self, name)
            ok = (isinstance(value, (bool, np.bool_)) if kind == "bool" else
                  not isinstance(value, (bool, np.bool_)) and
                  isinstance(value, (int, np.integer) if kind == "int" else (int, float, np.integer, np.floating)))
            if not ok:  # a string fails a comparison below with TypeError; 1.5 steps would count as 2
                what = {"bool": "True or False", "int": "a whole number"}.get(kind, "a number")
                raise ConfigError(f"SD-SNN's {name} must be {what}, got {value!r}")
        if self.spine_steps < 1 or self.regrow_steps < 1 or self.kernel_regrow_steps < 0:
            raise ConfigError("spine_steps (K) and regrow_steps (R) must be >= 1, kernel_regrow_steps >= 0")
        if not 0 <= self.rho_init <= self.rho_max < 100:
            raise ConfigError(f"need 0 <= rho_init <= rho_max < 100, got rho_init {self.rho_init} (--rho-init) and "
                              f"rho_max {self.rho_max} (--rho-max); a dataset's preset sets both (evsim train "
                              "--help shows each dataset's): give the two together")
        if not 0 <= self.filter_rho_init:
            raise ConfigError(f"filter_rho_init must be >= 0, got {self.filter_rho_init} (--filter-rho-init)")
        if not self.filter_rho_decay > 0:
            raise ConfigError(f"filter_rho_decay must be > 0, got {self.filter_rho_decay}")
        # The constants no option sets (the Python API and a hand-edited config.json do):
        # each outside its range pushed rho below 0, flipped ranges or failed in math.log.
        checks = (("shrink", 0 < self.shrink <= 1, "in (0, 1]"), ("q_growth", self.q_growth > 0, "> 0"),
                  ("alpha_late", 0 <= self.alpha_late < math.inf, ">= 0 and finite"),
                  ("alpha_fast_steps", self.alpha_fast_steps >= 0, ">= 0"),
                  ("q_max", 0 <= self.q_max <= 100, "in [0, 100]"),
                  ("q_base", 0 <= self.q_base <= 100, "in [0, 100]"),
                  ("kernel_q_base", 0 <= self.kernel_q_base <= 100, "in [0, 100]"))
        for name, ok, what in checks:
            if not ok:  # NaN fails every comparison
                raise ConfigError(f"SD-SNN's {name} must be {what}, got {getattr(self, name)}")

    @property
    def prune_start(self) -> int:
        return 2 * self.spine_steps


# |exponent| x ln(base) at which a power saturates: e^700 ~ 1e304, still a float64 and
# beyond every cap the schedules compare it with.
_SATURATED_LOG = 700.0


def saturating_power(base: float, exponent: float) -> float:
    """``base ** exponent`` for ``base > 0``, with the exponent clamped where the result
    passes 1e304 (or falls under 1e-304): total over every step, where a plain power
    raises OverflowError (1.1 ** 7449 does)."""
    log_base = abs(math.log(base))
    if log_base > 0:
        limit = _SATURATED_LOG / log_base
        exponent = min(max(exponent, -limit), limit)
    return base ** exponent


def alpha(step: int, cfg: SDSNNConfig) -> float:
    """Neurotrophic rate alpha(s): exp(-(s - 2K - 1)) early, then a small constant."""
    k2 = cfg.prune_start
    if step <= k2 + cfg.alpha_fast_steps:
        return saturating_power(math.e, -(step - k2 - 1))
    return cfg.alpha_late


def regrowth_percentile(step: int, cfg: SDSNNConfig, base: float | None = None) -> float:
    """q(s) = min(base + 1.1^(s - 2K - 1), 99); ``base`` 60 (``q_base``) unless given."""
    base = cfg.q_base if base is None else base
    return min(base + saturating_power(cfg.q_growth, step - cfg.prune_start - 1), cfg.q_max)


# ------------------------------------------------------------- 1. constraint
def init_ranges(store, max_abs: float | None = None) -> None:
    """Ranges [-m, m] (m = the layer's largest |w|) and zeroed spine counters, per weight
    (``[nnz, *block_shape]``)."""
    if max_abs is None:  # a layer pruned of every synapse has no range until regrowth gives it one
        max_abs = float(np.abs(store.data).max()) if store.data.size else 0.0
    m = max_abs
    n = store.data.shape
    store.set_state("r_plus", np.full(n, m, np.float32))
    store.set_state("r_minus", np.full(n, -m, np.float32))
    for name in ("above_n", "below_n", "fall_n"):
        store.set_state(name, np.zeros(n, np.int32))
    for name in ("above_sum", "below_sum"):
        store.set_state(name, np.zeros(n, np.float32))
    store.set_state("prev_abs", np.abs(store.data).astype(np.float32))


def constrain(store, step: int, cfg: SDSNNConfig, excess_scale: float = 1.0) -> None:
    """One development step of the dendritic-spine constraint (in place; see
    :func:`evsim.kernels.spines._constrain`). Weights are clipped from step K on; a range
    widens by ``excess_scale`` times its weight's mean excess."""
    flat = {name: values.reshape(-1) for name, values in store.state.items()}  # views: per weight
    _constrain(store.data.reshape(-1), flat["r_plus"], flat["r_minus"], flat["above_n"], flat["above_sum"],
               flat["below_n"], flat["below_sum"], flat["fall_n"], flat["prev_abs"], np.int32(cfg.spine_steps),
               np.float32(cfg.shrink), step >= cfg.spine_steps, np.float64(excess_scale))


# --------------------------------------------------------- 2. neuronal pruning
def neuron_importance(store) -> np.ndarray:
    """Sum over each unit's existing incoming weights (a filter's: its kernels' weights) of
    the min-max normalised range width, normalised over the layer's weights."""
    width = store.state["r_plus"] + np.abs(store.state["r_minus"])
    span = float(width.max() - width.min()) if width.size else 0.0
    normalised = (width - width.min()) / span if span > 0 else np.ones_like(width)
    per_synapse = normalised.reshape(store.nnz, store.block_size).sum(axis=1) if store.block_shape else normalised
    return np.bincount(store.indices, weights=per_synapse, minlength=store.shape[1])


def unit_magnitude(store) -> np.ndarray:
    """Sum of |w| over each unit's existing incoming weights (a filter's: its kernels')."""
    per_synapse = np.abs(store.data).reshape(store.nnz, store.block_size).sum(axis=1, dtype=np.float64)
    return np.bincount(store.indices, weights=per_synapse, minlength=store.shape[1])


def neurons_to_prune(importance: np.ndarray, alive: np.ndarray, rho: float,
                     tie_break: np.ndarray | None = None) -> np.ndarray:
    """Alive neurons to kill so that floor(N rho / 100) neurons are dead: the least
    important, and among equally important ones those with the smaller ``tie_break``
    (:func:`unit_magnitude`). Ranges all alike (set again at each step of the first
    epoch, or none changed yet) tie every unit: without it the lowest indices died."""
    target_dead = int(math.floor(alive.size * rho / 100.0))
    extra = target_dead - int(np.sum(~alive))
    if extra <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero(alive)
    second = np.zeros(candidates.size) if tie_break is None else tie_break[candidates]
    order = np.lexsort((second, importance[candidates]))  # by importance, then tie_break; stable
    return candidates[order[:extra]]


def update_rho(rho: float, step: int, n_alive: int, n_next: int, cfg: SDSNNConfig) -> float:
    """Neurotrophic rule rho += alpha(s) * N_alive / N_next, capped at rho_max."""
    return min(rho + alpha(step, cfg) * n_alive / n_next, cfg.rho_max)


def update_filter_rho(rho: float, step: int, filters_alive: int, next_alive: int, cfg: SDSNNConfig) -> float:
    """A convolution's rule rho += e^(-(s - 2K - 1) / filter_rho_decay) * F_alive / N_next_alive,
    capped at rho_max (the authors' code: their rate over the next developing layer's)."""
    rate = saturating_power(math.e, -(step - cfg.prune_start - 1) / cfg.filter_rho_decay)
    return min(rho + rate * filters_alive / max(next_alive, 1), cfg.rho_max)


# ----------------------------------------------------- 3. synaptic regeneration
def column_positions(columns: np.ndarray, n_out: int) -> np.ndarray:
    """int64 ``[n_out]``: the position of each column in ``columns``, or -1."""
    positions = np.full(n_out, -1, dtype=np.int64)
    positions[columns] = np.arange(columns.size)
    return positions


def abs_percentile(values: np.ndarray, q: float) -> np.float32:
    """``np.percentile(np.abs(values), q)`` (linear interpolation) of float32 ``values`` for a
    Python number ``q``, bit for bit, from the two order statistics it interpolates between
    (:func:`evsim.kernels.regrowth._abs_order_stats`) instead of a partition of them all."""
    n = values.size
    position = (n - 1) * (q / 100)  # NumPy's virtual index for "linear"
    if position >= n - 1:
        return np.abs(values).max()
    below = math.floor(position)
    a, b = (np.float32(x) for x in _abs_order_stats(values, below))
    gamma = position - below
    # NumPy's _lerp, with the fraction a Python float as NumPy has it for a scalar q.
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def regrowth_candidates(counter: np.ndarray, would_be: np.ndarray, columns: np.ndarray, store, q: float,
                        regrow_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Update the consecutive-qualification counters of the missing synapses in ``columns``
    (in place) and return those to regrow, as (pre, position in ``columns``).

    A missing synapse qualifies when |would-be update| exceeds the q-th percentile of
    the layer's existing |w|; any non-qualifying step resets its counter. ``counter``
    int16 and ``would_be`` float32 are ``[n_in, len(columns)]``: no synapse is missing
    in the other columns (see :func:`evsim.kernels.regrowth._count_regrowth`).
    """
    threshold = abs_percentile(store.data, q) if store.nnz else np.float64(0.0)
    ready = np.zeros(would_be.shape, dtype=bool)
    _count_regrowth(would_be, np.float64(threshold), store.indptr, store.indices,
                    column_positions(columns, store.shape[1]), counter, regrow_steps, ready)
    return np.divmod(np.flatnonzero(ready), ready.shape[1])  # row-major, as np.nonzero; 0.1 against 2 ms


def carry_columns(values: np.ndarray, old_columns: np.ndarray, new_columns: np.ndarray) -> np.ndarray:
    """Re-index ``values`` ``[n_in, len(old_columns)]`` to ``new_columns`` (both increasing):
    a column in both keeps its values, one that joined starts at 0."""
    carried = np.zeros((values.shape[0], new_columns.size), dtype=values.dtype)
    before = np.searchsorted(old_columns, new_columns)
    kept = before < old_columns.size
    kept[kept] = old_columns[before[kept]] == new_columns[kept]
    carried[:, kept] = values[:, before[kept]]
    return carried


class LayerDevelopment:
    """Per-layer development state: rho, q, and, over the layer's incomplete columns, the
    regeneration counters, the would-be gradient sums of the last epoch's window and the
    number of batches each column's window holds (a column joins, at 0, when its neuron
    dies or loses a synapse)."""

    def __init__(self, layer: SparseLinear, cfg: SDSNNConfig):
        self.rho = cfg.rho_init
        self.q = cfg.q_base
        self.columns = np.zeros(0, dtype=np.int64)
        self.grad_sum = np.zeros((layer.n_in, 0), dtype=np.float32)
        self.grad_sq_sum = np.zeros((layer.n_in, 0), dtype=np.float32)
        self.window_batches = np.zeros(0, dtype=np.float64)
        self.counter = np.zeros((layer.n_in, 0), dtype=np.int16)
        self.counter_columns = np.zeros(0, dtype=np.int64)

    def observe(self, columns: np.ndarray, would_be_grad: np.ndarray) -> None:
        """Add one batch's would-be gradients ``[n_in, len(columns)]``."""
        if not np.array_equal(columns, self.columns):  # the structure changed since the last batch
            self.grad_sum = carry_columns(self.grad_sum, self.columns, columns)
            self.grad_sq_sum = carry_columns(self.grad_sq_sum, self.columns, columns)
            self.window_batches = carry_columns(self.window_batches[None], self.columns, columns)[0]
            self.columns = columns.copy()
        if would_be_grad.shape != self.grad_sum.shape:  # the kernel indexes unchecked
            raise ShapeError(f"would-be gradients {would_be_grad.shape} over sums of {self.grad_sum.shape}")
        _add_with_squares(would_be_grad, self.grad_sum, self.grad_sq_sum)
        self.window_batches += 1.0

    def would_be_update(self, lr: float, adaptive: bool, epoch_batches: int | None = None,
                        eps: float = 1e-8) -> np.ndarray:
        """The would-be update ``[n_in, len(columns)]`` over each column's window; a window
        longer than ``epoch_batches`` is scaled down to one epoch's rate. A window that
        holds fewer batches (the first epoch after a neuron dies) is not scaled up: that
        multiplies its noise by epoch / batches where a whole epoch's sum grows noise by
        the square root of that."""
        batches = np.maximum(self.window_batches, 1.0).astype(np.float32)
        scale = np.float32(lr) if epoch_batches is None else \
            np.float32(lr) * np.minimum(np.float32(1.0), np.float32(epoch_batches) / batches)
        if adaptive:
            rms = np.sqrt(self.grad_sq_sum / batches)
            return scale * self.grad_sum / (rms + eps)
        return scale * self.grad_sum

    def carry_counter(self) -> None:
        """Re-index the regeneration counters from the columns they were counted over to
        the window's. A column that left holds no missing synapse any more; one that
        joined had none missing, or no would-be update, at the last count: both at 0."""
        if not np.array_equal(self.counter_columns, self.columns):
            self.counter = carry_columns(self.counter, self.counter_columns, self.columns)
            self.counter_columns = self.columns.copy()

    def end_interval(self, keep: float) -> None:
        """Decay the window's sums by ``keep`` (``1 - interval / epoch``), so that they
        weigh about the last epoch's batches; with ``keep`` 0 they are dropped, so that
        nothing stale is saved in checkpoints."""
        if keep > 0:
            self.grad_sum *= np.float32(keep)
            self.grad_sq_sum *= np.float32(keep)
            self.window_batches *= keep
            return
        self.window_batches = np.zeros(0, dtype=np.float64)
        self.columns = np.zeros(0, dtype=np.int64)
        self.grad_sum = np.zeros((self.grad_sum.shape[0], 0), dtype=np.float32)
        self.grad_sq_sum = np.zeros((self.grad_sq_sum.shape[0], 0), dtype=np.float32)


def kernel_regrowth_candidates(counter: np.ndarray, would_be_weight: np.ndarray, store, q: float,
                               regrow_steps: int, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Update a convolution's consecutive-qualification counters ``counter`` int16
    ``[C_in, F]`` (in place) and return the kernels to regrow, as (channels, filters).

    A missing kernel in ``eligible`` (bool ``[C_in, F]``: missing, with a would-be
    window) qualifies when the signed sum of its would-be weights ``would_be_weight``
    ``[C_in, F, K, K]`` exceeds the q-th percentile of every kernel's signed sum (an
    existing kernel's weights, a missing one's would-be weights); any other step resets
    its counter. It regrows once the counter passes ``regrow_steps``. A kernel whose
    would-be weights are all zero (no error reached its filter: every kernel that carried
    it on is gone) has no evidence and never qualifies: where every existing kernel's sum
    is negative, its 0 would pass the percentile, and it would regrow as zeros.
    """
    score = would_be_weight.sum(axis=(2, 3), dtype=np.float64)
    sums = score.copy()
    sums[store.rows(), store.indices] = store.data.sum(axis=(1, 2), dtype=np.float64)
    evidence = np.any(would_be_weight != 0, axis=(2, 3))
    qualifies = eligible & evidence & (score > np.percentile(sums, q))
    counter[qualifies] += 1
    counter[~qualifies] = 0
    ready = counter > regrow_steps
    counter[ready] = 0
    return np.nonzero(ready)


class KernelDevelopment:
    """A convolution's development state: rho, q, and per (input channel, filter) pair the
    regeneration counter and the would-be gradient sums of the last epoch's window, with
    the batches it holds. A convolution has few kernels (600 in the paper's conv2), so
    these are dense ``[C_in, F(, K, K)]``; a pair's window holds only batches in which
    its kernel was missing."""

    def __init__(self, layer, cfg: SDSNNConfig):
        channels, filters = layer.store.shape
        self.rho = cfg.filter_rho_init
        self.q = cfg.kernel_q_base
        self.grad_sum = np.zeros((channels, filters) + layer.store.block_shape, dtype=np.float32)
        self.grad_sq_sum = np.zeros_like(self.grad_sum)
        self.window_batches = np.zeros((channels, filters), dtype=np.float64)
        self.counter = np.zeros((channels, filters), dtype=np.int16)

    def observe(self, missing: np.ndarray, would_be_grad: np.ndarray) -> None:
        """Add one batch's would-be gradients ``[C_in, F, K, K]`` of the ``missing`` kernels."""
        if would_be_grad.shape != self.grad_sum.shape:
            raise ShapeError(f"would-be gradients {would_be_grad.shape} over sums of {self.grad_sum.shape}")
        self.grad_sum[~missing] = 0.0  # an existing kernel keeps no window
        self.grad_sq_sum[~missing] = 0.0
        self.window_batches[~missing] = 0.0
        self.grad_sum[missing] += would_be_grad[missing]
        self.grad_sq_sum[missing] += np.square(would_be_grad[missing])
        self.window_batches[missing] += 1.0

    def would_be_update(self, lr: float, adaptive: bool, epoch_batches: int | None = None,
                        eps: float = 1e-8) -> np.ndarray:
        """The would-be update ``[C_in, F, K, K]`` of each pair's window, as
        :meth:`LayerDevelopment.would_be_update` computes it per synapse."""
        batches = np.maximum(self.window_batches, 1.0).astype(np.float32)[:, :, None, None]
        scale = np.float32(lr) if epoch_batches is None else \
            np.float32(lr) * np.minimum(np.float32(1.0), np.float32(epoch_batches) / batches)
        if adaptive:
            return scale * self.grad_sum / (np.sqrt(self.grad_sq_sum / batches) + eps)
        return scale * self.grad_sum

    def end_interval(self, keep: float) -> None:
        """Decay the window's sums by ``keep``, or drop them with ``keep`` 0."""
        self.grad_sum *= np.float32(keep)
        self.grad_sq_sum *= np.float32(keep)
        self.window_batches *= keep


def check_filter_rate(cfg: SDSNNConfig, filters_develop: bool) -> None:
    """Refuse a filter-pruning rate that starts above its cap, where filters develop (a
    fully connected network takes any ``rho_max``).

    Raises
    ------
    ConfigError
        Naming both options.
    """
    if filters_develop and cfg.filter_rho_init > cfg.rho_max:
        raise ConfigError(f"need filter_rho_init <= rho_max, got filter_rho_init {cfg.filter_rho_init} "
                          f"(--filter-rho-init) and rho_max {cfg.rho_max} (--rho-max); give the two together")


class SDSNN:
    """The SD-SNN structure controller for a network's developing layers.

    ``observe`` after every backward pass (while regeneration needs gradients),
    ``develop`` at the end of every development interval.
    """

    name = "sdsnn"

    def __init__(self, network: Network, cfg: SDSNNConfig, adaptive_optimizer: bool = True,
                 epoch_batches: int | None = None, interval: int | None = None):
        if not isinstance(network, Network) or not isinstance(cfg, SDSNNConfig):
            raise ConfigError(f"SDSNN takes a Network and an SDSNNConfig, got {type(network).__name__} and "
                              f"{type(cfg).__name__}")
        self.cfg = cfg
        self.adaptive = adaptive_optimizer
        self.epoch_batches = epoch_batches
        # Development every `interval` batches: the would-be sums decay by this at every
        # step, a window of about one epoch; with an interval of an epoch or more, every
        # step starts them afresh.
        self.keep = max(0.0, 1.0 - interval / epoch_batches) if epoch_batches and interval else 0.0
        # The ranges come from the weights after the first epoch, as in the paper, where step 1
        # closes the first epoch: with several steps per epoch they are set again at each of
        # the first epoch's steps. Ranges from the first step's barely trained weights pinned
        # the paper's N-MNIST network near its initial scale (benchmarks/RESULTS.md).
        self.range_steps = max(1, epoch_batches // interval) if epoch_batches and interval else 1
        # Clipped every interval, a weight at its bound exceeds it by one interval's drift, not
        # the epoch's that the paper's once-an-epoch clip lets it make: ten steps an epoch would
        # widen ranges ten times slower and hold the layer near its first epoch's scale (the
        # constraint alone cost 0.4 points on the paper's N-MNIST network: benchmarks/RESULTS.md).
        self.excess_scale = epoch_batches / interval if cfg.excess_per_epoch and epoch_batches and interval else 1.0
        self.step = 0
        self.layers = [k for k, layer in enumerate(network.layers) if layer.develops]
        self.sizes = list(network.sizes)
        check_filter_rate(cfg, any(_is_conv(network.layers[k]) for k in self.layers))
        self.state = {k: KernelDevelopment(network.layers[k], cfg) if _is_conv(network.layers[k])
                      else LayerDevelopment(network.layers[k], cfg) for k in self.layers}
        last = len(network.layers) - 1
        # The output layer never develops; it may be held in its ranges (its state is per synapse, in its store).
        self.constrained = [last] if cfg.constrain_output and last not in self.layers else []

    @property
    def needs_would_be_grad(self) -> bool:
        """Would-be gradients are needed from the interval before regeneration starts."""
        return self.step + 1 >= self.cfg.prune_start

    def _check_network(self, network: Network) -> None:
        """Refuse a network of other layers, or whose layers lack the ranges this controller set."""
        same = (isinstance(network, Network) and network.sizes == self.sizes
                and [k for k, layer in enumerate(network.layers) if layer.develops] == self.layers)
        # From the first constraint step on, the ranges the first steps set must be there.
        if not same or (self.step >= self.range_steps and not all(
                "r_plus" in network.layers[k].store.state for k in self.layers + self.constrained)):
            raise ConfigError("this SDSNN controller develops the network it was made for (its state is that "
                              "network's); make one SDSNN per network")

    def observe(self, network: Network, grads: list) -> None:
        """Take in one batch's would-be gradients (``grads``: :meth:`Network.backward`'s)."""
        check_not_forked()
        self._check_network(network)
        for k in self.layers:
            if grads[k].would_be is None:
                continue
            layer = network.layers[k]
            if _is_conv(layer):
                self.state[k].observe(~layer.store.mask(), grads[k].would_be)
            else:
                self.state[k].observe(layer.incomplete, grads[k].would_be)

    def develop(self, network: Network, lr: float) -> list[dict]:
        """One development step on every developing layer (and the constraint on a
        constrained output layer); returns one stats dict per developing layer.

        Raises
        ------
        ConfigError
            If ``lr`` is not a finite number >= 0, or ``network`` is not the one this
            controller was made for (its state is that network's).
        """
        check_not_forked()
        check_lr(lr, zero_ok=True)
        self._check_network(network)
        self.step += 1
        s, cfg = self.step, self.cfg
        stats = []
        for k in self.constrained:
            self._constrain(network.layers[k].store)
        for k in self.layers:
            layer, dev = network.layers[k], self.state[k]
            store = layer.store
            self._constrain(store)
            pruned = regrown = 0
            if s >= cfg.prune_start:
                develop_units = self._develop_filters if _is_conv(layer) else self._develop_neurons
                pruned, regrown = develop_units(network, k, lr)
            dev.end_interval(self.keep)
            weights = store.nnz * store.block_size
            stats.append({
                "layer": k, "synapses": store.nnz, "dense_synapses": layer.dense_synapses,
                "alive_neurons": int(units_with_input(layer).sum()), "neurons": layer.alive.size,
                "rho": round(dev.rho, 4), "q": round(dev.q, 3), "pruned": int(pruned), "regrown": int(regrown),
                "compression": round(1 - weights / layer.dense_weights, 6),
            })
        return stats

    def _constrain(self, store) -> None:
        """The spine constraint's step: ranges set (again) during the first epoch, then constrained."""
        if self.step <= self.range_steps:
            init_ranges(store)
        else:
            constrain(store, self.step, self.cfg, self.excess_scale)

    def _develop_neurons(self, network: Network, k: int, lr: float) -> tuple[int, int]:
        """Neuronal pruning and synaptic regeneration of linear layer ``k``; (synapses pruned, regrown)."""
        s, cfg = self.step, self.cfg
        layer, dev = network.layers[k], self.state[k]
        store = layer.store
        pruned = regrown = 0
        if s > cfg.prune_start:
            n_next = network.layers[k + 1].n_out if k + 1 < len(network.layers) else layer.n_out
            dev.rho = update_rho(dev.rho, s, int(layer.alive.sum()), n_next, cfg)
        kill = neurons_to_prune(neuron_importance(store), layer.alive, dev.rho, unit_magnitude(store))
        if kill.size:
            pruned = layer.kill(kill)
        dev.q = regrowth_percentile(s, cfg)
        if dev.window_batches.any():
            would_be = dev.would_be_update(lr, self.adaptive, self.epoch_batches)
            dev.carry_counter()
            pre, slot = regrowth_candidates(dev.counter, would_be, dev.columns, store, dev.q, cfg.regrow_steps)
            if pre.size:
                # A new synapse starts with the layer's current range, like every synapse did.
                m = float(np.abs(store.data).max()) if store.nnz else 1.0
                weights = np.clip(-would_be[pre, slot], -m, m)
                regrown = layer.regrow(pre, dev.columns[slot], weights, {"r_plus": m, "r_minus": -m})
                store.state["prev_abs"] = np.abs(store.data).astype(np.float32)
        return pruned, regrown

    def _develop_filters(self, network: Network, k: int, lr: float) -> tuple[int, int]:
        """Filter pruning and kernel regeneration of convolution ``k``; (kernels pruned, regrown)."""
        s, cfg = self.step, self.cfg
        layer, dev = network.layers[k], self.state[k]
        store = layer.store
        pruned = regrown = 0
        if s > cfg.prune_start:
            dev.rho = update_filter_rho(dev.rho, s, int(layer.alive.sum()), _next_alive_units(network, k), cfg)
        kill = neurons_to_prune(neuron_importance(store), layer.alive, dev.rho, unit_magnitude(store))
        if kill.size:
            pruned = layer.kill(kill)
        dev.q = regrowth_percentile(s, cfg, cfg.kernel_q_base)
        missing = ~store.mask()
        if dev.window_batches[missing].any():
            would_be_weight = -dev.would_be_update(lr, self.adaptive, self.epoch_batches)
            channels, filters = kernel_regrowth_candidates(dev.counter, would_be_weight, store, dev.q,
                                                           cfg.kernel_regrow_steps,
                                                           missing & (dev.window_batches > 0))
            if channels.size:
                m = float(np.abs(store.data).max()) if store.nnz else 1.0
                weights = np.clip(would_be_weight[channels, filters], -m, m)
                regrown = layer.regrow(channels, filters, weights, {"r_plus": m, "r_minus": -m})
                store.state["prev_abs"] = np.abs(store.data).astype(np.float32)
        return pruned, regrown

    def state_dict(self) -> dict:
        """Everything :meth:`develop` depends on besides the network, for checkpoints.

        ``step``, and every attribute of each layer's :class:`LayerDevelopment` as
        ``"<layer>.<attribute>"``, taken from ``vars()`` so that accumulators added
        later are saved without a change here.
        """
        state = {"step": self.step}
        for k, dev in self.state.items():
            state.update({f"{k}.{name}": value for name, value in vars(dev).items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (same layers and attribute names; arrays are taken as given)."""
        self.step = state["step"]
        for k, dev in self.state.items():
            for name in vars(dev):
                setattr(dev, name, state[f"{k}.{name}"])


def _is_conv(layer) -> bool:
    """Whether ``layer``'s synapses are kernels (a convolution's filters are its units)."""
    return layer.store.block_shape != ()


def _next_alive_units(network: Network, k: int) -> int:
    """The alive units of the next developing layer above ``k`` (a pooling between is no
    layer of units), or, with none, of the next layer with units."""
    above = network.layers[k + 1:]
    for layer in above:
        if layer.develops:
            return int(layer.alive.sum())
    return next(int(layer.alive_index.size) for layer in above if getattr(layer, "spiking", True))
