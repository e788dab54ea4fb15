"""The saccade event-camera emulator: statistics against the real recording, format, determinism."""
from pathlib import Path

import numpy as np
import pytest
import tonic
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.data.emulate import (EmulatorParams, burst_separation, emulate_digits, read_manifest,
                                recording_stats, saccade_path, select_per_class, write_emulated_nmnist)
from evsim.data.mnist import mnist_5k_split
from evsim.errors import ConfigError, DataError
from evsim.kernels.emulate import emulate_events

SAMPLE = Path(__file__).parents[2] / "shared" / "data" / "sample_nmnist.bin"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"real N-MNIST recording not found at {SAMPLE}")


@pytest.fixture(scope="module")
def emulated_200():
    x_train, y_train, _, _ = mnist_5k_split()
    return emulate_digits(x_train[:200], np.arange(200), seed=0)


@pytest.fixture(scope="module")
def real_stats():
    if not SAMPLE.is_file():
        pytest.skip(f"real N-MNIST recording not found at {SAMPLE}")
    return recording_stats(tonic.io.read_mnist_file(str(SAMPLE), dtype=tonic.datasets.NMNIST.dtype))


def test_real_recording_statistics(real_stats):
    assert real_stats["events"] == 4325
    assert real_stats["on_fraction"] == pytest.approx(2145 / 4325)
    assert real_stats["burst_separation"] < 0.1


def test_emulated_events_and_polarity_within_30_percent_of_real(emulated_200, real_stats):
    stats = [recording_stats(e) for e in emulated_200]
    events = np.mean([s["events"] for s in stats])
    on = np.mean([s["on_fraction"] for s in stats])
    assert abs(events / real_stats["events"] - 1) < 0.30, events
    assert abs(on / real_stats["on_fraction"] - 1) < 0.30, on
    spread = np.mean([s["std_y"] for s in stats])
    assert abs(spread / real_stats["std_y"] - 1) < 0.30, spread


def test_emulated_recordings_have_three_separated_bursts(emulated_200):
    stats = [recording_stats(e) for e in emulated_200]
    # every saccade window holds a real share of the events, and the dips between bursts are deep
    shares = np.array([s["per_saccade"] for s in stats]) / np.array([[s["events"]] for s in stats])
    assert shares.min() > 0.05 and shares.mean(axis=0).min() > 0.25
    assert np.mean([s["burst_separation"] < 0.3 for s in stats]) > 0.95
    durations = [s["duration_ms"] for s in stats]
    assert 290 < min(durations) and max(durations) < 316


def test_burst_separation_tells_bursts_from_a_flat_rate():
    flat = np.full(30, 100)
    bursts = np.array([0, 50, 100, 50, 0, 0, 0, 0, 0, 0] * 3)
    assert burst_separation(flat, 10) == 1.0
    assert burst_separation(bursts, 10) == 0.0


def test_events_are_sorted_in_sensor_and_in_the_format(emulated_200):
    for events in emulated_200[:20]:
        assert np.all(np.diff(events["t"]) >= 0)
        assert events["x"].min() >= 0 and events["x"].max() <= 33
        assert events["y"].min() >= 0 and events["y"].max() <= 33
        assert events["t"].min() >= 0 and events["t"].max() < 2**23


def test_deterministic_and_independent_of_the_subset():
    x_train = mnist_5k_split()[0]
    both = emulate_digits(x_train[5:8], np.array([5, 6, 7]), seed=3)
    alone = emulate_digits(x_train[6:7], np.array([6]), seed=3)
    np.testing.assert_array_equal(both[1], alone[0])
    other_seed = emulate_digits(x_train[6:7], np.array([6]), seed=4)
    assert len(other_seed[0]) != len(alone[0]) or not np.array_equal(other_seed[0], alone[0])


