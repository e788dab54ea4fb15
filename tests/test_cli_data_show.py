"""What the first layers of a network see: evsim.feature_maps draws the recording itself
(spikes summed over the steps, pruned filters grey and silent), and ``evsim data show
--run`` writes it next to the sample, encoded as evaluation encodes it."""
import json

import numpy as np
import pytest

from evsim.checkpoint import save_network
from evsim.config import TrainConfig
from evsim.data import DataOptions, load_dataset
from evsim.errors import ConfigError
from evsim.feature_maps import input_picture, layer_pictures, plot_feature_maps, prediction_text
from evsim.files import write_json_atomic
from evsim.inspect import dense_drive, record, record_sample
from evsim.kernels.events import dense_to_events
from evsim.network import Network
from tests.conftest import one_line_error, run
from tests.test_data_nmnist import make_plain

PNG = b"\x89PNG\r\n\x1a\n"
MNIST_CONV = "1x28x28-4C3-AP2-6C3-AP2-10"


def _lively(network: Network) -> Network:
    """Weights tripled: an untrained network of uniform weights barely fires, and a map
    of zeros would test nothing."""
    for layer in network.layers:
        if hasattr(layer, "store"):
            layer.store.data[:] *= 3
    return network


@pytest.fixture
def conv_network():
    network = _lively(Network.from_spec("2x12x12-3C3-AP2-4C3-MP2-5", 0))
    network.layers[0].kill([1])
    network.layers[2].kill([2])
    return network


@pytest.fixture
def conv_drive():
    frames = (np.random.default_rng(7).random((5, 2, 2 * 12 * 12)) < 0.3).astype(np.float32)  # [T, B, n_in]
    return dense_to_events(frames)


def test_maps_are_each_layers_spikes_summed_over_the_steps(conv_network, conv_drive):
    rec = record(conv_network, conv_drive)
    pictures = layer_pictures(rec, conv_network, sample=1)
    assert [p.name for p in pictures] == ["conv1 3C3", "pool1 AP2", "conv2 4C3", "pool2 MP2"]
    for picture in pictures:
        layer = conv_network.layers[picture.layer]
        expected = rec.spikes[picture.layer][:, 1].sum(axis=0, dtype=np.float64).reshape(layer.out_shape)
        np.testing.assert_array_equal(picture.values, expected)
    assert pictures[0].values.sum() > 0 and pictures[2].values.sum() > 0  # something to see
    # The dead filter and its pooling are marked pruned and silent; every other channel is not.
    for picture, dead in zip(pictures, (1, 1, 2, 2)):
        assert np.flatnonzero(picture.pruned).tolist() == [dead]
        assert not picture.values[dead].any()
        assert picture.panel_titles[dead] == f"filter {dead} (pruned)"
    assert pictures[0].title == "conv1 3C3: spikes per cell over 5 steps; 1 of 3 filters pruned"
    assert pictures[3].title.startswith("pool2 MP2: conv2's maximum over each 2x2 window, summed over 5 steps")


def test_the_input_map_is_the_drive_summed_over_the_steps(conv_network, conv_drive):
    picture = input_picture(conv_drive, conv_network, sample=0, channel_names=("OFF", "ON"))
    fed = dense_drive(conv_drive, conv_network.layers[0].n_in)[:, 0].sum(axis=0)
    np.testing.assert_array_equal(picture.values, fed.reshape(2, 12, 12))
    assert picture.panel_titles == ("OFF", "ON") and picture.title == "input 2x12x12: events per pixel over 5 steps"
    assert input_picture(conv_drive, Network.from_spec("288-4", 0)) is None  # a flat input: no map


def test_a_fully_connected_network_shows_its_first_layers_raster():
    network = _lively(Network.from_spec("40-16-3", 0))
    network.layers[0].kill(np.array([3, 9]))
    drive = (np.random.default_rng(1).random((6, 2, 40)) < 0.5).astype(np.float32)
    rec = record(network, drive)
    [picture] = layer_pictures(rec, network, sample=0)
    assert picture.is_raster and picture.name == "hidden1 16"
    np.testing.assert_array_equal(picture.values, rec.spikes[0][:, 0].T)
    assert np.flatnonzero(picture.pruned).tolist() == [3, 9] and not picture.values[[3, 9]].any()
    assert f"({int(rec.spikes[0][:, 0].sum())} spikes; 2 of 16 neurons pruned)" in picture.title


