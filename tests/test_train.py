"""The trainer: batches, determinism, resume after an interruption, checkpoints, early stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fundus_lib.config import RunConfig, load_params, run_config
from fundus_lib.data.dataset import FundusDataset
from fundus_lib.data.pipeline import prepare_data
from fundus_lib.models import create_model
from fundus_lib.paths import project_root
from fundus_lib.training.loop import CHECKPOINT, CheckpointError, EpochBatches, Processes, fit, load_weights, predict
from fundus_lib.weights import pretrained_weights_file

SMOKE = project_root() / "params" / "smoke.yaml"


@pytest.fixture(scope="module")
def params():
    return load_params(SMOKE, {"train": {"epochs": 4}, "runtime": {"loader_workers": 0}})


@pytest.fixture(scope="module")
def data(params):
    return prepare_data(params, progress=False)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def same_weights(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_epoch_batches_are_seeded_full_and_cover_each_image_once():
    batches = list(EpochBatches(np.arange(103), 10, seed=5))
    assert len(batches) == 10 and all(len(batch) == 10 for batch in batches)
    flat = [index for batch in batches for index in batch]
    assert len(set(flat)) == 100 and max(flat) < 103
    assert batches == list(EpochBatches(np.arange(103), 10, seed=5))
    assert batches != list(EpochBatches(np.arange(103), 10, seed=6))


def test_processes_share_each_batch_like_one_process():
    whole = list(EpochBatches(np.arange(64), 8, seed=1))
    parts = [list(EpochBatches(np.arange(64), 8, seed=1, processes=Processes(rank, 2))) for rank in range(2)]
    for batch, first, second in zip(whole, *parts):
        assert first + second == batch and len(first) == len(second) == 4


def test_uneven_batches_are_shared_within_one_image():
    whole = list(EpochBatches(np.arange(64), 8, seed=2))
    parts = [list(EpochBatches(np.arange(64), 8, seed=2, processes=Processes(rank, 3))) for rank in range(3)]
    for batch, *slices in zip(whole, *parts):
        assert sum(slices, []) == batch and {len(part) for part in slices} <= {2, 3}


def test_batch_sizes_are_checked():
    with pytest.raises(ValueError, match="smaller than"):
        EpochBatches(np.arange(64), 2, 0, Processes(0, 3))
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatches(np.arange(5), 8, 0)


def test_training_is_deterministic_and_learns_the_history(params, data, tmp_path):
    config = run_config(params, params.baselines[0])
    fit(config, data, tmp_path / "a", params.runtime, progress=False)
    fit(config, data, tmp_path / "b", params.runtime, progress=False)
    assert same_weights(weights(tmp_path / "a" / CHECKPOINT), weights(tmp_path / "b" / CHECKPOINT))
    saved = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)
    assert [row["epoch"] for row in saved["history"]] == [1, 2, 3, 4]
    assert 1 <= saved["best_epoch"] <= 4 and (tmp_path / "a" / "best.pt").exists()


_INTERRUPTED = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    import fundus_lib.training.loop as train
    from fundus_lib.config import load_params, run_config
    from fundus_lib.data.pipeline import prepare_data

    params = load_params(sys.argv[1], {"train": {"epochs": 4}, "runtime": {"loader_workers": 0}})
    folder, epochs_done, train_epoch = Path(sys.argv[2]), [], train._train_epoch

    def held_at_epoch_3(*args, **kwargs):  # epoch 2's checkpoint is on disk: wait here for the signal
        if len(epochs_done) == 2:
            (folder / "holding").touch()
            while True:
                time.sleep(1)
        epochs_done.append(1)
        return train_epoch(*args, **kwargs)

    train._train_epoch = held_at_epoch_3
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ctrl-c, even if started where SIGINT is ignored
    train.fit(run_config(params, params.baselines[0]), prepare_data(params, progress=False), folder, params.runtime,
              progress=False)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill -9", "ctrl-c"])
def test_an_interrupted_run_resumes_to_the_same_result(params, data, tmp_path, how):
    folder = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, str(SMOKE), str(folder)], env=os.environ.copy())
    while not (folder / "holding").exists():  # the run holds in epoch 3 until the signal: no race with the clock
        assert process.poll() is None, "the run ended before it reached epoch 3"
        time.sleep(0.05)
    process.send_signal(how)
    process.wait()
    assert torch.load(folder / CHECKPOINT, weights_only=True)["epoch"] == 2
    config = run_config(params, params.baselines[0])
    fit(config, data, folder, params.runtime, progress=False)
    fit(config, data, tmp_path / "straight", params.runtime, progress=False)
    resumed, straight = (torch.load(path / CHECKPOINT, weights_only=True) for path in (folder, tmp_path / "straight"))
    assert same_weights(resumed["model"], straight["model"])
    pd.testing.assert_frame_equal(pd.DataFrame(resumed["history"]), pd.DataFrame(straight["history"]))
    assert same_weights(weights(folder / "best.pt"), weights(tmp_path / "straight" / "best.pt"))


def test_a_checkpoint_of_another_configuration_is_refused(params, data, tmp_path):
    config = run_config(params, params.baselines[0], epochs=1)
    fit(config, data, tmp_path, params.runtime, progress=False)
    with pytest.raises(CheckpointError, match="another run configuration"):
        fit(config.model_copy(update={"lr": 0.5}), data, tmp_path, params.runtime, progress=False)
    with pytest.raises(CheckpointError, match="not a checkpoint of this model"):
        load_weights(create_model("resnet18"), tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="number of classes"):
        load_weights(create_model("small-cnn", num_classes=3), tmp_path / CHECKPOINT)


def test_early_stopping_stops_after_patience(params, data, tmp_path):
    config = run_config(params, params.baselines[0], epochs=10, patience=1, lr=1e-9, select_on="loss")
    fit(config, data, tmp_path, params.runtime, progress=False)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert saved["epoch"] < 10 and saved["stale_epochs"] >= 1


def test_predict_gives_probabilities_and_restores_the_mode(data):
    model = create_model("small-cnn").train()
    probabilities = predict(model, FundusDataset(data, "valid"), torch.device("cpu"), batch_size=7)
    assert probabilities.shape == (len(data.rows("valid")), 5)
    assert torch.allclose(torch.tensor(probabilities.sum(axis=1)), torch.ones(len(probabilities)), atol=1e-5)
    assert model.training


def test_adversarial_training_runs_and_differs_from_clean_training(params, data, tmp_path):
    from fundus_lib.config import AdversarialTraining

    clean = run_config(params, params.baselines[0], epochs=1)
    robust = clean.model_copy(update={"adversarial": AdversarialTraining(eps_255=4, steps=2)})
    fit(clean, data, tmp_path / "clean", params.runtime, progress=False)
    fit(robust, data, tmp_path / "robust", params.runtime, progress=False)
    assert not same_weights(weights(tmp_path / "clean" / CHECKPOINT), weights(tmp_path / "robust" / CHECKPOINT))
    history = torch.load(tmp_path / "robust" / CHECKPOINT, weights_only=True)["history"]
    assert len(history) == 1 and history[0]["train_loss"] > 0


def test_fine_tuning_starts_from_the_given_weights(params, data, tmp_path):
    config = run_config(params, params.baselines[0], epochs=1)
    fit(config, data, tmp_path / "first", params.runtime, progress=False)
    tuned = config.model_copy(update={"lr": 1e-12, "init_from": config})  # a step this small changes nothing visible
    fit(tuned, data, tmp_path / "tuned", params.runtime, progress=False, initial_weights=tmp_path / "first" / "best.pt")
    start, end = weights(tmp_path / "first" / "best.pt"), weights(tmp_path / "tuned" / CHECKPOINT)
    assert all(
        torch.allclose(start[key].float(), end[key].float(), atol=1e-6)
        for key in start
        if "running" not in key and "num_batches" not in key
    )


@pytest.mark.parametrize("on_the_fly", [False, True], ids=["precomputed", "on the fly"])
def test_training_on_corrupted_images(params, data, tmp_path, on_the_fly):
    from fundus_lib.config import CorruptionTraining
    from fundus_lib.training.loop import training_set

    config = run_config(
        params,
        params.baselines[0],
        epochs=1,
        augment=None,
        corruption=CorruptionTraining(levels=(2, 3), on_the_fly=on_the_fly),
    )
    training = training_set(config, data, progress=False)
    torch.manual_seed(0)
    image, label = training.dataset[0]
    clean, _ = training_set(run_config(params, params.baselines[0], augment=None), data, progress=False).dataset[0]
    assert image.shape == clean.shape and not torch.equal(image, clean)
    fit(config, data, tmp_path, params.runtime, progress=False)
    assert (tmp_path / CHECKPOINT).exists()


class _Foreign:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.write_bytes(b""), "is empty, truncated or corrupt"),
        (lambda path: path.write_bytes(path.read_bytes()[:5000]), "is empty, truncated or corrupt"),
        (lambda path: path.write_bytes(b"garbage " * 100), "is not a checkpoint this project wrote"),
        (lambda path: torch.save({"model": _Foreign()}, path), "is not a checkpoint this project wrote"),
        (lambda path: torch.save(torch.zeros(3), path), "is not a checkpoint this project wrote"),
        (lambda path: torch.save({"model": {}}, path), "is not a training checkpoint of this project"),
    ],
    ids=["empty", "truncated", "garbage", "foreign pickle", "a tensor", "weights only"],
)
def test_a_damaged_checkpoint_is_named_with_what_to_do(params, data, tmp_path, damage, message):
    config = run_config(params, params.baselines[0], epochs=1)
    fit(config, data, tmp_path, params.runtime, progress=False)
    for name in (CHECKPOINT, "best.pt"):
        damage(tmp_path / name)
    with pytest.raises(CheckpointError) as error:
        fit(config.model_copy(update={"epochs": 2}), data, tmp_path, params.runtime, progress=False)
    assert str(tmp_path / CHECKPOINT) in str(error.value) and message in str(error.value)
    assert f"delete the run folder {tmp_path}" in str(error.value) and "weights_only" not in str(error.value)
    if message != "is not a training checkpoint of this project":
        with pytest.raises(CheckpointError, match=message):
            load_weights(create_model("small-cnn"), tmp_path / "best.pt")


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_temporary(params, data, tmp_path, monkeypatch):
    """torch's raw "enforce fail at inline_container.cc" left a half-written temporary that kept the disk full."""
    import shutil

    import fundus_lib.files as files
    from fundus_lib.files import DiskFullError

    usage = shutil.disk_usage(tmp_path)
    save = torch.save

    def disk_fills_up(state, handle):
        handle.write(b"half a checkpoint")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2048 vs 1984")

    monkeypatch.setattr(torch, "save", disk_fills_up)
    config = run_config(params, params.baselines[0], epochs=1)
    with pytest.raises(DiskFullError, match=rf"cannot write {tmp_path}/best.pt: the disk holding {tmp_path} is full"):
        fit(config, data, tmp_path, params.runtime, progress=False)
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFullError, match=r"the checkpoint best.pt needs [\d,]+ bytes in .* but only 0 are free"):
        fit(config, data, tmp_path, params.runtime, progress=False)  # checked before writing
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage)
    (tmp_path / ".last.pt.999999999.tmp").write_bytes(b"left by a killed run")
    fit(config, data, tmp_path, params.runtime, progress=False)
    assert not (tmp_path / ".last.pt.999999999.tmp").exists() and (tmp_path / CHECKPOINT).exists()


