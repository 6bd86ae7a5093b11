"""An optional extra that is not installed (plot, http, httpx, rl, dask) costs one line saying
what was skipped and which extra brings it, never a traceback; the exit status says whether
the main output was written.  Each CLI run happens in a child process whose import of the
extra is blocked (``sys.modules[name] = None``), as in ``pip install .`` without it."""

from __future__ import annotations

import json

import pytest
from proc_utils import child_env, run_python

from trim_pomdp.cli import main, missing_extra
from trim_pomdp.traces.records import save_traces
from trim_pomdp.traces.synthetic import generate_traces


def cli_without(modules: list[str], argv: list[str], cwd):
    code = ("import sys\n"
            f"for m in {modules!r}: sys.modules[m] = None\n"
            "from trim_pomdp.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    return run_python(["-c", code], env=child_env(), cwd=cwd)


def test_fit_without_matplotlib_skips_the_plots_and_writes_everything_else(tmp_path):
    save_traces(generate_traces(n_traces=300, p_w=0.8, seed=1), tmp_path / "cheap.jsonl")
    save_traces(generate_traces(n_traces=100, p_w=0.8, p_s=0.95, model="strong", seed=2),
                tmp_path / "strong.jsonl")
    out = tmp_path / "fit"
    r = cli_without(["matplotlib"], ["fit", "cheap.jsonl", "--strong", "strong.jsonl",
                                     "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    skipped = [ln for ln in (r.stdout + r.stderr).splitlines() if "plots skipped" in ln]
    assert len(skipped) == 1 and 'pip install "trim_pomdp[plot]"' in skipped[0], skipped
    for name in ("transition.npz", "observation.npz", "observation_matrix.npy", "summary.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.png"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plots_skipped"] == "matplotlib is not installed"
    assert "calibration" in summary


def test_evaluate_without_matplotlib_writes_the_json(tmp_path):
    r = cli_without(["matplotlib"], ["evaluate", "--policies", "trim-thr,always-cheap",
                                     "--n-problems", "300", "--out", "ev"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "trim_pomdp[plot]" in r.stderr
    assert (tmp_path / "ev" / "evaluation.json").exists()
    assert not (tmp_path / "ev" / "curves.png").exists()


@pytest.mark.parametrize("client, extra", [("aiohttp", "http"), ("httpx", "httpx")])
def test_route_without_its_http_client_is_one_line(tmp_path, client, extra):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    u = "http://127.0.0.1:9/v1"  # never contacted: the check comes first
    r = cli_without([client], ["route", "--problems", "p.jsonl", "--cheap", f"{u}/c",
                               "--strong", f"{u}/s", "--prm", f"{u}/p", "--threshold", "0.5",
                               "--out", "t.jsonl", "--http-client", client, "--no-progress"],
                    tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (f"trim-pomdp route: error: {client} is not installed, so nothing was "
                        f'written; pip install "trim_pomdp[{extra}]" brings it')
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize("module, extra", [("gymnasium", "rl"), ("dask.distributed", "dask"),
                                           ("matplotlib.pyplot", "plot")])
def test_any_command_missing_an_extra_is_one_line(monkeypatch, capsys, module, extra):
    # whatever command needs an extra for its main output reports it the same way, exit 1
    import trim_pomdp.commands.simulate as cmd

    def run(args):
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    monkeypatch.setattr(cmd, "run", run)
    assert main(["simulate", "x.pomdp", "p.npz"]) == 1
    err = capsys.readouterr().err.strip()
    top = module.split(".")[0]
    assert err == (f"trim-pomdp simulate: error: {top} is not installed, so nothing was "
                   f'written; pip install "trim_pomdp[{extra}]" brings it')


def test_other_import_errors_are_not_disguised():
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
    assert missing_extra(ValueError("x")) is None
    assert missing_extra(ModuleNotFoundError("x", name="httpx")) == ("httpx", "httpx")
