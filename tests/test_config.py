"""--config FILE.toml: precedence (command line > file > preset > default), round trip
through RUN_DIR/config.toml, and one-line errors for bad files and bad --resume use."""
import json
import math
import tomllib

import numpy as np
import pytest

from evsim.config import config_toml, options_from_config, to_toml
from evsim.config import preset
from evsim.structure import SDSNNConfig
from evsim.config import auto_dev_interval
from evsim.train import Trainer
from tests.conftest import one_line_error, run
from tests.runs import assert_same_npz, toy_config, toy_dataset

TINY = ["--dataset", "mnist", "--hidden", "16", "--time-steps", "4", "--batch-size", "500", "--no-progress"]


def test_toml_writer_round_trips_through_tomllib():
    values = {"text": 'quote " back\\slash \u00e9 tab\t', "small": 1e-05, "tenth": 0.1, "big": 1e300,
              "neg": -2.5, "count": 7, "flag": True, "off": False, "sizes": [800, 400], "none": None}
    back = tomllib.loads(to_toml(values, header="a comment\nsecond line"))
    assert back == {k: v for k, v in values.items() if v is not None}
    assert math.isinf(tomllib.loads(to_toml({"x": float("inf")}))["x"])


def test_file_values_sit_between_the_command_line_and_the_preset(tmp_path, captured, monkeypatch):
    monkeypatch.setattr("evsim.config.preset", lambda name: {**preset(name), "spine_steps": 7, "regrow_steps": 5,
                                                                 "rho_max": 70.0})
    file = tmp_path / "run.toml"
    file.write_text('dataset = "mnist"\nhidden = [64, 32]\nspine_steps = 9\nlr = 0.002\ndev_interval = "epoch"\n'
                    'epochs = 4\nreset = "subtract"\n')
    assert run(["train", "--config", str(file), "--epochs", "2", "--out", str(tmp_path / "a")]).exit_code == 0
    config = captured[-1]
    assert (config.dataset, config.hidden, config.lr, config.dev_interval, config.epochs) == \
        ("mnist", (64, 32), 0.002, 0, 2)
    assert config.lif.reset == "subtract"
    assert (config.sdsnn.spine_steps, config.sdsnn.regrow_steps, config.sdsnn.rho_max) == (9, 5, 70.0)
    assert (config.sdsnn.rho_init, config.batch_size) == (preset("mnist")["rho_init"], preset("mnist")["batch_size"])
    assert tomllib.loads((tmp_path / "a" / "config.toml").read_text())["epochs"] == 2

    for hidden, expected in (('"800,400"', (800, 400)), ("128", (128,))):
        file.write_text(f"hidden = {hidden}\ndev_interval = 3\n")
        assert run(["train", "--config", str(file), "--spine-steps", "3", "--out", str(tmp_path / hidden)]).exit_code == 0
        assert (captured[-1].hidden, captured[-1].dev_interval, captured[-1].sdsnn.spine_steps) == (expected, 3, 3)


def test_run_folder_config_toml_reproduces_the_run(tmp_path):
    file = tmp_path / "mine.toml"
    file.write_text('dataset = "mnist"\nstructure = "set"\ntarget_sparsity = 0.7\nseed = 3\nepochs = 5\n')
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(["train", "--config", str(file), *TINY, "--epochs", "1", "--out", str(first)]).exit_code == 0
    saved = tomllib.loads((first / "config.toml").read_text())
    assert saved["structure"] == "set" and saved["seed"] == 3 and saved["epochs"] == 1 and "out" not in saved

    result = run(["train", "--config", str(first / "config.toml"), "--no-progress", "--out", str(second)])
    assert result.exit_code == 0, result.output
    configs = [json.loads((d / "config.json").read_text()) for d in (first, second)]
    assert configs[0].pop("out") != configs[1].pop("out") and configs[0].pop("run_id") != configs[1].pop("run_id")
    # the repeat names the source the first run's auto found, so that other data it finds is not taken
    assert [c["data"].pop("source") for c in configs] == ["auto", "emulated"] and saved["source"] == "emulated"
    assert configs[0] == configs[1]
    assert_same_npz(first / "network.npz", second / "network.npz")
    assert_same_npz(first / "checkpoint-latest.npz", second / "checkpoint-latest.npz", source_pinned=True)


