"""The demo and solve-grid commands, end to end on small sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trim_pomdp.cli import main


def test_demo_json_small(tmp_path, capsys):
    pytest.importorskip("trim_pomdp.evaluate")
    pytest.importorskip("trim_pomdp.finite")
    rc = main(["demo", "--n-problems", "1500", "--n-fit", "800", "--lambdas", "5", "--json",
               "--out", str(tmp_path)])
    assert rc == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert "1/4 simulating" in err and "2/4 solving" in err and "done" in err  # progress
    pol = res["policies"]
    for name in ("trim-pomdp", "trim-thr", "random", "oracle", "query-oracle", "automix",
                 "always-cheap", "always-strong"):
        assert {"cpt_50", "cpt_80", "cpt_95", "delta_ibc", "apgr"} <= set(pol[name])
    # always-strong sits at cost 1 / PGR 1: CPT(x) = x and ΔIBC = 0 by definition
    assert pol["always-strong"]["cpt_50"] == pytest.approx(0.5)
    assert pol["always-strong"]["delta_ibc"] == pytest.approx(0.0, abs=1e-9)
    assert res["acc_strong"] > res["acc_cheap"]
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(ev["curves"]["trim-pomdp"]["params"]) == 5
    from trim_pomdp.trim import PolicyBank

    bank = PolicyBank.load(tmp_path / "policy_bank.npz")
    np.testing.assert_allclose(bank.lambdas, ev["curves"]["trim-pomdp"]["params"])


def test_solve_grid_cli(tmp_path, capsys):
    pytest.importorskip("trim_pomdp.finite")
    out = tmp_path / "bank.npz"
    rc = main(["solve-grid", "--scenario", "default", "--n-score-bins", "6", "--n-token-bins",
               "2", "--lambda-values", "0.0001,0.001,0.01", "--out", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert [round(p["lambda"], 6) for p in res["policies"]] == [0.0001, 0.001, 0.01]
    values = [p["value_b0"] for p in res["policies"]]
    assert values == sorted(values, reverse=True)  # a larger price never raises the value
    assert all(p["gap"] >= -1e-9 for p in res["policies"])
    from trim_pomdp.trim import PolicyBank

    assert len(PolicyBank.load(out)) == 3


def test_solve_grid_cli_errors(tmp_path, capsys):
    rc = main(["solve-grid", "--scenario", str(tmp_path / "missing.json"), "--out",
               str(tmp_path / "b.npz")])
    assert rc == 2
    assert "missing.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["solve-grid", "--scenario", "default", "--lambda-values", "0.1,abc", "--out",
              str(tmp_path / "b.npz")])


def test_demo_without_matplotlib_still_completes(tmp_path):
    # `pip install .` without the plot extra: the demo prints everything, writes the bank
    # and the JSON, and says it skipped the plot (matplotlib blocked in a child process).
    import subprocess
    import sys

    code = ("import sys; sys.modules['matplotlib'] = None; from trim_pomdp.cli import main; "
            f"sys.exit(main(['demo', '--n-problems', '800', '--n-fit', '600', '--lambdas', "
            f"'3', '--out', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "no plot: matplotlib is not installed" in out.stdout + out.stderr
    assert "trim-pomdp" in out.stdout and (tmp_path / "evaluation.json").exists()
    assert not (tmp_path / "pareto.png").exists()
