"""Sixteen float32 lanes (one 64-byte cache line, one AVX-512 register) as a Numba value.

Numba leaves vector width to LLVM, which on AVX-512 machines prefers 256-bit
registers: the row sums then move 8 floats per load, and their inner loop runs out
of general registers for the 16 row offsets. Loading, adding and storing whole
16-lane vectors explicitly made the forward pass 1.3-1.5x and the weight gradient
1.1-1.2x faster (``bench_kernels``, benchmarks/RESULTS.md). On
machines without AVX-512, LLVM splits each vector into two 256-bit or four 128-bit
operations; the results are the same.

Every load and store takes a lane count ``n`` (1-16): lanes ``n..15`` are neither
read nor written (masked loads, which never fault), so a row's last, partial vector
needs no scalar remainder loop. Loads give 0 in those lanes.

``+``, ``-``, ``*`` and ``/`` work lane by lane on two vectors, ``s * v`` scales a vector
by a float32 scalar and ``v / s`` divides it by one, :func:`splat` fills all lanes with a scalar and :func:`greater`
compares with one (1.0 or 0.0 per lane, as spikes are kept); lanes are independent, so
results are those of the same float32 scalar operations in the same order.
:func:`store_bytes` writes such 0/1 lanes as uint8 spikes.

For sparse rows, :func:`gather` and :func:`scatter` read and write the 16 entries of
an array that a run of 16 column indices points to (AVX-512 gathers and scatters): a
CSR row's synapses, 16 per instruction instead of one.

For finding spikes, :func:`nonzero_bits` turns up to 64 bytes into a 64-bit mask of
the nonzero ones in one masked load and compare, and :func:`popcount` and
:func:`lowest_bit` count and walk its set bits, so a scan of spike bytes costs one
step per 64 cells plus one per spike, with no branch per cell.
"""
from __future__ import annotations

import operator

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

LANES = 16
_VECTOR = ir.VectorType(ir.FloatType(), LANES)
_I32 = ir.IntType(32)
_MASK = ir.VectorType(ir.IntType(1), LANES)
_I64 = ir.IntType(64)


class Float32x16(types.Type):
    """Numba type of a 16-lane float32 vector (an LLVM ``<16 x float>``)."""

    def __init__(self):
        super().__init__(name="Float32x16")


float32x16 = Float32x16()


@register_model(Float32x16)
class _Float32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _address(context, builder, array_type, array, offset, vector_type=_VECTOR):
    """Pointer to ``array.ravel()[offset]`` (``array`` contiguous) as a ``vector_type`` pointer."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), vector_type.as_pointer())


def _broadcast(builder, value, vector_type):
    """``value`` in every lane of a ``vector_type``."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, vector_type.count), [0] * vector_type.count))


def _first_lanes(builder, n, lanes=LANES):
    """Mask of lanes ``0..n-1`` of ``lanes``."""
    if n.type.width != 32:
        n = builder.trunc(n, _I32) if n.type.width > 32 else builder.sext(n, _I32)
    index = ir.Constant(ir.VectorType(_I32, lanes), list(range(lanes)))
    return builder.icmp_signed("<", index, _broadcast(builder, n, ir.VectorType(_I32, lanes)))


def _check_contiguous(array, dtype) -> bool:
    return isinstance(array, types.Array) and array.dtype == dtype and array.layout == "C"


def _whole_or_masked(builder, n, lanes, whole, masked):
    """``whole()`` where ``n`` covers all ``lanes``, else ``masked()``: each builds its IR
    and returns its value (or None). Masked loads and stores are native on AVX-512 but not
    elsewhere: AVX2 has none for bytes (LLVM splits them into a branch per lane), and its
    masked float stores are slow on AMD cores; whole vectors, by far the most frequent,
    take plain ones. A constant ``n`` folds the branch away. Results are the same."""
    if isinstance(n, ir.Constant):
        return whole() if n.constant >= lanes else masked()
    is_whole = builder.icmp_signed(">=", n, ir.Constant(n.type, lanes))
    with builder.if_else(is_whole, likely=True) as (then, otherwise):
        with then:
            whole_value = whole()
            whole_block = builder.block
        with otherwise:
            masked_value = masked()
            masked_block = builder.block
    if whole_value is None:
        return None
    merged = builder.phi(whole_value.type)
    merged.add_incoming(whole_value, whole_block)
    merged.add_incoming(masked_value, masked_block)
    return merged


