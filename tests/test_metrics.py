"""fastnn.metrics against Keras 3.15: the documented examples (the docstrings and tests of
keras/src/metrics/*.py, cited at each value), hand computations with sample weights, the
stateful API (reset_state, __call__, get_config round trips, names), errors on bad input,
AUC against a direct computation from sorted scores, and the training loop's use of the
metrics (fit / evaluate logs, the state the distribution sums).

The metrics sum in float64: values computed by hand are compared at float64 tolerance
(tests/tolerances.py); Keras' own (float32) printed values only to their printed digits."""
import json
import math

import numpy as np
import pytest

from fastnn import layers, losses, metrics, models
from tolerances import TOL

F64 = TOL[np.float64]


def approx(v):
    return pytest.approx(v, rel=F64["rtol"], abs=F64["atol"])


def run(m, *args, **kwargs):
    m.update_state(*args, **kwargs)
    return m.result()


# ---- Keras' documented examples ---------------------------------------------------------------
# (y_true, y_pred, sample_weight, result) from the docstrings of keras/src/metrics/*.py

CAT_T, CAT_P = [[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]
KERAS_EXAMPLES = [
    # reduction_metrics.py, Mean
    (lambda: metrics.Mean(), ([1, 3, 5, 7],), None, 4.0),
    (lambda: metrics.Mean(), ([1, 3, 5, 7],), [1, 1, 0, 0], 2.0),
    # accuracy_metrics.py
    (metrics.Accuracy, ([[1], [2], [3], [4]], [[0], [2], [3], [4]]), None, 0.75),
    (metrics.Accuracy, ([[1], [2], [3], [4]], [[0], [2], [3], [4]]), [1, 1, 0, 0], 0.5),
    (metrics.BinaryAccuracy, ([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]]), None, 0.75),
    (metrics.BinaryAccuracy, ([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]]), [1, 0, 0, 1],
     0.5),
    (metrics.CategoricalAccuracy, (CAT_T, CAT_P), None, 0.5),
    (metrics.CategoricalAccuracy, (CAT_T, CAT_P), [0.7, 0.3], 0.3),
    (metrics.SparseCategoricalAccuracy, ([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]), None,
     0.5),
    (metrics.SparseCategoricalAccuracy, ([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]),
     [0.7, 0.3], 0.3),
    (lambda: metrics.TopKCategoricalAccuracy(k=1), (CAT_T, CAT_P), None, 0.5),
    (lambda: metrics.TopKCategoricalAccuracy(k=1), (CAT_T, CAT_P), [0.7, 0.3], 0.3),
    (lambda: metrics.SparseTopKCategoricalAccuracy(k=1), ([2, 1], CAT_P), None, 0.5),
    (lambda: metrics.SparseTopKCategoricalAccuracy(k=1), ([2, 1], CAT_P), [0.7, 0.3], 0.3),
    (lambda: metrics.SparseTopKCategoricalAccuracy(k=1, from_sorted_ids=True),
     ([2, 1], [[1, 0, 3], [1, 2, 3]]), None, 0.5),
    # regression_metrics.py
    (metrics.MeanSquaredError, ([[0, 1], [0, 0]], [[1, 1], [0, 0]]), None, 0.25),
    (metrics.MeanAbsoluteError, ([[0, 1], [0, 0]], [[1, 1], [0, 0]]), None, 0.25),
    (metrics.MeanAbsoluteError, ([[0, 1], [0, 0]], [[1, 1], [0, 0]]), [1, 0], 0.5),
    (metrics.RootMeanSquaredError, ([[0, 1], [0, 0]], [[1, 1], [0, 0]]), None, 0.5),
    (metrics.RootMeanSquaredError, ([[0, 1], [0, 0]], [[1, 1], [0, 0]]), [1, 0],
     math.sqrt(0.5)),  # (printed 0.70710677)
    # confusion_metrics.py
    (metrics.Precision, ([0, 1, 1, 1], [1, 0, 1, 1]), None, 2 / 3),  # (printed 0.6666667)
    (metrics.Precision, ([0, 1, 1, 1], [1, 0, 1, 1]), [0, 0, 1, 0], 1.0),
    (lambda: metrics.Precision(top_k=2), ([0, 0, 1, 1], [1, 1, 1, 1]), None, 0.0),
    (lambda: metrics.Precision(top_k=4), ([0, 0, 1, 1], [1, 1, 1, 1]), None, 0.5),
    (metrics.Recall, ([0, 1, 1, 1], [1, 0, 1, 1]), None, 2 / 3),
    (metrics.Recall, ([0, 1, 1, 1], [1, 0, 1, 1]), [0, 0, 1, 0], 1.0),
    (lambda: metrics.AUC(num_thresholds=3), ([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]), None, 0.75),
    (lambda: metrics.AUC(num_thresholds=3), ([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]), [1, 0, 0, 1],
     1.0),
]


@pytest.mark.parametrize("make, args, weight, expected", KERAS_EXAMPLES)
def test_keras_documented_examples(make, args, weight, expected):
    m = make()
    assert run(m, *args, sample_weight=weight) == approx(expected)
    m.reset_state()  # reset_state, then the same batch again: the same value
    assert m.result() == 0.0 and all(not v.any() for v in m.variables)
    assert run(m, *args, sample_weight=weight) == approx(expected)


# ---- Keras' tests (keras/src/metrics/confusion_metrics_test.py), with their hand counts --------

AUC_T, AUC_P, AUC_W = [0, 0, 1, 1], np.array([0, 0.5, 0.3, 0.9], np.float32), [1, 2, 3, 4]


def test_auc_keras_tests_weighted():
    # AUCTest: thresholds [-1e-7, 0.5, 1 + 1e-7]; weighted counts tp = [7, 4, 0], fp = [3, 0, 0],
    # fn = [0, 3, 7], tn = [0, 3, 3]
    m = metrics.AUC(num_thresholds=3)
    m.update_state(AUC_T, AUC_P, sample_weight=AUC_W)
    tp, fp, tn, fn = m.variables
    assert tp.tolist() == [7, 4, 0] and fp.tolist() == [3, 0, 0]
    assert fn.tolist() == [0, 3, 7] and tn.tolist() == [0, 3, 3]
    recall = [1, 4 / 7, 0]
    roc = {"interpolation": (recall[0] + recall[1]) / 2,  # widths [1, 0]
           "majoring": max(recall[0], recall[1]), "minoring": min(recall[0], recall[1])}
    precision = [0.7, 1.0, 0.0]
    pr = {"majoring": 1 * (1 - 4 / 7) + 1 * (4 / 7),
          "minoring": 0.7 * (1 - 4 / 7) + 0 * (4 / 7),
          # test_weighted_pr_interpolation: slope [0.5, 1], intercept [2, 0], p ratio [2.5, 1]
          "interpolation": 0.5 * (3 + 2 * math.log(2.5)) / 7 + 4 / 7}
    for method in ("interpolation", "majoring", "minoring"):
        auc = metrics.AUC(num_thresholds=3, summation_method=method)
        assert auc(AUC_T, AUC_P, sample_weight=AUC_W) == approx(roc[method])
        auc = metrics.AUC(num_thresholds=3, curve="PR", summation_method=method)
        assert auc(AUC_T, AUC_P, sample_weight=AUC_W) == approx(pr[method])
    assert precision[0] == pytest.approx(7 / 10)
    # test_weighted_pr_interpolation_negative_weights: max(tp + fn, 0) is 0 -> 0
    assert metrics.AUC(num_thresholds=3, curve="PR")(AUC_T, AUC_P, sample_weight=[-1, -2, -3, -4]) \
        == 0.0


