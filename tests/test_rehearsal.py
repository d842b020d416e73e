"""The full-scale params files in miniature: the rehearsal keeps every configuration and shrinks
only the amounts, and each architecture of the full-scale files trains one batch, is attacked and
attributed at its report size (the rows no demo or smoke params exercise)."""

from __future__ import annotations

import pytest
import torch
import yaml

from fundus_lib.attacks.pgd import pgd
from fundus_lib.attribution.methods import integrated_gradients
from fundus_lib.config import load_params, validate_params
from fundus_lib.experiments import all_runs
from fundus_lib.paths import project_root
from fundus_lib.rehearsal import cpu_micro_batch, rehearsal_params, write_rehearsal
from fundus_lib.training.loop import _batch_loss, build_model, build_optimizer
from fundus_lib.training.losses import build_loss

ROOT = project_root()
FULL_SCALE = ("eyepacs-256", "eyepacs-512")
#: What a rehearsal may change in a run's configuration: the amounts.
AMOUNTS = {"epochs", "seed", "pretrained"}


def without_amounts(config) -> dict:
    """A run configuration without its amounts, also in the run it starts from (``init_from``)."""
    dumped = config.model_dump(exclude=AMOUNTS)
    if config.init_from is not None:
        dumped["init_from"] = without_amounts(config.init_from)
    return dumped


def full_scale(name: str) -> dict:
    return yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", FULL_SCALE)
def test_the_rehearsal_keeps_every_configuration_and_shrinks_the_amounts(name, tmp_path):
    """Every run of the rehearsal is a run of the full-scale file with 1 epoch, and every run of
    the full-scale file's first seed is in the rehearsal; the runtime (AMP, loader workers) is
    kept, except that on the CPU batches pass in parts; attacks and attributions shrink."""
    full = validate_params(full_scale(name))
    rehearsal = validate_params(rehearsal_params(full_scale(name), tmp_path / "images", tmp_path / "labels.csv"))
    theirs, ours = all_runs(full), all_runs(rehearsal)
    first_seed = {label: config for label, (_, config) in theirs.items() if ", seed " not in label}
    assert set(ours) == set(first_seed)
    for label, (_, config) in ours.items():
        assert config.epochs == 1, label
        assert without_amounts(config) == without_amounts(first_seed[label]), label
    micro = cpu_micro_batch(full)
    assert micro == (16 if name == "eyepacs-256" else 6)  # 299 px at most, or 512 px
    on_this_cpu = {"micro_batch_size": micro, "eval_batch_size": micro}
    assert rehearsal.runtime == full.runtime.model_copy(update=on_this_cpu)  # no GPU here
    assert rehearsal.data.image_size == full.data.image_size
    assert rehearsal.attacks.n_images < full.attacks.n_images
    for ours_eps, theirs_eps in (
        (rehearsal.attacks.eps_255, full.attacks.eps_255),
        (rehearsal.attacks.robustness.eps_255, full.attacks.robustness.eps_255),
    ):
        assert set(ours_eps) <= set(theirs_eps) and len(ours_eps) <= 4  # radii of the sweep, none made up
        assert min(ours_eps) == min(theirs_eps) and max(ours_eps) == max(theirs_eps)
    assert full.attacks.robustness.check_eps_255 in rehearsal.attacks.robustness.eps_255
    assert rehearsal.attribution.ig_baseline == full.attribution.ig_baseline
    assert rehearsal.seeds == 1
    largest = max(config.batch_size for _, config in theirs.values())
    train_share = 1 - rehearsal.data.split.valid - rehearsal.data.split.test
    assert rehearsal.data.eyepacs.max_images * train_share >= largest  # the training split holds every batch


def test_write_rehearsal_validates_and_names_missing_folders(tmp_path):
    with pytest.raises(Exception, match="images folder"):
        write_rehearsal("params/eyepacs-512.yaml", tmp_path / "nowhere", tmp_path / "labels.csv", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("image,level\n")
    path = write_rehearsal("params/eyepacs-512.yaml", tmp_path / "images", tmp_path / "labels.csv", tmp_path / "out")
    assert load_params(path).name == "eyepacs-512-rehearsal"


def untested_rows() -> dict[tuple[str, int], object]:
    """(model, image size) -> a run config of the full-scale files that no demo or smoke run uses."""
    exercised = {
        (config.model, config.image_size)
        for name in ("demo", "smoke")
        for _, config in all_runs(load_params(f"params/{name}.yaml")).values()
    }
    rows = {}
    for name in FULL_SCALE:
        params = load_params(f"params/{name}.yaml")
        for _, config in all_runs(params).values():
            key = (config.model, config.image_size)
            if key not in exercised and key not in rows:
                rows[key] = config.model_copy(update={"pretrained": False})
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(untested_rows()), ids=lambda key: f"{key[0]}-{key[1]}px")
def test_each_full_scale_architecture_trains_attacks_and_attributes_at_its_report_size(key):
    """One training step (train mode: inception's auxiliary head, BatchNorm on a batch of 2), then
    PGD and integrated gradients in eval mode, at the report's image size (HopSkipJump only asks
    for predictions, which the eval-mode forward pass checks)."""
    config = untested_rows()[key]
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = build_optimizer(config, model)
    images = torch.rand(2, 3, config.image_size, config.image_size)
    labels = torch.tensor([0, 3])
    model.train()
    loss = _batch_loss(model, model, images, labels, build_loss("cross_entropy"), config)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 5)
    adversarials = pgd(model, images, labels, eps=1 / 255, steps=1)
    assert (adversarials - images).abs().max() <= 1 / 255 + 1e-6
    attributions = integrated_gradients(model, images[:1], labels[:1], steps=2, internal_batch_size=3)
    assert attributions.shape == images[:1].shape and torch.isfinite(attributions).all()
