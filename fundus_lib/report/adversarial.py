"""Chapter 5's tables and figures: Table 9, the PGD curves (Figure 6), HopSkipJump's comparison,
the robustness sweep with its checks, the report's attack as shipped, the clinical view and the
gallery, built from the evaluations of ``fundus_lib.evaluation`` (which cache what they measure).

eps are in [0, 1] pixel units x 255 throughout (``eps_255``); the report's normalised eps are
converted with ``attacks.pgd.report_eps_to_pixels``.

Example::

    seed_runs = {name: [get_run(params, config) for config in seeds]
                 for name, seeds in seeded(params, adversarial_runs(params)).items()}
    curves = mean_pgd_curves(seed_runs, data, params.attacks)
    pgd_figure(curves, seed_runs, data, params)
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from fundus_lib.attacks.decision import CONVERGED_FACTOR, last_fifth_factor
from fundus_lib.attacks.pgd import pgd, predict_labels, report_eps_to_pixels
from fundus_lib.config import AttackConfig, Params, RobustnessConfig
from fundus_lib.data.pipeline import FundusData
from fundus_lib.evaluation.attacks import decision_attack_sizes, external_pgd_curve, pgd_curve
from fundus_lib.evaluation.robustness import (
    clinical_outcomes,
    ladder_outcomes,
    referable,
    report_code_outcomes,
    robustness_table,
    strongest_curve,
    transfer_outcomes,
)
from fundus_lib.evaluation.samples import test_sample
from fundus_lib.findings import DEGENERATE_SHARE, top_share
from fundus_lib.report.numbers import report_table
from fundus_lib.report.plots import image_grid
from fundus_lib.report.tables import REPORT_LABEL, duration, over_seeds
from fundus_lib.runs import Run
from fundus_lib.statistics import (
    WORST_CASE,
    decision_outcome,
    estimate,
    masking_check,
    mean_difference,
    median_ratio,
    steps_ladder_failures,
    sweep_failures,
    wilson_share,
)

#: The two models of the chapter, in the order of its tables.
MODELS = ("baseline", "adversarially trained")


def eps_units() -> pd.DataFrame:
    """The report's eps values (Figures 5-6, adversarial training at 2.5), normalised units x 255,
    beside the same in [0, 1] pixel units x 255."""
    units = pd.DataFrame({"report eps x 255 (normalised units)": [0.2, 0.4, 0.6, 2.5]})
    units["the same in pixel units x 255"] = units.iloc[:, 0].map(lambda eps: report_eps_to_pixels(eps / 255) * 255)
    return units.set_index(units.columns[0])


def training_text(params: Params, baseline: Run) -> str:
    """Markdown: the two models' row, how the adversarial one was trained, against the report's."""
    row, scheme = params.adversarial.model, params.adversarial.training
    fine_tune = params.adversarial.fine_tune_epochs
    start = (
        f"starts from the baseline's weights and trains **{fine_tune} more epochs** adversarially (a CPU shortcut: "
        "the report trained it from the start)"
        if fine_tune
        else "trains from the start, as the report's"
    )
    return (
        f"Both models: **{row.model}** at **{row.image_size} px**; the baseline trained {baseline.config.epochs} "
        f"epochs (the report: efficientnet-b0 at 512 px, 20 epochs). The adversarially trained model {start}. "
        f"PGD during training: eps = **{scheme.eps_255}/255** in pixel units, {scheme.steps} steps, weight "
        f"{scheme.weight} (the report: 2.5/255 normalised = {report_eps_to_pixels(2.5 / 255) * 255:.3f}/255 pixels, "
        "5 steps, weight 0.5)."
    )


def report_table9() -> pd.DataFrame:
    """The report's Table 9 with the chapter's model names."""
    return report_table("table9").replace(
        {"model": {"adversarially trained (eps 2.5/255 normalised)": "adversarially trained"}}
    )


def table9(seed_runs: dict[str, list[Run]], ours: str) -> pd.DataFrame:
    """Table 9: the report's rows beside this run's test metrics (mean over seeds with the spread,
    ``over_seeds``) and the first seed's training time, indexed by model and who measured it."""
    means = over_seeds({name: [run.metrics("test") for run in seeds] for name, seeds in seed_runs.items()})
    rows = pd.DataFrame(
        [
            {"model": name, **means.loc[name].drop("seeds"), "training_time": duration(seeds[0].train_seconds / 3600)}
            for name, seeds in seed_runs.items()
        ]
    )
    table = pd.concat([report_table9().assign(measured_by=REPORT_LABEL), rows.assign(measured_by=ours)])
    return table.set_index(["model", "measured_by"]).sort_index(level=0, sort_remaining=False)


