"""The run store: a run is trained once, found again by its key, resumed when half-finished."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import fundus_lib.runs as runs_module
import fundus_lib.training.loop as train_module
from fundus_lib.config import load_params, run_config
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.paths import project_root
from fundus_lib.runs import MissingRun, get_run, list_runs, run_data, run_key
from fundus_lib.training.loop import predict


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def params():
    return load_params(project_root() / "params" / "smoke.yaml", {"runtime": {"loader_workers": 0}})


def test_a_run_is_trained_once_and_then_read_from_the_store(params, store, monkeypatch):
    config = run_config(params, params.baselines[0])
    run = get_run(params, config, progress=False)
    assert run.root.parent == store and (run.root / "record.json").exists()
    monkeypatch.setattr(runs_module, "fit", lambda *args, **kwargs: pytest.fail("trained again"))
    again = get_run(params, config, train=False)
    assert again.key == run.key and again.record == run.record


def test_the_record_holds_metrics_confusions_and_predictions(params, store):
    run = get_run(params, run_config(params, params.baselines[0]), progress=False)
    data = run_data(params, run.config, progress=False)
    for split in ("valid", "test"):
        assert run.confusion(split).sum() == len(data.rows(split))
        assert set(run.metrics(split)) == {"accuracy", "balanced_accuracy", "kappa", "loss"}
    assert len(run.history) == run.record["epochs_run"] == run.config.epochs
    predictions = run.predictions()
    assert len(predictions) == len(data.rows("valid")) + len(data.rows("test"))
    test = predictions[predictions["split"] == "test"]
    assert np.mean(test["prediction"] == test["level"]) == pytest.approx(run.metrics("test")["accuracy"])
    # the stored best model reproduces the stored probabilities
    probabilities = predict(run.load_model(), FundusDataset(data, "test"), torch.device("cpu"))
    assert np.allclose(probabilities, test[[f"p{grade}" for grade in range(5)]].to_numpy(), atol=1e-5)


def test_keys_change_with_the_configuration_and_the_data(params):
    config = run_config(params, params.baselines[0])
    assert run_key(config, "a" * 40) == run_key(config, "a" * 40)
    assert run_key(config, "a" * 40) != run_key(config.model_copy(update={"lr": 0.01}), "a" * 40)
    assert run_key(config, "a" * 40) != run_key(config, "b" * 40)


def test_a_missing_run_is_not_trained_when_training_is_not_allowed(params, store):
    with pytest.raises(MissingRun, match="not in the store"):
        get_run(params, run_config(params, params.baselines[0], lr=0.0123), train=False)


def test_a_half_finished_run_resumes(params, store, monkeypatch):
    config = run_config(params, params.baselines[0], epochs=3)
    original, calls = train_module._train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_run(params, config, progress=False)
    assert list_runs()["status"].tolist() == ["unfinished"]
    monkeypatch.setattr(train_module, "_train_epoch", original)
    resumed = get_run(params, config, progress=False)
    assert list_runs()["status"].tolist() == ["finished"]
    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(store.parent / "straight"))
    straight = get_run(params, config, progress=False)
    pd.testing.assert_frame_equal(resumed.history, straight.history)
    assert resumed.metrics("test") == straight.metrics("test")


def test_broken_run_folders_are_named_and_the_rest_listed(params, store):
    import shutil

    from fundus_lib.runs import Run, RunStoreError

    run = get_run(params, run_config(params, params.baselines[0]), progress=False)
    for name in ("cut-record", "no-weights"):
        shutil.copytree(run.root, store / name)
    (store / "cut-record" / "record.json").write_text(run.root.joinpath("record.json").read_text()[:100])
    (store / "no-weights" / "best.pt").unlink()
    with pytest.raises(RunStoreError, match=r"cut-record/record.json is unreadable or corrupt"):
        Run.load(store / "cut-record")
    with pytest.raises(
        RunStoreError, match=r"no-weights/best.pt is missing although record.json says the run finished"
    ):
        Run.load(store / "no-weights")
    listed = list_runs().set_index("key")["status"]
    assert listed[run.key] == "finished"
    assert listed["cut-record"].startswith("broken: ") and "record.json" in listed["cut-record"]
    assert listed["no-weights"].startswith("broken: ") and "best.pt is missing" in listed["no-weights"]
    (run.root / "best.pt").unlink()  # a record without its weights is not a finished run
    with pytest.raises(RunStoreError, match="best.pt is missing"):
        get_run(params, run.config, progress=False)


def test_another_runs_record_copied_in_is_refused(params, store):
    import shutil

    from fundus_lib.runs import Run, RunStoreError

    run = get_run(params, run_config(params, params.baselines[0]), progress=False)
    other = get_run(params, run_config(params, params.baselines[0]).model_copy(update={"epochs": 1}), progress=False)
    shutil.copy(run.root / "record.json", other.root / "record.json")
    refusal = rf"is the record of run '{run.key}', not of this folder's run '{other.key}'"
    with pytest.raises(RunStoreError, match=refusal):
        Run.load(other.root)
    with pytest.raises(RunStoreError, match="copied from another run folder"):
        get_run(params, other.config, progress=False)
    assert list_runs().set_index("key").at[other.key, "status"].startswith("broken: ")
    assert Run.load(run.root).key == run.key


def test_a_store_that_cannot_be_written_is_one_line(params, store, monkeypatch):
    from fundus_lib.runs import RunStoreError

    def read_only(path, data, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(runs_module, "write_atomic", read_only)
    with pytest.raises(
        RunStoreError, match=r"cannot write to the run store .* \(Permission denied\): point FUNDUS_RUNS_DIR"
    ):
        get_run(params, run_config(params, params.baselines[0], lr=0.0321), progress=False)


def test_a_batch_larger_than_the_training_set_names_the_run(params, store, tmp_path, capsys):
    from fundus_lib.cli import main

    params_file = tmp_path / "big-batch.yaml"
    params_file.write_text(
        (project_root() / "params" / "smoke.yaml")
        .read_text()
        .replace(
            "baselines:\n  - {model: small-cnn, image_size: 48, batch_size: 8}",
            "baselines:\n  - {model: small-cnn, image_size: 48, batch_size: 4000}",
        )
    )
    assert "batch_size: 4000" in params_file.read_text()
    assert main(["train", str(params_file), "--only", "02 baselines", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "02 baselines" in err
    assert "fewer than one batch of 4000: lower this row's batch_size" in err


def test_the_record_is_fsynced_before_its_rename(params, store, monkeypatch):
    import os

    import fundus_lib.files as files

    events = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    replace = files.os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (events.append(("replace", str(dst))), replace(src, dst)))
    run = get_run(params, run_config(params, params.baselines[0], lr=0.0011), progress=False)
    rename = events.index(("replace", str(run.root / "record.json")))
    assert events[rename - 1][0] == "fsync" and events[rename - 1][1].endswith(".tmp")
    assert events[rename + 1] == ("fsync", str(run.root))


def test_another_imagenet_weight_file_is_another_run(params, tmp_path):
    from fundus_lib.runs import weights_sha1
    from fundus_lib.weights import WeightsError

    config = run_config(params, params.baselines[0], model="resnet18", pretrained=True)
    runtime = params.runtime.model_copy(update={"weights_dir": tmp_path})
    weights = tmp_path / "resnet18-f37072fd.pth"
    weights.write_bytes(b"first")
    first = run_key(config, "a" * 40, weights_sha1(config, runtime))
    weights.write_bytes(b"other")  # same name, same size, other weights
    assert run_key(config, "a" * 40, weights_sha1(config, runtime)) != first
    (tmp_path / "resnet18-zzzzzzzz.pth").write_bytes(b"second")
    with pytest.raises(WeightsError, match="2 ImageNet weight files for resnet18 .*: keep the one to use"):
        weights_sha1(config, runtime)
    assert weights_sha1(run_config(params, params.baselines[0]), runtime) is None


def test_a_threshold_readout_run_reports_and_attacks_the_same_grades(params, store):
    """Thresholds fitted on valid; the test predictions, the metrics and the loaded model's argmax
    all follow them."""
    from fundus_lib.metrics import confusion
    from fundus_lib.training.readout import expected_grade, threshold_grades

    run = get_run(params, run_config(params, params.baselines[0], readout="thresholds"), progress=False)
    thresholds = run.record["thresholds"]
    assert len(thresholds) == 4 and thresholds == sorted(thresholds)
    table = run.predictions().query("split == 'test'")
    probabilities = table.filter(regex=r"^p\d$").to_numpy()
    assert (table["prediction"].to_numpy() == threshold_grades(expected_grade(probabilities), thresholds)).all()
    assert (run.confusion("test") == confusion(table["level"], table["prediction"])).all()
    data = run_data(params, run.config, progress=False)
    images = torch.stack([image for image, _ in FundusDataset(data, "test")])
    assert (run.load_model()(images).argmax(dim=1).numpy() == table["prediction"].to_numpy()).all()