def test_the_figure_has_pruned_panels_one_colour_bar_per_layer_and_the_prediction(conv_network, conv_drive,
                                                                                tmp_path, monkeypatch):
    from evsim.plots import save_figure

    seen = {}

    def keep(fig, path):
        seen["titles"] = [ax.get_title() for ax in fig.axes]
        seen["texts"] = [text.get_text() for ax in fig.axes for text in ax.texts]
        seen["bars"] = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
        seen["blocks"] = [sub._suptitle.get_text() for sub in fig.subfigs]
        seen["title"] = fig._suptitle.get_text()
        save_figure(fig, path)

    monkeypatch.setattr("evsim.feature_maps.save_figure", keep)
    rec = record(conv_network, conv_drive)
    pictures = plot_feature_maps(rec, conv_network, tmp_path / "maps.png", label=2, sample=1, title="toy sample",
                                 drive=conv_drive)
    assert (tmp_path / "maps.png").read_bytes().startswith(PNG)
    assert seen["blocks"] == [p.title for p in pictures] and len(pictures) == 5  # the input, then 4 layers
    assert seen["bars"] == [p.scale for p in pictures]  # one colour scale per layer
    assert seen["titles"].count("filter 1 (pruned)") == 2 and seen["titles"].count("filter 2 (pruned)") == 2
    assert seen["texts"].count("pruned") == 4
    assert seen["title"] == "toy sample\n" + prediction_text(rec.counts[1], 2)


def test_prediction_text():
    assert prediction_text(np.array([1, 5, 3]), 1) == "label 1, network predicts 1 (5 of 9 output spikes): right"
    assert prediction_text(np.zeros(3), 2).endswith("(no output spike; a tie goes to the lowest class): wrong")


def test_record_sample_refuses_a_map_of_another_shape():
    dataset = load_dataset("mnist", DataOptions(time_steps=2))
    with pytest.raises(ConfigError, match=r"network 1x14x56-2C3-AP2-10 does not fit mnist \(1x28x28 = 784 inputs"):
        record_sample(Network.from_spec("1x14x56-2C3-AP2-10", 0), dataset, "test", 0)
    with pytest.raises(ConfigError, match="index 1000 out of range: the test split has 1000 samples"):
        record_sample(Network.from_spec("1x28x28-2C3-AP2-10", 0), dataset, "test", 1000)


# ------------------------------------------------------------------ the command


def _run_folder(path, spec: str, kill: list[int] = (), config: dict | None = None):
    """A run folder as evsim writes it: network.npz, and config.json when given."""
    path.mkdir(parents=True)
    network = _lively(Network.from_spec(spec, 0))
    if kill:
        network.layers[0].kill(list(kill))
    run_id = "0123456789abcdef" if config is not None else None
    save_network(path / "network.npz", network, run_id)
    if config is not None:
        write_json_atomic(path / "config.json", {**TrainConfig(**config).to_dict(), "data_source": "mnist-5k",
                                                 "run_id": run_id, "checkpoints": "all"})
    return path


@pytest.fixture
def drawn(monkeypatch):
    """What the command hands to the figures: plot_feature_maps' arguments and result,
    and the input spikes of the sample's picture."""
    import evsim.cli.data as cli_data

    seen = {}

    def maps(rec, network, path, *args):
        seen.update(rec=rec, network=network, drive=args[3])
        seen["pictures"] = plot_feature_maps(rec, network, path, *args)
        return seen["pictures"]

    def sample(*args):
        seen["spikes"] = args[-1]
        return draw(*args)

    draw = cli_data._draw
    monkeypatch.setattr(cli_data, "plot_feature_maps", maps)
    monkeypatch.setattr(cli_data, "_draw", sample)
    return seen


