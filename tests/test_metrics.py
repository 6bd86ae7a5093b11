import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trim_pomdp.evaluation.metrics import (
    accuracy,
    apgr,
    cost_fraction,
    cpt,
    curve_metrics,
    delta_ibc,
    frontier_curve,
    mean_strong_tokens,
    pareto_frontier,
    pgr,
)

AW, AS = 0.6, 0.8
COST = [0.2, 0.5, 0.4, 1.0, 0.6, 0.5]
ACC = [0.7, 0.75, 0.72, 0.8, 0.7, 0.74]  # (0.6, 0.7) and (0.5, 0.74) are dominated


def test_basic_quantities():
    assert accuracy([1, 0, 1, 1]) == 0.75
    assert mean_strong_tokens([0, 10, 20]) == 10.0
    assert cost_fraction([1, 2, 3], [6, 6, 6]) == pytest.approx(6 / 18)
    np.testing.assert_allclose(pgr([0.6, 0.7, 0.8, 0.9], AW, AS), [0, 0.5, 1, 1.5])
    with pytest.raises(ValueError, match="acc_strong > acc_cheap"):
        pgr(0.7, 0.8, 0.8)
    with pytest.raises(ValueError, match="empty"):
        accuracy([])


def test_pareto_frontier_hand_computed():
    idx = pareto_frontier(COST, ACC)
    assert list(idx) == [0, 2, 1, 3]
    # ties in cost keep the best accuracy; NaNs ignored
    assert list(pareto_frontier([0.1, 0.1, np.nan], [0.5, 0.6, 0.9])) == [1]
    with pytest.raises(ValueError, match="equal length"):
        pareto_frontier([0.1], [0.1, 0.2])


def test_frontier_curve_anchored():
    xc, yp = frontier_curve(COST, pgr(ACC, AW, AS))
    np.testing.assert_allclose(xc, [0, 0.2, 0.4, 0.5, 1.0])
    np.testing.assert_allclose(yp, [0, 0.5, 0.6, 0.75, 1.0])


def test_cpt_hand_computed():
    kw = dict(acc_cheap=AW, acc_strong=AS)
    assert cpt(COST, ACC, 0.5, **kw) == pytest.approx(0.2)
    assert cpt(COST, ACC, 0.55, **kw) == pytest.approx(0.3)
    assert cpt(COST, ACC, 0.8, **kw) == pytest.approx(0.6)
    assert cpt(COST, ACC, 0.95, **kw) == pytest.approx(0.9)
    assert cpt(COST, ACC, 0.25, **kw) == pytest.approx(0.1)  # on the anchor segment
    assert math.isnan(cpt([0.3], [0.7], 0.8, **kw))


def test_apgr_hand_computed():
    # trapezoids: 0.05 + 0.11 + 0.0675 + 0.4375
    assert apgr(COST, ACC, acc_cheap=AW, acc_strong=AS) == pytest.approx(0.665)
    # a curve stopping at cost 0.25 with PGR 0.5 is held flat: 0.0625 + 0.375
    assert apgr([0.25], [0.7], acc_cheap=AW, acc_strong=AS) == pytest.approx(0.4375)
    # the straight line cheap -> strong (random mixing) has APGR 1/2 and ΔIBC 0
    c = np.linspace(0, 1, 11)
    a = AW + c * (AS - AW)
    assert apgr(c, a, acc_cheap=AW, acc_strong=AS) == pytest.approx(0.5)
    d, n = delta_ibc(c, a, acc_cheap=AW, acc_strong=AS)
    assert d == pytest.approx(0.0, abs=1e-9) and n == 100
    # a point past cost 1 is cut at 1 (linear interpolation): (0,0)-(2,1) -> 0.25
    assert apgr([2.0], [0.8], acc_cheap=AW, acc_strong=AS) == pytest.approx(0.25)


