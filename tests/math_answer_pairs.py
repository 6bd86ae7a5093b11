"""MATH-style answer pairs with known verdicts, built from their construction: the same
value written in the ways MATH solutions and model outputs write it (equal), and a nearby
different value (not equal).  Used to compare the answer-checker backends."""

from __future__ import annotations

import random
from fractions import Fraction
from math import gcd


def _frac_forms(p: int, q: int) -> list[str]:
    s = "-" if p * q < 0 else ""
    a, b = abs(p), abs(q)
    forms = [f"{s}\\frac{{{a}}}{{{b}}}", f"{s}\\dfrac{{{a}}}{{{b}}}", f"{s}{a}/{b}",
             f"{s}\\frac{{{2 * a}}}{{{2 * b}}}"]
    if s:
        forms.append(f"\\frac{{-{a}}}{{{b}}}")
    d = Fraction(p, q)
    den = d.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:  # a terminating decimal
        forms.append(f"{float(d):g}")
    return forms


def answer_pairs(seed: int = 0, n_each: int = 12) -> list[tuple[str, str, bool]]:
    """``(reference, answer, equal)`` triples; about 30 * ``n_each`` of them."""
    rng = random.Random(seed)
    out: list[tuple[str, str, bool]] = []

    def add(ref: str, forms: list[str], wrong: list[str]) -> None:
        for f in forms:
            out.append((ref, f, True))
        for w in wrong:
            out.append((ref, w, False))

    for _ in range(n_each):  # fractions
        q = rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 20, 25])
        p = rng.randint(1, 3 * q)
        if gcd(p, q) != 1:
            p += 1 if gcd(p + 1, q) == 1 else 0
        if gcd(p, q) != 1:
            continue
        p = -p if rng.random() < 0.3 else p
        forms = _frac_forms(p, q)
        add(forms[0], forms[1:], [_frac_forms(p + 1, q)[0], _frac_forms(p, q + 1)[2],
                                   f"{float(Fraction(p, q)):.3f}" if q in (3, 7, 9) else
                                   _frac_forms(-p, q)[0]])
    for _ in range(n_each):  # integers with separators, currency, percent, degrees, units
        n = rng.randint(1000, 999_999)
        sep = f"{n:,}"
        add(str(n), [sep, f"\\${sep}", f"{n}.", f"{n}.0"],
            [str(n + 1), f"{n // 10:,}", str(n * 10)])
        k = rng.randint(1, 179)
        add(f"{k}^\\circ", [str(k), f"{k}^{{\\circ}}", f"{k}\\text{{ degrees}}"],
            [str(k + 1), f"{180 - k}^\\circ" if 180 - k != k else str(k + 2)])
        u = rng.choice(["cm", "meters", "units", "inches"])
        add(f"{k}\\text{{ {u}}}", [str(k), f"{k} \\text{{{u}}}"], [str(k + 3)])
        pc = rng.randint(1, 99)
        add(f"{pc}\\%", [str(pc), f"{pc}%"], [str(pc + 1)])
    for _ in range(n_each):  # radicals and pi
        a = rng.randint(2, 9)
        r = rng.choice([2, 3, 5, 6, 7])
        add(f"{a}\\sqrt{{{r}}}", [f"{a}\\sqrt{r}", f"\\sqrt{{{a * a * r}}}", f"{a} \\sqrt{{{r}}}"],
            [f"{a + 1}\\sqrt{{{r}}}", f"{a}\\sqrt{{{r + 1}}}"])
        add(f"\\frac{{\\sqrt{{{r}}}}}{{{a}}}", [f"\\frac{{1}}{{{a}}}\\sqrt{{{r}}}",
                                               f"\\dfrac{{\\sqrt{r}}}{{{a}}}"],
            [f"\\frac{{\\sqrt{{{r}}}}}{{{a + 1}}}"])
        add(f"\\frac{{{a}\\pi}}{{{r + 1}}}", [f"\\frac{{{a}}}{{{r + 1}}}\\pi",
                                              f"{a}\\pi/{r + 1}"],
            [f"\\frac{{{a + 1}\\pi}}{{{r + 1}}}"])
    for _ in range(n_each):  # tuples, intervals, sets, expressions, choices
        x, y = rng.randint(-9, 9), rng.randint(-9, 9)
        add(f"({x},{y})", [f"\\left({x}, {y}\\right)", f"( {x} , {y} )"],
            [f"({y},{x})" if x != y else f"({x},{y + 1})", f"({x},{y + 2})"])
        s = sorted(rng.sample(range(1, 20), 3))
        add("\\{" + ",".join(map(str, s)) + "\\}",
            ["\\{" + ", ".join(map(str, s[::-1])) + "\\}"],
            ["\\{" + ",".join(map(str, s[:2] + [s[2] + 1])) + "\\}"])
        c = rng.randint(1, 9)
        add(f"x^2+{2 * c}x+{c * c}", [f"(x+{c})^2", f"x^2 + {2 * c}x + {c * c}"],
            [f"(x-{c})^2", f"x^2+{c}x+{c * c}"])
        ch = rng.choice("ABCDE")
        other = "ABCDE"[("ABCDE".index(ch) + 1) % 5]
        add(f"\\text{{({ch})}}", [ch, f"({ch})", f"\\textbf{{({ch})}}"], [other, f"({other})"])
        v = rng.randint(2, 30)
        add(str(v), [f"x = {v}", f"k={v}"], [f"x = {v + 1}"])
    return out