def test_show_with_a_run_draws_its_layers_next_to_the_sample(tmp_path, drawn):
    folder = _run_folder(tmp_path / "conv", MNIST_CONV, kill=[1])
    out = tmp_path / "pics" / "s.png"
    result = run(["data", "show", "--dataset", "mnist", "--time-steps", "3", "--split", "test", "--index", "4",
                  "--run", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    layers = tmp_path / "pics" / "s-layers.png"
    assert out.read_bytes().startswith(PNG) and layers.read_bytes().startswith(PNG)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out} and {layers} (mnist test[4], label ") and "by " + str(folder) in last
    assert last.endswith("data_source mnist-5k)")
    # The very recording of that sample, encoded as evaluation encodes it (seed 0 without config.json).
    dataset = load_dataset("mnist", DataOptions(time_steps=3))
    rec, drive = record_sample(drawn["network"], dataset, "test", 4, 3, 0)
    np.testing.assert_array_equal(dense_drive(drawn["drive"], 784), dense_drive(drive, 784))
    for picture in drawn["pictures"][1:]:
        layer = drawn["network"].layers[picture.layer]
        np.testing.assert_array_equal(picture.values, rec.spikes[picture.layer][:, 0].sum(axis=0).reshape(
            layer.out_shape))
    conv1 = drawn["pictures"][1]
    assert conv1.name == "conv1 4C3" and conv1.pruned.tolist() == [False, True, False, False]
    assert not conv1.values[1].any() and conv1.values.sum() > 0
    # The sample's picture shows the spikes the network received.
    np.testing.assert_array_equal(drawn["spikes"], dense_drive(drive, 784)[:, 0])
    assert f"predicted {int(np.argmax(rec.counts[0]))} by" in last


def test_a_run_with_its_configuration_is_shown_its_own_data(tmp_path, drawn):
    folder = _run_folder(tmp_path / "run", MNIST_CONV,
                         config=dict(dataset="mnist", data=DataOptions(time_steps=2), time_steps=2, arch=MNIST_CONV,
                                     seed=5, epochs=1, dev_interval=1))
    result = run(["data", "show", "--run", str(folder), "--index", "1", "--out", str(tmp_path / "s.svg")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s-layers.svg").read_bytes().startswith(b"<?xml")
    assert drawn["rec"].time_steps == 2  # the run's T, not the dataset's default
    dataset = load_dataset("mnist", DataOptions(time_steps=2))
    _, drive = record_sample(drawn["network"], dataset, "train", 1, 2, seed=5)  # the run's seed
    np.testing.assert_array_equal(dense_drive(drawn["drive"], 784), dense_drive(drive, 784))
    assert "mnist train[1], label" in result.output and "data_source mnist-5k" in result.output


def test_options_given_with_a_run_change_only_themselves(tmp_path, drawn):
    """--dataset naming the run's dataset keeps the run's data; --time-steps replaces the
    run's T only (the run's other data options, like N-MNIST's crop, stay)."""
    folder = _run_folder(tmp_path / "run", MNIST_CONV,
                         config=dict(dataset="mnist", data=DataOptions(time_steps=2), time_steps=2, arch=MNIST_CONV,
                                     seed=5, epochs=1, dev_interval=1))
    result = run(["data", "show", "--dataset", "mnist", "--run", str(folder), "--out", str(tmp_path / "a.png")])
    assert result.exit_code == 0, result.output
    assert drawn["rec"].time_steps == 2
    result = run(["data", "show", "--time-steps", "4", "--run", str(folder), "--out", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    assert drawn["rec"].time_steps == 4 and "mnist train[0]" in result.output


def test_a_fully_connected_run_shows_a_raster(tmp_path, drawn):
    folder = _run_folder(tmp_path / "fc", "784-20-10", kill=[4])
    result = run(["data", "show", "--dataset", "mnist", "--time-steps", "3", "--run", str(folder),
                  "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    [picture] = drawn["pictures"]
    assert picture.is_raster and picture.values.shape == (20, 3) and picture.pruned[4]
    np.testing.assert_array_equal(picture.values, drawn["rec"].spikes[0][:, 0].T)
    assert (tmp_path / "s-layers.png").read_bytes().startswith(PNG)


def error_after_notice(result) -> str:
    """The one-line error of a command that loaded its data first (whose NOTICE line,
    saying which data stands in, comes before it)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("NOTICE: ")]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("spec, fragment", [
    ("2x32x32-4C3-AP2-10", "network 2x32x32-4C3-AP2-10 does not fit mnist (1x28x28 = 784 inputs, 10 classes)"),
    ("1x14x56-2C3-AP2-10", "network 1x14x56-2C3-AP2-10 does not fit mnist (1x28x28 = 784 inputs"),
])
def test_a_network_that_does_not_fit_the_data_is_one_line(tmp_path, spec, fragment):
    folder = _run_folder(tmp_path / "other", spec)
    line = error_after_notice(run(["data", "show", "--dataset", "mnist", "--time-steps", "2", "--run", str(folder),
                                   "--out", str(tmp_path / "s.png")]))
    assert fragment in line
    assert not list(tmp_path.glob("*.png"))  # nothing written


def test_a_missing_or_corrupt_run_is_one_line(tmp_path):
    line = one_line_error(run(["data", "show", "--dataset", "mnist", "--run", str(tmp_path / "nowhere"),
                               "--out", str(tmp_path / "s.png")]))
    assert "nowhere: no such folder" in line
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "network.npz").write_bytes(b"not a zip file")
    line = one_line_error(run(["data", "show", "--dataset", "mnist", "--run", str(folder),
                               "--out", str(tmp_path / "s.png")]))
    assert "network.npz" in line
    folder = _run_folder(tmp_path / "bad-config", MNIST_CONV)
    (folder / "config.json").write_text(json.dumps({"dataset": 3}))
    line = one_line_error(run(["data", "show", "--run", str(folder), "--out", str(tmp_path / "s.png")]))
    assert "config.json" in line
    assert not list(tmp_path.glob("*.png"))


def test_event_frames_are_drawn_as_the_network_receives_them(tmp_path, drawn):
    data = ["--dataset", "nmnist", "--data-dir", str(make_plain(tmp_path / "data", real_first=False)),
            "--cache-dir", str(tmp_path / "cache"), "--crop", "--time-steps", "5"]
    folder = _run_folder(tmp_path / "nm", "2x32x32-4C3-AP2-10", kill=[2])
    result = run(["data", "show", *data, "--split", "test", "--index", "1", "--run", str(folder),
                  "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    dataset = load_dataset("nmnist", DataOptions(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                                                 crop=True, time_steps=5))
    first = drawn["pictures"][0]
    assert first.panel_titles == ("OFF", "ON") and first.title == "input 2x32x32: events per pixel over 5 steps"
    np.testing.assert_array_equal(first.values, np.asarray(dataset.test.inputs[1], np.float64).sum(axis=0))
    assert drawn["pictures"][1].pruned.tolist() == [False, False, True, False]
    assert (tmp_path / "x-layers.png").read_bytes().startswith(PNG)


def test_a_network_without_a_configuration_needs_the_dataset_named(tmp_path):
    """As eval and profile: a folder evsim import-nir wrote assumes no dataset, not even
    --dataset's default."""
    folder = _run_folder(tmp_path / "imported", MNIST_CONV)
    line = one_line_error(run(["data", "show", "--run", str(folder), "--out", str(tmp_path / "s.png")]))
    assert "has a network but no config.json, so no dataset is assumed" in line and "--dataset NAME" in line
    assert not list(tmp_path.glob("*.png"))


def test_a_network_without_a_configuration_gets_the_crop_training_gives_it(tmp_path, drawn):
    """--crop defaults, for a folder evsim import-nir wrote, as training defaults it: on for
    a network that takes 32x32 maps. eval, profile, inspect and data show run it on the
    cropped frames, as if --crop were typed; --no-crop typed is refused with the hint."""
    data = ["--dataset", "nmnist", "--data-dir", str(make_plain(tmp_path / "data", real_first=False)),
            "--cache-dir", str(tmp_path / "cache"), "--time-steps", "3"]
    folder = _run_folder(tmp_path / "imported", "2x32x32-4C3-AP2-10")
    results = {}
    for crop in ([], ["--crop"]):
        json_path = tmp_path / f"eval{len(crop)}.json"
        result = run(["eval", str(folder), *data, *crop, "--json", str(json_path)])
        assert result.exit_code == 0, result.output
        results[len(crop)] = json.loads(json_path.read_text())
    assert results[0]["predictions"] == results[1]["predictions"] and results[0]["samples"] == 2
    assert results[0]["sops_per_sample"] == results[1]["sops_per_sample"] > 0
    for command in (["profile", str(folder), *data], ["inspect", str(folder), *data],
                    ["data", "show", "--run", str(folder), *data, "--out", str(tmp_path / "s.png")]):
        result = run(command)
        assert result.exit_code == 0, result.output
    assert drawn["pictures"][0].title == "input 2x32x32: events per pixel over 3 steps"
    line = one_line_error(run(["eval", str(folder), *data, "--no-crop"]))
    assert "does not fit nmnist (2x34x34 = 2312 inputs" in line and "add --crop" in line


def test_a_mistyped_data_dir_for_a_network_without_a_configuration_says_so(tmp_path):
    """Not "trained on the data in ...": the folder was typed now, and does not exist."""
    folder = _run_folder(tmp_path / "imported", "2x34x34-4C3-AP2-10")  # fits N-MNIST: only the folder is wrong
    line = one_line_error(run(["eval", str(folder), "--dataset", "nmnist", "--data-dir", str(tmp_path / "typo")]))
    assert f"{tmp_path / 'typo'} (--data-dir) does not exist" in line and "trained on" not in line


@pytest.mark.parametrize("options", [dict(crop=True), dict(denoise_us=2000), dict(crop=True, denoise_us=2000)])
def test_the_frames_times_and_3d_view_use_the_events_as_framed(tmp_path, options):
    """data show timed the frames (and drew the x-y-t view) from the raw recording, not
    the cropped or denoised events the frames count."""
    from evsim.cli.data import _frame_times_ms, _recording_events
    from evsim.data import nmnist
    from evsim.data.events import to_frames

    root = make_plain(tmp_path / "data", real_first=False)
    data = DataOptions(data_dir=root, cache_dir=tmp_path / "cache", time_steps=4, download=False, **options)
    dataset = load_dataset("nmnist", data)
    events = _recording_events(dataset, data, "train", 0)
    raw = nmnist.sample_events(data, "train", 0)[0]
    assert len(events) < len(raw)
    if data.crop:
        assert events["x"].max() < 32 and events["y"].max() < 32
    sensor = (32, 32, 2) if data.crop else (34, 34, 2)
    np.testing.assert_array_equal(to_frames(events, sensor, 4, "events"), dataset.train.inputs[0])
    times = _frame_times_ms(events, 4, "events")
    assert times[0][0] == 0
    assert times[-1][1] == pytest.approx((events["t"][len(events) // 4 * 4 - 1] - events["t"][0]) / 1000)


def test_data_info_gives_the_start_and_end_of_an_arch_and_arch_paper_points_to_it(tmp_path):
    result = run(["data", "info", "--dataset", "mnist"])
    assert result.exit_code == 0, result.output
    assert "arch input   1x28x28 (an --arch for this data begins with it and ends with 10)" in result.output
    line = one_line_error(run(["train", "--dataset", "pokerdvs", "--arch", "paper", "--out", str(tmp_path / "r")]))
    assert "the SD-SNN paper has no network for pokerdvs; give an architecture for its input (e.g. --arch " \
           "CxHxW-15C3-AP2-40C3-AP2-300-CLASSES, with the 'arch input' and classes that evsim data info --dataset " \
           "pokerdvs prints) or --hidden" in line
