"""The join puts every prediction back at its own id, as cross_val_predict does."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.clean import CleanedData
from tasks.data.spec import ResolvedSpec
from tasks.errors import FoldFailedError
from tasks.folds import split_folds
from tasks.join import PartitionError, join_out_of_fold
from tasks.metrics import FailedFold, FoldRun
from tasks.train import FoldResult

CLASSES = ("a", "b", "c")


def make_data(tmp_path, n=23):
    """A cleaned table whose ids are scrambled (not equal to positions) and labels known."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(100, 100 + n))
    labels = np.array(CLASSES)[ids % 3]
    path = tmp_path / "clean.parquet"
    pd.DataFrame({"id": ids, "product": labels}).to_parquet(path)
    spec = ResolvedSpec(
        target="product", task="classification", task_reason="declared", key="id",
        id_column="id", numeric=["x"], zscore=[], categorical=[], vocabularies={},
        classes=list(CLASSES), missing_policy={}, dropped={}, scope="fold",
        group_column=None, loss="mse", n_rows=n, excluded_target_rows=0,
    )  # fmt: skip
    data = CleanedData(str(path), "key", "f" * 64, n, json.dumps(spec.to_dict()))
    return data, ids, labels


def encoded_result(fold, ids, accuracy=1.0):
    """Predictions that encode their row's id: class = id % 3, confidence = id / 1e6."""
    pos = fold.test_positions
    probs = np.full((len(pos), 3), 0.0)
    probs[np.arange(len(pos)), ids[pos] % 3] = 1.0 - ids[pos] / 1e6
    probs[np.arange(len(pos)), (ids[pos] + 1) % 3] = ids[pos] / 1e6
    return FoldResult(
        fold=fold.index, test_ids=ids[pos], test_positions=pos, predictions=probs,
        run=FoldRun(
            scores={"accuracy": accuracy, "log_loss": 0.1}, final_loss=0.2, epochs=1,
            train_seconds=0.5, started_at=0.0, finished_at=1.0, worker="w", device="CPU",
            attempt=1,
        ),
    )  # fmt: skip


def test_every_prediction_lands_at_its_own_id(tmp_path):
    data, ids, labels = make_data(tmp_path)
    folds = split_folds(len(ids), 4, shuffle=True, seed=3)
    results = [encoded_result(f, ids) for f in reversed(folds)]  # out of order on purpose
    outcome = join_out_of_fold.fn(data, folds, results[::-1], str(tmp_path / "out"), {})
    table = pd.read_parquet(outcome.paths["oof_predictions.parquet"])
    assert table["id"].tolist() == sorted(ids)
    np.testing.assert_allclose(table[["p_a", "p_b", "p_c"]].max(axis=1), 1 - table["id"] / 1e6)
    assert (table["predicted"] == np.array(CLASSES)[table["id"] % 3]).all()
    assert (table["product"] == np.array(CLASSES)[table["id"] % 3]).all()
    assert table["correct"].all()
    fold_of = {int(i): f.index for f in folds for i in ids[f.test_positions]}
    assert table["fold"].tolist() == [fold_of[i] for i in table["id"]]
    csv = pd.read_csv(outcome.paths["oof_predictions.csv"])
    assert csv["id"].tolist() == table["id"].tolist()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["final_accuracy"] == 1.0 and metrics["n_rows"] == len(ids)


def test_overlapping_results_are_refused(tmp_path):
    data, ids, _ = make_data(tmp_path)
    folds = split_folds(len(ids), 2, shuffle=True, seed=3)
    bad = encoded_result(folds[0], ids)
    clash = FoldResult(**{**bad.__dict__, "fold": 2})
    with pytest.raises(PartitionError):
        join_out_of_fold.fn(data, folds, [bad, clash], str(tmp_path / "out"), {})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_mismatched_ids_are_refused(tmp_path):
    data, ids, _ = make_data(tmp_path)
    folds = split_folds(len(ids), 2, shuffle=True, seed=3)
    good = encoded_result(folds[0], ids)
    wrong = encoded_result(folds[1], ids)
    wrong = FoldResult(**{**wrong.__dict__, "test_ids": wrong.test_ids[::-1].copy()})
    with pytest.raises(PartitionError, match="fold 2"):
        join_out_of_fold.fn(data, folds, [good, wrong], str(tmp_path / "out"), {})