def test_auc_keras_tests_unweighted_logits_manual_thresholds():
    # test_unweighted / test_unweighted_from_logits / test_manual_thresholds: 0.75 * 1 + 0.25 * 0
    assert metrics.AUC(num_thresholds=3)(AUC_T, AUC_P) == approx(0.75)
    logits = -np.log(1.0 / (AUC_P.astype(np.float64) + 1e-12) - 1.0)
    assert metrics.AUC(num_thresholds=3, from_logits=True)(AUC_T, logits) == approx(0.75)
    m = metrics.AUC(num_thresholds=2, thresholds=[0.5])
    assert m.num_thresholds == 3
    assert m.thresholds == pytest.approx([-1e-7, 0.5, 1 + 1e-7], abs=1e-12)
    assert m(AUC_T, AUC_P) == approx(0.75)
    # test_unweighted_all_correct
    assert metrics.AUC()(AUC_T, np.array(AUC_T, np.float32)) == approx(1.0)


def test_precision_keras_tests():
    # test_unweighted_with_threshold: [0.5, 0.0], a vector for several thresholds
    r = metrics.Precision(thresholds=[0.5, 0.7])([0, 1, 1, 0], [1, 0, 0.6, 0])
    assert isinstance(r, np.ndarray) and r.tolist() == [0.5, 0.0]
    # test_weighted_with_threshold and test_multiple_updates: weights of y's shape
    p = metrics.Precision(thresholds=[0.5, 1.0])
    t, y = np.array([[0, 1], [1, 0]]), np.array([[1, 0], [0.6, 0]], np.float32)
    w = np.array([[4, 0], [3, 1]], np.float32)
    assert p(t, y, sample_weight=w) == approx([3 / 7, 0])
    assert p(t, y, sample_weight=w) == approx([6 / 14, 0])
    # test_unweighted_top_k, test_weighted_top_k (a scalar weight in the second batch)
    assert metrics.Precision(top_k=3)([0, 1, 1, 0, 0], [0.2, 0.1, 0.5, 0, 0.2]) == approx(1 / 3)
    p = metrics.Precision(top_k=3)
    p([[0, 1, 1, 0, 1]], [[0.2, 0.1, 0.4, 0, 0.2]], sample_weight=np.array([[1, 4, 2, 3, 5]]))
    r = p([1, 0, 1, 1, 1], [0.2, 0.6, 0.4, 0.2, 0.2], sample_weight=np.array(3))
    assert r == approx(((2 + 5) + (3 + 3)) / ((1 + 2 + 5) + (3 + 3 + 3)))
    # test_unweighted_class_id_multiclass
    p = metrics.Precision(class_id=1)
    y = [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    t = [[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert p(t, y) == 1.0 and p.true_positives.tolist() == [1] and p.false_positives.tolist() == [0]
    # test_unweighted_top_k_and_threshold
    p = metrics.Precision(thresholds=0.7, top_k=2)
    assert p([0, 1, 1, 0, 1], [0.2, 0.8, 0.6, 0, 0.2]) == 1.0
    assert p.true_positives.tolist() == [1] and p.false_positives.tolist() == [0]
    # an all-negative batch: 0 (divide_no_nan)
    assert metrics.Precision()([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_recall_by_hand_with_weights_class_id_and_top_k():
    # 4 samples x 3 classes; class 2: labels [1, 0, 1, 1], predictions above 0.5 at samples 0, 1
    t = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1]])
    y = np.array([[0.1, 0.2, 0.7], [0.1, 0.3, 0.6], [0.2, 0.7, 0.1], [0.5, 0.4, 0.3]])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    # tp = w0 = 1; fn = w2 + w3 = 7
    assert metrics.Recall(class_id=2)(t, y, sample_weight=w) == approx(1 / 8)
    # top_k=1: the argmax of each row is positive; labels: 5, found at rows 0 (class 2) and 2
    # (class 1), each row's weight on its elements
    assert metrics.Recall(top_k=1)(t, y, sample_weight=w) == approx((1 + 3) / (1 + 2 + 3 + 3 + 4))
    # evenly spread thresholds (Keras' bucket method): of the 5 labels, all above 0, 2 above
    # 0.5 (the 0.7 at rows 0 and 2), none above 1
    r = metrics.Recall(thresholds=[0.0, 0.5, 1.0])
    assert r(t, y).tolist() == approx([1.0, 2 / 5, 0.0])


# ---- weighted means by hand --------------------------------------------------------------------

def test_mean_metrics_weighted_by_hand():
    t = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], np.float64)
    y = np.array([[0.9, 0.4, 0.2], [0.6, 0.1, 0.8], [0.7, 0.7, 0.3]], np.float64)
    w = np.array([0.5, 2.0, 1.5])
    # per-sample binary accuracy (threshold 0.5): [2/3, 2/3, 2/3] -> weighted mean 2/3
    assert metrics.BinaryAccuracy()(t, y, sample_weight=w) == approx(2 / 3)
    # threshold 0.25: matches [[1, 0, 0], [0, 1, 1], [1, 1, 1]] -> [1/3, 2/3, 1]
    acc = (0.5 * 1 / 3 + 2.0 * 2 / 3 + 1.5 * 1) / 4.0
    assert metrics.BinaryAccuracy(threshold=0.25)(t, y, sample_weight=w) == approx(acc)
    d = y - t
    mse = (d ** 2).mean(axis=1)
    assert metrics.MeanSquaredError()(t, y, sample_weight=w) == approx(np.dot(w, mse) / w.sum())
    assert metrics.MeanAbsoluteError()(t, y, sample_weight=w) == \
        approx(np.dot(w, np.abs(d).mean(axis=1)) / w.sum())
    assert metrics.RootMeanSquaredError()(t, y, sample_weight=w) == \
        approx(math.sqrt(np.dot(w, mse) / w.sum()))
    # a weight per element (y's shape): per sample sum(w * v) / n_outputs, count the mean weight
    w2 = np.array([[1, 0, 2], [0, 1, 1], [3, 1, 0]], np.float64)
    m = (w2 * (d ** 2)).mean(axis=1).sum() / w2.mean(axis=1).sum()
    assert metrics.RootMeanSquaredError()(t, y, sample_weight=w2) == approx(math.sqrt(m))
    # a scalar weight (as Keras: the batch counts as one sample of that weight)
    mean = metrics.Mean()
    mean.update_state([1, 3, 5, 7], sample_weight=0.3)
    mean.update_state([2.0], sample_weight=[2.0])
    assert mean.result() == approx((0.3 * 4 + 2 * 2) / 2.3)


def test_call_updates_the_state_and_returns_the_running_result():
    # as Keras 3 (Metric.__call__: update_state, then result): 4.0, then (16 + 1) / 5
    m = metrics.Mean()
    assert m([1, 3, 5, 7]) == 4.0
    assert m([1.0]) == approx(3.4)
    a = metrics.CategoricalAccuracy()
    assert a(CAT_T, CAT_P) == 0.5
    assert a([[1, 0, 0]], [[0.9, 0.1, 0]]) == approx(2 / 3)


def test_top_k_ties_count_as_in_the_top_k():
    # Keras' in_top_k: rank = 1 + #(scores > the label's); ties with the k-th are in
    y = [[0.3, 0.3, 0.3, 0.1], [0.1, 0.5, 0.4, 0.0]]
    assert metrics.SparseTopKCategoricalAccuracy(k=1)([2, 2], y) == 0.5
    assert metrics.SparseTopKCategoricalAccuracy(k=2)([2, 3], y) == 0.5
    assert metrics.TopKCategoricalAccuracy(k=1)([[0, 1, 0, 0], [0, 1, 0, 0]], y) == 1.0


# ---- AUC against a direct computation ----------------------------------------------------------

