"""``xent.evaluate``'s calibration, Brier, entropy, MRR, per-class, standard-error, per-row
and per-sequence outputs against the float64 reference from the formulas
(``reference.evaluation_metrics``), under every tie policy, and the same numbers streamed,
in blocks and through Dask."""

import json

import numpy as np
import pytest

import xent

import reference as ref
from helpers import scores

SCALARS = (
    "loss",
    "accuracy",
    "ece",
    "rms_calibration_error",
    "max_calibration_error",
    "brier",
    "entropy",
    "mrr",
    "macro_accuracy",
    "loss_stderr",
    "accuracy_stderr",
)


def _check(ev, want, rtol, atol):
    assert ev.count == want["count"]
    for name in SCALARS:
        np.testing.assert_allclose(
            getattr(ev, name), want[name], rtol=rtol, atol=atol, err_msg=name
        )
    for k, v in want["top_k_accuracy"].items():
        np.testing.assert_allclose(ev.top_k_accuracy[k], v, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ev.top_k_accuracy_stderr[k], want["top_k_accuracy_stderr"][k])
    np.testing.assert_allclose(ev.class_accuracy, want["class_accuracy"], rtol=1e-12)
    np.testing.assert_allclose(ev.class_support, want["class_support"], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("ties", ["stable", "optimistic", "pessimistic"])
@pytest.mark.parametrize("tied_scores", [False, True])
@pytest.mark.parametrize("c", [2, 3, 10, 257])
def test_metrics_against_reference(rng, dtype, from_logits, ties, tied_scores, c):
    z = scores(rng, (400, c), dtype, from_logits, tied_scores)
    y = rng.integers(0, c, 400)
    exact = dtype == np.float64
    rtol, atol = (1e-10, 1e-12) if exact else (2e-4, 2e-6)
    compute = np.float32 if dtype == np.float16 else dtype
    for weighted, ignore in [(False, None), (True, None), (True, 0), (False, c - 1)]:
        w = rng.random(400) if weighted else None
        ev = xent.evaluate(
            y,
            z,
            from_logits=from_logits,
            top_k=(1, 2, 5),
            sample_weight=w,
            ignore_class=ignore,
            batch_size=77,
            ties=ties,
            n_bins=10,
            per_row=True,
            confusion=True,
        )
        want = ref.evaluation_metrics(
            y,
            z.astype(compute),
            from_logits,
            (1, 2, 5),
            w,
            ignore,
            n_bins=10,
            ties=ties,
            dtype=compute,
        )
        _check(ev, want, rtol, atol)
        np.testing.assert_allclose(ev.confusion_matrix, want["confusion_matrix"], rtol=1e-12)
        pr, wpr, counted = ev.per_row, want["per_row"], want["counted"]
        np.testing.assert_array_equal(pr["rank"], wpr["rank"])
        np.testing.assert_array_equal(pr["argmax"], wpr["argmax"])
        for name in ("loss", "lse", "entropy", "p_true"):
            np.testing.assert_allclose(
                pr[name][counted], wpr[name][counted], rtol=rtol, atol=atol, err_msg=name
            )
        assert np.all(pr["loss"][~counted] == 0) and np.isnan(pr["entropy"][~counted]).all()


@pytest.mark.parametrize("from_logits", [True, False])
def test_dense_labels(rng, from_logits):
    """Soft label rows: Brier against the row itself, the true class its first arg-max."""
    z = scores(rng, (300, 7), np.float64, from_logits, False)
    t = rng.random((300, 7))
    t /= t.sum(1, keepdims=True)
    ev = xent.evaluate(t, z, from_logits=from_logits, top_k=(1, 3), batch_size=50, per_row=True)
    want = ref.evaluation_metrics(t, z, from_logits, (1, 3), dense=True)
    _check(ev, want, 1e-10, 1e-12)
    np.testing.assert_allclose(ev.per_row["p_true"], want["per_row"]["p_true"], rtol=1e-10)


def test_calibration_bins_by_hand():
    """Three rows of known confidence: bins 6 (0.4), 7 (0.5) and 10 (0.7) of 15."""
    p = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]]
    ev = xent.evaluate([1, 2, 0], p)
    cal = ev.calibration
    assert np.flatnonzero(cal["weight"]).tolist() == [6, 7, 10]
    # |1 - 0.4| + |0 - 0.5| + |1 - 0.7|, each a third of the rows
    np.testing.assert_allclose(ev.ece, (0.6 + 0.5 + 0.3) / 3)
    np.testing.assert_allclose(ev.max_calibration_error, 0.6)
    np.testing.assert_allclose(ev.rms_calibration_error, np.sqrt((0.36 + 0.25 + 0.09) / 3))
    # every probability row sums to 1: Brier = mean over rows of sum (p - onehot)^2
    np.testing.assert_allclose(ev.brier, (0.14 + 0.98 + 0.56) / 3)
    assert np.isnan(cal["accuracy"][0]) and cal["accuracy"][7] == 0.0


