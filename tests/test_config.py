"""The params schema: every params file validates; bad keys are errors that name the key."""

from __future__ import annotations

import pytest

from fundus_lib.config import ParamsError, load_params, validate_params
from fundus_lib.paths import project_root

PARAMS_FILES = sorted((project_root() / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda path: path.name)
def test_every_params_file_validates(path):
    params = load_params(path)
    assert params.name == path.stem


def test_the_four_parameter_sets_exist():
    assert {path.stem for path in PARAMS_FILES} >= {"smoke", "demo", "eyepacs-256", "eyepacs-512"}


def test_unknown_key_is_named_with_the_allowed_keys():
    with pytest.raises(ParamsError) as error:
        validate_params({"name": "x", "data": {"synthetic": {"n_patient": 3}}})
    message = str(error.value)
    assert "data.synthetic.n_patient" in message
    assert "n_patients" in message and "raw_width" in message


def test_unknown_top_level_key_is_named():
    with pytest.raises(ParamsError, match="unknown key 'dat'"):
        validate_params({"name": "x", "dat": {}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ParamsError) as error:
        validate_params({"name": "x", "data": {"image_size": "big"}})
    assert "data.image_size" in str(error.value) and "'big'" in str(error.value)


def test_out_of_range_value_says_what_is_allowed():
    with pytest.raises(ParamsError) as error:
        validate_params({"name": "x", "data": {"graham_circle": 1.5}})
    assert "data.graham_circle" in str(error.value) and "less than or equal to 1" in str(error.value)


def test_literal_lists_the_choices():
    with pytest.raises(ParamsError, match="'synthetic' or 'eyepacs'"):
        validate_params({"name": "x", "data": {"source": "kaggle"}})


def test_class_balance_must_sum_to_one():
    with pytest.raises(ParamsError, match="class_balance"):
        validate_params({"name": "x", "data": {"synthetic": {"class_balance": [0.5, 0.5, 0.5, 0, 0]}}})


def test_split_must_leave_training_data():
    with pytest.raises(ParamsError, match="valid \\+ test"):
        validate_params({"name": "x", "data": {"split": {"valid": 0.5, "test": 0.5}}})


def test_eyepacs_source_needs_paths():
    with pytest.raises(ParamsError, match="eyepacs"):
        validate_params({"name": "x", "data": {"source": "eyepacs"}})


def test_a_section_the_source_does_not_read_is_an_error():
    """Real paths without `source: eyepacs` were ignored and the synthetic default built instead."""
    eyepacs = {"images_dir": "data/eyepacs/train", "labels_csv": "data/eyepacs/trainLabels.csv"}
    with pytest.raises(ParamsError) as error:
        validate_params({"name": "x", "data": {"eyepacs": eyepacs}})
    assert "data.eyepacs is given but data.source is 'synthetic'" in str(error.value)
    assert "set data.source: eyepacs" in str(error.value) and "'n_patients'" not in str(error.value)
    with pytest.raises(ParamsError, match="data.synthetic is given but data.source is 'eyepacs'"):
        validate_params({"name": "x", "data": {"source": "eyepacs", "eyepacs": eyepacs, "synthetic": {"seed": 1}}})
    assert validate_params({"name": "x", "data": {"source": "eyepacs", "eyepacs": eyepacs}}).data.source == "eyepacs"


def test_missing_name_is_reported():
    with pytest.raises(ParamsError, match="missing key 'name'"):
        validate_params({})


def test_overrides_merge_into_nested_sections():
    params = load_params(project_root() / "params" / "demo.yaml", {"data": {"image_size": 64}})
    assert params.data.image_size == 64
    assert (
        params.data.synthetic.n_patients
        == load_params(project_root() / "params" / "demo.yaml").data.synthetic.n_patients
    )


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_full_scale_params_list_every_row_of_table_4():
    from fundus_lib.report.numbers import report_table

    rows = set()
    for name in ("eyepacs-256", "eyepacs-512"):
        params = load_params(project_root() / "params" / f"{name}.yaml")
        assert params.data.source == "eyepacs" and params.train.epochs == 20 and params.train.pretrained
        rows |= {(row.model, row.image_size, row.batch_size) for row in params.baselines}
    report = report_table("table4")
    assert rows == set(zip(report["model"], report["image_size"], report["batch_size"]))


def test_the_512_px_params_list_every_configuration_of_tables_5_to_9():
    """The report's sections 3-5 used efficientnet-b0 at 512 px: every row of its tables is a run."""
    from fundus_lib.experiments import adversarial_runs, balancing_runs, corruption_runs, level_label
    from fundus_lib.report.numbers import report_table

    params = load_params(project_root() / "params" / "eyepacs-512.yaml")
    table5 = report_table("table5")
    runs5 = balancing_runs(params)
    assert list(runs5) == list(table5["method"])
    for row in table5.itertuples():
        config = runs5[row.method]
        assert (config.model, config.image_size, config.batch_size, config.epochs) == (
            "efficientnet-b0",
            512,
            row.batch_size,
            row.epochs,
        ), row.method
    corrupted = corruption_runs(params)
    for table in ("table6", "table7"):
        assert list(corrupted[table]) == list(report_table(table)["level_range"]), table
        assert all(
            config.epochs == 20 and config.image_size == 512 and config.batch_size == 48 and config.dropout == 0
            for config in corrupted[table].values()
        )
    assert level_label(params.corruption.test_levels) == "1-4"  # Table 8's corrupted test set
    adversarial = adversarial_runs(params)
    assert list(adversarial) == ["baseline", "adversarially trained"]
    robust = adversarial["adversarially trained"]
    assert (robust.model, robust.image_size, robust.epochs, robust.init_from) == ("efficientnet-b0", 512, 20, None)
    assert (robust.adversarial.steps, robust.adversarial.weight) == (5, 0.5)
    assert abs(robust.adversarial.eps_255 - 0.565) < 0.001  # 2.5/255 in the report's normalised units
    assert params.attacks.n_images == 240 and params.attacks.steps == 5 and params.attribution.ig_steps == 100


def test_paths_expand_environment_variables_with_defaults(monkeypatch, tmp_path):
    from fundus_lib.config import resolve_path

    monkeypatch.delenv("FUNDUS_TEST_FOLDER", raising=False)
    assert resolve_path("${FUNDUS_TEST_FOLDER:-data/x}/images").parts[-3:] == ("data", "x", "images")
    monkeypatch.setenv("FUNDUS_TEST_FOLDER", str(tmp_path))
    assert resolve_path("${FUNDUS_TEST_FOLDER:-data/x}/images") == tmp_path / "images"
    monkeypatch.delenv("FUNDUS_TEST_FOLDER")
    with pytest.raises(ParamsError, match="FUNDUS_TEST_FOLDER is not set"):
        resolve_path("${FUNDUS_TEST_FOLDER}/images")


@pytest.mark.parametrize("eps", [-2, 1e6])
def test_attack_radii_are_checked_one_by_one(eps):
    with pytest.raises(ParamsError, match=r"'attacks\.eps_255\.1'"):
        validate_params({"name": "x", "attacks": {"eps_255": [0, eps]}})


def test_corruption_levels_are_checked():
    with pytest.raises(ParamsError, match=r"'corruption\.level_ranges\.0\.1'"):
        validate_params({"name": "x", "corruption": {"level_ranges": [[1, 7]]}})


@pytest.mark.parametrize(
    "key, value", [("epochs", True), ("epochs", "3"), ("lr", "1e-3"), ("augment", "yes"), ("dropout", False)]
)
def test_types_are_strict(key, value):
    """`epochs: true` was one epoch and quoted numbers or "yes" were coerced."""
    with pytest.raises(ParamsError, match=rf"'train\.{key}'.*got {value!r}"):
        validate_params({"name": "x", "train": {key: value}})


def test_yaml_text_that_looks_like_a_number_gets_a_hint(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("name: p\ntrain: {lr: 1e-3}\n")  # PyYAML reads 1e-3 (no dot) as a string
    with pytest.raises(ParamsError, match="write 1.0e-3 or 0.001"):
        load_params(params)
    params.write_text("name: p\ntrain: {lr: 1.0e-3, epochs: 3}\nruntime: {weights_dir: w}\n")
    assert load_params(params).train.lr == 0.001


def test_a_params_file_that_is_not_text(tmp_path):
    binary = tmp_path / "p.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ParamsError, match="not a text file"):
        load_params(binary)


@pytest.mark.parametrize("name", ["eyepacs-mini", "eyepacs-mini-gpu"])
def test_the_real_data_editions_follow_the_reports_transfer_protocol(name):
    """The baseline (and so chapters 5-6) fine-tunes ImageNet Lite0; Table 4 has a from-scratch arm
    beside an ImageNet row of the same model and size (the transfer finding) and a second size from
    the same weights (larger images)."""
    from fundus_lib.config import run_config
    from fundus_lib.experiments import compared_baselines

    params = load_params(project_root() / "params" / f"{name}.yaml")
    baseline = run_config(params, params.baselines[0])
    assert baseline.model == "efficientnet-lite0" and baseline.pretrained
    adversarial = run_config(params, params.adversarial.model)
    assert adversarial.model == baseline.model and adversarial.image_size == baseline.image_size
    assert adversarial.pretrained
    rows = [run_config(params, row) for row in params.baselines]
    pretrained = {(row.model, row.image_size) for row in rows if row.pretrained}
    assert any(not row.pretrained and (row.model, row.image_size) in pretrained for row in rows)
    assert len({row.image_size for row in rows if row.model == baseline.model and row.pretrained}) > 1
    assert len(compared_baselines(params)) >= 3  # every seed of these three arms is trained


def test_two_table4_rows_of_one_model_size_and_weights_are_refused():
    row = {"model": "efficientnet-lite0", "image_size": 128, "batch_size": 8}
    with pytest.raises(ParamsError, match="same model, image size and weights twice"):
        validate_params({"name": "x", "baselines": [row, row]}, "x.yaml")
    validate_params({"name": "x", "baselines": [row, {**row, "pretrained": True}]}, "x.yaml")  # other weights