def _scores(n, rng):
    """n distinct scores, each in the middle of its own bucket of 10000 (so that the
    thresholded curve is the exact one), with random labels and weights."""
    scores = (rng.permutation(n) * 10 + 5.5) / 10000  # (bucket b holds (b, b + 1] / 10000)
    return scores, (rng.random(n) < 0.4).astype(np.float64), rng.random(n) + 0.1


def test_auc_roc_matches_the_trapezoid_of_sorted_scores():
    rng = np.random.default_rng(0)
    s, t, w = _scores(600, rng)
    order = np.argsort(-s)
    tpr = np.concatenate([[0], np.cumsum((t * w)[order])]) / np.sum(t * w)
    fpr = np.concatenate([[0], np.cumsum(((1 - t) * w)[order])]) / np.sum((1 - t) * w)
    exact = np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2)
    m = metrics.AUC(num_thresholds=10001, dtype="float64")
    for part in np.array_split(np.arange(600), 7):  # several batches
        m.update_state(t[part], s[part], sample_weight=w[part])
    assert m.result() == approx(exact)
    # unweighted: the Mann-Whitney statistic, P(score of a positive > score of a negative)
    pos, neg = s[t == 1], s[t == 0]
    mw = np.mean(pos[:, None] > neg[None, :])
    assert metrics.AUC(num_thresholds=10001, dtype="float64")(t, s) == approx(mw)


def test_auc_pr_interpolation_matches_the_integral_of_sorted_scores():
    # Davis & Goadrich: from one score to the next, tp and p = tp + fp grow linearly; over a
    # positive's step recall rises by 1 / #positives and the precision is (tp + u) / (p + u),
    # u in [0, 1]: integral 1 + (tp - p) ln((p + 1) / p), or 1 from p = 0
    rng = np.random.default_rng(1)
    s, t, _ = _scores(300, rng)
    labels = t[np.argsort(-s)]
    area, tp, p = 0.0, 0.0, 0.0
    for positive in labels:
        if positive:
            area += (1.0 if p == 0 else 1 + (tp - p) * math.log((p + 1) / p)) / labels.sum()
            tp += 1
        p += 1
    m = metrics.AUC(num_thresholds=10001, curve="PR", dtype="float64")
    assert m(t, s) == approx(area)
    # the bounds: minoring <= interpolation <= majoring
    lo = metrics.AUC(num_thresholds=10001, curve="PR", summation_method="minoring", dtype="float64")
    hi = metrics.AUC(num_thresholds=10001, curve="PR", summation_method="majoring", dtype="float64")
    assert lo(t, s) <= m.result() <= hi(t, s)


def test_auc_multi_label_and_label_weights():
    rng = np.random.default_rng(2)
    t = (rng.random((40, 3)) < 0.5).astype(np.float64)
    y = rng.random((40, 3))
    per = [metrics.AUC(num_thresholds=50)(t[:, j], y[:, j]) for j in range(3)]
    assert metrics.AUC(num_thresholds=50, multi_label=True)(t, y) == approx(np.mean(per))
    lw = np.array([0.2, 0.0, 1.8])
    m = metrics.AUC(num_thresholds=50, multi_label=True, label_weights=lw)
    assert m(t, y) == approx(np.dot(per, lw) / lw.sum())
    assert m.true_positives.shape == (50, 3)
    m = metrics.AUC(num_thresholds=50, multi_label=True, num_labels=3)
    assert len(m.state()) == 4 * 50 * 3


# ---- config, names, serialization -------------------------------------------------------------

CONFIGURED = [
    lambda: metrics.Mean(name="m"), lambda: metrics.Accuracy(dtype="float64"),
    lambda: metrics.BinaryAccuracy(threshold=0.3), metrics.CategoricalAccuracy,
    metrics.SparseCategoricalAccuracy, lambda: metrics.TopKCategoricalAccuracy(k=2),
    lambda: metrics.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True),
    metrics.MeanSquaredError, metrics.MeanAbsoluteError, metrics.RootMeanSquaredError,
    lambda: metrics.Precision(thresholds=[0.3, 0.6], class_id=1, name="p"),
    lambda: metrics.Recall(top_k=2), lambda: metrics.Recall(thresholds=np.array([0.2, 0.9])),
    lambda: metrics.AUC(num_thresholds=17, curve="PR", summation_method="majoring",
                        from_logits=True),
    lambda: metrics.AUC(thresholds=[0.3, 0.5], multi_label=True, num_labels=3,
                        label_weights=[1, 2, 3]),
    metrics.TruePositives, lambda: metrics.FalsePositives(thresholds=[0.1, 0.7]),
    lambda: metrics.TrueNegatives(thresholds=0.3), lambda: metrics.FalseNegatives(name="fn"),
    lambda: metrics.PrecisionAtRecall(0.4, num_thresholds=100, class_id=12),
    lambda: metrics.RecallAtPrecision(0.8), lambda: metrics.SensitivityAtSpecificity(0.5),
    lambda: metrics.SpecificityAtSensitivity(1.0, num_thresholds=1),
    lambda: metrics.FBetaScore(average="macro", beta=2.0, threshold=0.3), metrics.F1Score,
    lambda: metrics.R2Score(class_aggregation=None, num_regressors=2),
]


@pytest.mark.parametrize("make", CONFIGURED)
def test_get_config_round_trip(make):
    m = make()
    cfg = m.get_config()
    assert json.loads(json.dumps(cfg)) == cfg  # (plain data, as Keras' AUC test checks)
    again = type(m).from_config(cfg)
    assert again.get_config() == cfg and again.name == m.name
    back = metrics.deserialize(metrics.serialize(m))
    assert type(back) is type(m) and back.get_config() == cfg
    assert metrics.get(metrics.serialize(m)).get_config() == cfg


def test_keras_configs_and_names():
    # keras.metrics.serialize(keras.metrics.BinaryAccuracy()) in Keras 3.15
    assert metrics.serialize(metrics.BinaryAccuracy()) == {
        "module": "keras.metrics", "class_name": "BinaryAccuracy",
        "config": {"name": "binary_accuracy", "dtype": "float32", "threshold": 0.5},
        "registered_name": None}
    cfg = metrics.AUC(name="auc").get_config()  # keras.metrics.AUC().get_config()
    assert cfg == {"name": "auc", "dtype": "float32", "num_thresholds": 200, "curve": "ROC",
                   "summation_method": "interpolation", "multi_label": False,
                   "num_labels": None, "label_weights": None, "from_logits": False}
    assert metrics.Precision(name="p").get_config() == {
        "name": "p", "dtype": "float32", "thresholds": None, "top_k": None, "class_id": None}
    # names: the class name in snake case, made unique when not given (Keras' auto_name)
    a, b = metrics.Precision(), metrics.Precision()
    assert a.name.startswith("precision") and b.name.startswith("precision_") and a.name != b.name
    assert metrics.AUC().name.startswith("auc")
    assert metrics.Mean().name == "mean" and metrics.Accuracy().name == "accuracy"
    assert len(metrics.Mean().variables) == 2 and len(metrics.AUC().variables) == 4


def test_get_by_keras_names():
    # keras/src/metrics/__init__.py: class names, their snake case, and the aliases
    for name, cls in [("mse", metrics.MeanSquaredError), ("MAE", metrics.MeanAbsoluteError),
                      ("auc", metrics.AUC), ("AUC", metrics.AUC), ("recall", metrics.Recall),
                      ("root_mean_squared_error", metrics.RootMeanSquaredError),
                      ("top_k_categorical_accuracy", metrics.TopKCategoricalAccuracy),
                      ("accuracy", metrics.Accuracy)]:
        assert type(metrics.get(name)) is cls
    assert metrics.get("mse").name == "mean_squared_error"  # keras.metrics.get("mse").name
    assert type(metrics.get(metrics.Recall)) is metrics.Recall
    m = metrics.Precision()
    assert metrics.get(m) is m
    assert type(metrics.get({"class_name": "AUC", "config": {"curve": "PR"}})) is metrics.AUC