def _masked_load(context, builder, array_type, array, offset, n):
    """Lanes ``0..n-1`` of ``array.ravel()[offset:]`` as a vector, zeros after them."""
    address = _address(context, builder, array_type, array, offset)
    load_type = ir.FunctionType(_VECTOR, [_VECTOR.as_pointer(), _I32, _MASK, _VECTOR])
    masked_load = cgutils.get_or_insert_function(builder.module, load_type, "llvm.masked.load.v16f32.p0")
    return _whole_or_masked(
        builder, n, LANES, lambda: builder.load(address, align=4),
        lambda: builder.call(masked_load, [address, ir.Constant(_I32, 4), _first_lanes(builder, n),
                                           ir.Constant(_VECTOR, [0.0] * LANES)]))


@intrinsic
def load(typingctx, array, offset, n):
    """Lanes ``0..n-1`` from ``array.ravel()[offset:offset + n]``, zeros after them.

    ``array`` C-contiguous float32; no bounds check (the caller's offsets must be in range).
    """
    if not (_check_contiguous(array, types.float32) and isinstance(offset, types.Integer)
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return _masked_load(context, builder, signature.args[0], args[0], args[1], args[2])

    return float32x16(array, offset, n), codegen


@intrinsic
def store(typingctx, array, offset, vector, n):
    """Write lanes ``0..n-1`` of ``vector`` to ``array.ravel()[offset:offset + n]``."""
    if not (_check_contiguous(array, types.float32) and isinstance(offset, types.Integer) and vector is float32x16
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        _masked_store(builder, _address(context, builder, signature.args[0], args[0], args[1]), args[2], args[3])
        return context.get_dummy_value()

    return types.none(array, offset, vector, n), codegen


def _masked_store(builder, address, vector, n):
    """Lanes ``0..n-1`` of ``vector`` to ``address`` (a vector pointer), the others untouched."""
    store_type = ir.FunctionType(ir.VoidType(), [_VECTOR, _VECTOR.as_pointer(), _I32, _MASK])
    masked_store = cgutils.get_or_insert_function(builder.module, store_type, "llvm.masked.store.v16f32.p0")

    def whole():
        builder.store(vector, address, align=4)

    def masked():
        builder.call(masked_store, [vector, address, ir.Constant(_I32, 4), _first_lanes(builder, n)])

    _whole_or_masked(builder, n, LANES, whole, masked)


@intrinsic
def stream(typingctx, array, offset, vector, n):
    """:func:`store`, bypassing the caches (a non-temporal store) where the 16 lanes fill
    a whole cache line: for outputs far larger than the caches and read only much later
    (a layer's recorded membrane, its dL/du), whose lines a plain store must first read
    from memory. Elsewhere (``n < 16``, or not on a 64-byte line) a plain store. Call
    :func:`stream_fence` before other threads read what was streamed."""
    if not (_check_contiguous(array, types.float32) and isinstance(offset, types.Integer) and vector is float32x16
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        address = _address(context, builder, signature.args[0], args[0], args[1])
        whole = builder.icmp_signed("==", args[3], ir.Constant(args[3].type, LANES))
        on_line = builder.icmp_unsigned("==", builder.and_(builder.ptrtoint(address, _I64), ir.Constant(_I64, 63)),
                                        ir.Constant(_I64, 0))
        with builder.if_else(builder.and_(whole, on_line)) as (streamed, masked):
            with streamed:
                line = builder.store(args[2], address, align=64)
                line.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))
            with masked:
                _masked_store(builder, address, args[2], args[3])
        return context.get_dummy_value()

    return types.none(array, offset, vector, n), codegen


@intrinsic
def stream_fence(typingctx):
    """Order this thread's :func:`stream` stores before its later ones (non-temporal stores
    are weakly ordered): call at the end of a parallel task that streamed."""
    def codegen(context, builder, signature, args):
        if builder.module.triple.startswith(("x86_64", "i686", "i386")):
            # SFENCE: the lock-prefixed instruction LLVM emits for a fence is not
            # documented to order non-temporal stores on every x86.
            sfence = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                    "llvm.x86.sse.sfence")
            builder.call(sfence, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen

def _lanewise(instruction):
    """An intrinsic applying the IR builder's ``instruction`` to two vectors, lane by lane."""

    def typer(typingctx, a, b):
        def codegen(context, builder, signature, args):
            return getattr(builder, instruction)(args[0], args[1])

        return float32x16(a, b), codegen

    typer.__name__ = typer.__qualname__ = f"_{instruction}"  # one name per intrinsic
    return intrinsic(typer)


_add, _sub, _mul, _div = _lanewise("fadd"), _lanewise("fsub"), _lanewise("fmul"), _lanewise("fdiv")


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` lane by lane with one rounding (a fused multiply-add instruction),
    ``a`` a float32 scalar or vector: LLVM does not fuse the two operations of
    ``a * b + c`` itself, which leaves a kernel bound by its multiplies and adds half
    as fast."""
    if b is not float32x16 or c is not float32x16 or (a is not float32x16 and a != types.float32):
        return None

    def codegen(context, builder, signature, args):
        x = args[0] if signature.args[0] is float32x16 else _broadcast(builder, args[0], _VECTOR)
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                                  "llvm.fma.v16f32")
        return builder.call(function, [x, args[1], args[2]])

    return float32x16(a, b, c), codegen


_INDICES = ir.VectorType(_I32, LANES)
_OFFSETS = ir.VectorType(_I64, LANES)


def _lane_pointers(context, builder, signature, args):
    """The 16 pointers to ``array.ravel()[offset + columns[k + l]]`` of a :func:`gather` or
    :func:`scatter` call, and the mask of lanes ``0..n-1`` (the other lanes' columns are
    not read, and their pointers go unused)."""
    array_type, _, columns_type = signature.args[:3]
    array, offset, columns, k, n = args[0], args[1], args[2], args[3], args[-1]
    mask = _first_lanes(builder, n)
    load_type = ir.FunctionType(_INDICES, [_INDICES.as_pointer(), _I32, _MASK, _INDICES])
    masked_load = cgutils.get_or_insert_function(builder.module, load_type, "llvm.masked.load.v16i32.p0")
    index = builder.call(masked_load, [_address(context, builder, columns_type, columns, k, _INDICES),
                                       ir.Constant(_I32, 4), mask, ir.Constant(_INDICES, [0] * LANES)])
    first = builder.ptrtoint(_address(context, builder, array_type, array, offset, ir.FloatType()), _I64)
    # LLVM's getelementptr takes a vector of indices, llvmlite's does not: add byte offsets.
    byte_offsets = builder.shl(builder.sext(index, _OFFSETS), ir.Constant(_OFFSETS, [2] * LANES))
    addresses = builder.add(_broadcast(builder, first, _OFFSETS), byte_offsets)
    return builder.inttoptr(addresses, ir.VectorType(ir.FloatType().as_pointer(), LANES)), mask


def _gather_scatter_args(array, offset, columns, k, n) -> bool:
    return (_check_contiguous(array, types.float32) and isinstance(offset, types.Integer)
            and _check_contiguous(columns, types.int32) and columns.ndim == 1 and isinstance(k, types.Integer)
            and isinstance(n, types.Integer))


@intrinsic
def gather(typingctx, array, offset, columns, k, n):
    """Lane ``l < n``: ``array.ravel()[offset + columns[k + l]]``; lanes from ``n`` on: 0.

    ``array`` C-contiguous float32, ``columns`` C-contiguous int32; no bounds check. One
    AVX-512 gather instead of 16 scalar loads: a sparse row's entries, by column.
    """
    if not _gather_scatter_args(array, offset, columns, k, n):
        return None

    def codegen(context, builder, signature, args):
        pointers, mask = _lane_pointers(context, builder, signature, args)
        gather_type = ir.FunctionType(_VECTOR, [pointers.type, _I32, _MASK, _VECTOR])
        masked_gather = cgutils.get_or_insert_function(builder.module, gather_type, "llvm.masked.gather.v16f32.v16p0")
        return builder.call(masked_gather, [pointers, ir.Constant(_I32, 4), mask, ir.Constant(_VECTOR, [0.0] * LANES)])

    return float32x16(array, offset, columns, k, n), codegen


@intrinsic
def scatter(typingctx, array, offset, columns, k, vector, n):
    """Write lane ``l < n`` of ``vector`` to ``array.ravel()[offset + columns[k + l]]``.

    The ``n`` columns must be distinct (one sparse row's, in canonical CSR): where two
    lanes hit one entry, only the higher lane's value is kept. ``array`` C-contiguous
    float32, ``columns`` C-contiguous int32; no bounds check.
    """
    if not (_gather_scatter_args(array, offset, columns, k, n) and vector is float32x16):
        return None

    def codegen(context, builder, signature, args):
        pointers, mask = _lane_pointers(context, builder, signature, args)
        scatter_type = ir.FunctionType(ir.VoidType(), [_VECTOR, pointers.type, _I32, _MASK])
        masked_scatter = cgutils.get_or_insert_function(builder.module, scatter_type,
                                                        "llvm.masked.scatter.v16f32.v16p0")
        builder.call(masked_scatter, [args[4], pointers, ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()

    return types.none(array, offset, columns, k, vector, n), codegen


@intrinsic
def splat(typingctx, scalar):
    """A float32 in all 16 lanes."""
    if scalar != types.float32:
        return None
    return float32x16(scalar), lambda context, builder, signature, args: _broadcast(builder, args[0], _VECTOR)


@intrinsic
def greater(typingctx, vector, scalar):
    """1.0 in the lanes where ``vector > scalar``, 0.0 elsewhere (NaN lanes: 0.0, as ``>``)."""
    if not (vector is float32x16 and scalar == types.float32):
        return None

    def codegen(context, builder, signature, args):
        above = builder.fcmp_ordered(">", args[0], _broadcast(builder, args[1], _VECTOR))
        return builder.uitofp(above, _VECTOR)

    return float32x16(vector, scalar), codegen


@intrinsic
def store_bytes(typingctx, array, offset, vector, n):
    """Write lanes ``0..n-1`` of ``vector``, whole numbers 0-255, as bytes to
    ``array.ravel()[offset:offset + n]`` (``array`` C-contiguous uint8; no bounds check)."""
    if not (_check_contiguous(array, types.uint8) and isinstance(offset, types.Integer) and vector is float32x16
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        cells = ir.VectorType(ir.IntType(8), LANES)
        address = _address(context, builder, signature.args[0], args[0], args[1], cells)
        store_type = ir.FunctionType(ir.VoidType(), [cells, cells.as_pointer(), _I32, _MASK])
        masked_store = cgutils.get_or_insert_function(builder.module, store_type, "llvm.masked.store.v16i8.p0")
        values = builder.fptoui(args[2], cells)

        def whole():
            builder.store(values, address, align=1)

        def masked():
            builder.call(masked_store, [values, address, ir.Constant(_I32, 1), _first_lanes(builder, args[3])])

        def half_or_masked():
            # Eight bytes (a row of eight 2 x 2 pooling windows), as frequent as sixteen in
            # the fused convolution-pooling passes: one plain 8-byte store, where AVX2
            # would split a masked one into a branch per byte (1.6x a pass on conv1).
            half = ir.VectorType(ir.IntType(8), LANES // 2)
            is_half = builder.icmp_signed("==", args[3], ir.Constant(args[3].type, LANES // 2))
            with builder.if_else(is_half, likely=True) as (then, otherwise):
                with then:
                    low = builder.shuffle_vector(values, values, ir.Constant(ir.VectorType(_I32, LANES // 2),
                                                                             list(range(LANES // 2))))
                    builder.store(low, builder.bitcast(address, half.as_pointer()), align=1)
                with otherwise:
                    masked()

        if isinstance(args[3], ir.Constant):
            _whole_or_masked(builder, args[3], LANES, whole, masked)
        else:
            _whole_or_masked(builder, args[3], LANES, whole, half_or_masked)
        return context.get_dummy_value()

    return types.none(array, offset, vector, n), codegen


@intrinsic
def store_byte_pairs(typingctx, array, offset, vector, group, n):
    """Write lanes ``4*group .. 4*group + 3`` of ``vector``, whole numbers 0-65535, as
    little-endian 16-bit words: ``lo + 256*hi`` lays down bytes ``lo, hi``, so two small
    counts side by side (two 2 x 2 windows of a pooled row) go out with no shuffle of
    bytes. Only the first ``n`` of the eight bytes are written (``n`` at most 8; eight is
    one plain store). ``group`` a literal 0-3; ``array`` C-contiguous uint8; no bounds
    check."""
    if not (_check_contiguous(array, types.uint8) and isinstance(offset, types.Integer) and vector is float32x16
            and isinstance(group, types.IntegerLiteral) and 0 <= group.literal_value < 4
            and isinstance(n, types.Integer)):
        return None
    lanes = [4 * group.literal_value + k for k in range(4)]

    def codegen(context, builder, signature, args):
        words = builder.fptoui(args[2], ir.VectorType(ir.IntType(16), LANES))
        four = builder.shuffle_vector(words, words, ir.Constant(ir.VectorType(_I32, 4), lanes))
        cells = ir.VectorType(ir.IntType(8), 8)
        values = builder.bitcast(four, cells)
        address = _address(context, builder, signature.args[0], args[0], args[1], cells)
        store_type = ir.FunctionType(ir.VoidType(), [cells, cells.as_pointer(), _I32, ir.VectorType(ir.IntType(1), 8)])
        masked_store = cgutils.get_or_insert_function(builder.module, store_type, "llvm.masked.store.v8i8.p0")
        def whole():
            builder.store(values, address, align=1)

        def masked():
            builder.call(masked_store, [values, address, ir.Constant(_I32, 1), _first_lanes(builder, args[4], 8)])

        _whole_or_masked(builder, args[4], 8, whole, masked)
        return context.get_dummy_value()

    return types.none(array, offset, vector, group, n), codegen


@intrinsic
def load_bytes(typingctx, array, offset, n):
    """Bytes ``array.ravel()[offset:offset + n]`` (``n`` at most 16) as float32 lanes, zeros
    after them: small counts kept a byte a cell (``array`` C-contiguous uint8; no bounds
    check)."""
    if not (_check_contiguous(array, types.uint8) and isinstance(offset, types.Integer)
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        cells = ir.VectorType(ir.IntType(8), LANES)
        address = _address(context, builder, signature.args[0], args[0], args[1], cells)
        load_type = ir.FunctionType(cells, [cells.as_pointer(), _I32, _MASK, cells])
        masked_load = cgutils.get_or_insert_function(builder.module, load_type, "llvm.masked.load.v16i8.p0")
        values = _whole_or_masked(
            builder, args[2], LANES, lambda: builder.load(address, align=1),
            lambda: builder.call(masked_load, [address, ir.Constant(_I32, 1), _first_lanes(builder, args[2]),
                                               ir.Constant(cells, [0] * LANES)]))
        return builder.uitofp(values, _VECTOR)

    return float32x16(array, offset, n), codegen


@overload(operator.add)
def _vector_add(a, b):
    if a is float32x16 and b is float32x16:
        return lambda a, b: _add(a, b)
    return None


@overload(operator.sub)
def _vector_sub(a, b):
    if a is float32x16 and b is float32x16:
        return lambda a, b: _sub(a, b)
    return None


@overload(operator.mul)
def _vector_mul(a, b):
    if a is float32x16 and b is float32x16:
        return lambda a, b: _mul(a, b)
    if a == types.float32 and b is float32x16:
        return lambda a, b: _mul(splat(a), b)
    return None


@overload(operator.truediv)
def _vector_div(a, b):
    if a is float32x16 and b is float32x16:
        return lambda a, b: _div(a, b)
    if a is float32x16 and b == types.float32:
        return lambda a, b: _div(a, splat(b))
    return None


def _two_vector_shuffle(name, lanes):
    """An intrinsic picking lanes ``lanes`` of the 32 of two vectors (``b``'s are 16-31):
    one or two AVX-512 permutes, where the same moves in NumPy would go through memory."""

    def typer(typingctx, a, b):
        if a is not float32x16 or b is not float32x16:
            return None

        def codegen(context, builder, signature, args):
            return builder.shuffle_vector(args[0], args[1], ir.Constant(ir.VectorType(_I32, LANES), lanes))

        return float32x16(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


even_lanes = _two_vector_shuffle("even_lanes", [2 * l for l in range(LANES)])
even_lanes.__doc__ = "Lanes 0, 2, ..., 14 of ``a`` then of ``b``: every other cell of 32."
odd_lanes = _two_vector_shuffle("odd_lanes", [2 * l + 1 for l in range(LANES)])
odd_lanes.__doc__ = "Lanes 1, 3, ..., 15 of ``a`` then of ``b``."
upper_halves = _two_vector_shuffle("upper_halves", [LANES // 2 + l % (LANES // 2) + (l >= LANES // 2) * LANES
                                                    for l in range(LANES)])
upper_halves.__doc__ = "Lanes 8-15 of ``a`` then of ``b``."
interleave_low = _two_vector_shuffle("interleave_low", [l // 2 + (l % 2) * LANES for l in range(LANES)])
interleave_low.__doc__ = "``a[0], b[0], a[1], b[1], ..., a[7], b[7]``: the inverse of :func:`even_lanes`' first half."
interleave_high = _two_vector_shuffle("interleave_high",
                                      [LANES // 2 + l // 2 + (l % 2) * LANES for l in range(LANES)])
interleave_high.__doc__ = "``a[8], b[8], ..., a[15], b[15]``."


_BYTES = ir.VectorType(ir.IntType(8), 64)


_FLOATS = ir.VectorType(ir.FloatType(), 64)


@intrinsic
def nonzero_bits(typingctx, array, offset, n):
    """uint64 whose bit k is set where ``array.ravel()[offset + k] != 0``, for ``k < n``
    (``n`` at most 64; cells from ``n`` on are not read and give 0 bits). NaN counts as
    nonzero, as ``!=`` has it; -0.0 does not.

    ``array`` C-contiguous uint8 or float32; no bounds check.
    """
    if not ((_check_contiguous(array, types.uint8) or _check_contiguous(array, types.float32))
            and isinstance(offset, types.Integer) and isinstance(n, types.Integer)):
        return None
    cell_type = _BYTES if array.dtype == types.uint8 else _FLOATS

    def codegen(context, builder, signature, args):
        size = 1 if cell_type is _BYTES else 4
        address = _address(context, builder, signature.args[0], args[0], args[1], cell_type)
        load_type = ir.FunctionType(cell_type, [cell_type.as_pointer(), _I32, ir.VectorType(ir.IntType(1), 64),
                                                cell_type])
        name = "llvm.masked.load.v64i8.p0" if cell_type is _BYTES else "llvm.masked.load.v64f32.p0"
        masked_load = cgutils.get_or_insert_function(builder.module, load_type, name)
        zeros = ir.Constant(cell_type, [0] * 64)
        cells = _whole_or_masked(
            builder, args[2], 64, lambda: builder.load(address, align=size),
            lambda: builder.call(masked_load, [address, ir.Constant(_I32, size), _first_lanes(builder, args[2], 64),
                                               zeros]))
        if cell_type is _BYTES:
            return builder.bitcast(builder.icmp_unsigned("!=", cells, zeros), _I64)
        return builder.bitcast(builder.fcmp_unordered("!=", cells, zeros), _I64)

    return types.uint64(array, offset, n), codegen


def _call_on_bits(builder, name, bits, *flags):
    """``name``(``bits``, ``flags``...): an LLVM bit intrinsic with an i64 result."""
    function_type = ir.FunctionType(_I64, [_I64] + [ir.IntType(1)] * len(flags))
    function = cgutils.get_or_insert_function(builder.module, function_type, name)
    return builder.call(function, [bits] + [ir.Constant(ir.IntType(1), flag) for flag in flags])


@intrinsic
def popcount(typingctx, bits):
    """Number of set bits of a uint64, as an int64."""
    if bits != types.uint64:
        return None
    return types.int64(bits), lambda context, builder, signature, args: _call_on_bits(builder, "llvm.ctpop.i64", args[0])


@intrinsic
def lowest_bit(typingctx, bits):
    """Index of the lowest set bit of a nonzero uint64, as an int64 (undefined for 0)."""
    if bits != types.uint64:
        return None
    return types.int64(bits), lambda context, builder, signature, args: _call_on_bits(builder, "llvm.cttz.i64",
                                                                                      args[0], 1)


def _transpose_stage(builder, rows, h):
    """One level of the block transpose: swap bit ``h`` of the row index with bit ``h`` of
    the lane index (rows ``j`` and ``j + h`` exchange their off-diagonal ``h``-lane blocks)."""
    out = list(rows)
    for j in range(LANES):
        if j & h:
            continue
        low = [l if not l & h else LANES + l - h for l in range(LANES)]
        high = [l + h if not l & h else LANES + l for l in range(LANES)]
        out[j] = builder.shuffle_vector(rows[j], rows[j + h], ir.Constant(ir.VectorType(_I32, LANES), low))
        out[j + h] = builder.shuffle_vector(rows[j], rows[j + h], ir.Constant(ir.VectorType(_I32, LANES), high))
    return out


@intrinsic
def transpose16(typingctx, src, src_offset, src_stride, dst, dst_offset, dst_stride):
    """``dst[dst_offset + j*dst_stride + i] = src[src_offset + i*src_stride + j]`` for
    ``i, j < 16``: a 16 x 16 block transposed in registers (16 loads, 64 two-vector
    shuffles, 16 stores) instead of 256 scalar moves. Both arrays C-contiguous float32;
    no bounds check (all 16 rows of 16 lanes must lie inside each array)."""
    if not (_check_contiguous(src, types.float32) and _check_contiguous(dst, types.float32)
            and all(isinstance(a, types.Integer) for a in (src_offset, src_stride, dst_offset, dst_stride))):
        return None

    def codegen(context, builder, signature, args):
        src_type, _, _, dst_type = signature.args[:4]
        src_array, src_first, src_step, dst_array, dst_first, dst_step = args
        src_step = context.cast(builder, src_step, signature.args[2], types.int64)
        dst_step = context.cast(builder, dst_step, signature.args[5], types.int64)
        src_first = context.cast(builder, src_first, signature.args[1], types.int64)
        dst_first = context.cast(builder, dst_first, signature.args[4], types.int64)
        rows = []
        for i in range(LANES):
            offset = builder.add(src_first, builder.mul(src_step, ir.Constant(_I64, i)))
            rows.append(builder.load(_address(context, builder, src_type, src_array, offset), align=4))
        for h in (8, 4, 2, 1):
            rows = _transpose_stage(builder, rows, h)
        for j in range(LANES):
            offset = builder.add(dst_first, builder.mul(dst_step, ir.Constant(_I64, j)))
            builder.store(rows[j], _address(context, builder, dst_type, dst_array, offset), align=4)
        return context.get_dummy_value()

    return types.none(src, src_offset, src_stride, dst, dst_offset, dst_stride), codegen



@intrinsic
def any_nonzero(typingctx, array, offset, n):
    """Whether any of ``array.ravel()[offset:offset + n]`` (``n`` at most 16) is nonzero
    (NaN counts as nonzero); ``array`` C-contiguous float32, no bounds check."""
    if not (_check_contiguous(array, types.float32) and isinstance(offset, types.Integer)
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        values = _masked_load(context, builder, signature.args[0], args[0], args[1], args[2])
        nonzero = builder.fcmp_unordered("!=", values, ir.Constant(_VECTOR, [0.0] * LANES))
        bits = builder.bitcast(nonzero, ir.IntType(LANES))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(LANES), 0))

    return types.boolean(array, offset, n), codegen


@njit(cache=True)
def all_zero(flat, first, n):
    """Whether ``flat[first:first + n]`` (C-contiguous float32) is all zero, 16 lanes per
    test: a slot whose dL/du is (no error reached the sample, as for about half the
    samples of a batch at the paper's initialisation) adds nothing to a weight gradient
    and sends nothing down."""
    for j in range(first, first + n, LANES):
        if any_nonzero(flat, j, min(LANES, first + n - j)):
            return False
    return True
