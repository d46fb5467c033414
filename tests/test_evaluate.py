"""``xent.evaluate``: metrics against the sort-based reference, streaming equality on
memory-mapped files, bounded memory, errors, and the ``xent eval`` command line."""

import dataclasses
import json
import sys
import textwrap

import numpy as np
import pytest

import xent

import reference as ref
from helpers import scores
from subproc import run_isolated


def _check(ev, want, rtol):
    assert ev.count == want["count"]
    np.testing.assert_allclose(ev.loss, want["loss"], rtol=rtol)
    np.testing.assert_allclose(ev.perplexity, want["perplexity"], rtol=rtol * 10)
    np.testing.assert_allclose(ev.accuracy, want["accuracy"], rtol=1e-12, atol=1e-15)
    assert set(ev.top_k_accuracy) == set(want["top_k_accuracy"])
    for k, v in want["top_k_accuracy"].items():
        np.testing.assert_allclose(ev.top_k_accuracy[k], v, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ev.sum_weight, want["sum_weight"], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("c", [1, 3, 10, 257])
def test_sparse_metrics_against_reference(rng, dtype, from_logits, ties, c):
    z = scores(rng, (300, c), dtype, from_logits, ties)
    y = rng.integers(0, c, 300)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for weighted, ignore in [(False, None), (True, None), (True, 0), (False, c - 1)]:
        w = rng.random(300) if weighted else None
        ev = xent.evaluate(
            y,
            z,
            from_logits=from_logits,
            top_k=(1, 2, 5, 1000),
            sample_weight=w,
            ignore_class=ignore,
            batch_size=77,
        )
        compute = np.float32 if dtype == np.float16 else dtype
        want = ref.evaluate(
            y, z.astype(compute), from_logits, (1, 2, 5, 1000), w, ignore, dtype=compute
        )
        if want["count"] == 0:
            assert ev.count == 0 and np.isnan(ev.loss)
            continue
        _check(ev, want, rtol)


@pytest.mark.parametrize("from_logits", [True, False])
def test_dense_labels_use_their_first_argmax(rng, from_logits):
    z = scores(rng, (200, 6), np.float64, from_logits, ties=True)
    t = rng.random((200, 6))
    t[:50] = np.eye(6)[rng.integers(0, 6, 50)]
    t[50:60, :2] = 1.0  # tied targets: the first counts
    ev = xent.evaluate(t, z, from_logits=from_logits, top_k=(1, 3))
    _check(ev, ref.evaluate(t, z, from_logits, (1, 3), dense=True), 1e-12)


def test_nan_rows_rank_last_and_poison_only_the_loss(rng):
    z = rng.standard_normal((20, 5))
    z[3, 2] = np.nan
    z[4, :] = np.nan
    y = rng.integers(0, 5, 20)
    y[3], y[4] = 2, 1
    ev = xent.evaluate(y, z, from_logits=True, top_k=(1, 3))
    want = ref.evaluate(y, z, True, (1, 3))
    np.testing.assert_allclose(ev.accuracy, want["accuracy"])
    np.testing.assert_allclose(ev.top_k_accuracy[3], want["top_k_accuracy"][3])
    assert np.isnan(ev.loss)


def test_matches_the_loss_functions(rng):
    z = rng.standard_normal((500, 40)).astype(np.float32)
    y = rng.integers(0, 40, 500)
    ev = xent.evaluate(y, z, from_logits=True)
    per = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    np.testing.assert_allclose(ev.loss, per.astype(np.float64).mean(), rtol=1e-6)
    np.testing.assert_allclose(ev.sum_loss, per.astype(np.float64).sum(), rtol=1e-6)


def test_nd_predictions_and_trailing_label_axis(rng):
    z = rng.standard_normal((4, 6, 9))
    y = rng.integers(0, 9, (4, 6, 1))
    ev = xent.evaluate(y, z, from_logits=True, top_k=(2,))
    _check(ev, ref.evaluate(y, z, True, (2,)), 1e-12)


def test_streaming_equals_one_shot_on_a_memory_map(tmp_path, rng):
    z = rng.standard_normal((10_001, 97)).astype(np.float32)
    y = rng.integers(0, 97, 10_001)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    zm = np.load(tmp_path / "z.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    one = xent.evaluate(y, z, from_logits=True, batch_size=10_001)
    for bs in (1, 999, 4096, None):
        ev = xent.evaluate(ym, zm, from_logits=True, batch_size=bs)
        assert ev.count == one.count
        assert ev.accuracy == one.accuracy and ev.top_k_accuracy == one.top_k_accuracy
        np.testing.assert_allclose(ev.loss, one.loss, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(zm), z)  # input untouched


def test_evaluation_object(rng):
    ev = xent.evaluate([0, 1], [[0.9, 0.1], [0.2, 0.8]], top_k=(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.loss = 0.0  # frozen
    d = ev.to_dict()
    assert json.loads(json.dumps(d))["top_k_accuracy"] == {"1": 1.0, "2": 1.0}
    assert "top-2 accuracy" in str(ev) and "perplexity" in str(ev)
    assert ev.perplexity == pytest.approx(np.exp(ev.loss))


def test_progress_reports_rows(capsys, rng):
    z = rng.standard_normal((5000, 8))
    xent.evaluate(rng.integers(0, 8, 5000), z, from_logits=True, batch_size=1000, progress=True)
    err = capsys.readouterr().err
    assert "5.00k" in err or "5,000" in err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y_true=np.zeros((3, 1), int), y_pred=np.ones((3, 1))), "label_format='sparse'"),
        (dict(y_true=np.zeros((4,), int), y_pred=np.ones((3, 2))), r"must be \(3,\)"),
        (dict(y_true=[0, 2, 1], y_pred=np.ones((3, 2))), "out-of-range label 2 at row 1"),
        (dict(y_true=[0, 1, 1], y_pred=np.ones((3, 2)), top_k=(0,)), "top_k values must be >= 1"),
        (dict(y_true=[0, 1, 1], y_pred=np.ones((3, 2)), batch_size=0), "batch_size"),
        (dict(y_true=np.eye(2)[[0, 1, 1]], y_pred=np.ones((3, 2)), ignore_class=1), "ignore_class"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        xent.evaluate(kwargs.pop("y_true"), kwargs.pop("y_pred"), **kwargs)


def test_error_position_is_global_across_blocks():
    y = np.zeros(1000, int)
    y[777] = 5
    with pytest.raises(ValueError, match="label 5 at row 777"):
        xent.evaluate(y, np.ones((1000, 3)), batch_size=100)


def test_type_errors():
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        xent.evaluate([0], np.array([[1, 2]]))
    with pytest.raises(TypeError, match="top_k"):
        xent.evaluate([0], [[0.5, 0.5]], top_k="5")


def test_peak_memory_of_a_memory_mapped_file_is_bounded(tmp_path):
    """Evaluating a 256 MiB memory-mapped file in 4 MiB blocks keeps the process's own peak
    resident memory far below the file size (pages are released block by block), every
    metric and the per-row outputs (written to a file) included."""
    path = tmp_path / "big.npy"
    n, c = 65_536, 1_024
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, c))
    rng = np.random.default_rng(0)
    for r in range(0, n, 4096):
        out[r : r + 4096] = rng.standard_normal((4096, c), np.float32)
    out.flush()
    del out
    np.save(tmp_path / "y.npy", rng.integers(0, c, n))
    code = textwrap.dedent(
        f"""
        import numpy as np, xent
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1])
        z = np.load({str(path)!r}, mmap_mode="r")
        y = np.load({str(tmp_path / "y.npy")!r}, mmap_mode="r")
        xent.evaluate(y[:10], z[:10], from_logits=True)  # compile first
        open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS")
        ev = xent.evaluate(y, z, from_logits=True, batch_size=1024,
                           per_row={str(tmp_path / "rows.npz")!r})
        print(status("VmHWM") - before, ev.count)
        """
    )
    run = run_isolated([sys.executable, "-c", code], timeout=600)
    assert run.returncode == 0, run.stderr
    grown_kib, count = map(int, run.stdout.split())
    assert count == n
    assert grown_kib < 48 * 1024, f"peak RSS grew by {grown_kib} KiB on a 256 MiB file"
    with np.load(tmp_path / "rows.npz") as f:
        assert f["loss"].shape == (n,) and np.isfinite(f["entropy"]).all()


# ------------------------------------------------------------------ xent eval
def _xent(*args):
    return run_isolated([sys.executable, "-m", "xent", "eval", *map(str, args)], timeout=600)


@pytest.fixture
def files(tmp_path, rng):
    z = rng.standard_normal((3000, 12)).astype(np.float32)
    y = rng.integers(0, 12, 3000)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "both.npz", logits=z, labels=y)
    np.savez_compressed(tmp_path / "packed.npz", logits=z, labels=y)
    np.save(tmp_path / "y_bad.npy", np.where(np.arange(3000) == 2500, 12, y))
    np.save(tmp_path / "y_short.npy", y[:10])
    np.save(tmp_path / "z_int.npy", z.astype(np.int32))
    return tmp_path, z, y