def test_compile_resolution_as_keras():
    # keras/src/trainers/compile_utils.py get_metric: "accuracy"/"acc" (any case) by shapes,
    # binary for one output, sparse for labels of a lower rank; a string names the metric
    sparse = losses.get("sparse_categorical_crossentropy")
    cce = losses.get("categorical_crossentropy")
    bce = losses.get("binary_crossentropy")
    assert type(metrics.get("acc", sparse, 10)) is metrics.SparseCategoricalAccuracy
    assert type(metrics.get("Accuracy", cce, 10)) is metrics.CategoricalAccuracy
    assert type(metrics.get("accuracy", bce, 1)) is metrics.BinaryAccuracy
    # (Keras 3: several sigmoid outputs with one-hot-shaped targets -> categorical accuracy)
    assert type(metrics.get("accuracy", bce, 3)) is metrics.CategoricalAccuracy
    assert metrics.get("acc", cce, 10).name == "acc"
    assert metrics.get("mse", cce, 10).name == "mse" and metrics.get("AUC", bce, 1).name == "AUC"


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: metrics.Precision(thresholds=1.5), r"thresholds in \[0, 1\].*1\.5"),
    (lambda: metrics.Recall(thresholds=[0.2, -0.1]), r"thresholds in \[0, 1\].*-0\.1"),
    (lambda: metrics.Precision(top_k=0), r"top_k .*Received: top_k=0"),
    (lambda: metrics.Recall(class_id=-1), r"class_id .*Received: class_id=-1"),
    (lambda: metrics.AUC(num_thresholds=1), r"num_thresholds to be an int >= 2.*=1"),
    (lambda: metrics.AUC(curve="XX"), r"curve to be one of .*Received: curve='XX'"),
    (lambda: metrics.AUC(summation_method="mid"), r"summation_method to be one of .*'mid'"),
    (lambda: metrics.AUC(num_labels=3), r"num_labels only with multi_label=True"),
    (lambda: metrics.AUC(label_weights=[1, -1]), r"label_weights .*non-negative"),
    (lambda: metrics.BinaryAccuracy(threshold="half"), r"threshold .*'half'"),
    (lambda: metrics.TopKCategoricalAccuracy(k=0), r"k to be an int >= 1.*k=0"),
    (lambda: metrics.Mean(dtype="int8"), r"dtype .*'int8'"),
    (lambda: metrics.get("pearson_correlation"),
     r"metrics from .*Received: 'pearson_correlation'"),
    (lambda: metrics.deserialize({"class_name": "Nope", "config": {}}), r"class_name .*'Nope'"),
])
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, args, match", [
    (metrics.MeanSquaredError, ([[0, 1], [0, 0]], [[1, 1, 0], [0, 0, 0]]),
     r"y_true and y_pred of the same shape.*y_true.shape=\(2, 2\), y_pred.shape=\(2, 3\)"),
    (metrics.AUC, ([0, 1, 1], [0.1, 0.2]), r"y_true.shape=\(3,\), y_pred.shape=\(2,\)"),
    (metrics.CategoricalAccuracy, ([[0, 1]], [[0.2, 0.8], [0.5, 0.5]]), r"one-hot y_true"),
    (metrics.SparseCategoricalAccuracy, ([0, 1, 1], [[0.2, 0.8], [0.5, 0.5]]),
     r"y_true.shape=\(3,\), y_pred.shape=\(2, 2\)"),
    (metrics.SparseTopKCategoricalAccuracy, ([0, 3], [[0.2, 0.8], [0.5, 0.5]]),
     r"labels in \[0, 2\)"),
    (lambda: metrics.Precision(class_id=1), ([0, 1], [0.2, 0.8]),
     r"\(batch, classes\) with class_id"),
    (lambda: metrics.Precision(class_id=4), ([[0, 1]], [[0.2, 0.8]]), r"class_id < 2"),
    (lambda: metrics.AUC(multi_label=True), ([0, 1], [0.2, 0.8]), r"rank 2 with multi_label"),
    (metrics.Accuracy, (["a"], ["b"]), r"y_true to hold real numbers"),
])
def test_bad_input(make, args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make().update_state(*args)


def test_bad_sample_weight():
    with pytest.raises(ValueError, match=r"sample_weight broadcastable .*Received: sample_weight"):
        metrics.MeanSquaredError().update_state([[0, 1], [0, 0]], [[1, 1], [0, 0]],
                                                sample_weight=[1, 2, 3])
    with pytest.raises(ValueError, match=r"sample_weight broadcastable .*y_pred"):
        metrics.AUC().update_state([0, 1], [0.3, 0.6], sample_weight=[1, 2, 3])


# ---- the training loop's contract ---------------------------------------------------------------

@pytest.mark.parametrize("make", [metrics.CategoricalAccuracy, metrics.BinaryAccuracy,
                                  metrics.MeanSquaredError, metrics.RootMeanSquaredError,
                                  lambda: metrics.TopKCategoricalAccuracy(k=2),
                                  metrics.Precision, lambda: metrics.Recall(thresholds=[0.2, 0.7]),
                                  metrics.AUC, lambda: metrics.AUC(curve="PR", multi_label=True),
                                  lambda: metrics.TruePositives(thresholds=[0.1, 0.5, 0.9]),
                                  metrics.FalseNegatives,
                                  lambda: metrics.PrecisionAtRecall(0.5, num_thresholds=20),
                                  lambda: metrics.RecallAtPrecision(0.3, class_id=2),
                                  lambda: metrics.SensitivityAtSpecificity(0.6),
                                  lambda: metrics.SpecificityAtSensitivity(0.4),
                                  metrics.F1Score, lambda: metrics.F1Score(average="micro"),
                                  lambda: metrics.FBetaScore("weighted", 2.0, 0.4),
                                  lambda: metrics.FBetaScore("macro", 0.5),
                                  metrics.R2Score, lambda: metrics.R2Score(None, 1)])
def test_update_with_weights_and_summed_states(make):
    rng = np.random.default_rng(3)
    y = rng.random((30, 4)).astype(np.float32)
    t = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 30)]
    w = rng.random(30) + 0.5
    whole = make()
    whole.update_state(t, y, sample_weight=w)  # the public API ...
    fast = make()  # ... and the loop's: prepared targets once, update per batch, (n,) weights
    tt = fast.prepare_targets(t)
    for part in np.array_split(np.arange(30), 4):
        fast.update(y[part], tt[part], w[part])
    assert fast.state() == approx(whole.state())
    assert np.all(np.asarray(fast.result()) == approx(np.asarray(whole.result())))
    # two halves on two metrics (two ranks): their states summed are the whole one's
    a, b = make(), make()
    a.update(y[:12], a.prepare_targets(t[:12]), w[:12])
    b.update(y[12:], b.prepare_targets(t[12:]), w[12:])
    merged = make()
    merged.prepare_targets(t)
    merged.set_state(a.state() + b.state())
    assert np.all(np.asarray(merged.result()) == approx(np.asarray(whole.result())))
    with pytest.raises(ValueError, match="state of shape"):
        merged.set_state(np.zeros(merged.state().size + 1))


def _model(n_out, act, loss, ms):
    m = models.Sequential([layers.Dense(6, activation="relu", input_shape=(5,)),
                           layers.Dense(n_out, activation=act)], seed=0)
    m.compile("adam", loss, metrics=ms)
    return m


