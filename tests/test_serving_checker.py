"""Math answer checker: boxed extraction, normalisation, comparison (known pairs)."""

from __future__ import annotations

import pytest
from math_answer_pairs import answer_pairs

from trim_pomdp.serving import MathAnswerChecker, answers_equal, extract_boxed, normalize_answer
from trim_pomdp.serving.checker import BACKENDS

pytest.importorskip("math_verify")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{5}$.", "5"),
        ("\\boxed{\\frac{1}{2}} and later \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("nested \\boxed{a_{b_{c}}}", "a_{b_{c}}"),
        ("\\fbox{7}", "7"),
        ("\\boxed 12 is it", "12"),
        ("no answer", None),
        ("\\boxed{unbalanced", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\frac12", "\\frac{1}{2}"),
        ("1/2", "\\frac{1}{2}"),
        ("x = 5", "5"),
        ("90^\\circ", "90"),
        ("\\$1,000", "1000"),
        ("5\\%", "5"),
        ("\\text{(B)}", "(B)"),
        ("10 \\text{ cm}", "10cm"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\sqrt2", "\\sqrt{2}"),
        (".5", "0.5"),
        ("3.", "3"),
    ],
)
def test_normalize(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("-\\frac{3}{4}", "-0.75", True),
        ("1,000", "1000", True),
        ("2", "3", False),
        ("\\frac{1}{3}", "0.333", False),
        ("(1,2)", "\\left(1, 2\\right)", True),
        ("x^2+1", "x^2 + 1", True),
        ("x^2+1", "x^2-1", False),
    ],
)
def test_answers_equal(a, b, equal):
    assert answers_equal(a, b) is equal
    assert MathAnswerChecker(backend="builtin").equal(a, b) is equal
    assert MathAnswerChecker(backend="math-verify").equal(a, b) is equal


@pytest.mark.parametrize("backend", BACKENDS)
def test_checker(backend):
    check = MathAnswerChecker(backend=backend)
    assert check("Thus $\\boxed{\\dfrac{1}{2}}$.", "\\frac12") is True
    assert check("Thus $\\boxed{3}$.", "4") is False
    assert check("no boxed answer", "4") is False
    assert check("\\boxed{4}", None) is None
    # a MATH-style reference solution is reduced to its boxed answer
    assert check("\\boxed{4}", "we get $\\boxed{4}$") is True


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        MathAnswerChecker(backend="sympy")


def test_checker_in_a_worker_thread():
    # math-verify's own timeouts need the main thread; the checker works off it too
    from concurrent.futures import ThreadPoolExecutor

    check = MathAnswerChecker(backend="math-verify")
    with ThreadPoolExecutor(1) as ex:
        assert ex.submit(check, "\\boxed{2\\sqrt{3}}", "\\sqrt{12}").result() is True


@pytest.mark.slow
def test_default_backend_gets_more_pairs_right():
    # the default is the backend that gets more of the built MATH-style pairs right; the
    # counts are the ones the checker's docstring states
    pairs = answer_pairs()
    assert len(pairs) == 640
    right = {}
    for backend in BACKENDS:
        check = MathAnswerChecker(backend=backend)
        right[backend] = sum(check.equal(ans, ref) is eq for ref, ans, eq in pairs)
    assert right == {"math-verify": 628, "builtin": 532}
    assert MathAnswerChecker().backend == max(right, key=right.get)
