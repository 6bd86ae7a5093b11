"""Types of the compiled core ``trim_pomdp._core`` (csrc/bindings.cpp, csrc/bind_*.cpp).

Private: the package's Python modules wrap every function (``engine.model``,
``engine.solver``, ``engine.finite_solver``).  Arrays are taken as C-contiguous float64
(int64 for action indices) after conversion, and results are plain dicts of arrays.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

_F = NDArray[np.float64]
_I = NDArray[np.int64]
#: compressed rows (ptr, idx, val, n_cols): row r holds (idx[k], val[k]), k in ptr[r]:ptr[r+1]
_Csr = tuple[_I, NDArray[np.int32], _F, int]

#: largest magnitude a parsed or validated model value may have
MAX_VALUE: float

class ParsedPomdp(TypedDict):
    T: _F | _Csr  # (n_actions, n_states, n_states), or rows a*S+s over s'
    Z: _F | _Csr  # (n_actions, n_states, n_observations), or rows a*S+s' over o
    storage: Literal["dense", "sparse"]
    R: _F  # (n_actions, n_states), rewards (costs negated)
    discount: float
    b0: _F  # (n_states,)
    state_names: list[str] | None
    action_names: list[str] | None
    observation_names: list[str] | None
    values: Literal["reward", "cost"]

class PomdpSolveResult(TypedDict):
    alphas: _F  # (K, n_states); float32 when single_alphas
    actions: _I  # (K,)
    lower_bound: float
    upper_bound: float
    gap: float
    time_s: float
    iterations: int
    n_beliefs: int
    history: _F  # (n_records, 5): time, lower, upper, n_alpha, iteration
    interrupted: bool
    memory_mb: float

class BackupResult(TypedDict):
    alpha: _F  # (n_states,)
    action: int
    q_lower: _F  # (n_actions,)
    q_upper: _F  # (n_actions,)
    fib: _F  # (n_actions, n_states)

class FiniteSolveResult(TypedDict):
    alphas: _F  # (K, n_hidden)
    actions: _I  # (K,)
    offsets: _I  # (horizon * n_observed + 1,)
    lower_bound: float
    upper_bound: float
    gap: float
    time_s: float
    n_beliefs: int
    n_passes: int
    history: _F  # (n_records, 3)

def parse_pomdp(
    text: str | bytes,
    filename: str = "<string>",
    *,
    tol: float = 1e-6,
    max_entries: int = ...,
    validate: bool = True,
    max_memory_mb: float | None = None,
    storage: Literal["auto", "dense", "sparse"] = "auto",
    dense_max_mb: float = 256.0,
) -> ParsedPomdp: ...
def parse_memory_bytes(n_states: float, n_actions: float, n_observations: float) -> float: ...
def parse_sparse_base_bytes(
    n_states: float, n_actions: float, n_observations: float
) -> float: ...
def write_pomdp(
    T: ArrayLike | _Csr,
    Z: ArrayLike | _Csr,
    R: ArrayLike,
    discount: float,
    b0: ArrayLike,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    observation_names: Sequence[str] | None = None,
) -> str: ...
def validate_pomdp(
    T: ArrayLike | _Csr,
    Z: ArrayLike | _Csr,
    R: ArrayLike,
    discount: float,
    b0: ArrayLike,
    tol: float = 1e-6,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    observation_names: Sequence[str] | None = None,
) -> None: ...
def solve_pomdp(
    T: ArrayLike | _Csr,
    Z: ArrayLike | _Csr,
    R: ArrayLike,
    discount: float,
    b0: ArrayLike,
    *,
    time_limit: float,
    target_gap: float,
    max_iterations: int,
    max_memory_mb: float,
    n_threads: int,
    progress: Callable[[float, float, float, int, int], object] | None = None,
    tol: float = 1e-6,
    single_alphas: bool = False,
) -> PomdpSolveResult: ...
def _hsvi_backup(
    T: ArrayLike | _Csr,
    Z: ArrayLike | _Csr,
    R: ArrayLike,
    discount: float,
    alphas: ArrayLike,
    actions: ArrayLike,
    b: ArrayLike,
) -> BackupResult: ...
def solve_finite(
    model: Mapping[str, object],
    *,
    belief_points: ArrayLike | None = None,
    grid_resolution: int = 0,
    n_samples: int = 32,
    n_refine: int = 0,
    target_gap: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    share_slices: bool = True,
    sawtooth: bool = True,
) -> FiniteSolveResult: ...
def solve_finite_many(
    models: Sequence[Mapping[str, object]],
    *,
    belief_points: ArrayLike | None = None,
    grid_resolution: int = 0,
    n_samples: int = 32,
    n_refine: int = 0,
    target_gap: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    share_slices: bool = True,
    sawtooth: bool = True,
) -> list[FiniteSolveResult]: ...