def test_fit_and_evaluate_report_the_metrics():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    y = (x[:, :1] + 0.3 * rng.normal(size=(90, 1)) > 0).astype(np.float32)
    auc, prec = metrics.AUC(num_thresholds=50), metrics.Precision(thresholds=[0.3])
    m = _model(1, "sigmoid", "binary_crossentropy", ["accuracy", auc, prec, "mse"])
    hist = m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert set(hist.history) == {"loss", "accuracy", auc.name, prec.name, "mse"}
    logs = m.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    p = m.predict(x, verbose=0)
    # evaluate's values are the metrics over all of x, batch by batch
    assert logs["accuracy"] == approx(np.mean((p > 0.5) == (y == 1)))
    # (the squared errors are float32, as the predictions: Keras computes them in their dtype)
    assert logs["mse"] == pytest.approx(np.mean((p.astype(np.float64) - y) ** 2),
                                        rel=TOL[np.float32]["rtol"], abs=TOL[np.float32]["atol"])
    assert logs[auc.name] == approx(metrics.AUC(num_thresholds=50)(y, p))
    assert logs[prec.name] == approx(metrics.Precision(thresholds=[0.3])(y, p))
    # validation data: evaluated on empty copies, the training metrics untouched
    hist = m.fit(x[:60], y[:60], epochs=1, batch_size=16, verbose=0,
                 validation_data=(x[60:], y[60:]))
    p = m.predict(x[60:], verbose=0)
    assert hist.history["val_" + auc.name][0] == approx(metrics.AUC(num_thresholds=50)(y[60:], p))
    assert hist.history[auc.name][0] == approx(auc.result())


def test_fit_sparse_accuracies():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 64)
    top2 = metrics.SparseTopKCategoricalAccuracy(k=2)
    m = _model(3, "softmax", "sparse_categorical_crossentropy", ["accuracy", top2])
    m.fit(x, labels, epochs=1, batch_size=16, verbose=0)
    logs = m.evaluate(x, labels, batch_size=10, verbose=0, return_dict=True)
    p = m.predict(x, verbose=0)
    assert logs["accuracy"] == approx(np.mean(np.argmax(p, 1) == labels))
    second = np.sort(p, axis=1)[:, -2]
    assert logs[top2.name] == approx(np.mean(p[np.arange(64), labels] >= second))


class BinaryTruePositives(metrics.Metric):
    """keras/src/metrics/metric.py's example subclass, its state a variable updated in place."""

    def __init__(self, name="binary_true_positives", **kwargs):
        super().__init__(name=name, **kwargs)
        self.true_positives = self.add_variable(shape=(), initializer="zeros",
                                                name="true_positives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = np.logical_and(np.asarray(y_true, bool), np.asarray(y_pred, bool))
        values = values.astype(np.float64)
        if sample_weight is not None:
            values = values * np.broadcast_to(np.asarray(sample_weight)[:, None], values.shape)
        self.true_positives += values.sum()

    def result(self):
        return float(self.true_positives)


def test_a_user_metric_in_the_stateful_api_and_in_evaluate():
    m = BinaryTruePositives()
    assert m([[1], [0], [1]], [[1], [1], [0]]) == 1.0
    assert m([[1], [1]], [[1], [1]], sample_weight=[0.5, 2.0]) == 3.5
    assert len(m.variables) == 1 and m.state().tolist() == [3.5]
    m.reset_state()
    assert m.result() == 0.0
    x = np.array([[1.0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]], np.float32)
    y = np.array([[1], [0], [1], [1]], np.float32)
    model = _model(1, "relu", "mse", [BinaryTruePositives()])
    logs = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)  # (the default update: update_state(t, p) per batch)
    assert logs["binary_true_positives"] == float(np.sum((y != 0) & (p != 0)))


# ---- confusion counts, the *At* metrics, F-scores and R2 (Keras 3.15's docs and tests) ---------

NEW_KERAS_EXAMPLES = [
    # confusion_metrics.py docstrings: (y_true, y_pred), sample_weight, result
    (metrics.TruePositives, ([0, 1, 1, 1], [1, 0, 1, 1]), None, 2.0),
    (metrics.TruePositives, ([0, 1, 1, 1], [1, 0, 1, 1]), [0, 0, 1, 0], 1.0),
    (metrics.FalsePositives, ([0, 1, 0, 0], [0, 0, 1, 1]), None, 2.0),
    (metrics.FalsePositives, ([0, 1, 0, 0], [0, 0, 1, 1]), [0, 0, 1, 0], 1.0),
    (metrics.TrueNegatives, ([0, 1, 0, 0], [1, 1, 0, 0]), None, 2.0),
    (metrics.TrueNegatives, ([0, 1, 0, 0], [1, 1, 0, 0]), [0, 0, 1, 0], 1.0),
    (metrics.FalseNegatives, ([0, 1, 1, 1], [0, 1, 0, 0]), None, 2.0),
    (metrics.FalseNegatives, ([0, 1, 1, 1], [0, 1, 0, 0]), [0, 0, 1, 0], 1.0),
    (lambda: metrics.SensitivityAtSpecificity(0.5),
     ([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]), None, 0.5),
    (lambda: metrics.SensitivityAtSpecificity(0.5),  # (printed 0.333333)
     ([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]), [1, 1, 2, 2, 1], 1 / 3),
    (lambda: metrics.SpecificityAtSensitivity(0.5),  # (printed 0.66666667)
     ([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]), None, 2 / 3),
    (lambda: metrics.SpecificityAtSensitivity(0.5),
     ([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]), [1, 1, 2, 2, 2], 0.5),
    (lambda: metrics.PrecisionAtRecall(0.5),
     ([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]), None, 0.5),
    (lambda: metrics.PrecisionAtRecall(0.5),  # (printed 0.33333333)
     ([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]), [2, 2, 2, 1, 1], 1 / 3),
    (lambda: metrics.RecallAtPrecision(0.8), ([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]), None, 0.5),
    (lambda: metrics.RecallAtPrecision(0.8), ([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]), [1, 0, 0, 1],
     1.0),
]


@pytest.mark.parametrize("make, args, weight, expected", NEW_KERAS_EXAMPLES)
def test_new_metrics_keras_documented_examples(make, args, weight, expected):
    test_keras_documented_examples(make, args, weight, expected)


AT_P = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.01, 0.02, 0.25, 0.26, 0.26], np.float32)
AT_T = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
PR_P = np.array([0.0, 0.1, 0.2, 0.5, 0.6, 0.2, 0.5, 0.6, 0.8, 0.9], np.float32)
RP_P = np.array([0.05, 0.1, 0.2, 0.3, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.9, 0.95], np.float32)
RP_T = np.array([0, 1, 0, 0, 0, 1, 1, 0, 1, 1, 0, 1])


