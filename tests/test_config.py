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


def test_missing_name_is_reported():
    with pytest.raises(ParamsError, match="missing key 'name'"):
        validate_params({})


def test_overrides_merge_into_nested_sections():
    params = load_params(project_root() / "params" / "demo.yaml", {"data": {"image_size": 64}})
    assert params.data.image_size == 64
    assert params.data.synthetic.n_patients == load_params(project_root() / "params" / "demo.yaml").data.synthetic.n_patients


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_full_scale_params_list_every_row_of_table_4():
    from fundus_lib.report import report_table

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
    from fundus_lib.report import report_table

    params = load_params(project_root() / "params" / "eyepacs-512.yaml")
    table5 = report_table("table5")
    runs5 = balancing_runs(params)
    assert list(runs5) == list(table5["method"])
    for row in table5.itertuples():
        config = runs5[row.method]
        assert (config.model, config.image_size, config.batch_size, config.epochs) == \
            ("efficientnet-b0", 512, row.batch_size, row.epochs), row.method
    corrupted = corruption_runs(params)
    for table in ("table6", "table7"):
        assert list(corrupted[table]) == list(report_table(table)["level_range"]), table
        assert all(config.epochs == 20 and config.image_size == 512 and config.batch_size == 48
                   and config.dropout == 0 for config in corrupted[table].values())
    assert level_label(params.corruption.test_levels) == "1-4"  # Table 8's corrupted test set
    adversarial = adversarial_runs(params)
    assert list(adversarial) == ["baseline", "adversarially trained"]
    robust = adversarial["adversarially trained"]
    assert (robust.model, robust.image_size, robust.epochs, robust.init_from) == ("efficientnet-b0", 512, 20, None)
    assert (robust.adversarial.steps, robust.adversarial.weight) == (5, 0.5)
    assert abs(robust.adversarial.eps_255 - 0.565) < 0.001  # 2.5/255 in the report's normalised units
    assert params.attacks.n_images == 240 and params.attacks.steps == 5 and params.attribution.ig_steps == 100