def test_cli_table_and_json(files):
    d, z, y = files
    want = xent.evaluate(y, z, from_logits=True, top_k=(1, 3))
    run = _xent(
        d / "z.npy",
        d / "y.npy",
        "--from-logits",
        "--top-k",
        "1",
        "3",
        "--batch-size",
        "700",
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    assert f"{want.loss:.6f}" in run.stdout and "top-3 accuracy" in run.stdout
    for target in ("both.npz", "packed.npz"):
        run = _xent(
            d / target,
            d / target,
            "--pred-key",
            "logits",
            "--labels-key",
            "labels",
            "--from-logits",
            "--top-k",
            "1",
            "3",
            "--json",
            "--no-progress",
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["count"] == 3000
        np.testing.assert_allclose(out["loss"], want.loss, rtol=1e-12)
        assert out["top_k_accuracy"]["3"] == want.top_k_accuracy[3]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.npy", "y.npy"], "missing.npy: no such file"),
        (["z.npy", "y_short.npy"], "shape (10,)"),
        (["z_int.npy", "y.npy"], "bfloat16, float16, float32 or float64"),
        (["z.npy", "y_bad.npy"], "out-of-range label 12 at row 2500"),
        (["both.npz", "y.npy"], "choose one with --pred-key"),
        (["both.npz", "y.npy", "--pred-key", "nope"], "has no array 'nope'"),
    ],
)
def test_cli_errors_are_one_line(files, args, message):
    d = files[0]
    args = [d / a if a.endswith((".npy", ".npz")) else a for a in args]
    run = _xent(*args, "--from-logits", "--no-progress")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xent eval: error:"), run.stderr
    assert message in lines[0]


