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
    manifest, written = write_emulated_nmnist(out, per_class=1, seed=0, progress=False)
    assert written
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
    again, written = write_emulated_nmnist(out, per_class=1, seed=0, progress=False)
    assert again == read_manifest(out) and first.stat().st_mtime_ns == stamp and not written  # nothing redone
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


# ---------------------------------------------------------------- hand-worked pixel traces

def ramp_scene(n=1):
    """A 6 x 6 log-intensity canvas: 0 left of column 3, 1 from column 3 on."""
    img = np.zeros((n, 6, 6), np.float32)
    img[:, :, 3:] = 1.0
    return img


def ramp_events(direction=1, theta_on=0.25, theta_off=0.25, refractory_us=0.0, jitter=0.0, noise_hz=0.0,
                seeds=(0,), sensor_hw=(1, 2), img=None):
    """A 1 x 2 sensor over 8 steps of 125 us. Pixel x = 1 watches the canvas at
    u = 2 + k/8 (direction 1) or 3 - k/8 (direction -1), so its log intensity ramps
    0 -> 1 (or 1 -> 0) linearly over 1000 us; pixel x = 0 watches a flat part."""
    steps = np.arange(9) / 8.0
    disp_x = -steps if direction == 1 else steps - 1.0
    disp_y = np.zeros(9)
    img = ramp_scene(len(seeds)) if img is None else img
    n_pix = sensor_hw[0] * sensor_hw[1]
    return emulate_events(img, disp_x, disp_y, 125.0, (-1.0, -1.0), sensor_hw, np.full(n_pix, theta_on, np.float32),
                          np.full(n_pix, theta_off, np.float32), jitter, refractory_us, noise_hz, np.array(seeds))


def test_a_ramp_crosses_the_on_threshold_at_each_quarter():
    x, y, t, p, offsets = ramp_events()
    assert t.tolist() == [250, 500, 750, 1000] and p.tolist() == [1, 1, 1, 1]
    assert x.tolist() == [1, 1, 1, 1] and y.tolist() == [0, 0, 0, 0] and offsets.tolist() == [0, 4]


def test_a_falling_ramp_gives_off_events():
    x, y, t, p, _ = ramp_events(direction=-1, theta_on=0.5)
    assert t.tolist() == [250, 500, 750, 1000] and p.tolist() == [0, 0, 0, 0] and x.tolist() == [1] * 4
    x, y, t, p, _ = ramp_events(direction=-1, theta_off=0.5, theta_on=0.25)
    assert t.tolist() == [500, 1000] and p.tolist() == [0, 0]


def test_refractory_time_loses_change_and_crossings_are_interpolated():
    """Event at 250 us; blind until 550 us, when the reference is released to the level
    seen then (0.55); the next crossing, 0.80, is reached at 800 us, inside a step
    (750..875); blind until 1100 us after it."""
    _, _, t, p, _ = ramp_events(refractory_us=300.0)
    assert t.tolist() == [250, 800] and p.tolist() == [1, 1]


def test_events_carry_the_pixel_s_x_and_y():
    """On a 2 x 2 sensor both rows see the same ramp in column x = 1 (pixel = y * W + x)."""
    x, y, t, p, _ = ramp_events(sensor_hw=(2, 2))
    assert sorted(zip(t.tolist(), y.tolist(), x.tolist())) == [(t_, y_, 1) for t_ in (250, 500, 750, 1000)
                                                               for y_ in (0, 1)]


def test_a_still_scene_makes_no_events_however_large_the_jitter():
    x, y, t, p, _ = ramp_events(img=np.zeros((1, 6, 6), np.float32), jitter=5.0)
    assert len(t) == 0
    _, _, t, _, _ = ramp_events(jitter=5.0, seeds=(0, 1, 2))  # thresholds >= 0.3 * 0.25: at most 13 events
    assert len(t) <= 3 * 13


def test_background_noise_rate_and_polarity():
    """Flat scene, 2000 events/s on each of 2 pixels for 1 ms, 200 samples: 800 events expected."""
    seeds = np.arange(200)
    x, y, t, p, offsets = ramp_events(img=np.zeros((200, 6, 6), np.float32), noise_hz=2000.0, seeds=seeds)
    assert 800 - 5 * np.sqrt(800) < len(t) < 800 + 5 * np.sqrt(800)
    assert 0.4 < p.mean() < 0.6 and set(x.tolist()) == {0, 1} and set(y.tolist()) == {0}
    assert t.min() >= 0 and t.max() <= 1000 and np.mean(t < 500) == pytest.approx(0.5, abs=0.1)


def test_buffers_grow_to_any_sample():
    """The batch kernel from a tiny buffer gives the events it gives from a large one."""
    from evsim.kernels.emulate import _emulate_batch

    img = ramp_scene(3)
    steps = np.arange(9) / 8.0
    args = (img, -steps, np.zeros(9), 125.0, -1.0, -1.0, 2, 1, np.full(2, 0.25, np.float32),
            np.full(2, 0.25, np.float32), 0.0, 0.0, 0.0, np.arange(3, dtype=np.int64))
    small = _emulate_batch(*args, 5)
    large = _emulate_batch(*args, 1000)
    assert large[4].tolist() == [0, 4, 8, 12]
    for a, b in zip(small, large):
        np.testing.assert_array_equal(a, b)