def test_tie_policies_by_hand():
    """Label 0 ties with class 1 for the top score: first (stable), within top-1
    (optimistic), second (pessimistic)."""
    z = np.array([[2.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    y = [0, 2]  # second row: label 2 ties with class 1, after it by index
    got = {
        t: xent.evaluate(y, z, from_logits=True, ties=t, per_row=True)
        for t in ("stable", "optimistic", "pessimistic")
    }
    assert got["stable"].per_row["rank"].tolist() == [0, 1]
    assert got["optimistic"].per_row["rank"].tolist() == [0, 0]
    assert got["pessimistic"].per_row["rank"].tolist() == [1, 1]
    assert [got[t].accuracy for t in got] == [0.5, 1.0, 0.0]
    # the arg-max is the stable order's first class whatever the policy
    assert all(got[t].per_row["argmax"].tolist() == [0, 1] for t in got)


def test_nan_row_poisons_calibration_not_ranks(rng):
    z = rng.standard_normal((20, 5)).astype(np.float32)
    z[3, 2] = np.nan
    ev = xent.evaluate(np.zeros(20, int), z, from_logits=True)
    assert np.isnan(ev.loss) and np.isnan(ev.ece) and np.isnan(ev.entropy)
    assert 0.0 <= ev.accuracy <= 1.0


def test_stderr_is_the_textbook_one_without_weights(rng):
    z = rng.standard_normal((500, 10))
    y = rng.integers(0, 10, 500)
    ev = xent.evaluate(y, z, from_logits=True, per_row=True)
    loss = ev.per_row["loss"]
    np.testing.assert_allclose(ev.loss_stderr, np.std(loss, ddof=1) / np.sqrt(500), rtol=1e-10)
    hit = (ev.per_row["rank"] == 0).astype(float)
    np.testing.assert_allclose(ev.accuracy_stderr, np.std(hit, ddof=1) / np.sqrt(500), rtol=1e-10)


@pytest.mark.parametrize("ties", ["stable", "optimistic"])
@pytest.mark.parametrize("from_logits", [True, False])
def test_sequences(rng, ties, from_logits):
    z = scores(rng, (6, 11, 5), np.float64, from_logits, True)
    y = rng.integers(0, 5, (6, 11))
    y[2] = np.argmax(z[2], -1)  # a greedy sequence
    y[4, :3] = -100  # ignored tokens
    mask = (rng.random((6, 11)) < 0.8).astype(float)
    for kwargs, want in [
        ({}, ref.sequence_metrics(y, z, from_logits, None, -100)),
        ({"sample_weight": mask}, ref.sequence_metrics(y, z, from_logits, mask, -100)),
    ]:
        ev = xent.evaluate(
            y, z, from_logits=from_logits, ignore_class=-100, batch_size=7, ties=ties, **kwargs
        )
        np.testing.assert_allclose(ev.sequence_logprob, want[0], rtol=1e-12)
        np.testing.assert_array_equal(ev.sequence_tokens, want[1])
        np.testing.assert_array_equal(ev.sequence_greedy, want[2])
    assert ev.sequence_greedy[2]


def test_per_row_file_is_bounded_and_equals_in_memory(tmp_path, rng):
    z = rng.standard_normal((5_000, 33)).astype(np.float32)
    y = rng.integers(0, 33, 5_000)
    y[::7] = -1
    mem = xent.evaluate(y, z, from_logits=True, ignore_class=-1, per_row=True)
    out = tmp_path / "rows.npz"
    ev = xent.evaluate(y, z, from_logits=True, ignore_class=-1, per_row=str(out), batch_size=999)
    assert ev.loss == mem.loss
    with np.load(out) as f:
        assert sorted(f.files) == sorted(mem.per_row)
        for name, v in mem.per_row.items():
            np.testing.assert_array_equal(f[name], v, err_msg=name)
            assert isinstance(ev.per_row[name], np.memmap)
    assert [p.name for p in tmp_path.iterdir()] == ["rows.npz"]  # no temporary left


def test_streaming_and_blocks_give_the_same_numbers(tmp_path, rng):
    z = rng.standard_normal((3_001, 50)).astype(np.float32)
    y = rng.integers(0, 50, 3_001)
    np.save(tmp_path / "z.npy", z)
    zm = np.load(tmp_path / "z.npy", mmap_mode="r")
    one = xent.evaluate(y, z, from_logits=True, confusion=True)
    for bs in (1, 500, None):
        ev = xent.evaluate(y, zm, from_logits=True, batch_size=bs, confusion=True)
        for name in SCALARS:
            np.testing.assert_allclose(getattr(ev, name), getattr(one, name), rtol=1e-12)
        np.testing.assert_array_equal(ev.confusion_matrix, one.confusion_matrix)


def test_to_dict_is_json_and_names_every_field(rng):
    z = rng.standard_normal((50, 4, 3))
    y = rng.integers(0, 3, (50, 4))
    d = xent.evaluate(y, z, from_logits=True, confusion=True, per_row=True).to_dict()
    again = json.loads(json.dumps(d))
    for name in SCALARS + (
        "class_accuracy",
        "confusion_matrix",
        "per_row",
        "calibration",
        "sequence_logprob",
        "sequence_tokens",
        "sequence_greedy",
    ):
        assert name in again, name
    assert len(again["sequence_greedy"]) == 50 and len(again["per_row"]["loss"]) == 50


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_bins": 0}, ValueError, "n_bins must be a positive integer, got 0"),
        ({"n_bins": 2.5}, TypeError, "n_bins"),
        ({"ties": "random"}, ValueError, "ties must be one of 'stable', 'optimistic', "),
        ({"confusion": "yes"}, TypeError, "confusion must be True or False"),
        ({"per_row": "rows.csv"}, ValueError, "per_row must be True, False or a path ending"),
    ],
)
def test_option_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        xent.evaluate([0, 1], [[0.5, 0.5], [0.2, 0.8]], **kwargs)


def test_confusion_refuses_too_many_classes():
    with pytest.raises(ValueError, match="confusion=True needs a C x C matrix; y_pred has 2,049"):
        xent.evaluate([0], np.zeros((1, 2049), np.float32), from_logits=True, confusion=True)


@pytest.mark.parametrize("dense", [False, True])
def test_dask_gives_the_in_memory_numbers(rng, dense):
    da = pytest.importorskip("dask.array")
    import dask

    z = rng.standard_normal((1_003, 12))
    y = rng.integers(0, 12, 1_003)
    labels = np.eye(12)[y] if dense else y
    w = rng.random(1_003)
    one = xent.evaluate(
        labels, z, from_logits=True, sample_weight=w, confusion=True, ties="optimistic"
    )
    dz = da.from_array(z, chunks=((100, 403, 500), (12,)))
    with dask.config.set(scheduler="synchronous"):
        ev = xent.evaluate(
            labels, dz, from_logits=True, sample_weight=w, confusion=True, ties="optimistic"
        )
    for name in SCALARS:
        np.testing.assert_allclose(getattr(ev, name), getattr(one, name), rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(ev.class_accuracy, one.class_accuracy, rtol=1e-12)
    np.testing.assert_allclose(ev.confusion_matrix, one.confusion_matrix, rtol=1e-12)
    with pytest.raises(ValueError, match="per_row is not available for dask inputs"):
        xent.evaluate(labels, dz, from_logits=True, per_row=True)


@pytest.mark.parametrize("from_logits", [True, False])
def test_bfloat16_predictions_equal_their_float32_values(rng, from_logits):
    """bfloat16 is read natively: the same numbers as the float32 array of the same values."""
    from xent._frameworks import as_bfloat16

    z = scores(rng, (300, 40), np.float32, from_logits, False)
    bits = (z.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bfloat16
    same = (bits.astype(np.uint32) << 16).view(np.float32)
    y = rng.integers(0, 40, 300)
    ev = xent.evaluate(y, as_bfloat16(bits), from_logits=from_logits, per_row=True)
    want = xent.evaluate(y, same, from_logits=from_logits, per_row=True)
    for name in SCALARS:
        np.testing.assert_allclose(getattr(ev, name), getattr(want, name), rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(ev.per_row["rank"], want.per_row["rank"])


def test_evaluations_compare_by_value(rng):
    """Equal inputs give equal Evaluations (NaN bins and arrays included); others do not."""
    z = rng.standard_normal((40, 5))
    y = rng.integers(0, 5, 40)
    a = xent.evaluate(y, z, from_logits=True, confusion=True)
    assert a == xent.evaluate(y, z.copy(), from_logits=True, confusion=True)
    assert np.isnan(a.calibration["accuracy"]).any()
    assert a != xent.evaluate((y + 1) % 5, z, from_logits=True, confusion=True)
    assert a != xent.evaluate(y, z, from_logits=True)  # no confusion matrix
