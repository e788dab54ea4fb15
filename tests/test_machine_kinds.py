"""The two kinds of machine the convolution kernels are compiled for (evsim/kernels/machine.py):
their register blocks give the same bits, each kind compiles its own kernels, and a change
to any kernel file recompiles every kernel (evsim/kernels/cache_stamp.py)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from evsim.kernels import cache_stamp, conv_direct, conv_lif_pool, conv_paths, conv_winograd
from evsim.kernels.machine import KIND, KINDS

ROOT = Path(__file__).resolve().parents[1]
OTHER = "avx2" if KIND == "avx512" else "avx512"


def _other_kind_env(tmp_path: Path) -> dict[str, str]:
    # Its own cache: the two kinds alternating in one folder would recompile each other's.
    return {**os.environ, "EVSIM_MACHINE_KIND": OTHER, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}


def test_register_blocks_give_the_same_bits_on_either_kind(tmp_path):
    """Every register-blocked kernel (direct and Winograd forwards, with and without pooling,
    weight and input gradients, a fully connected layer's input gradient) on random
    non-dyadic data, under the other kind's blocks in a subprocess, equals this process's
    bit for bit: the blocks group the sums, they do not reorder them."""
    from tests.kind_outputs import outputs

    path = tmp_path / "other.npz"
    subprocess.run([sys.executable, "-m", "tests.kind_outputs", str(path)], cwd=ROOT, env=_other_kind_env(tmp_path),
                   check=True, timeout=600)
    other, here = np.load(path), outputs()
    assert str(other["kind"]) == OTHER and str(here["kind"]) == KIND
    assert set(other.files) == set(here) and len(here) > 20
    for name in here:
        if name != "kind":
            np.testing.assert_array_equal(other[name], here[name], err_msg=name)


def test_each_kind_has_its_blocks_and_table():
    assert KIND in KINDS and conv_paths.HOST.name == KIND
    assert (conv_direct.BLOCK_ROWS, conv_direct.BLOCK_CHANNELS) == conv_direct.REGISTER_BLOCKS[KIND]
    assert (conv_winograd.BLOCK_VECTORS, conv_winograd.FILTER_BLOCK) == conv_winograd.WINOGRAD_BLOCKS[KIND]
    assert all(rows % 2 == 0 for rows, _ in conv_direct.REGISTER_BLOCKS.values())  # pooling takes rows in pairs
    # The cost model counts the multiply-adds of the table's own kind's blocks, whatever this machine is:
    # 13 filters: 4 x 5 pads to 15; 2 x 2 sums 12 and the last filter alone.
    assert conv_direct.summed_channels(13, "avx512") == 15 and conv_direct.summed_channels(13, "avx2") == 13
    assert conv_direct.summed_channels(11, "avx512") == 11  # a last block of one
    # Winograd's AVX2 blocks are 1 x 4: 15 filters pad to 16, 13 sum 12 and the last alone.
    assert conv_winograd.multiply_adds(2, 15, 16, 16, "avx2") == 16 * 2 * 16 * 4
    assert conv_winograd.multiply_adds(2, 13, 16, 16, "avx2") == 16 * 2 * 13 * 4
    assert conv_winograd.multiply_adds(2, 13, 16, 16, "avx512") == 16 * 2 * 15 * 4
    assert conv_winograd.tile_layout(16, 16, "avx512")[1] == 4 and conv_winograd.tile_layout(6, 6, "avx2")[1] == 2
    assert conv_winograd.tile_layout(6, 6, "avx512")[1] == 4


def test_kind_is_read_in_any_case(tmp_path):
    env = {**os.environ, "EVSIM_MACHINE_KIND": f" {OTHER.upper()} ", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "from evsim.kernels import machine, conv_paths; "
                             "print(machine.KIND, conv_paths.HOST.name)"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=True)
    assert result.stdout.split() == [OTHER, OTHER]


def test_bad_kind_is_one_line(tmp_path):
    env = {**os.environ, "EVSIM_MACHINE_KIND": "avx1024", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "evsim.cli.main", "eval", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == ("Error: EVSIM_MACHINE_KIND='avx1024' is not a kind of machine; set one of "
                                     "avx512, avx2, or unset it to use this machine's")


def test_kernels_are_stamped_with_the_whole_package():
    """The cache of a kernel in one file is stale once another kernel file changes."""
    for kernel in (conv_direct.direct_slot, conv_lif_pool._winograd_pool):
        locator = kernel._cache._impl.locator
        assert isinstance(locator, cache_stamp.PackageStampLocator)
        assert locator.get_source_stamp()[1] == cache_stamp.package_stamp()


def test_package_stamp_follows_every_file_and_the_kind(tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("X = 1\n")
    (tmp_path / "notes.txt").write_text("not code")
    stamp = cache_stamp.package_stamp(tmp_path, "avx2")
    assert stamp == cache_stamp.package_stamp(tmp_path, "avx2")
    assert stamp != cache_stamp.package_stamp(tmp_path, "avx512")
    (tmp_path / "notes.txt").write_text("other notes")
    assert cache_stamp.package_stamp(tmp_path, "avx2") == stamp
    (tmp_path / "b.py").write_text("X = 2\n")
    assert cache_stamp.package_stamp(tmp_path, "avx2") != stamp


def test_kernels_outside_the_package_keep_numbas_stamp(tmp_path):
    module = tmp_path / "elsewhere.py"
    module.write_text("def f():\n    return 1\n")
    from numba import njit

    sys.path.insert(0, str(tmp_path))
    try:
        import elsewhere
        kernel = njit(cache=True)(elsewhere.f)
        assert kernel() == 1
        assert not isinstance(kernel._cache._impl.locator, cache_stamp.PackageStampLocator)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("elsewhere", None)


def test_every_cached_kernel_is_under_the_stamp():
    """Numba caches only what lives in evsim/kernels, the folder the stamp hashes: a cached
    function elsewhere would escape it."""
    package = ROOT / "evsim"
    cached = [path.relative_to(ROOT) for path in package.rglob("*.py") if "cache=True" in path.read_text()]
    assert cached and all(path.parent == Path("evsim/kernels") for path in cached), cached