def test_checkpoints_are_fsynced_before_their_rename(params, data, tmp_path, monkeypatch):
    import fundus_lib.files as files

    events = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    replace = files.os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (events.append(("replace", str(src))), replace(src, dst)))
    fit(run_config(params, params.baselines[0], epochs=1), data, tmp_path, params.runtime, progress=False)
    renames = [index for index, event in enumerate(events) if event[0] == "replace"]
    assert len(renames) == 2  # best.pt, last.pt
    assert all(events[index - 1] == ("fsync", events[index][1]) for index in renames)


def test_balanced_epochs_draw_class_balanced_samples_first(params, data):
    from fundus_lib.training.loop import training_set

    config = run_config(params, params.baselines[0], balanced_epochs=2)
    training = training_set(config, data, progress=False)
    labels = training.dataset.labels
    for epoch in (0, 1):
        drawn = labels[training.positions(epoch)]
        assert len(drawn) == len(labels)
        assert np.bincount(drawn, minlength=5).std() < np.bincount(labels, minlength=5).std() / 2, epoch
    assert (training.positions(2) == np.arange(len(labels))).all()
    assert not (training.positions(0) == training.positions(1)).all()  # each epoch its own draw


def test_shuffled_labels_keep_the_grades_but_not_their_images(params, data):
    """The data-randomisation run trains on the same grades in a seeded order that no longer
    follows the images; the images themselves are the train split's, unchanged."""
    from fundus_lib.training.loop import training_set

    config = run_config(params, params.baselines[0], augment=None)
    true = training_set(config, data, progress=False)
    shuffled = training_set(config.model_copy(update={"shuffled_labels": True}), data, progress=False)
    again = training_set(config.model_copy(update={"shuffled_labels": True}), data, progress=False)
    assert np.array_equal(np.sort(shuffled.dataset.labels), np.sort(true.dataset.labels))
    assert (shuffled.dataset.labels != true.dataset.labels).mean() > 0.3
    assert np.array_equal(shuffled.dataset.labels, again.dataset.labels)
    assert np.array_equal(shuffled.class_counts, true.class_counts)
    assert torch.equal(shuffled.dataset[0][0], true.dataset[0][0])
    assert config.identity() == config.model_copy(update={"shuffled_labels": False}).identity()
    assert "shuffled_labels" in config.model_copy(update={"shuffled_labels": True}).identity()