def test_the_sensor_may_reach_the_canvas_edge_but_not_beyond():
    img = np.zeros((1, 6, 6), np.float32)
    still = np.zeros(2)
    on = np.full(2, 0.25, np.float32)
    call = lambda origin: emulate_events(img, still, still, 125.0, origin, (1, 2), on, on, 0.0, 0.0, 0.0,  # noqa: E731
                                         np.array([0]))
    call((0.0, 0.0))  # samples canvas x 0..2, y 0..1
    call((-3.0, -4.0))  # x 3..5, y 4..5: the last column and row
    for origin in ((0.5, 0.0), (0.0, 0.5), (-3.5, 0.0), (0.0, -4.5)):
        with pytest.raises(ConfigError, match="canvas is 6x6"):
            call(origin)


def test_threshold_maps_use_each_polarity_s_mean():
    from evsim.data.emulate import threshold_maps

    on, off = threshold_maps(EmulatorParams(theta_on=0.5, theta_off=0.2, mismatch=0.0), seed=0)
    assert on.shape == off.shape == (34 * 34,)
    np.testing.assert_allclose(on, 0.5) and np.testing.assert_allclose(off, 0.2)
    on, off = threshold_maps(EmulatorParams(theta_on=0.5, theta_off=0.2, mismatch=0.1), seed=0)
    assert on.mean() == pytest.approx(0.5, rel=0.02) and off.mean() == pytest.approx(0.2, rel=0.02)


def test_scene_is_white_digit_on_a_black_screen_of_the_given_contrast():
    from evsim.data.emulate import _PAD, scene_log_intensity

    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 3, 4] = 255
    digit[0, 5, 6] = 51
    log_img, background = scene_log_intensity(digit, EmulatorParams(contrast=20.0, blur_px=0.0))
    assert log_img.shape == (1, 28 + 2 * _PAD, 28 + 2 * _PAD)
    assert log_img[0, 3 + _PAD, 4 + _PAD] == pytest.approx(0.0, abs=1e-7)  # white: I = 1
    assert log_img[0, 5 + _PAD, 6 + _PAD] == pytest.approx(np.log(0.05 + 0.95 * 0.2), rel=1e-6)
    assert background == pytest.approx(np.log(0.05), rel=1e-6) and log_img.min() == pytest.approx(np.log(0.05))


def test_saccade_profile_is_minimum_jerk():
    params = EmulatorParams()
    dx, dy = saccade_path(params)
    r = 0.25  # 25 ms into the first saccade: s = 10 r^3 - 15 r^4 + 6 r^5
    s = 10 * r**3 - 15 * r**4 + 6 * r**5
    np.testing.assert_allclose((dx[25], dy[25]), (3.5 * s, 7.0 * s), rtol=1e-12)
    assert len(dx) == 316  # 315 steps of 1 ms


def test_recording_stats_by_hand():
    events = np.zeros(5, dtype=tonic.datasets.NMNIST.dtype)
    events["t"] = [0, 104_999, 105_000, 250_000, 320_000]  # the last one is past 315 ms: third window
    events["p"] = [1, 0, 1, 1, 0]
    events["x"] = [0, 2, 2, 4, 4]
    events["y"] = [1, 1, 3, 3, 3]
    stats = recording_stats(events)
    assert stats["per_saccade"] == [2, 1, 2] and stats["events"] == 5
    assert stats["on_fraction"] == pytest.approx(0.6) and stats["duration_ms"] == pytest.approx(320.0)
    assert stats["active_pixels"] == 4 and stats["std_x"] == pytest.approx(np.std([0, 2, 2, 4, 4]))


def test_burst_separation_by_hand():
    """Peaks at bins 1, 4, 7; troughs 3 and 1 against the smaller peaks 6 and 6."""
    hist = np.array([1, 10, 3, 3, 6, 2, 1, 8, 1])
    assert burst_separation(hist, 3) == pytest.approx(0.5)


def test_test_split_recordings_are_the_test_digits(tmp_path):
    out = tmp_path / "emu"
    write_emulated_nmnist(out, per_class=1, seed=0, progress=False)
    _, _, x_test, y_test = mnist_5k_split()
    files = sorted(out.glob("Test/*/*.bin"))
    ids = [int(f.stem) for f in files]
    assert min(ids) >= 4000 and len(files) == 10
    first = files[0]
    k = int(first.stem) - 4000
    assert y_test[k] == int(first.parent.name)
    expected = emulate_digits(x_test[k:k + 1], np.array([int(first.stem)]), seed=0)[0]
    read = tonic.io.read_mnist_file(str(first), dtype=tonic.datasets.NMNIST.dtype)
    np.testing.assert_array_equal(read["t"], expected["t"])
    np.testing.assert_array_equal(read["x"], expected["x"])


def test_an_output_of_other_settings_is_not_reused(tmp_path):
    out = tmp_path / "emu"
    write_emulated_nmnist(out, per_class=1, progress=False)
    with pytest.raises(DataError, match="exists and is not emulated N-MNIST with these settings"):
        write_emulated_nmnist(out, per_class=2, progress=False)


def test_two_emulations_of_the_same_folder_at_once_make_it_once(tmp_path, monkeypatch):
    """Sweep workers that need the emulated N-MNIST at the same moment: one emulates, the
    other waits for the folder's lock and reads its result."""
    import threading

    import evsim.data.emulate as emulate

    calls = []
    original = emulate._write_split

    def counted(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(emulate, "_write_split", counted)
    results, errors = [], []

    def make():
        try:
            results.append(emulate.write_emulated_nmnist(tmp_path / "emu", per_class=1, progress=False))
        except Exception as exc:  # noqa: BLE001 - any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    import json
    assert errors == [] and len(results) == 2
    assert json.loads(json.dumps(results[0][0])) == json.loads(json.dumps(results[1][0]))  # the one written, and as read
    assert sorted(written for _, written in results) == [False, True]  # what `evsim data emulate-nmnist` says
    assert sorted(calls) == ["Test", "Train"]  # one emulation: each split written once

