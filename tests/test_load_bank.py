"""``load_bank``: one loader for every saved router bank (TRIM-POMDP, TRIM-POMDP+, TRIM-Agg/Seq),
``PolicyBank.load`` reading latent banks, and ``trim-pomdp evaluate --bank``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trim_pomdp import cli
from trim_pomdp.banks import load_bank
from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.rl import nn
from trim_pomdp.rl.agents import RLRouter
from trim_pomdp.rl.grid import RLRouterBank
from trim_pomdp.routing.bank import PolicyBank, solve_grid
from trim_pomdp.routing.latent_model import LatentTrimModel
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.simulation.scenario import default_scenario

LAMS = [1e-4, 1e-3, 1e-2]


@pytest.fixture(scope="module")
def pomdp_bank():
    return solve_grid(TrimModel.from_scenario(default_scenario()), LAMS)


@pytest.fixture(scope="module")
def latent_bank():
    sc = default_scenario()
    model = LatentTrimModel.from_scenario(sc, n_difficulty=2, n_bias=1, n_mc=20_000)
    return solve_grid(model, LAMS[:2])


def agg_bank() -> RLRouterBank:
    routers = []
    for i, lam in enumerate(LAMS):
        p = nn.init_actor_critic(5, (4, 4), seed=i)
        p["Wpi"][:] = 0.0
        p["bpi"][:] = [1.0, 0.0] if i < 2 else [0.0, 1.0]  # the largest lambda regenerates
        routers.append(RLRouter("agg", p, lam=lam))
    return RLRouterBank(routers)


def test_load_bank_reads_a_pomdp_bank_with_or_without_suffix(pomdp_bank, tmp_path):
    pomdp_bank.save(tmp_path / "bank.npz")
    for path in (tmp_path / "bank.npz", tmp_path / "bank"):
        back = load_bank(path)
        assert isinstance(back, PolicyBank) and list(back.lambdas) == LAMS
        for a, b in zip(back.policies, pomdp_bank.policies, strict=True):
            np.testing.assert_array_equal(a.alphas, b.alphas)
            np.testing.assert_array_equal(a.actions, b.actions)
    assert back.family().name == "trim-pomdp"


def test_policybank_load_reads_a_latent_bank(latent_bank, tmp_path):
    latent_bank.save(tmp_path / "plus.npz")
    for back in (PolicyBank.load(tmp_path / "plus.npz"), load_bank(tmp_path / "plus.npz")):
        assert isinstance(back.model, LatentTrimModel)
        assert back.model.n_hidden == latent_bank.model.n_hidden == 6
        for a, b in zip(back.policies, latent_bank.policies, strict=True):
            np.testing.assert_array_equal(a.alphas, b.alphas)
        assert back.family().name == "trim-pomdp+"
        assert back.family("mine").name == "mine"


def test_load_bank_reads_an_rl_bank(tmp_path):
    agg_bank().save(tmp_path / "trim-agg.npz")
    back = load_bank(tmp_path / "trim-agg.npz")
    assert isinstance(back, RLRouterBank) and back.lambdas == LAMS
    assert back.family().name == "TRIM-Agg"


def test_load_bank_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such router bank"):
        load_bank(tmp_path / "nothing.npz")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    with pytest.raises(PolicyFormatError, match="arrays.npz: not a saved router bank"):
        load_bank(tmp_path / "arrays.npz")
    # one RL router is not a bank: said so, by type
    agg_bank().routers[0].save(tmp_path / "one.npz")
    with pytest.raises(PolicyFormatError, match="not a saved router bank.*RLRouterBank"):
        load_bank(tmp_path / "one.npz")
    # a sidecar that is not a PolicyBank's does not make the .npz one
    (tmp_path / "arrays.json").write_text('{"kind": "something else"}')
    with pytest.raises(PolicyFormatError, match="not a saved router bank"):
        load_bank(tmp_path / "arrays.npz")


def test_cli_evaluate_with_saved_banks(pomdp_bank, tmp_path, capsys):
    pomdp_bank.save(tmp_path / "bank.npz")
    agg_bank().save(tmp_path / "trim-agg.npz")
    out = tmp_path / "out"
    rc = cli.main(["evaluate", "--policies", "trim-pomdp,trim-thr,trim-agg", "--n-problems", "1500",
                   "--n-params", "4", "--bank", str(tmp_path / "bank.npz"),
                   "--bank", f"agg-saved={tmp_path / 'trim-agg.npz'}", "--json",
                   "--out", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["policies"]) == {"trim-pomdp", "trim-thr", "agg-saved"}
    saved = json.loads((out / "evaluation.json").read_text())
    # the saved banks stood in for the trim-pomdp and trim-agg families (nothing was solved
    # or trained here): the banks' lambdas, not a rebuilt grid
    assert set(LAMS) <= set(saved["curves"]["trim-pomdp"]["params"])
    assert len(saved["curves"]["trim-pomdp"]["params"]) <= len(LAMS) + 1
    assert set(LAMS) <= set(saved["curves"]["agg-saved"]["params"])


def test_cli_evaluate_bank_errors(pomdp_bank, tmp_path, capsys):
    assert cli.main(["evaluate", "--bank", str(tmp_path / "missing.npz"),
                     "--n-problems", "100"]) == 2
    assert "--bank" in capsys.readouterr().err
    pomdp_bank.save(tmp_path / "a.npz")
    pomdp_bank.save(tmp_path / "b.npz")
    assert cli.main(["evaluate", "--bank", str(tmp_path / "a.npz"),
                     "--bank", str(tmp_path / "b.npz"), "--n-problems", "100"]) == 2
    assert "two --bank families are named ['trim-pomdp']" in capsys.readouterr().err