def test_failed_fold_fails_the_join_by_default_and_partial_is_opt_in(tmp_path):
    data, ids, _ = make_data(tmp_path)
    folds = split_folds(len(ids), 3, shuffle=True, seed=3)
    boom = FailedFold(fold=2, label="fold-2", error="failed after 1 attempt: RuntimeError: boom")
    outcomes = [encoded_result(folds[0], ids), boom, encoded_result(folds[2], ids)]
    with pytest.raises(FoldFailedError, match="^fold 2 failed after 1 attempt: RuntimeError: boom"):
        join_out_of_fold.fn(data, folds, outcomes, str(tmp_path / "out"), {})
    outcome = join_out_of_fold.fn(data, folds, outcomes, str(tmp_path / "out"), {}, min_folds=2)
    assert outcome.metrics.partial is True
    assert [f.fold for f in outcome.metrics.failed_folds] == [2]
    table = pd.read_parquet(outcome.paths["oof_predictions.parquet"])
    missing = set(ids[folds[1].test_positions])
    assert set(table.loc[table["missing"], "id"]) == missing
    assert table.loc[table["missing"], "predicted"].isna().all()
    assert outcome.metrics.n_scored == len(ids) - len(missing)


def scored_table(classes: list[str], truth_classes: list[str], n: int = 400) -> pd.DataFrame:
    """An OOF table with random probabilities; the first 7 rows unscored (a failed fold)."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(len(classes)), size=n)
    pred = np.array(classes)[probs.argmax(axis=1)].astype(object)
    pred[:7] = None
    table = pd.DataFrame(
        {"t": rng.choice(truth_classes, size=n), "predicted": pd.array(pred, dtype="string")}
    )
    for k, c in enumerate(classes):
        table[f"p_{c}"] = probs[:, k]
    return table


def test_classification_scores_equal_scikit_learns_on_the_text_labels():
    """Scores on class positions equal those on the text labels; unscored rows are left out."""
    from sklearn import metrics as skm

    from tasks.scores import classification_scores

    classes = ["x", "y", "z", "never-true"]  # one class no row has, as a fold can see
    table = scored_table(classes, classes[:3])
    scores = classification_scores(table, "t", classes, [0.5, None])

    scored = table.iloc[7:]
    t, p = scored["t"].to_numpy(dtype=str), scored["predicted"].to_numpy(dtype=str)
    alphabetical = sorted(classes)  # the column order sklearn assumes for text labels
    probs = scored[[f"p_{c}" for c in alphabetical]].to_numpy()
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        t, p, labels=classes, zero_division=0
    )
    assert scores["final_accuracy"] == skm.accuracy_score(t, p)
    assert scores["log_loss"] == pytest.approx(skm.log_loss(t, probs, labels=alphabetical), 1e-12)
    assert scores["confusion_matrix"] == skm.confusion_matrix(t, p, labels=classes).tolist()
    assert [scores["per_class"][c].precision for c in classes] == list(precision)
    assert [scores["per_class"][c].recall for c in classes] == list(recall)
    assert [scores["per_class"][c].f1 for c in classes] == list(f1)
    assert [scores["per_class"][c].support for c in classes] == list(support)
    assert scores["per_class"]["never-true"].support == 0


def test_pooled_log_loss_reads_each_rows_own_class_column_whatever_the_class_order():
    """Numeric classes are in numeric order ('2' before '10'); the log-loss follows that order."""
    from tasks.scores import classification_scores

    classes = ["2", "10", "33"]  # not alphabetical: text order would be 10, 2, 33
    table = scored_table(classes, classes)
    scores = classification_scores(table, "t", classes, [None])
    scored = table.iloc[7:]
    own = [row[f"p_{label}"] for label, (_, row) in zip(scored["t"], scored.iterrows())]
    assert scores["log_loss"] == pytest.approx(-np.mean(np.log(own)), rel=1e-12)