def test_thread_count_does_not_change_events():
    x_train = mnist_5k_split()[0]
    params = EmulatorParams()
    from evsim.data.emulate import _PAD, scene_log_intensity, threshold_maps

    log_img, _ = scene_log_intensity(x_train[:6], params)
    dx, dy = saccade_path(params)
    on, off = threshold_maps(params, 0)
    args = (log_img, dx, dy, params.dt_us, (params.origin[0] - _PAD, params.origin[1] - _PAD), (34, 34),
            on, off, params.theta_jitter, params.refractory_us, params.noise_hz, np.arange(6))
    one = emulate_events(*args, n_jobs=1)
    three = emulate_events(*args, n_jobs=3)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


def test_saccade_path_follows_tonic_stabilize():
    params = EmulatorParams()
    dx, dy = saccade_path(params)
    step = lambda t_us: int(round(t_us / params.dt_us))  # noqa: E731
    assert (dx[0], dy[0]) == (0.0, 0.0)
    np.testing.assert_allclose((dx[step(105_000)], dy[step(105_000)]), (3.5, 7.0))
    np.testing.assert_allclose((dx[step(210_000)], dy[step(210_000)]), (7.0, 0.0))
    np.testing.assert_allclose((dx[-1], dy[-1]), (0.0, 0.0), atol=1e-12)
    speed = np.hypot(np.diff(dx), np.diff(dy))
    assert speed[0] < 1e-3 and speed[step(50_000)] > 0.1  # still at the start, fast mid-saccade


def test_emulate_digits_checks_its_inputs():
    with pytest.raises(ConfigError, match=r"digits must be \[N, 28, 28\]"):
        emulate_digits(np.zeros((2, 20, 20), np.uint8), np.arange(2))
    with pytest.raises(ConfigError, match="3 sample ids for 2 digits"):
        emulate_digits(np.zeros((2, 28, 28), np.uint8), np.arange(3))


def test_sensor_path_outside_the_canvas_is_refused():
    params = EmulatorParams(origin=(30.0, 1.0))
    with pytest.raises(ConfigError, match="beyond|canvas is"):
        emulate_digits(np.zeros((1, 28, 28), np.uint8), np.arange(1), params=params)


def test_select_per_class():
    labels = np.array([0, 1, 0, 1, 0, 2])
    assert select_per_class(labels, 2).tolist() == [0, 1, 2, 3, 5]
    with pytest.raises(ConfigError, match="per_class must be at least 1"):
        select_per_class(labels, 0)


def test_written_files_are_read_back_by_tonic_and_cached(tmp_path):
    out = tmp_path / "emu"
    manifest = write_emulated_nmnist(out, per_class=1, seed=0, progress=False)
    files = sorted(out.glob("*/*/*.bin"))
    assert len(files) == 20 and manifest["splits"]["Train"]["samples"] == 10
    first = sorted((out / "Train" / "0").glob("*.bin"))[0]
    sample_id = int(first.stem)
    x_train = mnist_5k_split()[0]
    expected = emulate_digits(x_train[sample_id:sample_id + 1], np.array([sample_id]), seed=0)[0]
    read = tonic.io.read_mnist_file(str(first), dtype=tonic.datasets.NMNIST.dtype)
    for field in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(read[field], expected[field])
    stamp = first.stat().st_mtime_ns
    again = write_emulated_nmnist(out, per_class=1, seed=0, progress=False)
    assert again == read_manifest(out) and first.stat().st_mtime_ns == stamp  # nothing redone
    assert not list(tmp_path.glob(".emu.tmp-*"))


def test_writing_into_a_foreign_folder_is_refused(tmp_path):
    out = tmp_path / "emu"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not emulated N-MNIST"):
        write_emulated_nmnist(out, per_class=1, progress=False)


def test_cli_emulate_nmnist(tmp_path):
    out = tmp_path / "emu"
    runner = CliRunner()
    result = runner.invoke(main, ["data", "emulate-nmnist", "--out", str(out), "--per-class", "1"], prog_name="evsim")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "Train  10 recordings" in result.output
    result = runner.invoke(main, ["data", "emulate-nmnist", "--out", str(out), "--per-class", "1"], prog_name="evsim")
    assert result.exit_code == 0 and "already there (nothing redone)" in result.output