def test_cli_help_lists_every_option():
    run = run_isolated([sys.executable, "-m", "xent", "eval", "--help"], timeout=600)
    assert run.returncode == 0
    for opt in (
        "--from-logits",
        "--top-k",
        "--batch-size",
        "--json",
        "--no-progress",
        "--pred-key",
        "--labels-key",
        "--ignore-class",
        "--dtype",
        "--n-bins",
        "--ties",
        "--confusion",
        "--per-row",
        "--plot",
    ):
        assert opt in run.stdout


def test_cli_new_numbers_per_row_file_and_plot(files):
    """--json carries every number of the Evaluation; --per-row writes the per-row arrays;
    --plot draws a PNG (matplotlib comes with the test extra)."""
    d, z, y = files
    want = xent.evaluate(y, z, from_logits=True, n_bins=10, ties="pessimistic", confusion=True)
    run = _xent(
        d / "z.npy",
        d / "y.npy",
        "--from-logits",
        "--n-bins",
        "10",
        "--ties",
        "pessimistic",
        "--confusion",
        "--per-row",
        d / "rows.npz",
        "--plot",
        d / "report.png",
        "--json",
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for name in (
        "ece",
        "rms_calibration_error",
        "max_calibration_error",
        "brier",
        "entropy",
        "mrr",
        "macro_accuracy",
        "loss_stderr",
        "accuracy_stderr",
    ):
        np.testing.assert_allclose(out[name], getattr(want, name), rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(out["confusion_matrix"], want.confusion_matrix)
    assert out["ties"] == "pessimistic" and out["per_row"] == str(d / "rows.npz")
    with np.load(d / "rows.npz") as f:
        assert f["loss"].shape == (3000,) and f["argmax"].tolist() == z.argmax(1).tolist()
    png = (d / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    run = _xent(d / "z.npy", d / "y.npy", "--from-logits", "--ties", "sideways")
    assert run.returncode == 2 and "invalid choice: 'sideways'" in run.stderr


# ------------------------------------------------------- what evaluation pipelines write
@pytest.fixture
def half_files(tmp_path, rng):
    """bfloat16 and float16 logits saved by safetensors (from torch and from NumPy) and by
    ``np.save`` of an ml_dtypes array (2-byte void on disk)."""
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    st_torch = pytest.importorskip("safetensors.torch")
    st_numpy = pytest.importorskip("safetensors.numpy")
    n, c = 2000, 40
    z32 = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, n)
    zb = torch.from_numpy(z32).bfloat16()
    st_torch.save_file(
        {"logits": zb, "labels": torch.from_numpy(y), "probs": zb.float().softmax(1)},
        tmp_path / "out.safetensors",
    )
    st_numpy.save_file(
        {"logits": z32.astype(np.float16), "labels": y.astype(np.int32)},
        tmp_path / "half.safetensors",
    )
    np.save(tmp_path / "bf16.npy", z32.astype(ml_dtypes.bfloat16))
    np.save(tmp_path / "y.npy", y)
    return tmp_path, zb.float().numpy(), z32.astype(np.float16).astype(np.float32), y


def test_cli_reads_safetensors_and_bfloat16_npy(half_files):
    d, z_bf16, z_f16, y = half_files
    want_bf16 = xent.evaluate(y, z_bf16, from_logits=True)
    want_f16 = xent.evaluate(y, z_f16, from_logits=True)
    common = ["--from-logits", "--json", "--no-progress"]
    runs = {
        "safetensors bf16": (
            [d / "out.safetensors", d / "out.safetensors", "--pred-key", "logits"]
            + ["--labels-key", "labels"],
            want_bf16,
            "bfloat16",
        ),
        "safetensors f16": (
            [d / "half.safetensors", d / "half.safetensors", "--pred-key", "logits"]
            + ["--labels-key", "labels", "--batch-size", "300"],
            want_f16,
            "float16",
        ),
        "npy <V2": ([d / "bf16.npy", d / "y.npy", "--dtype", "bfloat16"], want_bf16, "bfloat16"),
    }
    for name, (args, want, dtype) in runs.items():
        run = _xent(*args, *common)
        assert run.returncode == 0, (name, run.stderr)
        out = json.loads(run.stdout)
        assert out["dtype"] == dtype and out["count"] == len(y), name
        np.testing.assert_allclose(out["loss"], want.loss, rtol=1e-6, err_msg=name)
        assert out["accuracy"] == want.accuracy, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["bf16.npy", "y.npy"], "pass --dtype bfloat16"),
        (["y.npy", "y.npy", "--dtype", "bfloat16"], "holds int64"),
        (["out.safetensors", "y.npy"], "choose one with --pred-key"),
        (["out.safetensors", "y.npy", "--pred-key", "nope"], "has no tensor 'nope'"),
        (["bad.safetensors", "y.npy"], "does not hold a F32 tensor"),
        (["y.npy", "y.npy", "--pred-key", "x"], "applies to .npz and .safetensors"),
    ],
)
def test_cli_half_file_errors(half_files, args, message):
    d = half_files[0]
    header = b'{"x": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}'
    (d / "bad.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    args = [d / a if a.endswith((".npy", ".safetensors")) else a for a in args]
    run = _xent(*args, "--from-logits", "--no-progress")
    assert run.returncode == 2, run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xent eval: error:"), run.stderr
    assert message in lines[0]


def test_cli_never_unpickles(tmp_path):
    """A pickle (what ``torch.save`` writes inside its zip) is refused, never loaded."""
    import pickle

    marker = tmp_path / "ran"
    payload = pickle.dumps(_Exploit(str(marker)))
    (tmp_path / "z.pt").write_bytes(payload)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    for name in ("z.pt", "obj.npy"):
        run = _xent(tmp_path / name, tmp_path / "y.npy", "--no-progress")
        assert run.returncode == 2 and "error" in run.stderr, run.stderr
    assert not marker.exists()


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cli_plot_without_matplotlib_fails_before_evaluating(files, monkeypatch, capsys):
    """``xent eval --plot`` on an install without matplotlib: one line, exit 2, and the
    evaluation (minutes on a large file) never starts."""
    from xent import cli

    d, _, _ = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(xent, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    code = cli.main(["eval", str(d / "z.npy"), str(d / "y.npy"), "--plot", str(d / "r.png")])
    err = capsys.readouterr().err
    assert code == 2 and "xent eval --plot needs matplotlib" in err
    assert len(err.strip().splitlines()) == 1 and not (d / "r.png").exists()