def test_a_field_added_later_keeps_the_runs_of_a_store():
    """balanced_epochs came after the store's first format: at 0 it leaves the run key unchanged."""
    from fundus_lib.runs import run_key

    params = load_params(SMOKE)
    config = run_config(params, params.baselines[0])
    assert "balanced_epochs" not in config.identity()
    assert run_key(config, "m") != run_key(config.model_copy(update={"balanced_epochs": 1}), "m")


def test_bfloat16_on_the_cpu_trains_in_bfloat16(params, data, tmp_path):
    from fundus_lib.training.loop import training_autocast

    runtime = params.runtime.model_copy(update={"cpu_bfloat16": True})
    with training_autocast(torch.device("cpu"), runtime):
        assert torch.nn.Linear(4, 2)(torch.rand(3, 4)).dtype == torch.bfloat16
    with training_autocast(torch.device("cpu"), params.runtime):
        assert torch.nn.Linear(4, 2)(torch.rand(3, 4)).dtype == torch.float32
    config = run_config(params, params.baselines[0], epochs=1)
    fit(config, data, tmp_path, runtime, progress=False)
    history = torch.load(tmp_path / CHECKPOINT, weights_only=True)["history"]
    assert np.isfinite(history[0]["train_loss"])


def test_cpu_bfloat16_auto_follows_the_cpus_native_bfloat16_flags(params, tmp_path):
    from fundus_lib.training.loop import uses_cpu_bfloat16

    auto = params.runtime.model_copy(update={"cpu_bfloat16": "auto"})
    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text("processor : 0\nflags : fpu sse avx512f amx_bf16 amx_tile\n")
    plain.write_text("processor : 0\nflags : fpu sse avx2 avx512f\n")
    assert uses_cpu_bfloat16(auto, amx) and not uses_cpu_bfloat16(auto, plain)
    assert not uses_cpu_bfloat16(auto, tmp_path / "missing")
    assert uses_cpu_bfloat16(params.runtime.model_copy(update={"cpu_bfloat16": True}), plain)
    assert not uses_cpu_bfloat16(params.runtime, amx)


