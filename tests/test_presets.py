"""`evsim train` picks each dataset's preset; DVS-Gesture trains end to end on small generated files."""
import json

import pytest
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.config import preset
from evsim.errors import ConfigError
from tests.test_data_dvsgesture import make_gestures


def test_dvsgesture_trains_with_its_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "cache"))
    make_gestures(tmp_path / "data")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", "dvsgesture", "--data-dir", str(tmp_path / "data"),
                                       "--downsample", "16", "--epochs", "2", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    expected = preset("dvsgesture")
    assert (config["time_steps"], config["batch_size"], config["hidden"]) == (64, 16, [512])
    assert (config["sdsnn"]["rho_init"], config["sdsnn"]["rho_max"]) == (expected["rho_init"], expected["rho_max"])
    assert config["structure"] == "sdsnn" and config["data_source"] == "real"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "dvsgesture" and summary["epochs"] == 2
    assert summary["structure"]["development_steps"] == 2  # 'auto': 10 per epoch, but one batch per epoch here
    assert config["dev_interval"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # The paper's network over the downsampled frames; conv2 (layer 2) and fc1 (layer 4) develop.
    assert config["arch"] == "2x16x16-15C3-AP2-40C3-AP2-300-11"
    assert [[(layer["layer"], layer["rho"]) for layer in r["layers"]] for r in rows if r["type"] == "development"] \
        == [[(2, 5.0), (4, 60.0)]] * 2


def test_mnist_and_nmnist_presets_hold_the_papers_pruning_rates():
    assert preset("mnist")["rho_init"] == 35.0
    assert preset("nmnist")["rho_init"] == 45.0
    assert preset("dvsgesture")["rho_init"] == 60.0


def test_every_preset_runs_the_whole_sdsnn_schedule():
    """With 'auto' (10 development steps per epoch) each preset's default epochs reach the
    step where the regeneration percentile is capped, past pruning (step 2K) and the fast
    neurotrophic phase: once per epoch, 15 epochs never even reached pruning."""
    from evsim.structure import SDSNNConfig
    from evsim.structure.sdsnn import regrowth_percentile
    from evsim.config import AUTO, AUTO_STEPS_PER_EPOCH

    cfg = SDSNNConfig()
    capped = next(s for s in range(cfg.prune_start, 1000) if regrowth_percentile(s, cfg) == cfg.q_max)
    assert capped > cfg.prune_start + cfg.alpha_fast_steps
    for name in ("mnist", "nmnist", "cifar10", "dvsgesture"):
        values = preset(name)
        assert values["dev_interval"] == AUTO and values["structure"] == "sdsnn"
        assert values["epochs"] * AUTO_STEPS_PER_EPOCH >= capped, name


def test_the_preset_of_an_unknown_dataset_is_refused_naming_the_closest():
    assert preset("shd")["dataset"] == "shd" and preset("nmnist")["epochs"] == 25
    with pytest.raises(ConfigError, match=r"did you mean 'nmnist'\?\), got nmnsit"):
        preset("nmnsit")