def test_at_constraint_keras_tests():
    # keras/src/metrics/confusion_metrics_test.py, with their values
    s = metrics.SensitivityAtSpecificity
    hi = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.1, 0.45, 0.5, 0.8, 0.9], np.float32)
    assert s(0.8)(AT_T, hi) == approx(0.8)  # test_unweighted_high_specificity
    assert s(0.4)(AT_T, AT_P) == approx(0.6)  # test_unweighted_low_specificity
    w = np.arange(1, 11)
    for labels in (AT_T.astype(bool), AT_T, AT_T.astype(np.float32)):  # test_weighted
        assert s(0.4)(labels, AT_P, sample_weight=w) == approx(0.675)
        assert metrics.SpecificityAtSensitivity(0.4)(labels, AT_P, sample_weight=w) == approx(0.4)
    sp = metrics.SpecificityAtSensitivity
    assert sp(1.0)(AT_T, AT_P) == approx(0.2)  # test_unweighted_high_sensitivity
    assert sp(0.4)(AT_T, AT_P) == approx(0.6)  # test_unweighted_low_sensitivity
    three_t = np.eye(3)[AT_T * 2]  # test_unweighted_class_id: labels 0 or 2, one-hot
    assert sp(0.4, class_id=2)(three_t, np.stack([AT_P] * 3, axis=1)) == approx(0.6)
    pr = metrics.PrecisionAtRecall
    assert pr(0.8)(AT_T, PR_P) == approx(2 / 3)  # test_unweighted_high_recall
    assert pr(0.6)(AT_T, PR_P) == approx(0.75)  # test_unweighted_low_recall
    assert pr(0.6, class_id=2)(three_t, np.stack([PR_P] * 3, axis=1)) == approx(0.75)
    assert pr(7 / 8)(AT_T, PR_P, sample_weight=[2, 1, 2, 1, 2, 1, 2, 2, 1, 2]) == approx(0.7)
    rp = metrics.RecallAtPrecision
    assert rp(0.75)(RP_T, RP_P) == approx(0.5)  # test_unweighted_high_precision
    assert rp(2 / 3)(RP_T, RP_P) == approx(5 / 6)  # test_unweighted_low_precision
    assert rp(2 / 3, class_id=2)(np.eye(3)[RP_T * 2], np.stack([RP_P] * 3, axis=1)) == \
        approx(5 / 6)
    assert rp(0.75)([0, 1, 0, 0, 0, 1, 1], np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.9, 0.9],
                                                    np.float32),
                    sample_weight=[1, 2, 1, 2, 1, 2, 1]) == approx(0.6)
    # test_unachievable_precision: the best precision is 1/2 < 2/3 -> 0
    assert rp(2 / 3)([1, 1, 0, 0], np.array([0.1, 0.2, 0.3, 0.9], np.float32)) == 0.0
    # test_unweighted_all_correct: 1 for each
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, (100, 1))
    for m in (s(0.7), sp(0.7), pr(0.7), rp(0.7)):
        assert m(labels, labels.astype(np.float32)) == approx(1.0)


def test_at_constraint_by_hand_and_thresholds():
    # num_thresholds=3: thresholds [0, 0.5, 1]; scores [0.2, 0.6, 0.7, 0.4], labels [1, 1, 0, 0],
    # weights [1, 2, 3, 4]: above 0: tp 3, fp 7; above 0.5: tp 2 (the 0.6), fp 3 (the 0.7);
    # above 1: none.  tn = [0, 4, 7], fn = [0, 1, 3]
    m = metrics.SensitivityAtSpecificity(0.5, num_thresholds=3)
    t, y, w = [1, 1, 0, 0], [0.2, 0.6, 0.7, 0.4], [1, 2, 3, 4]
    m.update_state(t, y, sample_weight=w)
    assert m.thresholds == [0.0, 0.5, 1.0]
    tp, fp, tn, fn = m.variables
    assert (tp.tolist(), fp.tolist(), tn.tolist(), fn.tolist()) == \
        ([3, 2, 0], [7, 3, 0], [0, 4, 7], [0, 1, 3])
    # specificity [0, 4/7, 1] >= 0.5 at thresholds 0.5 and 1: sensitivity max(2/3, 0)
    assert m.result() == approx(2 / 3)
    # precision [0.3, 0.4, 0 (no positive predicted: divide_no_nan)]; recall [1, 2/3, 0]
    assert metrics.PrecisionAtRecall(0.6, num_thresholds=3)(t, y, sample_weight=w) == approx(0.4)
    assert metrics.RecallAtPrecision(0.35, num_thresholds=3)(t, y, sample_weight=w) == \
        approx(2 / 3)
    # num_thresholds=1: the one threshold 0.5, counted without the bucket method
    one = metrics.SpecificityAtSensitivity(0.5, num_thresholds=1)
    assert one.thresholds == [0.5] and one(t, y, sample_weight=w) == approx(4 / 7)
    # a reset: the counts are zero, the result 0
    m.reset_state()
    assert m.result() == 0.0 and not m.state().any()
    assert len(m.state()) == 4 * 3


def test_condition_counts_thresholds_and_bucket_method():
    # several thresholds: a vector; evenly spread ones (Keras' bucket method) and others agree
    y = np.array([0.05, 0.3, 0.5, 0.51, 0.9, 1.0], np.float32)
    t = np.array([1, 0, 1, 0, 1, 1])
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # positive labels weigh 1, 3, 5, 6 at scores 0.05, 0.5, 0.9, 1.0 (a score is positive above
    # the threshold, not at it); negatives 2, 4 at 0.3, 0.51
    expect = {"tp": {0.0: 15, 0.5: 11, 1.0: 0}, "fp": {0.0: 6, 0.5: 4, 1.0: 0}}
    for thresholds in ([0.0, 0.5, 1.0], [0.0, 0.5, 0.95]):  # bucket method, then not
        tp = metrics.TruePositives(thresholds=thresholds)(t, y, sample_weight=w)
        fp = metrics.FalsePositives(thresholds=thresholds)(t, y, sample_weight=w)
        fn = metrics.FalseNegatives(thresholds=thresholds)(t, y, sample_weight=w)
        tn = metrics.TrueNegatives(thresholds=thresholds)(t, y, sample_weight=w)
        assert isinstance(tp, np.ndarray)
        assert tp[:2].tolist() == [expect["tp"][0.0], expect["tp"][0.5]]
        assert fp[:2].tolist() == [expect["fp"][0.0], expect["fp"][0.5]]
        assert (tp + fn).tolist() == [15] * 3 and (fp + tn).tolist() == [6] * 3
    assert metrics.TruePositives(thresholds=[0.0, 0.5, 1.0])(t, y).tolist() == [4, 2, 0]
    assert metrics.TruePositives(thresholds=[0.0, 0.5, 1.0]).get_config()["thresholds"] == \
        [0.0, 0.5, 1.0]
    m = metrics.TruePositives()
    assert m.get_config() == {"name": m.name, "dtype": "float32", "thresholds": None}
    assert len(m.variables) == 1 and m.state().shape == (1,)