def external_pgd_table(params: Params, runs: dict[str, Run]) -> pd.DataFrame:
    """The report's PGD on the external test set's sample: robust accuracy per eps (rows) and model (columns)."""
    curves = pd.concat(
        {name: external_pgd_curve(params, run, params.attacks, progress=False) for name, run in runs.items()},
        names=["model"],
    )
    return curves.reset_index("model").pivot_table(index="eps_255", columns="model", values="robust_accuracy")


def mean_pgd_curves(seed_runs: dict[str, list[Run]], data: FundusData, settings: AttackConfig) -> pd.DataFrame:
    """The report's PGD sweep per model: success rate and robust accuracy per eps, the mean over the
    seeds; columns ``model``, ``eps_255`` and the measures."""
    return pd.concat(
        {
            name: pd.concat([pgd_curve(run, data, settings, progress=False) for run in seeds])
            .groupby("eps_255", sort=False)
            .mean()
            for name, seeds in seed_runs.items()
        },
        names=["model", "eps_255"],
    ).reset_index()


def pgd_figure(curves: pd.DataFrame, seed_runs: dict[str, list[Run]], data: FundusData, params: Params, ours: str):
    """Figure 6: PGD's success rate (left, with the report's baseline converted to pixel units) and
    the robust accuracy (right; dashed: under the sweep's strongest white-box attack) against eps."""
    report_points = report_table("pgd_success").query("model == 'baseline'")
    report_pixels = report_points["eps_255_normalised"].map(lambda eps: report_eps_to_pixels(eps / 255) * 255)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for name, curve in curves.groupby("model", sort=False):
        axes[0].plot(curve["eps_255"], curve["success_rate"], marker="o", label=f"{name} ({ours})")
        (line,) = axes[1].plot(curve["eps_255"], curve["robust_accuracy"], marker="o", label=f"{name}, PGD-5")
        strongest = strongest_curve(seed_runs[name], data, params.attacks.robustness)
        axes[1].plot(
            strongest["eps_255"],
            strongest["robust_accuracy"],
            marker=".",
            linestyle="--",
            color=line.get_color(),
            label=f"{name}, strongest (the findings')",
        )
    axes[0].plot(report_pixels, report_points["success_rate"], "kx", markersize=8, label="baseline, report (EyePACS)")
    for ax, label in zip(axes, ("success rate", "robust accuracy")):
        ax.set(xlabel="eps x 255 (pixel units)", ylabel=label, ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def decision_sizes(runs: dict[str, Run], data: FundusData, settings: AttackConfig) -> dict[str, pd.DataFrame]:
    """HopSkipJump's perturbation sizes per model (``decision_attack_sizes``), on the first
    ``settings.decision.n_images`` images of the attack sample that every model grades correctly."""
    rows, images, labels = test_sample(data, settings.n_images, settings.seed)
    correct = [(predict_labels(run.load_model(), images) == labels).numpy() for run in runs.values()]
    chosen = rows[np.logical_and.reduce(correct)][: settings.decision.n_images]
    return {name: decision_attack_sizes(run, data, settings, chosen) for name, run in runs.items()}


def decision_summary(decision: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per model: images attacked, share with an adversarial found, median L2 and L-inf (x 255) and queries."""
    summary = pd.DataFrame(
        {
            name: {
                "images attacked": len(sizes),
                "adversarial found": sizes["success"].mean(),
                "median L2 x 255": sizes["l2"].median() * 255,
                "median L-inf x 255": sizes["linf"].median() * 255,
                "median queries": np.round(sizes["queries"].median()),
            }
            for name, sizes in decision.items()
        }
    ).T
    return summary.astype({"images attacked": int, "median queries": "Int64"})


def decision_caption(settings: AttackConfig) -> str:
    """The HopSkipJump table's caption: its budget and where its random directions come from."""
    grid = settings.decision.direction_grid_px
    directions = (
        f"; random directions on a {grid} x {grid} grid per channel, upsampled (QEBA-S)"
        if grid
        else "; random directions per pixel"
    )
    return (
        f"HopSkipJump, at most {settings.decision.max_queries} queries and {settings.decision.steps} "
        f"iterations per image{directions}"
    )


def convergence_figure(decision: dict[str, pd.DataFrame]):
    """The median over the attacked images of the best L2 found so far (x 255) against the iterations."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, sizes in decision.items():
        trace = sizes.filter(regex=r"^l2_\d+$")
        ax.plot(range(trace.shape[1]), trace.median(axis=0) * 255, marker=".", label=name)
    ax.set(xlabel="iteration", ylabel="median best L2 x 255", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


_DECISION_SENTENCES = {
    "unconverged": "inconclusive: the budget has not converged for {models} (the best L2 still fell by more than "
    "{fall:.0%} over the last fifth of the iterations), so the sizes are upper bounds that a larger budget would "
    "still lower, by different amounts for the two models.",
    "larger": "larger for the adversarially trained model, so on this seed PGD training also resists an attack "
    "that uses no gradients.",
    "smaller": "smaller for the adversarially trained model: on this seed PGD training does not carry over to a "
    "gradient-free attack.",
    "no difference": "no clear difference, so this run gives no evidence that PGD training resists a gradient-free "
    "attack.",
}


def decision_text(
    decision: dict[str, pd.DataFrame], runs: dict[str, Run], curves: pd.DataFrame, settings: AttackConfig
) -> str:
    """Markdown: the ratio of the median L2 perturbations (adversarially trained over baseline) on the
    images where the attack succeeded against both, judged by ``statistics.decision_outcome``, with
    the budget's convergence and PGD's numbers at the largest eps."""
    found = np.logical_and(*(decision[name]["success"].astype(bool).to_numpy() for name in MODELS))
    treatment, reference = (decision[name]["l2"].to_numpy()[found] for name in reversed(MODELS))
    ratio = estimate([median_ratio(treatment, reference)], int(found.sum()))
    converged = {
        name: last_fifth_factor(sizes.filter(regex=r"^l2_\d+$").to_numpy()) for name, sizes in decision.items()
    }
    unconverged = [name for name, factor in converged.items() if not factor >= CONVERGED_FACTOR]
    degenerate = [name for name, run in runs.items() if top_share(run) >= DEGENERATE_SHARE]
    outcome = decision_outcome(ratio, unconverged, degenerate)
    if outcome == "degenerate":
        verdict = (
            f"No conclusion: {' and '.join(degenerate)} answer(s) a single grade for at least "
            f"{DEGENERATE_SHARE * 100:.0f} % of the validation images, so a large perturbation is needed only "
            "because the model barely depends on the image."
        )
    else:
        verdict = _DECISION_SENTENCES[outcome].format(models=" and ".join(unconverged), fall=1 - CONVERGED_FACTOR)
    last = curves.groupby("model").nth(-1).set_index("model")
    return (
        f"On the **{found.sum()}** images that both models grade correctly and on which the attack succeeded against "
        f"both, the ratio of the median L2 perturbations (adversarially trained over baseline) is **{ratio.mean:.2f}** "
        f"[{ratio.low:.2f}, {ratio.high:.2f}] (95 % paired bootstrap over the images; one seed, so the spread over "
        f"seeds is not in it): {verdict} Over the last fifth of the iterations the best L2 changed by a median factor "
        "of "
        + ", ".join(f"{value:.2f} ({name})" for name, value in converged.items())
        + f" (1.00 = flat; the budget counts as converged at {CONVERGED_FACTOR:.2f} or more)."
        f" Under PGD at the largest eps ({settings.eps_255[-1]}/255) the robust accuracy is "
        f"{last.loc['baseline', 'robust_accuracy']:.0%} on the baseline and "
        f"{last.loc['adversarially trained', 'robust_accuracy']:.0%} on the adversarially trained model (success "
        f"rate {last.loc['baseline', 'success_rate']:.0%} and {last.loc['adversarially trained', 'success_rate']:.0%})."
    )


def sweep_table(sweeps: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The robustness sweeps' ``robustness_table`` rows of every model, with a ``model`` column."""
    tables = pd.concat({name: robustness_table(outcomes) for name, outcomes in sweeps.items()}, names=["model"])
    return tables.reset_index("model").reset_index(drop=True)


def sweep_settings_text(sweep_tables: pd.DataFrame, strong: RobustnessConfig) -> str:
    """Markdown: how many images each model's sweep attacked, with which budget, at which eps."""
    return (
        f"Attacked images: **{sweep_tables['n'].iloc[0]}** test images per model (seed {strong.seed}); APGD "
        f"**{strong.steps} steps** x {strong.restarts} restart(s) (AutoAttack: 100), Square **{strong.square_queries} "
        f"queries** per image (AutoAttack: 5,000); eps x 255 in pixel units: "
        f"{', '.join(f'{eps:g}' for eps in strong.eps_255)}."
    )


def wide_sweep(sweep_tables: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy per (model, attack) and eps, one column per eps (``k/255``)."""
    wide = sweep_tables.pivot_table(index=["model", "attack"], columns="eps_255", values="robust_accuracy", sort=False)
    wide.columns = [f"{eps:g}/255" for eps in wide.columns]
    return wide


def sweep_figure(sweep_tables: pd.DataFrame):
    """Robust accuracy (left) and robust kappa (right) against eps (symmetric log scale), per model:
    the white-box worst case solid, Square dotted."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, table), colour in zip(sweep_tables.groupby("model", sort=False), colours):
        for attack, style in ((WORST_CASE, "-o"), ("square", ":x")):
            line = table[table["attack"] == attack]  # empty for a model Square did not attack
            axes[0].plot(line["eps_255"], line["robust_accuracy"], style, color=colour, label=f"{name}, {attack}")
            axes[1].plot(line["eps_255"], line["robust_kappa"], style, color=colour)
    for ax, label in zip(axes, ("robust accuracy", "robust kappa")):
        ax.set(xlabel="eps x 255 (pixel units)", ylabel=label)
        ax.set_xscale("symlog", linthresh=0.5)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    plt.close(fig)
    return fig


def sweep_checks(sweeps: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """``statistics.sweep_failures`` of every model's sweep; a warning for each that fails."""
    checks = {name: sweep_failures(robustness_table(outcomes)) for name, outcomes in sweeps.items()}
    for name, failures in checks.items():
        if failures:
            warnings.warn(f"the eps sweep of {name} fails its check: {'; '.join(failures)}", stacklevel=2)
    return checks


def sweep_checks_text(checks: dict[str, list[str]]) -> str:
    """Markdown list: passed, or the failures, per model."""
    return "\n".join(
        f"- **{name}**: "
        + (
            "passed"
            if not failures
            else "**CHECK FAILED**: " + "; ".join(failures) + ". Its robust accuracies are not evidence of robustness."
        )
        for name, failures in checks.items()
    )


def masking_checks(
    seed_runs: dict[str, list[Run]], sweeps: dict[str, pd.DataFrame], data: FundusData, strong: RobustnessConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The three gradient-masking checks per model of the chapter (``statistics.masking_check``):
    the white-box worst case against Square at the eps of the largest gap, the model's own APGD-CE
    against APGD-CE transferred from its second seed, and the steps ladder. Returns the checks and
    the ladder (robust accuracy per rung, one column per model)."""
    rows, ladders = [], {}
    check_eps = strong.check_eps_255
    for name in MODELS:
        run = seed_runs[name][0]
        table = robustness_table(sweeps[name])
        white = table[table["attack"] == WORST_CASE].set_index("eps_255")["robust_accuracy"]
        black = table[table["attack"] == "square"].set_index("eps_255")["robust_accuracy"]
        worst_eps = (white - black).drop(0.0, errors="ignore").idxmax()
        rows.append(
            {
                "model": name,
                **masking_check(f"not weaker than Square (at {worst_eps:g}/255)", white[worst_eps], black[worst_eps]),
            }
        )
        ladder = robustness_table(ladder_outcomes(run, data, strong, progress=False), with_worst_case=False)
        ladders[name] = ladder.set_index("attack")["robust_accuracy"]
        own = ladders[name].iloc[-1]
        if len(seed_runs[name]) > 1:
            source = seed_runs[name][1]
            transfer = transfer_outcomes(run, source, data, strong, progress=False)
            transferred = float((transfer["attacked"] == transfer["label"]).mean())
            check = f"not weaker than transfer from seed {source.config.seed} (at {check_eps:g}/255)"
            rows.append({"model": name, **masking_check(check, own, transferred)})
        else:
            rows.append({"model": name, "check": "not weaker than transfer: not run (one seed)"})
        first = ladders[name].iloc[0]
        rows.append(
            {
                "model": name,
                "check": f"more steps and restarts never help (at {check_eps:g}/255)",
                "white_box": own,
                "other": first,
                "gap": own - first,
                "passed": not steps_ladder_failures(ladders[name].to_numpy()),
            }
        )
    checks = pd.DataFrame(rows).set_index(["model", "check"])
    checks = checks.rename(columns={"white_box": "white-box robust accuracy", "other": "other attack's"})
    return checks, pd.DataFrame(ladders)


def report_code_rates(runs: dict[str, Run], data: FundusData, strong: RobustnessConfig) -> pd.DataFrame:
    """The report's attack as its code ran it, as shipped, as shipped in train mode and fixed, at 0
    and the report's eps of Figures 5-6 (normalised units): ``report_code_outcomes`` rows with the
    ``model`` and ``changed`` (the grade changed) columns."""
    report_eps = [0.0] + sorted(report_table("pgd_success")["eps_255_normalised"].unique())
    shipped = pd.concat(
        {name: report_code_outcomes(runs[name], data, strong, report_eps) for name in MODELS}, names=["model"]
    ).reset_index("model")
    return shipped.assign(changed=shipped["attacked"] != shipped["clean"])


def shipped_rates(shipped: pd.DataFrame) -> pd.DataFrame:
    """Success rate per (model, variant) and eps, with the report's baseline as one more row."""
    rates = shipped.pivot_table(index=["model", "variant"], columns="eps_255_normalised", values="changed", sort=False)
    report = report_table("pgd_success").query("model == 'baseline'").set_index("eps_255_normalised")["success_rate"]
    rates.loc[("baseline", f"the report ({REPORT_LABEL})"), :] = report.reindex(rates.columns)
    rates.columns = [f"{eps:g}/255 normalised" for eps in rates.columns]
    return rates


def shipped_differences(shipped: pd.DataFrame) -> pd.DataFrame:
    """Per model and eps, the success rate as shipped minus fixed with its 95 % paired bootstrap
    interval over the images (``statistics.estimate``, one seed)."""
    rows = []
    for (name, eps), group in shipped.groupby(["model", "eps_255_normalised"], sort=False):
        by_variant = {
            variant: part.sort_values("row")["changed"].to_numpy() for variant, part in group.groupby("variant")
        }
        difference = estimate(
            [mean_difference(by_variant["as shipped"], by_variant["fixed"])], len(by_variant["fixed"])
        )
        rows.append(
            {
                "model": name,
                "eps": f"{eps:g}/255 normalised",
                "as shipped - fixed": difference.mean,
                "low": difference.low,
                "high": difference.high,
            }
        )
    return pd.DataFrame(rows).set_index(["model", "eps"])


def clinical_table(runs: dict[str, Run], data: FundusData, strong: RobustnessConfig) -> pd.DataFrame:
    """The clinical view per model: targeted 0 -> 4 and 4 -> 0 success on correctly graded images,
    and the sensitivity for referable DR clean, under APGD-CE and under targeted PGD to grade 0,
    each a share with its Wilson interval (``statistics.wilson_share``)."""
    rows = []
    for name in MODELS:
        outcomes = clinical_outcomes(runs[name], data, strong)
        of = {attack: part for attack, part in outcomes.groupby("attack")}
        none = outcomes.iloc[:0]
        healthy = of.get("to grade 4", none).query("clean == 0")
        severe = of.get("to grade 0", none).query("label == 4 and clean == 4")
        sick = of.get("apgd-ce", none)
        views = {
            "targeted 0 -> 4 success": healthy["attacked"] == 4,
            "targeted 4 -> 0 success": severe["attacked"] == 0,
            "referable sensitivity, clean": referable(sick["clean"]),
            "referable sensitivity, APGD-CE": referable(sick["attacked"]),
            "referable sensitivity, targeted to 0": referable(of.get("to grade 0", none)["attacked"]),
        }
        rows += [{"model": name, "measure": measure, **wilson_share(hits)} for measure, hits in views.items()]
    return pd.DataFrame(rows).set_index(["model", "measure"])


def adversarial_gallery(runs: dict[str, Run], data: FundusData, settings: AttackConfig, count: int = 3):
    """``count`` test images attacked with PGD at the sweep's largest eps of at most 4/255: the clean
    image, then per model the adversarial image (grades clean -> attacked) and the perturbation
    amplified to the full grey range."""
    eps = max(value for value in settings.eps_255 if value <= 4) / 255
    _, images, labels = test_sample(data, settings.n_images, settings.seed)
    shown = torch.arange(min(count, len(labels)))
    models = {name: run.load_model() for name, run in runs.items()}
    attacked = {
        name: pgd(
            model,
            images[shown],
            labels[shown],
            eps,
            steps=settings.steps,
            generator=torch.Generator().manual_seed(settings.seed),
        )
        for name, model in models.items()
    }
    pictures, titles = [], []
    for position in range(len(shown)):
        image = images[position : position + 1]
        pictures.append(image[0].permute(1, 2, 0).numpy())
        titles.append(f"clean, grade {labels[position].item()}")
        for name, model in models.items():
            adversarial = attacked[name][position : position + 1]
            before, after = predict_labels(model, image).item(), predict_labels(model, adversarial).item()
            delta = (adversarial - image)[0].permute(1, 2, 0).numpy()
            pictures += [adversarial[0].permute(1, 2, 0).numpy(), (delta / (2 * eps) + 0.5).clip(0, 1)]
            titles += [f"{name}: {before} -> {after}", f"perturbation x {0.5 / eps:.0f}"]
    return image_grid(pictures, titles, ncols=1 + 2 * len(models), cell_inches=2.0)
