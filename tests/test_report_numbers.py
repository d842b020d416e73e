"""The report's numbers file: complete and internally consistent (guards against typos)."""

from __future__ import annotations

import pytest

from fundus_lib.report.numbers import duration_hours, other_study, report_table


def test_table1_counts_and_shares_agree():
    table = report_table("table1")
    assert table["images"].sum() == 35126
    assert (table["images"] / 35126 - table["share"]).abs().max() < 0.001


@pytest.mark.parametrize("name, total", [("table3_train", 24586), ("table3_valid", 10536)])
def test_table3_totals_and_shares(name, total):
    table = report_table(name)
    assert table["images"].sum() == total
    assert (table["images"] / total - table["share"]).abs().max() < 0.001


def test_table3_splits_add_up_to_table1_within_the_reports_own_gap():
    together = report_table("table3_train")["images"] + report_table("table3_valid")["images"]
    assert (report_table("table1")["images"] - together).abs().max() <= 4  # the report lost 4 images


def test_table2_and_table4_cover_the_seven_models():
    models = set(report_table("table2")["model"])
    assert len(models) == 7
    assert set(report_table("table4")["model"]) == models
    assert len(report_table("table4")) == 13


def test_table5_rows_and_metric_ranges():
    table = report_table("table5")
    assert len(table) == 14
    for column in ("accuracy", "balanced_accuracy", "kappa"):
        assert table[column].between(0, 1).all()


def test_baseline_is_the_same_number_everywhere():
    baseline = report_table("table4").query("model == 'efficientnet-b0' and image_size == 512").iloc[0]
    for name in ("table5", "table6", "table9"):
        row = report_table(name).iloc[0]
        assert (row["accuracy"], row["balanced_accuracy"], row["kappa"]) == (
            baseline["accuracy"],
            baseline["balanced_accuracy"],
            baseline["kappa"],
        )


def test_durations():
    assert duration_hours("2h40min") == pytest.approx(2 + 40 / 60)
    assert duration_hours("10h1min") == pytest.approx(10 + 1 / 60)
    assert report_table("table4")["training_hours"].between(2, 20).all()
    with pytest.raises(ValueError):
        duration_hours("soon")


def test_unknown_table_lists_the_available_ones():
    with pytest.raises(KeyError, match="table1"):
        report_table("table99")


def test_other_studies_are_labelled_ranges_apart_from_the_reports_tables():
    study = other_study("idrid_saliency")
    assert "Van Craenendonck" in study["source"] and 0 <= study["low"] < study["high"] <= 1
    with pytest.raises(KeyError, match="idrid_saliency"):
        other_study("nothing")
    with pytest.raises(KeyError):
        report_table("idrid_saliency")
