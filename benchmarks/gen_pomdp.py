"""Generators of large classic POMDPs in Cassandra's ``.pomdp`` format, for benchmarks.

Not part of the package: benchmarks and tests make their instances with it.

RockSample[n, k] (Smith and Simmons, "Heuristic search value iteration for POMDPs", UAI 2004),
written with the conventions of T. Smith's generator, the one that made
``../shared/pomdp/problems/RockSample_4_4.pomdp``:

* states ``s<x><y><r_0>..<r_{k-1}>`` (robot at column x, row y of an n x n grid, r_i = 1 when
  rock i is good; x outermost, rock 0 the most significant bit) and one terminal state ``st``:
  ``n * n * 2**k + 1`` states.  Coordinates are written with as many digits as n - 1 needs.
* actions ``amn ame ams amw`` (move north = y + 1, east = x + 1, south, west), ``ac0 ..
  ac{k-1}`` (check rock i) and ``as`` (sample): ``k + 5`` actions.
* moves are deterministic; moving east off the grid exits to ``st`` with reward +10; moving
  off the grid in any other direction, or sampling where there is no rock, goes to ``st``
  with reward -100 (an optimal policy never does either, so V* is that of the variants that
  forbid them); sampling a good rock gives +10 and makes it bad, a bad one -10; ``st`` is
  absorbing with reward 0.
* ``check i`` returns the true state of rock i with probability ``(1 + eta) / 2``,
  ``eta = exp(-d / d0)``, d the Euclidean distance from the robot to rock i (the sensor's
  efficiency halves every ``d0 ln 2``; ``d0 = 1`` in the shared RockSample_4_4 file).
* observations: ``none good bad`` (3; every action but a check observes ``none``), or with
  ``--two-observations`` Smith's ``ogood obad`` (every action but a check observes ``ogood``);
  V* is the same, a deterministic observation carries no information.
* the initial belief: the robot at its start cell, every rock good or bad with probability
  1/2 independently; discount 0.95.

Rock layouts (``(x, y)`` cells, x = column):

* ``--layout standard`` (the default where one is known): RockSample[4,4] is the shared file's
  (start (0, 2); rocks (3,1) (2,1) (1,3) (1,0)); RockSample[7,8] the layout of the HSVI/SARSOP
  RockSample_7_8 instance as listed in the literature (start (0, 3); rocks (2,0) (0,1) (3,1)
  (6,3) (2,4) (3,4) (5,5) (1,6)).
* ``--layout random --seed S``: the start is (0, n // 2) and the k rocks are k distinct cells
  other than the start, drawn by ``numpy.random.default_rng(S).choice`` over the n * n cells in
  x-major order; the same (n, k, seed) always gives the same file.  The layout is written in a
  comment at the top of the file.

Tag-like grids (Pineau, Gordon and Thrun's laser tag, 2003) on a w x h grid of C = w * h
cells: states ``(robot cell, opponent cell)`` and one ``tagged`` state, ``C * C + 1``;
actions ``north south east west tag``; a move costs 1 (blocked by the edge: stay), ``tag``
gives +10 and ends in ``tagged`` when both share a cell, else -10; the opponent moves away
from the robot (with probability 0.8 split evenly over its moves that do not bring it closer
in either coordinate and change its cell, else it stays); the robot observes its own cell,
or ``seen`` when the opponent shares it (C + 1 observations); ``tagged`` is absorbing with
reward 0.  The initial belief: robot at cell 0, opponent uniform over the other cells.
A 9 x 7 grid gives 3,970 states and 64 observations (the size of the issue's Tag-like grid).

Run:  python benchmarks/gen_pomdp.py rocksample 7 8 -o RockSample_7_8.pomdp
      python benchmarks/gen_pomdp.py rocksample 5 5 --layout random --seed 3 -o rs55.pomdp
      python benchmarks/gen_pomdp.py tag 9 7 -o tag_9x7.pomdp
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

# (n, k) -> (start cell, rock cells); see the module docstring.
STANDARD_LAYOUTS: dict[tuple[int, int], tuple[tuple[int, int], list[tuple[int, int]]]] = {
    (4, 4): ((0, 2), [(3, 1), (2, 1), (1, 3), (1, 0)]),
    (7, 8): ((0, 3), [(2, 0), (0, 1), (3, 1), (6, 3), (2, 4), (3, 4), (5, 5), (1, 6)]),
}


def rocksample_layout(n: int, k: int, layout: str = "standard",
                      seed: int = 0) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The start cell and the k rock cells of RockSample[n, k] (module docstring)."""
    if n < 1 or k < 0:
        raise ValueError(f"RockSample needs n >= 1 and k >= 0; got n={n}, k={k}")
    if k > n * n - 1:
        raise ValueError(f"RockSample[{n},{k}]: {k} rocks do not fit {n * n - 1} free cells")
    if layout == "standard":
        if (n, k) not in STANDARD_LAYOUTS:
            known = ", ".join(f"[{a},{b}]" for a, b in STANDARD_LAYOUTS)
            raise ValueError(f"no standard layout for RockSample[{n},{k}] (known: {known}); "
                             "use --layout random --seed S")
        start, rocks = STANDARD_LAYOUTS[(n, k)]
        return start, list(rocks)
    if layout != "random":
        raise ValueError(f"layout must be 'standard' or 'random'; got {layout!r}")
    start = (0, n // 2)
    cells = [(x, y) for x in range(n) for y in range(n) if (x, y) != start]
    pick = np.random.default_rng(seed).choice(len(cells), size=k, replace=False)
    return start, [cells[i] for i in pick]


def _fmt(p: float) -> str:
    # shortest round trip; a mantissa with a point so every reader takes it as a float
    s = repr(float(p))
    return s if ("." in s or "e" in s or "inf" in s or "nan" in s) else s + ".0"


def rocksample(n: int, k: int, *, layout: str = "standard", seed: int = 0, d0: float = 1.0,
               two_observations: bool = False, discount: float = 0.95) -> str:
    """RockSample[n, k] as ``.pomdp`` text (module docstring for the definition)."""
    start, rocks = rocksample_layout(n, k, layout, seed)
    if not d0 > 0:
        raise ValueError(f"d0 must be > 0; got {d0}")
    w = len(str(n - 1))
    rock_at = {c: i for i, c in enumerate(rocks)}

    def name(x: int, y: int, bits: int) -> str:
        rb = "".join("1" if bits >> (k - 1 - i) & 1 else "0" for i in range(k))
        return f"s{x:0{w}d}{y:0{w}d}{rb}"

    names = [name(x, y, b) for x in range(n) for y in range(n) for b in range(2**k)] + ["st"]
    moves = {"amn": (0, 1), "ame": (1, 0), "ams": (0, -1), "amw": (-1, 0)}
    checks = [f"ac{i}" for i in range(k)]
    actions = [*moves, *checks, "as"]
    if two_observations:
        obs = ["ogood", "obad"]
        quiet, good, bad = "ogood", "ogood", "obad"
    else:
        obs = ["none", "good", "bad"]
        quiet, good, bad = "none", "good", "bad"
    start_x, start_y = start
    n_start = 2**k
    b0 = ["0"] * len(names)
    first = (start_x * n + start_y) * n_start
    for j in range(n_start):
        b0[first + j] = _fmt(1.0 / n_start)

    out: list[str] = [
        f"# RockSample[{n},{k}], generated by benchmarks/gen_pomdp.py "
        f"(layout {layout}{'' if layout == 'standard' else f', seed {seed}'}, d0 {d0:g})",
        "# state naming convention: s <x> <y> <rock_0> .. <rock_{k-1}>; st: terminal",
        "# actions: amn ame ams amw (move north/east/south/west), ac<i> (check rock i), "
        "as (sample)",
        f"# initial position is: ({start_x}, {start_y})",
        "# rock positions are: " + " ".join(f"({x},{y})" for x, y in rocks),
        "",
        f"discount: {_fmt(discount)}",
        "values: reward",
        "actions: " + " ".join(actions),
        "observations: " + " ".join(obs),
        "states: " + " ".join(names),
        "",
        "start: " + " ".join(b0),
        "",
        # every action but a check observes `quiet`; checks are set per successor below
        *(f"O: {a} : * : {quiet} 1.0" for a in [*moves, "as"]),
        *(f"O: {a} : st : {quiet} 1.0" for a in checks),
        *(f"T: {a} : st : st 1.0" for a in actions),
    ]
    for x in range(n):
        for y in range(n):
            for bits in range(2**k):
                s = name(x, y, bits)
                for a, (dx, dy) in moves.items():
                    nx, ny = x + dx, y + dy
                    if 0 <= nx < n and 0 <= ny < n:
                        out.append(f"T: {a} : {s} : {name(nx, ny, bits)} 1.0")
                    else:
                        out.append(f"T: {a} : {s} : st 1.0")
                        out.append(f"R: {a} : {s} : * : * {10.0 if a == 'ame' else -100.0}")
                for i, a in enumerate(checks):
                    out.append(f"T: {a} : {s} : {s} 1.0")
                    rx, ry = rocks[i]
                    p = 0.5 * (1.0 + math.exp(-math.hypot(rx - x, ry - y) / d0))
                    is_good = bits >> (k - 1 - i) & 1
                    p_good = p if is_good else 1.0 - p
                    out.append(f"O: {a} : {s} : {good} {_fmt(p_good)}")
                    out.append(f"O: {a} : {s} : {bad} {_fmt(1.0 - p_good)}")
                i = rock_at.get((x, y))
                if i is None:
                    out.append(f"T: as : {s} : st 1.0")
                    out.append(f"R: as : {s} : * : * -100.0")
                else:
                    bit = 1 << (k - 1 - i)
                    out.append(f"T: as : {s} : {name(x, y, bits & ~bit)} 1.0")
                    out.append(f"R: as : {s} : * : * {10.0 if bits & bit else -10.0}")
    return "\n".join(out) + "\n"


def tag(width: int, height: int, *, discount: float = 0.95) -> str:
    """A Tag-like grid as ``.pomdp`` text (module docstring for the definition)."""
    if width < 1 or height < 1 or width * height < 2:
        raise ValueError(f"a tag grid needs at least 2 cells; got {width} x {height}")
    C = width * height
    moves = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}

    def cell(x: int, y: int) -> int:
        return y * width + x

    def xy(c: int) -> tuple[int, int]:
        return c % width, c // width

    def step(c: int, d: tuple[int, int]) -> int:
        x, y = xy(c)
        nx, ny = x + d[0], y + d[1]
        return cell(nx, ny) if 0 <= nx < width and 0 <= ny < height else c

    def opp_moves(r: int, o: int) -> dict[int, float]:
        """Where the opponent at o goes when the robot is at r (after the robot's move)."""
        rx, ry = xy(r)
        ox, oy = xy(o)
        away = []
        for d in moves.values():
            c = step(o, d)
            cx, cy = xy(c)
            if c != o and abs(cx - rx) >= abs(ox - rx) and abs(cy - ry) >= abs(oy - ry):
                away.append(c)
        dist: dict[int, float] = {o: 0.2 if away else 1.0}
        for c in away:
            dist[c] = dist.get(c, 0.0) + 0.8 / len(away)
        return dist

    def sname(r: int, o: int) -> str:
        return f"r{r}o{o}"

    names = [sname(r, o) for r in range(C) for o in range(C)] + ["tagged"]
    obs = [f"at{c}" for c in range(C)] + ["seen"]
    b0 = ["0"] * len(names)
    for o in range(1, C):
        b0[o] = _fmt(1.0 / (C - 1))
    out: list[str] = [
        f"# Tag-like grid {width} x {height}, generated by benchmarks/gen_pomdp.py",
        "# states r<robot cell>o<opponent cell>, cell = y * width + x; tagged: terminal",
        "",
        f"discount: {_fmt(discount)}",
        "values: reward",
        "actions: " + " ".join([*moves, "tag"]),
        "observations: " + " ".join(obs),
        "states: " + " ".join(names),
        "",
        "start: " + " ".join(b0),
        "",
        "R: * : * : * : * -1.0",
        "R: tag : * : * : * -10.0",
        "T: * : tagged : tagged 1.0",
        "R: * : tagged : * : * 0.0",
        "O: * : tagged : seen 1.0",
    ]
    for r in range(C):
        for o in range(C):
            s = sname(r, o)
            out.append(f"O: * : {s} : {'seen' if r == o else f'at{r}'} 1.0")
            for a, d in [*moves.items(), ("tag", (0, 0))]:
                if a == "tag" and r == o:
                    out.append(f"T: tag : {s} : tagged 1.0")
                    out.append(f"R: tag : {s} : * : * 10.0")
                    continue
                r2 = step(r, d)
                for o2, p in sorted(opp_moves(r2, o).items()):
                    out.append(f"T: {a} : {s} : {sname(r2, o2)} {_fmt(p)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    rs = sub.add_parser("rocksample", help="RockSample[n, k]")
    rs.add_argument("n", type=int)
    rs.add_argument("k", type=int)
    rs.add_argument("--layout", choices=("standard", "random"), default=None,
                    help="default: standard where known, else random")
    rs.add_argument("--seed", type=int, default=0)
    rs.add_argument("--d0", type=float, default=1.0, help="sensor distance scale (default 1)")
    rs.add_argument("--two-observations", action="store_true",
                    help="Smith's ogood/obad instead of none/good/bad")
    tg = sub.add_parser("tag", help="Tag-like w x h grid")
    tg.add_argument("width", type=int)
    tg.add_argument("height", type=int)
    for q in (rs, tg):
        q.add_argument("-o", "--out", default="-", help="output file (default: stdout)")
    args = p.parse_args(argv)
    try:
        if args.kind == "rocksample":
            layout = args.layout or ("standard" if (args.n, args.k) in STANDARD_LAYOUTS
                                     else "random")
            text = rocksample(args.n, args.k, layout=layout, seed=args.seed, d0=args.d0,
                              two_observations=args.two_observations)
        else:
            text = tag(args.width, args.height)
    except ValueError as exc:
        print(f"gen_pomdp: error: {exc}", file=sys.stderr)
        return 2
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="ascii")
    return 0


if __name__ == "__main__":
    sys.exit(main())
