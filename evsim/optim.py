"""Optimizers over ``(values, grads, state)`` triples, and learning-rate schedules.

Moments are kept in each triple's ``state`` dict (for synapses: the SynapseStore's
per-synapse state, so they move with pruning/regrowth and new synapses start at 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evsim.errors import ConfigError, ShapeError
from evsim.kernels.forks import check_not_forked
from evsim.kernels.optim import _adam, _sgd

f32 = np.float32
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # a Python float: compared with a float32, 1e39 would be cast


def _step_size(value: float) -> np.float32:
    """``value`` in float32, infinite past its range without NumPy's overflow warning: a
    learning rate near float32's limit grows past it in Adam's first, bias-corrected steps,
    and the training's divergence check then says so in one line."""
    return f32(math.copysign(math.inf, value)) if abs(float(value)) > _FLOAT32_MAX else f32(value)


OPTIMIZERS = ("adam", "adamw", "sgd")
# The moments each optimizer keeps in a parameter's state dict (float32, aligned with the
# parameter array); checkpoints are checked against these names.
MOMENTS = {"adam": ("adam_m", "adam_v"), "adamw": ("adam_m", "adam_v"), "sgd": ("momentum",)}
SCHEDULES = ("constant", "step", "cosine")


def _real(value) -> bool:
    """Whether ``value`` is one real number (NumPy's too; not a bool, a string or an array)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_lr(lr, zero_ok: bool = False) -> None:
    """Refuse a learning rate that is not a finite number > 0 (>= 0 with ``zero_ok``: a
    schedule's factor may reach 0); a negative one would ascend the loss.

    Raises
    ------
    ConfigError
        Naming the value.
    """
    if not (_real(lr) and (0 <= lr if zero_ok else 0 < lr) and lr < math.inf):
        raise ConfigError(f"learning rate must be a finite number {'>=' if zero_ok else '>'} 0, got {lr!r}")


def _moment(state: dict, name: str, like: np.ndarray) -> np.ndarray:
    if name not in state or state[name].shape != like.shape:
        state[name] = np.zeros_like(like, dtype=np.float32)
    return state[name]


@dataclass
class Optimizer:
    """Adam, AdamW or SGD with momentum.

    Attributes
    ----------
    name : ``"adam"``, ``"adamw"`` or ``"sgd"``.
    lr : base learning rate (the schedule scales it per epoch).
    betas, eps : Adam constants. momentum, nesterov : SGD constants.
    weight_decay : L2 (Adam, SGD) or decoupled (AdamW) decay.
    steps : number of steps taken (Adam bias correction); saved in checkpoints.

    An optimizer holds the state of one network's training: its moments live in the
    parameters' state dicts, but ``steps`` is its own, so one optimizer stepping two
    networks counts the steps of both, and Adam's bias correction then differs from
    what one optimizer per network gives. Make one per network.
    """

    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    steps: int = 0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        check_lr(self.lr)
        betas = self.betas
        # beta 1 (or above) divides by zero in Adam's bias correction; NaN makes every weight NaN.
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_real(b) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"betas must be two numbers in [0, 1) (Adam's moment decays), got {betas!r}")
        if not (_real(self.eps) and 0 < self.eps < math.inf):
            raise ConfigError(f"eps must be a finite number > 0 (Adam divides by sqrt(v) + eps), got {self.eps!r}")
        if not (_real(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be a number in [0, 1), got {self.momentum!r}")
        if not isinstance(self.steps, (int, np.integer)) or isinstance(self.steps, bool) or self.steps < 0:
            raise ConfigError(f"steps must be a whole number >= 0 (the steps taken), got {self.steps!r}")
        if not (_real(self.weight_decay) and 0 <= self.weight_decay < 1 / self.lr):
            # lr x weight_decay >= 1 shrinks every weight to zero or past it at each step (AdamW, SGD),
            # and for Adam's L2 the decay then swamps every gradient: training stays at chance.
            raise ConfigError(f"--weight-decay must be >= 0 and below 1/learning rate = {1 / self.lr:g} (each step "
                              f"shrinks every weight by lr x weight decay), got {self.weight_decay!r}; typical "
                              "values are 1e-4 to 1e-1")

    def step(self, params: list[tuple[np.ndarray, np.ndarray, dict]], lr: float | None = None) -> None:
        """Update every parameter array in place with learning rate ``lr`` (default ``self.lr``).

        Raises
        ------
        ConfigError
            If ``lr`` is not a finite number >= 0, or ``params`` are not the triples of
            :meth:`Network.parameters` with gradients.
        ShapeError
            If gradients are not real arrays of their parameters' shapes.
        """
        check_not_forked()
        lr = self.lr if lr is None else lr
        check_lr(lr, zero_ok=True)
        if not all(isinstance(p, tuple) and len(p) == 3 for p in params):
            raise ConfigError("optimizer step takes (values, grads, state) triples: pass network.parameters(grads)")
        if any(grads is None for _, grads, _ in params):
            raise ConfigError("optimizer step without gradients: pass network.parameters(grads), with the grads "
                              "network.backward returned")
        for values, grads, _ in params:
            # The kernels take real arrays: complex or object values cannot update a weight.
            if not isinstance(grads, np.ndarray) or grads.dtype.kind not in "fiu":
                raise ShapeError(f"gradients must be arrays of real numbers, got "
                                 f"{getattr(grads, 'dtype', type(grads).__name__)}")
            if values.size and grads.shape != values.shape:
                raise ShapeError(f"gradients of shape {grads.shape} for parameters of shape {values.shape}")
        self.steps += 1
        for values, grads, state in params:
            if values.size == 0:
                continue
            if grads.dtype == np.float16:  # numba has no float16
                grads = grads.astype(np.float32)
            # Blocks (convolution kernels) update weight by weight: the kernels see flat views.
            moments = {name: _moment(state, name, values).reshape(-1) for name in MOMENTS[self.name]}
            values, grads = values.reshape(-1), grads.reshape(-1)
            if self.name == "sgd":
                (buf,) = MOMENTS["sgd"]
                _sgd(values, grads, moments[buf], f32(lr), f32(self.momentum),
                     f32(self.weight_decay), self.nesterov)
            else:
                beta1, beta2 = self.betas
                m, v = MOMENTS[self.name]
                _adam(values, grads, moments[m], moments[v], f32(lr),
                      f32(beta1), f32(beta2), f32(self.eps), f32(self.weight_decay), self.name == "adamw",
                      _step_size(lr / (1.0 - beta1 ** self.steps)), f32(1.0 / math.sqrt(1.0 - beta2 ** self.steps)))


@dataclass(frozen=True)
class Schedule:
    """Learning-rate multiplier per epoch.

    ``constant``; ``step``: x ``gamma`` every ``step_epochs`` epochs; ``cosine``: linear
    warm-up over ``warmup_epochs`` then cosine decay to 0 at ``total_epochs``.
    """

    kind: str = "constant"
    step_epochs: int = 30
    gamma: float = 0.1
    warmup_epochs: int = 0
    total_epochs: int = 1

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")

    def factor(self, epoch: int) -> float:
        """Multiplier for 0-based ``epoch``."""
        if self.kind == "step":
            return self.gamma ** (epoch // max(self.step_epochs, 1))
        if self.kind == "cosine":
            if epoch < self.warmup_epochs:
                return (epoch + 1) / (self.warmup_epochs + 1)
            span = max(self.total_epochs - self.warmup_epochs, 1)
            return 0.5 * (1.0 + math.cos(math.pi * (epoch - self.warmup_epochs) / span))
        return 1.0
