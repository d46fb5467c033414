"""``xent.evaluate``'s new numbers against the libraries evaluators use: torchmetrics
(calibration errors, macro accuracy, top-k accuracy, confusion matrix, ignore_index) and
scikit-learn (Brier score, balanced accuracy, confusion matrix, with sample weights), PyTorch
for entropy, log-sum-exp and lm-evaluation-harness-style sequence log-likelihoods.  The
``peers`` extra installs them, so these run in CI."""

import numpy as np
import pytest

import xent

torch = pytest.importorskip("torch")
tm = pytest.importorskip("torchmetrics.classification")
skm = pytest.importorskip("sklearn.metrics")


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    n, c = 2_000, 10
    z = (rng.standard_normal((n, c)) * 2).astype(np.float32)
    y = rng.integers(0, c, n)
    y[: 2 * c] = np.arange(2 * c) % c  # every class has support
    hit = rng.random(n) < 0.5
    z[hit, y[hit]] += 3  # a model that is right half of the time, and overconfident
    return z, y


@pytest.mark.parametrize(
    "norm, field",
    [("l1", "ece"), ("l2", "rms_calibration_error"), ("max", "max_calibration_error")],
)
@pytest.mark.parametrize("n_bins", [15, 7])
def test_calibration_errors_equal_torchmetrics(data, norm, field, n_bins):
    z, y = data
    p = torch.softmax(torch.from_numpy(z), -1)
    metric = tm.MulticlassCalibrationError(num_classes=z.shape[1], n_bins=n_bins, norm=norm)
    want = float(metric(p, torch.from_numpy(y)))
    ev = xent.evaluate(y, z, from_logits=True, n_bins=n_bins)
    np.testing.assert_allclose(getattr(ev, field), want, rtol=1e-5)
    # probabilities give the same
    ev = xent.evaluate(y, p.numpy(), n_bins=n_bins)
    np.testing.assert_allclose(getattr(ev, field), want, rtol=1e-5)


def test_ignore_index_equals_torchmetrics(data):
    z, y = data
    y = y.copy()
    y[::5] = -100
    p, yt = torch.softmax(torch.from_numpy(z), -1), torch.from_numpy(y)
    c = z.shape[1]
    ev = xent.evaluate(y, z, from_logits=True, ignore_class=-100, top_k=(1, 3))
    ece = tm.MulticlassCalibrationError(num_classes=c, n_bins=15, ignore_index=-100)(p, yt)
    np.testing.assert_allclose(ev.ece, float(ece), rtol=1e-5)
    acc = tm.MulticlassAccuracy(num_classes=c, average="micro", ignore_index=-100)(p, yt)
    np.testing.assert_allclose(ev.accuracy, float(acc), rtol=1e-6)
    macro = tm.MulticlassAccuracy(num_classes=c, average="macro", ignore_index=-100)(p, yt)
    np.testing.assert_allclose(ev.macro_accuracy, float(macro), rtol=1e-6)


def test_accuracies_equal_torchmetrics(data):
    z, y = data
    p, yt = torch.from_numpy(z), torch.from_numpy(y)
    c = z.shape[1]
    ev = xent.evaluate(y, z, from_logits=True, top_k=(1, 3), confusion=True)
    for k in (1, 3):
        want = tm.MulticlassAccuracy(num_classes=c, top_k=k, average="micro")(p, yt)
        np.testing.assert_allclose(ev.top_k_accuracy[k], float(want), rtol=1e-6)
    per_class = tm.MulticlassAccuracy(num_classes=c, average="none")(p, yt).numpy()
    np.testing.assert_allclose(ev.class_accuracy, per_class, rtol=1e-6)
    macro = tm.MulticlassAccuracy(num_classes=c, average="macro")(p, yt)
    np.testing.assert_allclose(ev.macro_accuracy, float(macro), rtol=1e-6)
    cm = tm.MulticlassConfusionMatrix(num_classes=c)(p, yt).numpy()
    np.testing.assert_array_equal(ev.confusion_matrix, cm)


def test_optimistic_ties_equal_in_top_k():
    """TensorFlow's in_top_k counts every class tied with the target as within k; torch's
    topk breaks ties arbitrarily; xent's optimistic policy is the former, by count."""
    z = np.array([[1.0, 1.0, 1.0, 0.0], [3.0, 2.0, 2.0, 2.0]], np.float32)
    y = np.array([2, 3])
    ev = xent.evaluate(y, z, from_logits=True, top_k=(1, 2), ties="optimistic")
    assert ev.accuracy == 1.0 / 2 and ev.top_k_accuracy[2] == 1.0


