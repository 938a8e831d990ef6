"""Compare model configurations trained on the same folds: a table, a paired test, a plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from scipy import stats

from tasks.config import ModelConfig
from tasks.logs import run_logger
from tasks.metrics import RunMetrics
from tasks.outputs import staged_files

COMPARISON = "comparison"


# ModelConfig fields that ModelConfig.label() already shows.
LABELLED = ("regularizer", "regularizer_on", "l1", "l2", "dropout")


def model_labels(models: dict[str, ModelConfig], base: ModelConfig) -> dict[str, str]:
    """A distinct label per configuration: its label plus every other field it changes."""
    base_fields = base.model_dump()
    labels = {}
    for name, model in models.items():
        changed = [
            f"{field}={value}"
            for field, value in model.model_dump().items()
            if field not in LABELLED and value != base_fields[field]
        ]
        labels[name] = " ".join([model.label(), *changed])
    shown = list(labels.values())
    return {
        name: label if shown.count(label) == 1 else f"{label} ({name})"
        for name, label in labels.items()
    }


def paired_test(candidate: list[float], baseline: list[float]) -> dict[str, Any]:
    """Is the candidate's per-fold lead over the baseline larger than fold-to-fold noise?

    Folds are shared, so the test is paired: a paired t-test on the per-fold differences
    (the decision, at 5 %) and the Wilcoxon signed-rank test as a distribution-free check
    (with 5 folds its smallest possible two-sided p is 0.0625, so it can never reach 5 %).
    """
    a, b = np.asarray(candidate, float), np.asarray(baseline, float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired test needs two equal-length lists of >= 2 folds, got {a}, {b}")
    diff = a - b
    if np.allclose(diff, diff[0]):
        t_p = 0.0 if diff[0] != 0 else 1.0
    else:
        t_p = float(stats.ttest_rel(a, b).pvalue)
    w_p = 1.0 if np.allclose(diff, 0) else float(stats.wilcoxon(a, b).pvalue)
    return {
        "mean_difference": float(diff.mean()),
        "std_difference": float(diff.std(ddof=1)),
        "t_test_p": t_p,
        "wilcoxon_p": w_p,
        "significant": bool(t_p < 0.05),
    }


def comparison_table(
    results: dict[str, RunMetrics],
    labels: dict[str, str],
    baseline: str,
    oof: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One row per configuration with pooled and per-fold scores and the paired test.

    Classifiers are ranked by OOF accuracy, tested on per-fold accuracy; regressions by OOF
    RMSE, tested on the per-row squared errors (every configuration predicted the same rows,
    from the same folds), which needs each configuration's OOF table (`oof`).
    """
    tasks = {m.task for m in results.values()}
    if len(tasks) != 1:
        raise ValueError(f"compare needs one task for every configuration, got {sorted(tasks)}")
    if tasks == {"regression"}:
        return _regression_table(results, labels, baseline, oof or {})
    base = results[baseline].fold_accuracy
    rows = []
    for name, m in results.items():
        test = paired_test(m.fold_accuracy, base) if name != baseline else None
        rows.append(
            {
                "name": name,
                "model": labels[name],
                "oof_accuracy": m.final_accuracy,
                "mean_accuracy": m.mean_accuracy,
                "std_accuracy": m.std_accuracy,
                "log_loss": m.log_loss,
                "train_seconds": round(sum(f.train_seconds for f in m.folds), 2),
                "fold_accuracy": [float(a) for a in m.fold_accuracy],
                "diff_vs_baseline": test["mean_difference"] if test else 0.0,
                "t_test_p": test["t_test_p"] if test else math.nan,
                "wilcoxon_p": test["wilcoxon_p"] if test else math.nan,
            }
        )
    return pd.DataFrame(rows).sort_values("oof_accuracy", ascending=False, kind="stable")