# f_score_metrics_test.py test_fbeta_weighted_random_score_none (threshold None: the argmax)
F_T = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1]]
F_P = [[0.9, 0.1, 0], [0.2, 0.6, 0.2], [0, 0, 1], [0.4, 0.3, 0.3], [0, 0.9, 0.1], [0, 0, 1]]
F_W1, F_W0, F_WH = [1.0] * 6, [1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [0.5, 1.0, 1.0, 1.0, 0.5, 1.0]
FBETA_KERAS = [
    (None, 0.5, F_W1, [0.909091, 0.555556, 1.0]), (None, 0.5, F_W0, [1.0, 0.0, 1.0]),
    (None, 0.5, F_WH, [0.9375, 0.714286, 1.0]), (None, 1.0, F_W1, [0.8, 0.666667, 1.0]),
    (None, 1.0, F_WH, [0.857143, 0.8, 1.0]), (None, 2.0, F_W1, [0.714286, 0.833333, 1.0]),
    (None, 2.0, F_WH, [0.789474, 0.909091, 1.0]),
    ("micro", 0.5, F_W1, 0.833333), ("micro", 1.0, F_W0, 1.0), ("micro", 2.0, F_WH, 0.9),
    ("macro", 0.5, F_W1, 0.821549), ("macro", 1.0, F_W0, 0.666667),
    ("macro", 1.0, F_WH, 0.885714), ("macro", 2.0, F_WH, 0.899522),
    ("weighted", 0.5, F_W1, 0.880471), ("weighted", 1.0, F_W1, 0.844444),
    ("weighted", 1.0, F_W0, 1.0), ("weighted", 2.0, F_WH, 0.897608),
]


@pytest.mark.parametrize("average, beta, weights, expected", FBETA_KERAS)
def test_fbeta_keras_tests(average, beta, weights, expected):
    # (Keras' values are float32 results printed to 6 digits, compared at atol=1e-6 there;
    # here the float64 sums with epsilon 1e-7 in the denominators, at 1e-6)
    m = metrics.FBetaScore(average, beta, None)
    r = m(F_T, F_P, sample_weight=weights)
    assert isinstance(r, np.ndarray if average is None else float)
    assert np.asarray(r) == pytest.approx(expected, abs=1e-6)


def test_fbeta_documented_examples_by_hand():
    t = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], np.int32)
    y = np.array([[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]], np.float32)
    # threshold 0.5: predicted [[0, 1, 1], [0, 1, 1], [1, 1, 0]]; per class tp [1, 2, 1],
    # fp [0, 1, 1], fn [2, 0, 0]: precision [1, 2/3, 1/2], recall [1/3, 1, 1]
    prec, rec = np.array([1, 2 / 3, 1 / 2]), np.array([1 / 3, 1, 1])
    for beta, keras_printed in ((2.0, [0.3846154, 0.90909094, 0.8333334]),
                                (1.0, [0.5, 0.8, 0.6666667])):
        exact = (1 + beta ** 2) * prec * rec / (beta ** 2 * prec + rec)
        assert exact == pytest.approx(keras_printed, abs=1e-6)
        m = metrics.FBetaScore(beta=beta, threshold=0.5) if beta != 1.0 else \
            metrics.F1Score(threshold=0.5)
        assert m(t, y) == pytest.approx(exact, abs=1e-6)  # (the epsilons: ~1e-7 off)
        assert m.state().shape == (4 * 3,)
        m.reset_state()
        assert not m.state().any() and m.result().tolist() == [0.0, 0.0, 0.0]
    # test_fbeta_random_score (threshold 0.66): macro 0.6555555 for beta 1, micro 0.6666667
    yr, tr = [[0.7, 0.7, 0.7], [1, 0, 0], [0.9, 0.8, 0]], [[0, 0, 1], [1, 1, 0], [1, 1, 1]]
    assert metrics.F1Score("macro", 0.66)(tr, yr) == pytest.approx(0.6555555, abs=1e-6)
    assert metrics.F1Score("micro", 0.66)(tr, yr) == pytest.approx(0.6666667, abs=1e-6)
    # threshold None: the row's maximum (ties: all of them), never a zero row
    m = metrics.F1Score(average=None)
    m.update_state([[1, 0], [0, 1], [1, 1]], [[0.5, 0.5], [0.0, 0.0], [0.2, 0.9]])
    assert m.true_positives.tolist() == [1, 1] and m.false_positives.tolist() == [0, 1]
    assert m.false_negatives.tolist() == [1, 1] and m.intermediate_weights.tolist() == [2, 2]
    # names and configs, as Keras 3.15 writes them
    assert metrics.F1Score().get_config() == {"name": "f1_score", "dtype": "float32",
                                              "average": None, "threshold": None}
    assert metrics.FBetaScore(beta=2.0).get_config() == {
        "name": "fbeta_score", "dtype": "float32", "average": None, "beta": 2.0,
        "threshold": None}


# regression_metrics_test.py R2ScoreTest (y_true, y_pred, sample_weight, aggregation,
# num_regressors, result)
R2_T = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
R2_SK, R2_TFA, R2_W = [[0.4, 0.5, 0.6], [0.1, 0.2, 0.3], [0.5, 0.8, 0.2]], \
    [[0.4, 0.9, 1.6], [0.1, 1.2, 0.6], [1.5, 0.8, 0.6]], [0.8, 0.1, 0.4]
R2_KERAS = [
    (R2_SK, None, None, 0, [0.37, -1.295, 0.565]),
    (R2_SK, None, "uniform_average", 0, -0.12),
    (R2_SK, None, "variance_weighted_average", 0, -0.12),
    (R2_TFA, R2_W, None, 0, [0.17305559, -8.836666, -0.521]),
    (R2_TFA, R2_W, None, 1, [0.054920673, -10.241904, -0.7382858]),
    (R2_TFA, R2_W, None, 2, [-0.10259259, -12.115555, -1.0280001]),
    (R2_TFA, R2_W, "uniform_average", 0, -3.0615367889404297),
    (R2_TFA, R2_W, "uniform_average", 1, -3.641756534576416),
    (R2_TFA, R2_W, "uniform_average", 2, -4.415382385253906),
    (R2_TFA, R2_W, "variance_weighted_average", 0, -1.3710224628448486),
    (R2_TFA, R2_W, "variance_weighted_average", 1, -1.7097399234771729),
    (R2_TFA, R2_W, "variance_weighted_average", 2, -2.161363363265991),
]


@pytest.mark.parametrize("y, w, aggregation, regressors, expected", R2_KERAS)
def test_r2_keras_tests(y, w, aggregation, regressors, expected):
    # (Keras: float32, compared at atol=1e-6; these are float64 sums: to float32 rounding)
    m = metrics.R2Score(aggregation, regressors)
    r = m(R2_T, y, sample_weight=w)
    assert isinstance(r, np.ndarray if aggregation is None else float)
    assert np.asarray(r) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_r2_by_hand():
    # the documented example: y_true [1, 4, 3] (mean 8/3), y_pred [2, 4, 4]: residuals 1 + 0 + 1,
    # sum of squares (25 + 16 + 1) / 9 = 14/3: 1 - 2 / (14/3) = 4/7 (printed 0.57142854)
    m = metrics.R2Score()
    assert m([[1], [4], [3]], [[2], [4], [4]]) == approx(4 / 7)
    assert m.num_samples == 3 and len(m.variables) == 5
    # y_true (batch,) with y_pred (batch, 1): made a column (Keras' rank rule)
    assert metrics.R2Score()([1, 4, 3], [[2], [4], [4]]) == approx(4 / 7)
    # weights [2, 1, 1]: weighted mean 9/4; ss 2 (5/4)^2 + (7/4)^2 + (3/4)^2 = 108/16; res 2 + 1
    assert metrics.R2Score()([[1], [4], [3]], [[2], [4], [4]], sample_weight=[2, 1, 1]) == \
        approx(1 - 3 / (108 / 16))
    # adjusted with 1 regressor, n = 3: 1 - (1 - 4/7) (3 - 1) / (3 - 1 - 1)
    assert metrics.R2Score(num_regressors=1)([[1], [4], [3]], [[2], [4], [4]]) == \
        approx(1 - (3 / 7) * 2)
    # p >= n - 1: R2 with a warning (Keras' two messages)
    for p, msg in ((2, "Division by zero"), (5, "More independent predictors")):
        m = metrics.R2Score(num_regressors=p)
        m.update_state([[1], [4], [3]], [[2], [4], [4]])
        with pytest.warns(UserWarning, match=msg):
            assert m.result() == approx(4 / 7)
    # a constant y_true: a residual over 0 is -inf -> 0 (Keras' where(isinf)); 0 / 0 is NaN
    assert metrics.R2Score()([[1.0], [1.0]], [[0.0], [2.0]]) == 0.0
    assert math.isnan(metrics.R2Score()([[1.0], [1.0]], [[1.0], [1.0]]))
    # before any batch 0.0; after a reset NaN (Keras: 0 / 0)
    m = metrics.R2Score()
    assert m.result() == 0.0
    m.update_state([[1], [4], [3]], [[2], [4], [4]])
    m.reset_state()
    assert not m.state().any() and math.isnan(m.result())
    assert metrics.R2Score().get_config() == {"name": "r2_score", "dtype": "float32",
                                              "class_aggregation": "uniform_average",
                                              "num_regressors": 0}