def test_decision_attack_starts_from_a_test_image_the_model_grades_otherwise(data):
    from fundus_lib.evaluation.samples import other_grade_rows

    test = data.rows("test")
    rows = test[:20]
    grades = np.random.default_rng(1).integers(0, 5, len(test))  # a model's grades of the test images
    starts = other_grade_rows(data, rows, grades, seed=0)
    grade_of = dict(zip(test, grades))
    assert set(starts) <= set(test)
    assert all(grade_of[start] != level for start, level in zip(starts, data.manifest.loc[rows, "level"]))
    assert (starts == other_grade_rows(data, rows, grades, seed=0)).all()
    zeros = test[data.manifest.loc[test, "level"].to_numpy() == 0]
    assert (other_grade_rows(data, zeros, np.zeros(len(test), int), seed=0) == zeros).all()  # none graded otherwise


@pytest.mark.parametrize("loss", ["cross_entropy", "class_balanced"])
def test_micro_batches_give_the_whole_batchs_step(params, loss):
    """A batch of 8 split into parts of 3, 3 and 2: the same update as the whole batch (a model
    without BatchNorm, whose parts would otherwise see other batch statistics)."""
    from tqdm import tqdm

    from fundus_lib.training.loop import _train_epoch
    from fundus_lib.training.losses import build_loss

    config = run_config(params, params.baselines[0], batch_size=8)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(16, 3, 8, 8, generator=generator), torch.tensor([0, 1, 2, 3, 4, 0, 0, 1] * 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    loss_fn = build_loss(loss, class_counts=[6, 4, 2, 2, 2])
    results = []
    for micro_batch_size in (None, 3):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
        initial = model[1].weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        runtime = params.runtime.model_copy(update={"micro_batch_size": micro_batch_size, "channels_last": False})
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        mean_loss = _train_epoch(
            model,
            model,
            loader,
            loss_fn,
            optimizer,
            scaler,
            torch.device("cpu"),
            runtime,
            tqdm(disable=True),
            config,
            world=1,
        )
        results.append((mean_loss, [parameter.detach().clone() for parameter in model.parameters()]))
    (whole_loss, whole), (parts_loss, parts) = results
    assert parts_loss == pytest.approx(whole_loss, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, parts))
    assert (whole[0] - initial).abs().max() > 1e-3  # two steps were taken


