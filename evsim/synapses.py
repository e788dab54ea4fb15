"""SynapseStore: the single source of truth for a layer's synapses, for every layer kind.

Synapses are a CSR structure over *units*: row i holds presynaptic unit i's outgoing
synapses, column j is postsynaptic unit j, so an input event indexes a row. Each
synapse carries a *block* of weights: a scalar for a linear layer (``block_shape``
``()``; the store is then a canonical ``scipy.sparse.csr_matrix``, :attr:`matrix`), a
K x K kernel for a convolution's (input channel, output channel) pair (``block_shape``
``(K, K)``; blocks are not matrix blocks, so scipy cannot hold them and the canonical
checks of :func:`check_csr` guard the boundary instead). ``data`` is float32
``[nnz, *block_shape]``.

Per-synapse state (optimizer moments, dendritic-spine ranges, counters) lives in
arrays aligned with ``data`` along their first axis; pruning and regrowth move every
state array together with the weights, so no state is left behind or misattributed.
Every structural edit bumps :attr:`version`, so a layer can tell that its execution
plan is out of date.

Canonical form: int32 ``indptr``/``indices``, float32 ``data``, column indices
sorted and unique within each row. A weight that trains to exactly 0.0 is still an
existing synapse (explicit zeros are kept).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from evsim.aligned import aligned
from evsim.errors import ShapeError, StructureError


class SynapseStore:
    """Block CSR weights plus aligned per-synapse state.

    Parameters
    ----------
    matrix : csr_matrix ``(n_pre, n_post)`` of scalar synapses; converted to canonical form.
    state : optional mapping name -> array with ``matrix.nnz`` entries along its first axis.

    Use :meth:`from_blocks` for synapses that carry blocks (convolution kernels).
    """

    def __init__(self, matrix: sp.csr_matrix, state: dict[str, np.ndarray] | None = None):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sum_duplicates()  # also sorts indices
        self.version = 0
        self._set(matrix.indptr.astype(np.int32), matrix.indices.astype(np.int32), matrix.data.astype(np.float32),
                  matrix.shape)
        self.state: dict[str, np.ndarray] = {}
        for name, values in (state or {}).items():
            self.set_state(name, values)

    @classmethod
    def from_blocks(cls, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int],
                    state: dict[str, np.ndarray] | None = None) -> "SynapseStore":
        """Store of synapses ``data[k]`` (a block each, float32 ``[nnz, *block_shape]``) at the
        CSR positions ``indptr``/``indices`` over units ``shape = (n_pre, n_post)``.

        Raises
        ------
        ShapeError
            If the structure is not canonical (:func:`check_csr`) or ``data`` has not one
            block per synapse.
        """
        indptr, indices = np.asarray(indptr), np.asarray(indices)
        data = np.asarray(data, dtype=np.float32)
        check_csr(indptr, indices, shape)
        if data.ndim < 1 or data.shape[0] != indices.size:
            raise ShapeError(f"data must hold one block per synapse ({indices.size}), got shape {data.shape}")
        store = cls.__new__(cls)
        store.version = 0
        store._set(indptr.astype(np.int32), indices.astype(np.int32), np.ascontiguousarray(data), tuple(shape))
        store.state = {}
        for name, values in (state or {}).items():
            store.set_state(name, values)
        return store

    def _set(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> None:
        """Replace the structure (a structural edit: bumps :attr:`version`)."""
        self._indptr, self._indices = indptr, indices
        # The weights are summed row by row in place (rows path): keep them on a cache line.
        self._data = aligned(data.reshape(-1)).reshape(data.shape)
        self._shape = (int(shape[0]), int(shape[1]))
        self._matrix = None
        self.version += 1

    @property
    def matrix(self) -> sp.csr_matrix:
        """The scalar synapses as a ``csr_matrix`` sharing :attr:`data` (scalar blocks only)."""
        if self.block_shape != ():
            raise ShapeError(f"a store of {self.block_shape} blocks is not a scipy matrix; use indptr/indices/data")
        if self._matrix is None:
            self._matrix = sp.csr_matrix((self._data, self._indices, self._indptr), shape=self._shape)
            # scipy copies an array that views another buffer (as aligned arrays do): share it.
            self._matrix.data = self._data
        return self._matrix

    # ----------------------------------------------------------------- creation
    @classmethod
    def uniform(cls, n_pre: int, n_post: int, rng: np.random.Generator, density: float = 1.0) -> "SynapseStore":
        """Random synapses with weights uniform in ±1/sqrt(n_pre) (PyTorch's Linear default).

        Parameters
        ----------
        density : fraction of the ``n_pre * n_post`` possible synapses that exist,
            chosen uniformly at random; 1.0 gives a full (dense) connectivity.
        """
        for name, value in (("n_pre", n_pre), ("n_post", n_post)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ShapeError(f"{name} must be a whole number >= 1, got {value!r}")
        if not (isinstance(density, (int, float, np.number)) and 0.0 <= float(density) <= 1.0):
            raise ShapeError(f"density must be a number in [0, 1], got {density!r}")
        bound = 1.0 / np.sqrt(n_pre)
        weights = rng.uniform(-bound, bound, size=(n_pre, n_post)).astype(np.float32)
        if density >= 1.0:
            return cls.from_dense(weights, mask=np.ones_like(weights, dtype=bool))
        mask = rng.random((n_pre, n_post)) < density
        return cls.from_dense(weights, mask=mask)

    @classmethod
    def from_dense(cls, weights: np.ndarray, mask: np.ndarray | None = None) -> "SynapseStore":
        """Store from a dense matrix; ``mask`` says which synapses exist (default: nonzero)."""
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 2:
            raise ShapeError(f"weights must be 2-D (n_pre, n_post), got shape {weights.shape}")
        if not np.isfinite(weights).all():
            raise ShapeError("weights hold NaN or infinite values")
        if mask is None:
            mask = weights != 0
        elif np.shape(mask) != weights.shape:
            raise ShapeError(f"mask has shape {np.shape(mask)}, the weights {weights.shape}; give one of the same shape")
        rows, cols = np.nonzero(mask)
        matrix = sp.csr_matrix((weights[rows, cols], (rows, cols)), shape=weights.shape)
        return cls(matrix)

    # ---------------------------------------------------------------- accessors
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_pre, n_post)`` units."""
        return self._shape

    @property
    def block_shape(self) -> tuple[int, ...]:
        """The shape of one synapse's weights: ``()`` for scalars, ``(K, K)`` for kernels."""
        return self._data.shape[1:]

    @property
    def block_size(self) -> int:
        """Weights per synapse."""
        return int(np.prod(self.block_shape, dtype=np.int64))

    @property
    def indptr(self) -> np.ndarray:
        return self._indptr

    @property
    def indices(self) -> np.ndarray:
        return self._indices

    @property
    def data(self) -> np.ndarray:
        return self._data

    @property
    def nnz(self) -> int:
        return int(self._indptr[-1])

    @property
    def density(self) -> float:
        n_pre, n_post = self.shape
        return self.nnz / float(n_pre * n_post) if n_pre * n_post else 0.0

    def rows(self) -> np.ndarray:
        """Presynaptic (row) index of every stored synapse, aligned with ``data``."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    def fan_in(self) -> np.ndarray:
        """Number of existing incoming synapses of each postsynaptic neuron."""
        return np.bincount(self.indices, minlength=self.shape[1])

    def to_dense(self) -> np.ndarray:
        """Dense ``(n_pre, n_post, *block_shape)`` float32 weights, zeros where no synapse exists."""
        if self.block_shape == ():
            return self.matrix.toarray()
        out = np.zeros(self.shape + self.block_shape, dtype=np.float32)
        out[self.rows(), self.indices] = self.data
        return out

    def mask(self) -> np.ndarray:
        """Dense boolean existence mask ``(n_pre, n_post)``."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.rows(), self.indices] = True
        return out

    def set_state(self, name: str, values: np.ndarray) -> None:
        """Attach a per-synapse state array (must have one entry per synapse)."""
        values = np.asarray(values)
        if values.ndim == 0 or values.shape[0] != self.nnz:
            raise ShapeError(f"state {name!r} has {values.shape[:1]} entries, expected ({self.nnz},) aligned with data")
        self.state[name] = values

    # ---------------------------------------------------------------- structure
    def prune(self, remove: np.ndarray) -> int:
        """Remove the synapses at positions where ``remove`` (bool, aligned with data) is True.

        All state arrays drop the same entries. O(nnz). Returns the number removed.

        Raises
        ------
        ShapeError
            If ``remove`` is not a boolean mask of one entry per synapse (NaN in a float
            mask would read as True and remove the synapse).
        """
        remove = np.asarray(remove)
        if remove.dtype.kind != "b" and remove.size:
            raise ShapeError(f"prune takes a boolean mask (one entry per synapse), got {remove.dtype} values")
        remove = remove.astype(bool)
        if remove.shape != (self.nnz,):
            raise ShapeError(f"prune mask has shape {remove.shape}, expected ({self.nnz},)")
        n_removed = int(remove.sum())
        if n_removed == 0:
            return 0
        keep = ~remove
        indptr = np.zeros(self.shape[0] + 1, dtype=np.int32)
        np.cumsum(np.bincount(self.rows()[keep], minlength=self.shape[0]), out=indptr[1:])
        self._set(indptr, self.indices[keep], self.data[keep], self.shape)
        self.state = {name: values[keep] for name, values in self.state.items()}
        return n_removed

    def prune_columns(self, columns: np.ndarray) -> int:
        """Remove every incoming synapse of the postsynaptic neurons ``columns``.

        Raises
        ------
        ShapeError
            If ``columns`` are not indices in ``[0, n_post)`` (NumPy would read -1 as the last).
        """
        columns = np.asarray(columns)
        if columns.size and (columns.dtype.kind not in "iu" or columns.min() < 0 or columns.max() >= self.shape[1]):
            raise ShapeError(f"prune_columns takes indices of postsynaptic units 0..{self.shape[1] - 1}, got "
                             f"{columns.dtype} values" + (f" {columns.min()}..{columns.max()}"
                                                          if columns.dtype.kind in "iu" else ""))
        dead = np.zeros(self.shape[1], dtype=bool)
        dead[columns.astype(np.int64)] = True
        return self.prune(dead[self.indices])

    def regrow(self, pre: np.ndarray, post: np.ndarray, weights: np.ndarray,
               initial_state: dict[str, float] | None = None) -> int:
        """Create synapses ``(pre[k], post[k])`` with ``weights[k]`` (a block each).

        New entries get zero in every state array (fresh optimizer moments, counters),
        or the value given for that array in ``initial_state``.
        The CSR stays canonical; existing entries keep their order. O(nnz + k log k).

        Raises
        ------
        ShapeError
            If the three arrays differ in length, an index is not an integer in range or
            a weight is NaN or infinite.
        StructureError
            (a ValueError) If a pair already exists or appears twice.
        """
        pre, post = np.asarray(pre), np.asarray(post)
        for name, index in (("pre", pre), ("post", post)):
            if index.size and index.dtype.kind not in "iu":  # 0.9 would be truncated to 0
                raise ShapeError(f"regrow takes integer unit indices, got {name} of {index.dtype}")
        pre, post = pre.astype(np.int64).ravel(), post.astype(np.int64).ravel()
        weights = np.asarray(weights, dtype=np.float32).reshape((-1,) + self.block_shape)
        if not np.all(np.isfinite(weights)):
            raise ShapeError("regrow weights hold NaN or infinite values")
        if not (pre.shape == post.shape == weights.shape[:1]):
            raise ShapeError(f"regrow needs equal-length pre/post/weights, got {pre.shape}, {post.shape}, {weights.shape}")
        if pre.size == 0:
            return 0
        n_pre, n_post = self.shape
        if pre.min() < 0 or pre.max() >= n_pre or post.min() < 0 or post.max() >= n_post:
            raise ShapeError(f"regrow index out of range for a {n_pre}x{n_post} store")
        new_keys = pre * n_post + post
        order = np.argsort(new_keys, kind="stable")
        new_keys, pre, post, weights = new_keys[order], pre[order], post[order], weights[order]
        if np.any(new_keys[1:] == new_keys[:-1]):
            raise StructureError("regrow got the same (pre, post) pair twice")
        keys = self.rows().astype(np.int64) * n_post + self.indices
        at = np.searchsorted(keys, new_keys)
        exists = at < keys.size
        exists[exists] = keys[at[exists]] == new_keys[exists]
        if exists.any():
            k = int(np.argmax(exists))
            raise StructureError(f"regrow: synapse ({pre[k]}, {post[k]}) already exists; regrow only missing ones")
        initial_state = initial_state or {}
        try:  # before any change: a bad value leaves the store as it was
            inserted = {name: np.asarray(initial_state.get(name, 0), dtype=values.dtype)
                        for name, values in self.state.items()}
        except (TypeError, ValueError) as exc:
            raise StructureError(f"regrow: initial_state must map state names to numbers ({exc})") from None
        indptr = self.indptr + np.searchsorted(pre, np.arange(n_pre + 1), side="left").astype(np.int32)
        self._set(indptr, np.insert(self.indices, at, post.astype(np.int32)), np.insert(self.data, at, weights, axis=0),
                  self.shape)
        self.state = {name: np.insert(values, at, inserted[name], axis=0) for name, values in self.state.items()}
        return int(pre.size)

    def is_canonical(self) -> bool:
        """True when indptr is monotone, indices are in range, sorted and unique per row."""
        try:
            check_csr(self.indptr, self.indices, self.shape)
        except ShapeError:
            return False
        return True


def check_real(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` if they are floating point, else ShapeError: weights and biases read from a
    file as integers or booleans are not what the file claims (evsim writes float32), and
    converted they would run, truncated, without a word."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        raise ShapeError(f"{name} must be floating-point values, got {values.dtype}")
    return values


def check_csr(indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int]) -> None:
    """Raise ShapeError unless ``indptr`` and ``indices`` are the structure of a canonical CSR
    matrix of ``shape``: integer ``indptr`` of ``n_pre + 1`` entries rising from 0 to nnz,
    integer ``indices`` in ``[0, n_post)``, sorted and unique within each row.

    Arrays read from a file must pass this before they reach a kernel: kernels index
    without bounds checks, and a duplicate would be summed away, misaligning the state.
    """
    n_pre, n_post = shape
    if n_pre < 0 or n_post < 0:
        raise ShapeError(f"shape must be two sizes >= 0, got {shape}")
    if indptr.ndim != 1 or indptr.dtype.kind not in "iu" or indptr.size != n_pre + 1:
        raise ShapeError(f"indptr must be {n_pre + 1} integers (rows + 1), got {indptr.dtype} {indptr.shape}")
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ShapeError(f"indices must be a vector of integers, got {indices.dtype} {indices.shape}")
    if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
        raise ShapeError(f"indptr must rise from 0 to nnz = {indices.size}")
    if indices.size == 0:
        return
    if indices.min() < 0 or indices.max() >= n_post:
        raise ShapeError(f"column indices must lie in [0, {n_post}), found {indices.min()}..{indices.max()}")
    step = np.diff(indices.astype(np.int64))
    row_start = np.zeros(indices.size, dtype=bool)
    row_start[indptr[:-1][np.diff(indptr) > 0]] = True
    if not np.all((step > 0) | row_start[1:]):
        raise ShapeError("column indices must be sorted and unique within each row")