def test_saved_options_rebuild_the_same_config(tmp_path, captured):
    assert run(["train", *TINY, "--hidden", "20,10", "--reset", "subtract", "--dev-interval", "6",
                "--out", str(tmp_path / "a")]).exit_code == 0
    assert run(["train", "--config", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b")]).exit_code == 0
    first, second = captured
    assert options_from_config(first) == options_from_config(second)
    assert first.to_dict() | {"out": ""} == second.to_dict() | {"out": ""}


@pytest.mark.parametrize("text,fragment", [
    ("lrr = 0.1", "unknown key 'lrr' (did you mean 'lr'?); valid keys: arch, batch_size, cache_dir, checkpoints, constrain_output, crop"),
    ("batch-size = 10", "unknown key 'batch-size' (did you mean 'batch_size'?)"),
    ("[train]\nlr = 0.1", "unknown key 'train'"),
    ("epochs = 2.5", "epochs = 2.5: expected an integer"),
    ("epochs = true", "epochs = True: expected an integer"),
    ("lr = 0", "lr = 0: must be > 0, got 0"),
    ('optimizer = "rmsprop"', "optimizer = 'rmsprop': must be one of adam, adamw, sgd"),
    ("dev_interval = 0", "must be 'epoch', 'auto' or a positive number of batches"),
    ('hidden = "8,-1"', "hidden = '8,-1'"),
    ("epochs = ", "not valid TOML"),
])
def test_bad_config_files_give_one_line_errors(tmp_path, captured, text, fragment):
    file = tmp_path / "bad.toml"
    file.write_text(text + "\n")
    line = one_line_error(run(["train", "--config", str(file), "--out", str(tmp_path / "run")]))
    assert fragment in line and str(file) in line
    assert captured == []


def test_missing_config_file(tmp_path, captured):
    assert "config file" in one_line_error(run(["train", "--config", str(tmp_path / "none.toml")]))


def test_resume_refuses_changes_and_folders_without_a_checkpoint(tmp_path, captured):
    line = one_line_error(run(["train", "--resume", str(tmp_path), "--lr", "0.1", "--seed", "3", "--no-progress"]))
    assert "drop --lr, --seed" in line and "--no-progress" not in line
    assert "drop --config" in one_line_error(run(["train", "--resume", str(tmp_path), "--config", "x.toml"]))
    line = one_line_error(run(["train", "--resume", str(tmp_path / "nothing")]))
    assert "nothing: no such folder; give the folder of the run to resume" in line
    assert run(["train", *TINY, "--out", str(tmp_path / "run")]).exit_code == 0  # (training faked)
    line = one_line_error(run(["train", "--resume", str(tmp_path / "run")]))
    assert "no checkpoint yet" in line and f"--config {tmp_path / 'run' / 'config.toml'}" in line


def test_a_new_run_never_overwrites_an_existing_one(tmp_path, captured):
    (tmp_path / "checkpoint-latest.npz").write_bytes(b"a run")
    line = one_line_error(run(["train", *TINY, "--out", str(tmp_path)]))
    assert "already holds a training run" in line and f"--resume {tmp_path}" in line
    assert captured == [] and np.frombuffer((tmp_path / "checkpoint-latest.npz").read_bytes(), np.uint8).size == 5


def test_auto_dev_interval_is_ten_steps_per_epoch_saved_resolved():
    """'auto' (every preset's default): 10 development steps per epoch, whatever the
    dataset's size, and the resolved number of batches is what the run saves."""
    assert [auto_dev_interval(n) for n in (1, 9, 10, 40, 600)] == [1, 1, 1, 4, 60]
    trainer = Trainer(toy_config(dev_interval="auto"), toy_dataset(train=1000))  # 20 batches of 50
    assert trainer.config.dev_interval == 2 and trainer.development_steps() == 30
    assert "dev_interval = 2\n" in config_toml(trainer.config)
    assert all(preset(name)["dev_interval"] == "auto" for name in ("mnist", "nmnist", "cifar10", "dvsgesture"))


def test_config_toml_names_the_encoding_the_dataset_chose_in_a_comment(tmp_path):
    """--encoding left to the dataset was missing from config.toml, which says it holds every
    option resolved; as a key it would make the repeat another run (config.json's null)."""
    from evsim.data.base import DataOptions

    Trainer(toy_config(epochs=1, structure="none"), toy_dataset(train=100)).fit(tmp_path / "run", progress=False,
                                                                                echo=lambda line: None)
    text = (tmp_path / "run" / "config.toml").read_text()
    assert "# encoding = \"rate\"  (the dataset's own: --encoding was not given)\n" in text
    assert "encoding" not in tomllib.loads(text)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["encoding"] is None
    given = toy_config(data=DataOptions(encoding="direct"))
    text = config_toml(given, "toy", None, "direct")
    assert tomllib.loads(text)["encoding"] == "direct" and "# encoding" not in text


@pytest.mark.parametrize("epochs,noted", [(1, True), (2, False)])
def test_a_run_too_short_for_pruning_says_so(epochs, noted):
    """SD-SNN prunes from step 2K; a run with fewer development steps says that only the
    constraint will run (K = 9 here: pruning from step 18; 10 steps per epoch)."""
    lines = []
    config = toy_config(dev_interval="auto", epochs=epochs, sdsnn=SDSNNConfig(spine_steps=9))
    Trainer(config, toy_dataset(train=1000)).fit(None, progress=False, echo=lines.append)
    note = [line for line in lines if line.startswith("NOTE: SD-SNN prunes")]
    assert bool(note) == noted
    if noted:
        assert "from development step 18 (2 x --spine-steps) but this run has 10:" in note[0]


@pytest.mark.parametrize("structure", ["sdsnn", "magnitude", "set"])
def test_a_run_with_no_development_step_says_so_for_every_structure(structure):
    """An interval longer than the whole run (8 batches here): not "only the constraint
    will run" (nothing will), and the baselines say it too."""
    lines = []
    config = toy_config(structure=structure, dev_interval=1000, epochs=1,
                        **({} if structure == "sdsnn" else {"sdsnn": SDSNNConfig(), "target_sparsity": 0.5}))
    Trainer(config, toy_dataset()).fit(None, progress=False, echo=lines.append)
    notes = [line for line in lines if line.startswith("NOTE:")]
    assert notes == ["NOTE: --dev-interval 1000 is longer than the run's 8 batches: no development step, so the "
                     "structure never develops; add epochs or lower --dev-interval"]


def test_development_steps_count_across_epochs():
    """Steps fire on batches_seen % dev_interval across epochs: 25 batches per epoch every 2
    make 25 steps in 2 epochs (not 2 x 12), and an interval longer than an epoch still fires."""
    for interval, epochs, expected in ((2, 2, 25), (30, 2, 1)):
        trainer = Trainer(toy_config(dev_interval=interval, epochs=epochs), toy_dataset(train=1250))
        assert trainer.development_steps() == expected
        trainer.fit(None, progress=False, echo=lambda line: None)
        assert sum(row["type"] == "development" for row in trainer.metrics) == expected


def test_every_option_is_declared_once_and_everything_derives_from_it():
    """The click options of evsim train, the TOML keys, the presets and TrainConfig's
    defaults all come from evsim.config.OPTIONS."""
    from evsim.cli.train import train as train_command
    from evsim.config import CONFIG_OPTIONS, DEFAULTS, OPTIONS, TrainConfig, options_from_config
    from evsim.presets import PRESETS

    click_names = {param.name for param in train_command.params} - {"config_file", "resume_dir"}
    assert click_names == set(DEFAULTS) == {option.name for option in OPTIONS}
    assert all(set(values) <= set(DEFAULTS) for values in PRESETS.values())
    from_config = options_from_config(TrainConfig())
    assert set(from_config) == {option.name for option in CONFIG_OPTIONS}
    for option in CONFIG_OPTIONS:
        default = list(option.default) if isinstance(option.default, tuple) else option.default
        assert from_config[option.name] == default, option.name


def test_a_saved_configuration_from_a_bigger_machine_or_an_older_evsim_loads_here(tmp_path):
    import numba

    from evsim.checkpoint import stored_config
    from evsim.config import TrainConfig

    saved = TrainConfig(dev_interval=4).to_dict()  # saved runs hold the resolved interval
    saved["threads"] = numba.config.NUMBA_NUM_THREADS + 62
    for key in ("filter_rho_init", "filter_rho_decay", "kernel_q_base", "kernel_regrow_steps", "constrain_output",
                "excess_per_epoch"):
        del saved["sdsnn"][key]
    config = stored_config(saved, tmp_path / "config.json")
    assert config.threads == numba.config.NUMBA_NUM_THREADS
    assert config.sdsnn.constrain_output is False and config.sdsnn.filter_rho_init == 5.0
    assert config.sdsnn.excess_per_epoch is False  # those runs widened ranges per interval


def test_a_warm_up_as_long_as_the_run_is_refused_in_python_too():
    from evsim.config import TrainConfig
    from evsim.errors import ConfigError

    with pytest.raises(ConfigError, match="--warmup-epochs 5 is not shorter than --epochs 2: the learning rate would "
                                          "never reach --lr"):
        TrainConfig(dataset="mnist", schedule="cosine", warmup_epochs=5, epochs=2).validate()
    TrainConfig(dataset="mnist", schedule="cosine", warmup_epochs=1, epochs=2).validate()


# ---------------------------------------------------------------- the configuration audit
def test_config_toml_holds_any_utf8_path_and_the_source_the_run_found(tmp_path):
    import tomllib

    from evsim.config import TrainConfig, _path, config_toml
    from evsim.data.base import DataOptions
    from evsim.errors import ConfigError

    cache = tmp_path / "cache\U0001F600"
    config = TrainConfig(dataset="mnist", data=DataOptions(cache_dir=cache))
    values = tomllib.loads(config_toml(config, "mnist-5k"))  # JSON's surrogate escapes were no TOML
    assert values["cache_dir"] == str(cache) and values["source"] == "emulated"
    assert tomllib.loads(config_toml(config, "real"))["source"] == "real"
    forced = TrainConfig(dataset="mnist", data=DataOptions(source="real"))
    assert tomllib.loads(config_toml(forced, "real"))["source"] == "real"
    with pytest.raises(ConfigError, match="must be a path of UTF-8 characters"):
        _path(None, "data\udcff")


def test_config_files_a_sweep_would_read_otherwise_are_refused_alike(tmp_path):
    import datetime

    from evsim.config import _toml_value, options_from_file
    from evsim.errors import ConfigError

    (tmp_path / "date.toml").write_text(f"cache_dir = {_toml_value(datetime.date(1979, 5, 27))}\n")
    with pytest.raises(ConfigError, match="cache_dir = datetime.date\\(1979, 5, 27\\): expected"):
        options_from_file(tmp_path / "date.toml")
    (tmp_path / "bom.toml").write_bytes("\ufeffepochs = 3\n".encode())
    assert options_from_file(tmp_path / "bom.toml") == {"epochs": 3}
    (tmp_path / "empty.toml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="empty.toml: sets no option \\(empty, or only comments\\)"):
        options_from_file(tmp_path / "empty.toml")
    (tmp_path / "threads.toml").write_text("threads = 100000\n")
    with pytest.raises(ConfigError, match="got 100000; this machine has .* \\(NUMBA_NUM_THREADS\\), and a run "
                                          "made with more cores"):
        options_from_file(tmp_path / "threads.toml")


def test_an_empty_config_path_asks_for_a_file_and_a_34x34_network_on_cropped_frames_names_no_crop():
    from evsim.data.nmnist import crop_hint

    line = one_line_error(run(["train", "--config", ""]))
    assert "(give the path of a file)" in line and "give . for that" not in line
    assert "give --no-crop for N-MNIST's 34x34 frames" in crop_hint("nmnist", (2, 32, 32), 2 * 34 * 34)


def test_a_file_from_a_machine_with_more_cores_runs_here_with_threads_given(tmp_path):
    """The file's threads = 99 was checked before --threads on the command line beat it."""
    import numba

    file = tmp_path / "big.toml"
    file.write_text('dataset = "mnist"\nthreads = 99\nepochs = 1\n')
    line = one_line_error(run(["train", "--config", str(file), *TINY, "--out", str(tmp_path / "a")]))
    high = numba.config.NUMBA_NUM_THREADS
    assert f"threads = 99: must be in 0..{high}" in line and f"(give --threads {high} to run it here" in line
    assert not (tmp_path / "a").exists()
    result = run(["train", "--config", str(file), *TINY, "--threads", "1", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["threads"] == 1