def test_a_run_trains_in_micro_batches(params, data, tmp_path):
    assert params.baselines[0].batch_size > 5
    runtime = params.runtime.model_copy(update={"micro_batch_size": 5})
    config = run_config(params, params.baselines[0], epochs=1)
    fit(config, data, tmp_path, runtime, progress=False)
    history = torch.load(tmp_path / CHECKPOINT, weights_only=True)["history"]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])


def test_frozen_blocks_stay_put_during_the_frozen_epochs_and_train_after(params, data, tmp_path):
    """ImageNet's efficientnet-lite0 with the stem and 3 blocks frozen for the first epoch: after one
    epoch those weights are the ImageNet ones while the later blocks moved; after a second epoch they
    moved too."""
    config = run_config(
        params,
        params.baselines[0],
        model="efficientnet-lite0",
        batch_size=16,
        epochs=1,
        pretrained=True,
        frozen_blocks=3,
        frozen_epochs=1,
    )
    initial = create_model(
        "efficientnet-lite0", weights=pretrained_weights_file("efficientnet-lite0", tmp_path)
    ).state_dict()
    fit(config, data, tmp_path / "one", params.runtime, progress=False)
    after_one = weights(tmp_path / "one" / CHECKPOINT)
    frozen = [
        key
        for key in initial
        if key.startswith(("backbone._conv_stem.", "backbone._blocks.0.", "backbone._blocks.2."))
        and "running" not in key
        and "num_batches" not in key
    ]
    assert frozen and all(torch.equal(initial[key], after_one[key]) for key in frozen)
    assert not torch.equal(
        initial["backbone._blocks.5._project_conv.weight"], after_one["backbone._blocks.5._project_conv.weight"]
    )
    fit(config.model_copy(update={"epochs": 2}), data, tmp_path / "two", params.runtime, progress=False)
    after_two = weights(tmp_path / "two" / CHECKPOINT)
    assert not torch.equal(initial["backbone._conv_stem.weight"], after_two["backbone._conv_stem.weight"])


def test_frozen_blocks_need_an_efficientnet_and_leave_old_run_keys_alone(params):
    from fundus_lib.runs import run_key

    config = run_config(params, params.baselines[0])
    assert "frozen_blocks" not in config.identity() and "frozen_epochs" not in config.identity()
    assert config.model == "small-cnn"
    with pytest.raises(ValueError, match="small-cnn has none"):
        RunConfig(**{**config.model_dump(), "frozen_blocks": 2, "frozen_epochs": 1})
    assert run_key(config, "m") != run_key(config.model_copy(update={"frozen_blocks": 2, "frozen_epochs": 1}), "m")


def test_frozen_blocks_only_keep_pretrained_layers(params):
    """A from-scratch efficientnet row trains every layer from the first epoch (freezing would keep its
    random first layers): run_config leaves the frozen blocks out, and asking for them is refused."""
    train = params.train.model_copy(update={"frozen_blocks": 4, "frozen_epochs": 1, "pretrained": True})
    with_frozen = params.model_copy(update={"train": train})
    lite = params.baselines[0].model_copy(update={"model": "efficientnet-lite0"})
    assert run_config(with_frozen, lite).frozen_blocks == 4
    scratch = run_config(with_frozen, lite.model_copy(update={"pretrained": False}))
    assert scratch.frozen_blocks == 0 and not scratch.pretrained
    with pytest.raises(ValueError, match="random first layers"):
        RunConfig(**{**scratch.model_dump(), "frozen_blocks": 2, "frozen_epochs": 1})
