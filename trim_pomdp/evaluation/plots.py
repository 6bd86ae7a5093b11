"""Plots of evaluation curves (matplotlib is imported only inside the functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "plot_curves",
]

_STYLES = {
    "trim-pomdp": dict(color="tab:red", marker="o"),
    "trim-thr": dict(color="tab:blue", marker="s"),
    "random": dict(color="tab:gray", marker="."),
    "oracle": dict(color="black", marker="*"),
    "query-oracle": dict(color="tab:green", marker="^"),
    "automix": dict(color="tab:purple", marker="v"),
    "always-cheap": dict(color="tab:orange", marker="D"),
    "always-strong": dict(color="tab:brown", marker="D"),
}


def plot_curves(evaluation: Any, path: str | Path, *, x: str = "cost_fraction",
                title: str | None = None, frontier_only: bool = True) -> Path:
    """Plot accuracy against cost for every family of an
    :class:`~trim_pomdp.evaluation.sweep.Evaluation` and save it as PNG.

    Parameters
    ----------
    evaluation : Evaluation
    path : str or Path
        Output file (``.png``).
    x : {"cost_fraction", "mean_strong_tokens"}
        Cost axis: fraction of the always-strong strong tokens, or strong tokens per query.
    frontier_only : bool
        Draw each family's Pareto frontier (anchored at the always-cheap point) as the
        line and its other operating points as faint markers; ``False`` joins all points
        in parameter order.

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    if x not in ("cost_fraction", "mean_strong_tokens"):
        raise ValueError(f"x must be 'cost_fraction' or 'mean_strong_tokens'; got {x!r}")
    path = Path(path)
    scale = 1.0 if x == "cost_fraction" else evaluation.strong_tokens_always_strong
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    try:
        for name, c in evaluation.curves.items():
            st = _STYLES.get(name, {})
            xs = np.asarray(c.cost_fraction) * scale
            ys = np.asarray(c.accuracy)
            if len(xs) == 1:
                ax.plot(xs, ys, linestyle="none", markersize=7, label=name,
                        **{"marker": "D", **st})
                continue
            if frontier_only:
                f = np.asarray(c.frontier)
                fx = np.concatenate(([0.0], xs[f]))
                fy = np.concatenate(([evaluation.acc_cheap], ys[f]))
                ax.plot(xs, ys, linestyle="none", alpha=0.25, markersize=4,
                        color=st.get("color"), marker=st.get("marker", "."))
                ax.plot(fx, fy, label=name, markersize=4, **st)
            else:
                ax.plot(xs, ys, label=name, markersize=4, **st)
        ax.axhline(evaluation.acc_cheap, color="tab:orange", linestyle=":", linewidth=1)
        ax.axhline(evaluation.acc_strong, color="tab:brown", linestyle=":", linewidth=1)
        ax.set_xlabel("strong tokens / always-strong" if x == "cost_fraction"
                      else "strong tokens per query")
        ax.set_ylabel("accuracy")
        ax.set_xlim(left=0.0, right=1.05 * scale)
        ax.set_title(title or f"{evaluation.scenario}: accuracy vs strong-model cost "
                     f"({evaluation.n_problems} problems)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