def squared_errors(table: pd.DataFrame, key: str) -> pd.Series:
    """Each scored row's squared OOF error, by key (what the regression paired test compares)."""
    scored = table[table["predicted"].notna()]
    return pd.Series((scored["residual"] ** 2).to_numpy(), index=scored[key].to_numpy())


def _regression_table(
    results: dict[str, RunMetrics],
    labels: dict[str, str],
    baseline: str,
    oof: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """Regressions ranked by OOF RMSE; the paired test over the rows' squared errors."""
    missing = [name for name in results if name not in oof]
    if missing:
        raise ValueError(f"comparing regressions needs the OOF tables of {missing}")
    errors = {name: squared_errors(oof[name], results[name].key) for name in results}
    base = errors[baseline]
    rows = []
    for name, m in results.items():
        test = None
        if name != baseline:
            shared = errors[name].index.intersection(base.index)  # rows both scored
            test = paired_test(errors[name].loc[shared].tolist(), base.loc[shared].tolist())
        rows.append(
            {
                "name": name,
                "model": labels[name],
                "oof_rmse": m.rmse,
                "mean_rmse": m.mean_rmse,
                "std_rmse": m.std_rmse,
                "mae": m.mae,
                "r2": m.r2,
                "train_seconds": round(sum(f.train_seconds for f in m.folds), 2),
                "fold_rmse": [float(a) for a in m.fold_rmse],
                # the RMSE lead (negative: lower error than the baseline), and the per-row test
                "diff_vs_baseline": float(m.rmse - results[baseline].rmse) if test else 0.0,
                "mean_sq_error_diff": test["mean_difference"] if test else 0.0,
                "t_test_p": test["t_test_p"] if test else math.nan,
                "wilcoxon_p": test["wilcoxon_p"] if test else math.nan,
            }
        )
    return pd.DataFrame(rows).sort_values("oof_rmse", ascending=True, kind="stable")


def _is_regression(table: pd.DataFrame) -> bool:
    return "oof_rmse" in table.columns


def render_comparison(table: pd.DataFrame, baseline: str) -> str:
    """Markdown naming the best configuration and whether its lead is beyond fold noise."""
    if _is_regression(table):
        return _render_regression(table, baseline)
    best = table.iloc[0]
    lines = [
        f"# Regularization comparison: best is `{best['name']}` ({best['model']})",
        "",
        "| configuration | model | OOF accuracy | folds mean ± std | log-loss | train s "
        "| Δ vs baseline | paired t p | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in table.iterrows():
        is_base = r["name"] == baseline
        lines.append(
            f"| {r['name']}{' (baseline)' if is_base else ''} | {r['model']} "
            f"| {r['oof_accuracy']:.4f} | {r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f} "
            f"| {r['log_loss']:.4f} | {r['train_seconds']:.1f} | {r['diff_vs_baseline']:+.4f} "
            f"| {'' if is_base else f'{r.t_test_p:.2g}'} "
            f"| {'' if is_base else f'{r.wilcoxon_p:.2g}'} |"
        )
    lines.append("")
    if best["name"] == baseline:
        lines.append(f"The baseline `{baseline}` (the notebook's model) scored best.")
    else:
        verdict = (
            "larger than the fold-to-fold noise"
            if best["t_test_p"] < 0.05
            else "within the fold-to-fold noise"
        )
        lines.append(
            f"`{best['name']}` leads the baseline `{baseline}` by "
            f"{best['diff_vs_baseline']:+.4f} mean per-fold accuracy: {verdict} "
            f"(paired t-test over the same folds, p = {best['t_test_p']:.2g}; "
            f"Wilcoxon signed-rank p = {best['wilcoxon_p']:.2g})."
        )
    return "\n".join(lines) + "\n"


def _render_regression(table: pd.DataFrame, baseline: str) -> str:
    """The regression comparison: lowest OOF RMSE first, tested on per-row squared errors."""
    best = table.iloc[0]
    lines = [
        f"# Regularization comparison: best is `{best['name']}` ({best['model']})",
        "",
        "| configuration | model | OOF RMSE | folds mean ± std | MAE | R² | train s "
        "| Δ RMSE vs baseline | paired t p | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in table.iterrows():
        is_base = r["name"] == baseline
        lines.append(
            f"| {r['name']}{' (baseline)' if is_base else ''} | {r['model']} "
            f"| {r['oof_rmse']:.4f} | {r['mean_rmse']:.4f} ± {r['std_rmse']:.4f} "
            f"| {r['mae']:.4f} | {r['r2']:.4f} | {r['train_seconds']:.1f} "
            f"| {r['diff_vs_baseline']:+.4f} "
            f"| {'' if is_base else f'{r.t_test_p:.2g}'} "
            f"| {'' if is_base else f'{r.wilcoxon_p:.2g}'} |"
        )
    lines.append("")
    if best["name"] == baseline:
        lines.append(f"The baseline `{baseline}` scored best (lowest OOF RMSE).")
    else:
        verdict = "beyond" if best["t_test_p"] < 0.05 else "within"
        lines.append(
            f"`{best['name']}` has {best['diff_vs_baseline']:+.4f} OOF RMSE against the baseline "
            f"`{baseline}`: {verdict} the row-to-row noise (paired t-test on the same rows' "
            f"squared errors, p = {best['t_test_p']:.2g}; Wilcoxon signed-rank "
            f"p = {best['wilcoxon_p']:.2g})."
        )
    return "\n".join(lines) + "\n"


def plot_fold_accuracies(table: pd.DataFrame, path: Path) -> None:
    """Per-fold accuracy of each configuration; lines join the same fold (paired design)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = "rmse" if _is_regression(table) else "accuracy"
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(table)), 4.5), dpi=100)
    matrix = np.array(table[f"fold_{score}"].tolist())
    xs = np.arange(len(table))
    for fold in range(matrix.shape[1]):
        ax.plot(xs, matrix[:, fold], "-o", alpha=0.6, lw=0.8, label=f"fold {fold + 1}")
    ax.plot(xs, table[f"oof_{score}"], "k_", ms=30, mew=2, label="OOF (pooled)")
    ax.set_xticks(xs, table["name"], rotation=20)
    ax.set(ylabel=score, title=f"Per-fold {score} by configuration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


@task(name="compare", task_run_name="compare", cache_policy=NO_CACHE)
def compare_configurations(
    results: dict[str, RunMetrics],
    labels: dict[str, str],
    baseline: str,
    output_dir: str,
    oof_paths: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rank the configurations and say whether the best one's lead is real.

    `oof_paths`: each configuration's OOF Parquet (regressions are tested row by row).
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import TaskRunContext

    oof = {name: pd.read_parquet(path) for name, path in (oof_paths or {}).items()}
    table = comparison_table(results, labels, baseline, oof)
    folds = "fold_rmse" if _is_regression(table) else "fold_accuracy"
    markdown = render_comparison(table, baseline)
    out = Path(output_dir)
    paths = {ext: out / f"{COMPARISON}.{ext}" for ext in ("parquet", "csv", "md", "png")}
    with staged_files(*paths.values()) as (parquet, csv, md, png):
        table.to_parquet(parquet, index=False)
        table.assign(**{folds: table[folds].map(str)}).to_csv(csv, index=False)
        md.write_text(markdown)
        plot_fold_accuracies(table, png)
    if TaskRunContext.get() is not None:
        rows = table.assign(**{folds: table[folds].map(str)})
        rows = rows.replace({np.nan: None}).to_dict("records")
        create_table_artifact(table=rows, key="comparison-table", description="Configurations")
        create_markdown_artifact(markdown=markdown, key="comparison-summary")
    run_logger().info("best configuration: %s", table.iloc[0]["name"])
    return {"best": str(table.iloc[0]["name"]), "paths": {k: str(v) for k, v in paths.items()}}
