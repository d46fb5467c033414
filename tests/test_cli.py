"""The command line and the benchmark runner (tiny shapes: correctness, not speed)."""

import dataclasses
import json
import sys
import time

import pytest

from xent import bench

from subproc import run_isolated


def test_demo_prints_both_losses_on_the_keras_example():
    run = run_isolated([sys.executable, "-m", "xent", "demo", "--rows", "0"], timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("[0.0512933, 2.3025851]") == 2
    assert "mean: 1.1769392" in run.stdout


def test_bench_times_implementations_in_shuffled_rounds():
    # every round calls each implementation once, after one warm-up call each, in an order
    # that changes between rounds; past the budget, rounds stop at 3
    calls = []
    fns = [lambda k=k: calls.append(k) or float(k) for k in range(4)]
    timed = bench.time_interleaved(fns, repeat=5, budget_s=1e3, seed=1, settle_s=0.0)
    assert calls[:4] == [0, 1, 2, 3] and len(calls) == 4 + 5 * 4
    rounds = [tuple(calls[4 + 4 * r : 8 + 4 * r]) for r in range(5)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds)
    assert len(set(rounds)) > 1
    assert [len(times) for times, _ in timed] == [5] * 4
    assert [value for _, value in timed] == [0.0, 1.0, 2.0, 3.0]
    assert all(t >= 0 for times, _ in timed for t in times)
    start = time.perf_counter()
    timed = bench.time_interleaved(fns, repeat=7, budget_s=0.0, settle_s=0.05)
    assert [len(times) for times, _ in timed] == [3] * 4
    assert time.perf_counter() - start >= 3 * 4 * 0.05  # a pause before every timed call
    assert all(t < 0.05 for times, _ in timed for t in times)  # and outside the timing


def test_bench_runner_checks_every_result(tmp_path):
    cases = [
        bench.Case(3000, 10),
        bench.Case(300, 200, "float64", "probs"),
        bench.Case(300, 50, task="grad"),
        bench.Case(300, 10, "float64"),
    ]
    report = bench.run(cases, repeat=1, budget_s=0.1, slow=False)
    assert [e["label"] for e in report["results"]] == [c.label for c in cases]
    for entry in report["results"][:2]:
        names = {r["impl"] for r in entry["results"]}
        assert {"row-sum baseline", "targets' row sum", "xent sparse", "xent categorical",
                "numpy sparse"} <= names  # fmt: skip
    grad_names = {r["impl"] for r in report["results"][2]["results"]}
    assert {"read-write baseline", "xent sparse fwd+bwd", "xent categorical fwd+bwd"} <= grad_names
    assert not any(n.startswith("torch.compile") for n in grad_names)  # slow=False
    for entry in report["results"]:
        for r in entry["results"]:
            assert r["correct"], (entry["label"], r)
            p = r["ms_percentiles"]
            assert 0 < p["p20"] <= p["p50"] <= p["p80"] and r["samples"] >= 1
            assert r["ms"] > 0 and (r["gbps"] > 0 or r["loss"] == bench.FLOOR)
    assert "xent sparse gather" in {r["impl"] for r in report["results"][1]["results"]}
    # a float64 case is checked to 1e-9: JAX, whose float64 arrays are float32 unless x64 is
    # enabled, must have computed in float64 (its float32 loss is ~1e-8 off here)
    xent_sparse = {i.name: i for i in bench.REGISTRY}["xent sparse"]
    assert bench.tolerance(xent_sparse, cases[3]) <= 1e-9
    if {i.name: i for i in bench.REGISTRY}["jax dense"].available():
        f64_names = {r["impl"] for r in report["results"][3]["results"]}
        assert {"jax sparse", "jax dense"} <= f64_names
    _check_limits(report)
    table = bench.format_table(report)
    assert "| xent sparse |" in table and "sparse vs categorical" in table
    assert "exp floor" in table and "binding" in table
    json.dumps(report)  # JSON-ready
    _check_csv(report, tmp_path / "bench.csv")
    bench.plot(report, str(tmp_path / "bench.png"))
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_limits(report):
    """Every loss is put against the memory limit and, for logits, the exp floor measured in
    the same run; the binding limit is the one that takes longer.  A dense call's memory limit
    is the logits at the logits' row-sum speed plus the targets at the speed of a row sum over
    the targets themselves (a second allocation, timed on its own)."""
    m = report["machine"]
    assert m["vector_bits"] in (128, 256, 512, None) and m["ghz"] > 0.1
    for entry in report["results"]:
        by = {r["impl"]: r for r in entry["results"]}
        floor = by["exp floor"]
        case = entry["case"]
        base = next(r for r in entry["results"] if r["loss"] == bench.BASELINE)
        targets = by.get("targets' row sum")
        if case["task"] == "loss":  # the same shape and dtype as the logits, timed apart
            assert targets["bytes"] == base["bytes"] and targets["ms"] > 0
        logits = case["inputs"] == "logits"
        for r in entry["results"]:
            if r["loss"] in bench.LIMITS:
                assert r["limit"] is None
                continue
            memory_ms = base["ms"] * r["bytes"] / base["bytes"]
            if r["loss"] == "dense" and case["task"] == "loss":
                tb = base["bytes"]  # the targets array: as large as the logits
                memory_ms = base["ms"] * (r["bytes"] - tb) / base["bytes"] + targets["ms"]
            assert r["pct_of_baseline"] == pytest.approx(100 * memory_ms / r["ms"])
            want = max(memory_ms, floor["ms"]) if logits else memory_ms
            assert r["pct_of_limit"] == pytest.approx(100 * want / r["ms"])
            assert r["limit"] == ("exp" if logits and floor["ms"] > memory_ms else "memory")
            assert (r["pct_of_exp_floor"] is None) == (not logits)


def _check_csv(report, path):
    import csv

    bench.write_csv(report, str(path))
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == bench.CSV_FIELDS
    keys = [(r["kernel"], r["implementation"], r["rows"], r["classes"], r["dtype"],
             r["inputs"], r["metric"]) for r in rows]  # fmt: skip
    assert len(keys) == len(set(keys))  # one row per (kernel, provider, shape, dtype, metric)
    want = sum(len(e["results"]) for e in report["results"])
    assert sum(r["metric"] == "time" for r in rows) == want
    for r in rows:
        assert float(r["p20"]) <= float(r["p50"]) <= float(r["p80"]), r
    times = {(r["implementation"], r["rows"], r["classes"], r["dtype"], r["inputs"], r["task"]):
             float(r["p50"]) for r in rows if r["metric"] == "time"}  # fmt: skip
    for entry in report["results"]:
        c = entry["case"]
        for r in entry["results"]:
            key = (r["impl"], str(c["rows"]), str(c["classes"]), c["dtype"], c["inputs"], c["task"])
            assert times[key] == pytest.approx(r["ms_percentiles"]["p50"])


@pytest.mark.slow
def test_bench_cli_json():
    """``xent bench --quick --json``: every entry ran, was checked against the float64
    value and is reported with its timing and the machine it ran on."""
    run = run_isolated(
        [
            sys.executable,
            "-m",
            "xent",
            "bench",
            "--quick",
            "--json",
            "--repeat",
            "1",
            "--budget",
            "0.05",
        ],
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["machine"]["cpu"] and report["threading_layer"] in ("tbb", "omp")
    assert [e["case"] for e in report["results"]] == [dataclasses.asdict(c) for c in bench.QUICK]
    by_name = {i.name: i for i in bench.REGISTRY}
    for entry in report["results"]:
        impls = {r["impl"]: r for r in entry["results"]}
        case = bench.Case(**entry["case"])
        if case.task == "grad":  # sum_i g[i, y_i] of each gradient, checked as the losses
            assert {"read-write baseline", "xent sparse fwd+bwd"} <= set(impls)
        else:
            assert {"row-sum baseline", "xent sparse", "xent categorical"} <= set(impls)
        for r in entry["results"]:
            assert r["correct"] is True and r["ms"] > 0, r
            if r["loss"] not in bench.LIMITS:
                # 1e-4 for xent; PyTorch and JAX return a 16-bit input's loss in 16 bits
                rtol = bench.tolerance(by_name[r["impl"]], case)
                assert abs(r["value"] - entry["expected"]) <= rtol * abs(entry["expected"]), r
        if case.dtype in bench.HALF_DTYPES:
            assert {"xent sparse float32", "xent categorical float32"} <= set(impls)
    assert report["startup"] is not None


def test_bench_plot_without_matplotlib_fails_before_timing(monkeypatch, capsys):
    """``--plot`` on an install without the ``bench`` extra: a one-line error and exit 2,
    before any case is timed (the run itself would take minutes)."""
    import argparse

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed before the check"))
    args = argparse.Namespace(quick=True, full=False, plot="x.png", json=False)
    assert bench.main(args) == 2
    assert "needs matplotlib" in capsys.readouterr().err
