r"""Math answer checking: extract the last ``\boxed{...}``, normalise, compare.

Two backends compare the extracted answers.  ``"math-verify"`` (the default) is Hugging
Face's ``math-verify`` (the ``math`` extra): it parses both answers into SymPy and compares
them symbolically (``2\sqrt{3} = \sqrt{12}``, ``(x+1)^2 = x^2+2x+1``, ``\{1,2\} =
\{2,1\}``, units and ``x =`` stripped).  ``"builtin"`` needs no dependency: the
normalisation below and a numeric comparison.  On the 640 MATH-style answer pairs that
``tests/math_answer_pairs.py`` builds (equal forms of one value, and near misses),
math-verify gets 628 right and the built-in checker 532 (``tests/test_serving_checker.py``
measures both), hence the default.

The built-in normalisation follows the MATH benchmark's ``is_equiv`` conventions (Hendrycks et al.)
plus a numeric comparison: two answers are equal when their normalised strings are equal, or
when both parse as real numbers (integers, decimals, ``\frac{a}{b}``, ``a/b``, with optional
sign and thousands separators) that agree to a relative tolerance of 1e-9.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

__all__ = [
    "AnswerChecker",
    "BACKENDS",
    "MathAnswerChecker",
    "answers_equal",
    "extract_boxed",
    "normalize_answer",
]

#: answer-comparison backends of :class:`MathAnswerChecker`; the first is the default
BACKENDS = ("math-verify", "builtin")

AnswerChecker = Callable[[str, str], "bool | None"]


def extract_boxed(text: str) -> str | None:
    r"""Content of the LAST ``\boxed{...}`` (or ``\fbox{...}``) in ``text``, braces balanced.

    Also accepts the brace-less form ``\boxed 5``.  Returns None when there is none or its
    braces are unbalanced.

    >>> extract_boxed(r"so $\boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    """
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = idx + (len("\\boxed") if text.startswith("\\boxed", idx) else len("\\fbox"))
    if i < len(text) and text[i] == " ":
        m = re.match(r" ([^\s$]+)", text[i:])
        return m.group(1) if m else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


_UNIT_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{\s*([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d])")


def _fix_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1{2} -> \frac{1}{2}, \frac{1}2 -> \frac{1}{2}
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    return s


def normalize_answer(ans: str) -> str:
    r"""Canonical string form of a math answer.

    Removes ``$``, spaces, ``\left``/``\right``, spacing commands, ``^\circ``, ``\%``,
    trailing periods, ``\text{...}`` wrappers (keeping the content), a leading ``x =``;
    maps ``\dfrac``/``\tfrac`` to ``\frac``; normalises ``\frac12`` and ``\sqrt2``; turns a
    simple ``a/b`` of integers into ``\frac{a}{b}``; strips thousands separators; ``0.5`` keeps
    its decimal form (numeric equality is checked separately).
    """
    s = ans.strip()
    s = s.replace("\n", "").replace("\\!", "")
    s = re.sub(r"\\[,;:]", "", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    while True:
        t = _UNIT_TEXT.sub(r"\1", s)
        if t == s:
            break
        s = t
    s = s.replace(" ", "")
    s = s.rstrip(".")
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s)
    # "x=5" / "k = 3": a single variable name on the left is not part of the answer
    m = re.fullmatch(r"[A-Za-z]\w{0,2}=(.+)", s)
    if m and "=" not in m.group(1):
        s = m.group(1)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = _fix_fracs(s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    m = re.fullmatch(r"(-?)\.(\d+)", s)
    if m:
        s = f"{m.group(1)}0.{m.group(2)}"
    return s


def _as_number(s: str) -> Fraction | None:
    neg = s.startswith("-")
    body = s[1:] if neg else s
    m = re.fullmatch(r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", body)
    try:
        if m:
            den = Fraction(m.group(2))
            if den == 0:
                return None
            val = Fraction(m.group(1)) / den
        elif re.fullmatch(r"\d+(?:\.\d+)?|\.\d+", body):
            val = Fraction(body)
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    return -val if neg else val


def answers_equal(a: str, b: str) -> bool:
    """Whether two answers are equal after :func:`normalize_answer` (or numerically)."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if na == nb:
        return True
    xa, xb = _as_number(na), _as_number(nb)
    if xa is None or xb is None:
        return False
    scale = max(abs(xa), abs(xb), Fraction(1))
    return abs(xa - xb) <= Fraction(1, 10**9) * scale


def _math_verify_equal(mv: Any, got: str, ref: str) -> bool:
    """``math_verify.verify(parse(ref), parse(got))`` on the boxed forms of both answers.

    Its timeouts are SIGALRM-based, which only the main thread may set; elsewhere they are
    off (the answers are short strings, parsed in milliseconds)."""
    main = threading.current_thread() is threading.main_thread()
    limit = 5 if main else None
    gold = mv.parse(f"\\boxed{{{ref}}}", parsing_timeout=limit)
    pred = mv.parse(f"\\boxed{{{got}}}", parsing_timeout=limit)
    return bool(mv.verify(gold, pred, timeout_seconds=limit))


class MathAnswerChecker:
    r"""Callable ``checker(solution_text, reference) -> bool | None``.

    Extracts the last ``\boxed{...}`` from the solution; a reference that itself contains
    ``\boxed`` is reduced the same way (so a MATH ``solution`` field works as a reference).
    Returns None when the reference is empty/None (no label), False when the solution has no
    boxed answer.

    Parameters
    ----------
    backend : {"math-verify", "builtin"}
        How the two extracted answers are compared (module docstring).  ``"math-verify"``
        needs the ``math-verify`` package (``pip install 'trim_pomdp[math]'``).
    """

    def __init__(self, backend: str = BACKENDS[0]) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.backend = backend
        self._mv: Any = None
        if backend == "math-verify":
            try:
                import math_verify
            except ImportError as exc:
                raise ImportError(
                    "MathAnswerChecker(backend='math-verify') needs the math-verify package "
                    "(pip install 'trim_pomdp[math]'), or use backend='builtin'"
                ) from exc
            self._mv = math_verify

    def extract(self, solution_text: str) -> str | None:
        return extract_boxed(solution_text)

    def equal(self, answer: str, reference: str) -> bool:
        """Whether the extracted ``answer`` equals ``reference`` under this backend."""
        if self._mv is None:
            return answers_equal(answer, reference)
        return _math_verify_equal(self._mv, answer, reference)

    def __call__(self, solution_text: str, reference: str | None) -> bool | None:
        if reference is None or not str(reference).strip():
            return None
        ref = str(reference)
        if "\\boxed" in ref or "\\fbox" in ref:
            ref = extract_boxed(ref) or ref
        got = extract_boxed(solution_text)
        if got is None:
            return False
        return self.equal(got, ref)