def test_delta_ibc_hand_computed():
    kw = dict(acc_cheap=AW, acc_strong=AS)
    # one point (0.25, PGR 0.5): levels 1..50 reached at c = x / 2 -> IBC twice the base
    d, n = delta_ibc([0.25], [0.7], **kw)
    assert n == 50 and d == pytest.approx(100.0)
    # add the strong point: for x > 0.5 the frontier is c = 1.5 x - 0.5
    d, n = delta_ibc([0.25, 1.0], [0.7, 0.8], **kw)
    vals = [100.0] * 50 + [100 * (x / (1.5 * x - 0.5) - 1) for x in np.arange(51, 101) / 100]
    assert n == 100 and d == pytest.approx(np.mean(vals), rel=1e-12)
    assert delta_ibc([0.5], [0.6], **kw) == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_curve_metrics_keys():
    m = curve_metrics(COST, ACC, acc_cheap=AW, acc_strong=AS)
    assert m["cpt_50"] == pytest.approx(0.2)
    assert m["cpt_80"] == pytest.approx(0.6)
    assert m["cpt_95"] == pytest.approx(0.9)
    assert m["apgr"] == pytest.approx(0.665)
    assert m["max_accuracy"] == 0.8 and m["max_pgr"] == pytest.approx(1.0)
    assert m["delta_ibc_levels"] == 100
    # the paper's unit: the ratio (IBC_M - IBC_base) / IBC_base, i.e. the percent / 100
    d, _ = delta_ibc(COST, ACC, acc_cheap=AW, acc_strong=AS)
    assert m["delta_ibc_ratio"] == pytest.approx(d / 100, rel=1e-15)
    d1 = curve_metrics([0.25], [0.7], acc_cheap=AW, acc_strong=AS)  # IBC twice the base
    assert d1["delta_ibc_ratio"] == pytest.approx(1.0)


# ---------------------------------------------------------------- properties

_points = st.lists(st.tuples(st.floats(0.001, 1.2), st.floats(0.5, 0.95)), min_size=1,
                   max_size=12)


@settings(max_examples=150, deadline=None)
@given(_points)
def test_frontier_properties(pts):
    cost, acc = map(np.array, zip(*pts, strict=True))
    idx = pareto_frontier(cost, acc)
    # strictly increasing in both coordinates, and no point dominates a frontier point
    assert np.all(np.diff(cost[idx]) > 0) and np.all(np.diff(acc[idx]) > 0)
    for i in idx:
        assert not np.any((cost <= cost[i]) & (acc >= acc[i]) & ((cost < cost[i]) | (acc > acc[i])))
    kw = dict(acc_cheap=AW, acc_strong=AS)
    levels = np.linspace(0.05, 1.5, 30)
    c = np.array([cpt(cost, acc, x, **kw) for x in levels])
    ok = ~np.isnan(c)
    # reachable levels form a prefix and CPT is non-decreasing in the level
    assert np.all(ok[: ok.sum()]) and np.all(np.diff(c[ok]) >= -1e-12)
    m = curve_metrics(cost, acc, **kw)
    assert m["apgr"] <= max(m["max_pgr"], 0.0) + 1e-12
    # a dominated extra point changes nothing
    j = int(idx[-1])
    worse = curve_metrics(np.append(cost, cost[j] + 0.01), np.append(acc, acc[j] - 0.01), **kw)
    for k, v in m.items():
        assert (np.isnan(v) and np.isnan(worse[k])) or v == pytest.approx(worse[k])


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_straight_line_and_scaling(c1, f):
    # a single operating point at (c1, PGR f): levels x <= f reached at c = x c1 / f, so
    # every reached level has IBC ratio f / c1 and ΔIBC = 100 (f / c1 - 1)
    kw = dict(acc_cheap=AW, acc_strong=AS)
    acc = AW + f * (AS - AW)
    d, n = delta_ibc([c1], [acc], **kw)
    assert n == int(np.floor(f * 100 + 1e-9))
    if n:
        assert d == pytest.approx(100 * (f / c1 - 1), rel=1e-9, abs=1e-9)