@pytest.mark.parametrize("c", [2, 3, 10])
def test_brier_and_balanced_accuracy_equal_sklearn(c):
    rng = np.random.default_rng(c)
    n = 1_000
    p = rng.random((n, c))
    p /= p.sum(1, keepdims=True)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    w = rng.random(n)
    ev = xent.evaluate(y, p, sample_weight=w, confusion=True)
    labels = list(range(c))
    want = skm.brier_score_loss(
        y, p[:, 1] if c == 2 else p, sample_weight=w, **({} if c == 2 else {"labels": labels})
    )
    np.testing.assert_allclose(ev.brier, want, rtol=1e-10)
    want = skm.balanced_accuracy_score(y, p.argmax(1), sample_weight=w)
    np.testing.assert_allclose(ev.macro_accuracy, want, rtol=1e-10)
    cm = skm.confusion_matrix(y, p.argmax(1), labels=labels, sample_weight=w)
    np.testing.assert_allclose(ev.confusion_matrix, cm, rtol=1e-12)
    np.testing.assert_allclose(ev.accuracy, skm.accuracy_score(y, p.argmax(1), sample_weight=w))


def test_entropy_lse_and_per_row_equal_torch(data):
    z, y = data
    zt = torch.from_numpy(z.astype(np.float64))
    ev = xent.evaluate(y, z.astype(np.float64), from_logits=True, per_row=True)
    ent = torch.distributions.Categorical(logits=zt).entropy().numpy()
    np.testing.assert_allclose(ev.per_row["entropy"], ent, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ev.entropy, ent.mean(), rtol=1e-10)
    np.testing.assert_allclose(ev.per_row["lse"], torch.logsumexp(zt, -1).numpy(), rtol=1e-12)
    logp = torch.log_softmax(zt, -1)
    np.testing.assert_allclose(
        ev.per_row["p_true"], logp[np.arange(len(y)), y].exp().numpy(), rtol=1e-12
    )
    np.testing.assert_array_equal(ev.per_row["argmax"], zt.argmax(-1).numpy())


def test_sequences_equal_lm_eval_recipe():
    """lm-evaluation-harness's loglikelihood: log_softmax, gather the continuation's tokens,
    sum over the unmasked ones; is_greedy: every such token is the arg-max."""
    rng = np.random.default_rng(1)
    b, t, v = 5, 9, 50
    z = rng.standard_normal((b, t, v)).astype(np.float32) * 3
    y = rng.integers(0, v, (b, t))
    y[1] = z[1].argmax(-1)
    mask = np.ones((b, t))
    mask[:, :3] = 0  # the context: not scored
    ev = xent.evaluate(y, z, from_logits=True, sample_weight=mask)
    logp = torch.log_softmax(torch.from_numpy(z), -1)
    tok = logp.gather(-1, torch.from_numpy(y)[..., None])[..., 0].numpy()
    np.testing.assert_allclose(ev.sequence_logprob, (tok * mask).sum(1), rtol=1e-5)
    greedy = ((z.argmax(-1) == y) | (mask == 0)).all(1)
    np.testing.assert_array_equal(ev.sequence_greedy, greedy)
    np.testing.assert_array_equal(ev.sequence_tokens, np.full(b, t - 3))
    assert greedy[1]


def test_tied_scores_equal_torchmetrics_and_sklearn():
    """Scores with many ties: the stable policy's accuracy, calibration and confusion matrix
    are those of torchmetrics (whose arg-max takes the first maximum) and of scikit-learn on
    ``np.argmax``."""
    rng = np.random.default_rng(5)
    z = rng.integers(0, 3, (3_000, 6)).astype(np.float32)
    y = rng.integers(0, 6, 3_000)
    p = torch.softmax(torch.from_numpy(z), -1)
    yt = torch.from_numpy(y)
    ev = xent.evaluate(y, z, from_logits=True, confusion=True)
    np.testing.assert_allclose(ev.accuracy, float(tm.MulticlassAccuracy(6, average="micro")(p, yt)))
    np.testing.assert_allclose(ev.accuracy, skm.accuracy_score(y, z.argmax(1)))
    ece = tm.MulticlassCalibrationError(6, n_bins=15, norm="l1")(p, yt)
    np.testing.assert_allclose(ev.ece, float(ece), rtol=1e-5)
    np.testing.assert_array_equal(ev.confusion_matrix, skm.confusion_matrix(y, z.argmax(1)))