def test_new_metric_names_as_keras():
    # keras.metrics.get(name) in Keras 3.15: class names and their snake case
    for name, cls, made in [("true_positives", metrics.TruePositives, "true_positives"),
                            ("FalseNegatives", metrics.FalseNegatives, "false_negatives"),
                            ("f1_score", metrics.F1Score, "f1_score"),
                            ("f_beta_score", metrics.FBetaScore, "fbeta_score"),
                            ("FBetaScore", metrics.FBetaScore, "fbeta_score"),
                            ("r2_score", metrics.R2Score, "r2_score")]:
        m = metrics.get(name)
        assert type(m) is cls and m.name.startswith(made)
    # (Keras: "fbeta_score" is no name of the registry, only the metric's default name)
    with pytest.raises(ValueError, match="fbeta_score"):
        metrics.get("fbeta_score")
    # the *At* metrics need their value: Keras' get fails on the missing argument (TypeError)
    with pytest.raises(TypeError):
        metrics.get("precision_at_recall")
    cfg = metrics.serialize(metrics.RecallAtPrecision(0.8, name="rap"))
    assert cfg["class_name"] == "RecallAtPrecision" and cfg["config"] == {
        "name": "rap", "dtype": "float32", "class_id": None, "num_thresholds": 200,
        "precision": 0.8}
    assert metrics.deserialize(cfg).precision == 0.8
    assert metrics.F1Score().direction == "up" and metrics.TruePositives().direction is None


@pytest.mark.parametrize("make, match", [
    (lambda: metrics.TruePositives(thresholds=[0.5, 1.2]), r"thresholds in \[0, 1\].*1\.2"),
    (lambda: metrics.SensitivityAtSpecificity(-1),
     r"`specificity` must be in the range \[0, 1\]. Received: specificity=-1"),
    (lambda: metrics.SpecificityAtSensitivity(1.5), r"`sensitivity` must be .*sensitivity=1.5"),
    (lambda: metrics.PrecisionAtRecall(-0.1), r"`recall` must be .*recall=-0.1"),
    (lambda: metrics.RecallAtPrecision("high"), r"`precision` must be .*precision=high"),
    (lambda: metrics.PrecisionAtRecall(0.4, num_thresholds=-1),
     r"Argument `num_thresholds` must be an integer > 0. Received: num_thresholds=-1"),
    (lambda: metrics.RecallAtPrecision(0.4, num_thresholds=0), r"num_thresholds=0"),
    (lambda: metrics.SensitivityAtSpecificity(0.4, class_id=-2), r"class_id .*=-2"),
    (lambda: metrics.FBetaScore(average="wrong"),
     r"Invalid `average` argument value. Expected one of: .*Received: average=wrong"),
    (lambda: metrics.FBetaScore(beta=1), r"`beta` .*Python float. Received: beta=1 of type"),
    (lambda: metrics.FBetaScore(beta=None), r"`beta` .*Python float"),
    (lambda: metrics.FBetaScore(beta=0.0), r"`beta` .*> 0. Received: beta=0.0"),
    (lambda: metrics.FBetaScore(beta=-0.5), r"beta=-0.5"),
    (lambda: metrics.F1Score(threshold=1), r"`threshold` .*Python float. Received: threshold=1"),
    (lambda: metrics.F1Score(threshold=1.5), r"0 < threshold <= 1. Received: threshold=1.5"),
    (lambda: metrics.F1Score(threshold=0.0), r"threshold=0.0"),
    (lambda: metrics.R2Score(class_aggregation="wrong"),
     r"Invalid value for argument `class_aggregation`.*class_aggregation=wrong"),
    (lambda: metrics.R2Score(num_regressors=-1),
     r"Invalid value for argument `num_regressors`. Expected a value >= 0.*=-1"),
])
def test_new_metrics_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, args, kwargs, match", [
    (metrics.R2Score, ([0.0, 1.0], [0.0, 1.0]), {}, r"R2Score expects 2D inputs with shape"),
    (metrics.F1Score, ([0, 1], [0.3, 0.8]), {}, r"FBetaScore expects 2D inputs .*y_pred.shape"),
    (metrics.F1Score, ([[0, 1]], [[0.3, 0.8, 0.1]]), {}, r"same shape"),
    (metrics.R2Score, ([[0, 1]], [[0.3, 0.8]]), {"sample_weight": [1, 2, 3]},
     r"sample_weight broadcastable"),
    (metrics.F1Score, ([[0, 1]], [[0.3, 0.8]]), {"sample_weight": [[1, 2]]},
     r"sample_weight of shape \(batch,\)"),
    (lambda: metrics.PrecisionAtRecall(0.5, class_id=3), ([[0, 1]], [[0.3, 0.8]]), {},
     r"class_id < 2"),
    (metrics.TruePositives, ([0, 1, 1], [0.1, 0.2]), {}, r"y_true.shape=\(3,\)"),
])
def test_new_metrics_bad_input(make, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make().update_state(*args, **kwargs)


def test_fbeta_and_r2_refuse_a_batch_of_other_width():
    for m in (metrics.F1Score(), metrics.R2Score()):
        m.update_state([[0, 1]], [[0.3, 0.8]])
        with pytest.raises(ValueError, match="as the first batch"):
            m.update_state([[0, 1, 1]], [[0.3, 0.8, 0.5]])


def test_fit_and_evaluate_report_the_new_metrics():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, :1] + 0.3 * rng.normal(size=(60, 1)) > 0).astype(np.float32)
    # (a vector result, e.g. F1Score(average=None), cannot be logged: fit's logs are floats)
    ms = [metrics.F1Score("macro", threshold=0.5), metrics.PrecisionAtRecall(0.5),
          metrics.TruePositives(), metrics.R2Score()]
    m = _model(1, "sigmoid", "binary_crossentropy", ms)
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    logs = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    p = m.predict(x, verbose=0)
    assert logs[ms[2].name] == float(np.sum((p > 0.5) & (y == 1)))
    assert logs[ms[1].name] == approx(metrics.PrecisionAtRecall(0.5)(y, p))
    assert logs["r2_score"] == approx(metrics.R2Score()(y, p))
    assert logs["f1_score"] == approx(metrics.F1Score("macro", threshold=0.5)(y, p))


def test_fbeta_and_r2_check_the_training_loops_batches_too():
    # the loop's update() (no conversion) still refuses integer labels against (batch, k)
    # scores, which would otherwise broadcast when batch == k
    for m in (metrics.F1Score(), metrics.R2Score()):
        with pytest.raises(ValueError, match="expects 2D inputs"):
            m.update(np.full((3, 3), 0.5, np.float32), np.array([0, 2, 1]))
        with pytest.raises(ValueError, match="same shape"):
            m.update(np.full((3, 3), 0.5, np.float32), np.ones((3, 2)))


def test_evaluate_returns_a_vector_metric_as_an_array():
    """evaluate (and its list form) keeps F1Score(average=None)'s per-class result as an array,
    as Keras does; by hand: with one-hot targets and argmax predictions, class c's F1 is
    2 tp / (2 tp + fp + fn)."""
    from fastnn import layers, models
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 30)]
    m = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))], seed=1)
    m.compile("adam", "categorical_crossentropy", metrics=[metrics.F1Score()])
    logs = m.evaluate(x, y, batch_size=30, verbose=0, return_dict=True)
    pred = np.eye(3)[m.predict(x, verbose=0).argmax(1)]
    tp, fp, fn = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)
    f1 = logs["f1_score"]
    assert isinstance(f1, np.ndarray) and f1.shape == (3,)
    np.testing.assert_allclose(f1, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-7), rtol=1e-5)
    loss, as_list = m.evaluate(x, y, batch_size=30, verbose=0)
    assert loss == logs["loss"] and np.array_equal(as_list, f1)
