"""The C++ `.pomdp` parser: exact arrays on small hand-written files, every format form,
reward reduction, and typed errors that name file:line."""

from __future__ import annotations

import numpy as np
import pytest

from trim_pomdp import POMDP, PomdpFormatError, _core

TIGER = """\
# The classic tiger problem (Kaelbling, Littman, Cassandra 1998).
discount: 0.95
values: reward
states: tiger-left tiger-right
actions: listen open-left open-right
observations: tiger-left tiger-right

T: listen
identity

T: open-left
uniform

T: open-right
uniform

O: listen
0.85 0.15
0.15 0.85

O: open-left
uniform

O: open-right
uniform

R: listen : * : * : * -1
R: open-left : tiger-left : * : * -100
R: open-left : tiger-right : * : * 10
R: open-right : tiger-left : * : * 10
R: open-right : tiger-right : * : * -100
"""

TIGER_T = np.array([[[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])
TIGER_Z = np.array([[[0.85, 0.15], [0.15, 0.85]], [[0.5, 0.5], [0.5, 0.5]],
                    [[0.5, 0.5], [0.5, 0.5]]])
TIGER_R = np.array([[-1.0, -1.0], [-100.0, 10.0], [10.0, -100.0]])

# A 3-state model written with counts and indices.
HEADER3 = """\
discount: 0.9
values: reward
states: 3
actions: 2
observations: 2
"""
T3 = np.array([
    [[0.1, 0.2, 0.7], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]],
    [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]],
])
Z3 = np.array([
    [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]],
    [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]],
])


def parse(text: str, **kw) -> dict:
    return _core.parse_pomdp(text, "test.pomdp", **kw)


def matrix_form() -> str:
    lines = [HEADER3]
    for a in range(2):
        lines.append(f"T: {a}")
        lines += [" ".join(repr(float(x)) for x in row) for row in T3[a]]
        lines.append(f"O: {a}")
        lines += [" ".join(repr(float(x)) for x in row) for row in Z3[a]]
    return "\n".join(lines) + "\n"


def row_form() -> str:
    lines = [HEADER3]
    for a in range(2):
        for s in range(3):
            lines.append(f"T: {a} : {s} " + " ".join(repr(float(x)) for x in T3[a, s]))
            lines.append(f"O: {a} : {s}\n  " + " ".join(repr(float(x)) for x in Z3[a, s]))
    return "\n".join(lines) + "\n"


def single_form() -> str:
    # Entries in scrambled order, probabilities on the line after their indices, colons
    # glued to tokens: the format is a token stream.
    lines = [HEADER3]
    for a in (1, 0):
        for s in range(3):
            for s2 in (2, 0, 1):
                lines.append(f"T:{a}:{s}:{s2}\n{float(T3[a, s, s2])!r}")
            for o in (1, 0):
                lines.append(f"O : {a} : {s} : {o} {float(Z3[a, s, o])!r}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- exact arrays
def test_tiger_exact():
    d = parse(TIGER)
    np.testing.assert_array_equal(d["T"], TIGER_T)
    np.testing.assert_array_equal(d["Z"], TIGER_Z)
    np.testing.assert_array_equal(d["R"], TIGER_R)
    np.testing.assert_array_equal(d["b0"], [0.5, 0.5])  # no start: -> uniform
    assert d["discount"] == 0.95
    assert d["state_names"] == ["tiger-left", "tiger-right"]
    assert d["action_names"] == ["listen", "open-left", "open-right"]
    assert d["observation_names"] == ["tiger-left", "tiger-right"]
    assert d["values"] == "reward"
    for key in ("T", "Z", "R", "b0"):
        assert d[key].dtype == np.float64 and d[key].flags.c_contiguous


@pytest.mark.parametrize("form", [matrix_form, row_form, single_form])
def test_matrix_row_and_single_forms(form):
    d = parse(form())
    np.testing.assert_array_equal(d["T"], T3)
    np.testing.assert_array_equal(d["Z"], Z3)
    np.testing.assert_array_equal(d["R"], np.zeros((2, 3)))
    np.testing.assert_array_equal(d["b0"], np.full(3, 1 / 3))
    assert d["state_names"] is None and d["action_names"] is None
    assert d["observation_names"] is None


def test_wildcards_uniform_identity_and_overrides():
    text = HEADER3 + """
T: * identity          # every action: stay
T: 1 : * uniform       # action 1: overridden row by row
T: 1 : 2 : * 0         # ... then row 2 rebuilt entry by entry
T: 1 : 2 : 0 1.0
O: * uniform
O: 0 : * : 1 1
O: 0 : * : 0 0
O: 1 identity_not_a_keyword_here_is_an_error
"""
    with pytest.raises(PomdpFormatError, match=r"^test\.pomdp:14: expected a number; found "
                                               r"'identity_not_a_keyword_here_is_an_error'"):
        parse(text)
    text = text.replace("O: 1 identity_not_a_keyword_here_is_an_error\n", "")
    d = parse(text)
    T = np.stack([np.eye(3), np.full((3, 3), 1 / 3)])
    T[1, 2] = [1.0, 0.0, 0.0]
    np.testing.assert_array_equal(d["T"], T)
    Z = np.full((2, 3, 2), 0.5)
    Z[0] = [[0, 1]] * 3
    np.testing.assert_array_equal(d["Z"], Z)


def test_observation_identity_when_square():
    text = "discount: 1\nstates: a b\nactions: x\nobservations: p q\nT: x identity\nO: x identity\n"
    d = parse(text)
    np.testing.assert_array_equal(d["Z"][0], np.eye(2))
    assert d["discount"] == 1.0
    with pytest.raises(PomdpFormatError, match=r"test\.pomdp:5: 'O: x identity' needs as many "
                                               r"observations as states; got 3 observations and "
                                               r"2 states"):
        parse("discount: 1\nstates: a b\nactions: x\nobservations: 3\nO: x identity\n")


def test_reward_reduction_to_expected_reward():
    # R(a, s) = sum_s' T(s'|s,a) sum_o Z(o|s',a) R(a, s, s', o), later lines override.
    text = matrix_form() + """
R: * : * : * : * 1          # base reward 1 everywhere
R: 0 : 0 : 2 : * 10         # (a0, s0) -> s'=2 pays 10 whatever o
R: 0 : 0 : 2 : 1 -5         # ... except with o=1
R: 1 : * : 0 : 0 4          # action 1, any s, s'=0, o=0 pays 4
R: 0 : 1                    # (a0, s1): full (s', o) matrix replaces the base
1 2
3 4
5 6
R: 0 : 2 : 1 7 8            # (a0, s2): row over o for s'=1
R: 1 : 1 : * : * 2          # (a1, s1): constant again, hides the s'=0 entry above
"""
    d = parse(text)
    R = np.empty((2, 3))
    # (a0, s0): s' = 0, 1 -> 1; s' = 2 -> 10 (o=0) or -5 (o=1).
    R[0, 0] = 0.1 * 1 + 0.2 * 1 + 0.7 * (0.5 * 10 + 0.5 * -5)
    # (a0, s1): T = [0, 1, 0] -> s'=1 row [3, 4] under Z[0, 1] = [0.2, 0.8].
    R[0, 1] = 1.0 * (0.2 * 3 + 0.8 * 4)
    # (a0, s2): s'=1 row [7, 8], other s' base 1.
    R[0, 2] = 0.25 * 1 + 0.25 * (0.2 * 7 + 0.8 * 8) + 0.5 * 1
    # action 1: s'=0, o=0 pays 4 (Z[1, 0] = [1, 0]).
    R[1, 0] = 1.0 * 4
    R[1, 1] = 2.0
    R[1, 2] = 1.0  # T[1, 2] = [0, 0, 1]: never reaches s'=0
    np.testing.assert_allclose(d["R"], R, rtol=0, atol=1e-14)
    # Constant rewards are exact, not a floating-point expectation.
    assert d["R"][1, 1] == 2.0


def test_reward_reduction_matches_numpy_formula():
    # A dense R(a, s, s', o) given entry by entry reduces to the einsum of the formula.
    rng = np.random.default_rng(3)
    R4 = rng.normal(size=(2, 3, 3, 2)).round(3)
    lines = [matrix_form()]
    for a, s, s2, o in np.ndindex(R4.shape):
        lines.append(f"R: {a} : {s} : {s2} : {o} {float(R4[a, s, s2, o])!r}")
    d = parse("\n".join(lines) + "\n")
    expected = np.einsum("ast,ato,asto->as", T3, Z3, R4)
    np.testing.assert_allclose(d["R"], expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("word,sign", [("reward", 1), ("rewards", 1), ("cost", -1), ("costs", -1)])
def test_values_reward_and_cost(word, sign):
    text = matrix_form().replace("values: reward", f"values: {word}")
    text += "R: 0 : * : * : * 3\nR: 1 : 2 : * : * -1.5\n"
    d = parse(text)
    R = np.array([[3.0, 3.0, 3.0], [0.0, 0.0, -1.5]]) * sign
    np.testing.assert_array_equal(d["R"], R)
    assert d["values"] == ("reward" if sign > 0 else "cost")
    assert not np.signbit(d["R"][1, 0])  # cost of 0 stays +0.0


def test_signed_numbers_and_exponents():
    text = matrix_form() + (
        "R: 0 : 0 : * : * - 2.5e1\nR: 0 : 1 : * : * +1E-3\nR: 1 : * : * : * -.5\n"
    )
    d = parse(text)
    np.testing.assert_array_equal(d["R"], [[-25.0, 1e-3, 0.0], [-0.5, -0.5, -0.5]])


@pytest.mark.parametrize(
    "start,b0",
    [
        ("", [1 / 3, 1 / 3, 1 / 3]),
        ("start: 0.2 0.3 0.5", [0.2, 0.3, 0.5]),
        ("start:\n 0 \n 1 \n 0", [0, 1, 0]),
        ("start: b", [0, 1, 0]),
        ("start: 2", [0, 0, 1]),
        ("start: uniform", [1 / 3, 1 / 3, 1 / 3]),
        ("start include: a c", [0.5, 0, 0.5]),
        ("start include: 1", [0, 1, 0]),
        ("start exclude: a", [0, 0.5, 0.5]),
        ("start exclude: 0 2", [0, 1, 0]),
    ],
)
def test_start_forms(start, b0):
    text = f"""discount: 0.9
states: a b c
actions: x
observations: o
{start}
T: x identity
O: x uniform
"""
    d = parse(text)
    np.testing.assert_array_equal(d["b0"], b0)


def test_preamble_in_any_order_and_multiline_name_lists():
    text = """observations: o1 o2
values: reward
actions:
    go
    stay
states:
\tleft right   # names across lines
discount : 1.0
T: * identity
O: * : * : o1 1.0
"""
    d = parse(text)
    assert d["state_names"] == ["left", "right"]
    assert d["action_names"] == ["go", "stay"]
    np.testing.assert_array_equal(d["Z"][:, :, 0], 1.0)


def test_byte_order_mark_and_crlf_line_ends():
    text = "\ufeff" + TIGER.replace("\n", "\r\n")
    d = _core.parse_pomdp(text.encode("utf-8"), "bom")
    np.testing.assert_array_equal(d["R"], TIGER_R)
    with pytest.raises(PomdpFormatError, match=r"^bom:3: "):
        _core.parse_pomdp(text.replace("values: reward", "values: rewardz"), "bom")


def test_values_defaults_to_reward():
    d = parse("discount: 0.5\nstates: 1\nactions: 1\nobservations: 1\n"
              "T: 0 1\nO: 0 1\nR: 0 : 0 : * : * 2\n")
    np.testing.assert_array_equal(d["R"], [[2.0]])
    np.testing.assert_array_equal(d["b0"], [1.0])


def test_tolerance_option():
    text = matrix_form().replace("0.1 0.2 0.7", "0.1 0.2 0.70001")
    with pytest.raises(PomdpFormatError, match=r"sums to 1\.00001"):
        parse(text)
    d = parse(text, tol=1e-4)
    assert d["T"][0, 0, 2] == 0.70001
    d = parse(text, validate=False)
    assert d["T"][0, 0, 2] == 0.70001


# ---------------------------------------------------------------- errors
BASE_LINES = [
    "discount: 0.95",             # 1
    "values: reward",             # 2
    "states: tiger-left tiger-right",  # 3
    "actions: listen open",       # 4
    "observations: hear-left hear-right",  # 5
    "T: listen",                  # 6
    "1.0 0.0",                    # 7
    "0.0 1.0",                    # 8
    "T: open uniform",            # 9
    "O: listen",                  # 10
    "0.85 0.15",                  # 11
    "0.15 0.85",                  # 12
    "O: open uniform",            # 13
    "R: listen : * : * : * -1",   # 14
]


def base_text(**replace: str) -> str:
    lines = list(BASE_LINES)
    for k, v in replace.items():
        lines[int(k[1:]) - 1] = v
    return "\n".join(lines) + "\n"


def test_base_text_parses():
    d = parse(base_text())
    np.testing.assert_array_equal(d["R"], [[-1, -1], [0, 0]])


ERROR_CASES = [
    # (replacements, line, message regex)
    ({"l8": "0.0"}, 8, r"'T: listen' \(line 6\) expects 4 probabilities \(an S x S matrix"
                       r".*\); found 3"),
    ({"l8": "0.0 1.0 0.0"}, 8, r"'T: listen' \(line 6\) expects 4 probabilities.*found 5"),
    ({"l11": "0.85 0.1.5"}, 11, r"expected a number; found malformed token '0\.1\.5'"),
    ({"l11": "0.85 0.15x"}, 11, r"expected a number; found malformed token '0\.15x'"),
    ({"l11": "0.85 abc"}, 11, r"expected a number; found 'abc'"),
    ({"l14": "R: listen : tiger-middle : * : * -1"}, 14,
     r"unknown state 'tiger-middle' \(known: tiger-left, tiger-right\)"),
    ({"l14": "R: jump : * : * : * -1"}, 14, r"unknown action 'jump' \(known: listen, open\)"),
    ({"l14": "R: listen : 2 : * : * -1"}, 14,
     r"state index '2' out of range: there are 2 states \(valid indices 0\.\.1\)"),
    ({"l14": "R: listen : * : * : hear-up -1"}, 14, r"unknown observation 'hear-up'"),
    ({"l14": "R: listen : * : * : * 1e999"}, 14, r"number '1e999' is out of range"),
    ({"l14": "R: listen : * : * : *"}, 14,
     r"'R: listen : \* : \* : \*' \(line 14\) expects 1 number \(one number\); found 0"),
    ({"l14": "R: listen"}, 15, r"expected ':' after 'R: <action>'; found end of input"),
    ({"l7": "1.5 -0.5"}, 7, r"probability must be in \[0, 1\]; found '1\.5'"),
    ({"l7": "0.5 0.4"}, 6, r"T\[a=0, s=0, :\] sums to 0\.9; expected 1 \(tol 1e-06\) "
                          r"\(a=listen, s=tiger-left\) \(row last set at this line\)"),
    ({"l13": "# no O for open"}, 15, r"Z\[a=1, s'=0, :\] sums to 0; expected 1 \(tol 1e-06\)"
                                     r".*\(no O: entry sets this row\)"),
    ({"l1": "discount: 1.5"}, 1, r"discount must be in \(0, 1\]; got 1\.5"),
    ({"l1": "discount: 0"}, 1, r"discount must be in \(0, 1\]; got 0"),
    ({"l1": "# no discount"}, 15, r"missing 'discount:' declaration"),
    ({"l4": "# no actions", "l6": "", "l7": "", "l8": "", "l9": "", "l10": "", "l11": "",
      "l12": "", "l13": "", "l14": ""}, 15, r"missing 'actions:' declaration"),
    ({"l2": "values: banana"}, 2, r"expected 'reward' or 'cost' after 'values:'; found 'banana'"),
    ({"l3": "states: a a"}, 3, r"duplicate state name 'a' \(also state 0\)"),
    ({"l3": "states: a b.c"}, 3, r"unexpected malformed token 'b\.c' after the state names; "
                                       r"expected the next statement"),
    ({"l3": "states: a uniform"}, 3, r"state name 'uniform' is a keyword of the \.pomdp format"),
    ({"l3": "states: 0"}, 3, r"the number of states must be an integer in \[1, 100000000\]; "
                            r"found '0'"),
    ({"l3": "states:"}, 4, r"expected a count or a list of state names after 'states:'; "
                          r"found 'actions'"),
    ({"l5": "observations: 2 extra"}, 5, r"unexpected 'extra' after 'observations: 2'"),
    ({"l5": "# observations missing"}, 6, r"'T:' needs 'observations:' declared before it"),
    ({"l9": "T: open bogus"}, 9, r"expected a number; found 'bogus'"),
    ({"l9": "T open uniform"}, 9, r"expected ':' after 'T'; found 'open'"),
    ({"l9": "X: open uniform"}, 9, r"unexpected 'X' after 'T: listen'; expected the next "
                                   r"statement \(discount:, values:, states:, actions:, "
                                   r"observations:, start:, T:, O: or R:\)"),
    ({"l1": "X: open uniform"}, 1, r"expected a statement \(discount:, values:, states:, "
                                     r"actions:, observations:, start:, T:, O: or R:\); found 'X'"),
    ({"l9": "T: open uniform\nstates: 3"}, 10, r"'states:' declared twice \(first at line 3\)"),
    ({"l9": "T: open uniform\nstart: 0.5 0.5\nstart: 0.5 0.5"}, 11,
     r"'start:' declared twice \(first at line 10\)"),
    ({"l9": "T: open uniform\nstart: 0.5 0.4"}, 10, r"b0 sums to 0\.9; expected 1"),
    ({"l9": "T: open uniform\nstart: 0.5 0.25 0.25"}, 10,
     r"'start:' \(line 10\) expects 2 probabilities \(one per state\); found 3"),
    ({"l9": "T: open uniform\nstart exclude: tiger-left tiger-right"}, 10,
     r"'start exclude:' excludes every state"),
    ({"l9": "T: open uniform\nstart include:"}, 11,
     r"expected a list of states after 'start include:'; found 'O'"),
    ({"l9": "T: open uniform\nstart: nowhere"}, 10, r"unknown state 'nowhere'"),
    ({"l9": "T: open : tiger-left : * 0.5 0.5"}, 9,
     r"'T: open : tiger-left : \*' \(line 9\) expects 1 probability \(one probability\); "
     r"found 2"),
    ({"l9": "T: open uniform $$"}, 9, r"unexpected malformed token '\$\$' after 'T: open uniform'"),
]


@pytest.mark.parametrize("replace,line,message", ERROR_CASES,
                         ids=[f"case{i}" for i in range(len(ERROR_CASES))])
def test_errors_name_file_line_and_cause(replace, line, message):
    text = base_text(**replace)
    with pytest.raises(PomdpFormatError, match=rf"^test\.pomdp:{line}: {message}") as info:
        parse(text)
    assert info.value.filename == "test.pomdp"
    assert info.value.line == line


def test_truncated_files_raise(pomdp_problems_dir):
    text = (pomdp_problems_dir / "tiger.95.POMDP").read_text()
    n_fail = 0
    for cut in range(0, len(text), 7):
        try:
            _core.parse_pomdp(text[:cut], "tiger-cut")
        except PomdpFormatError as exc:
            assert str(exc).startswith("tiger-cut:")
            n_fail += 1
    # Every proper prefix before the last R line is incomplete (O or R rows missing).
    assert n_fail >= len(range(0, text.rindex("O:"), 7))


def test_empty_and_binary_input():
    with pytest.raises(PomdpFormatError, match=r"^e:1: missing 'discount:'"):
        _core.parse_pomdp("", "e")
    with pytest.raises(PomdpFormatError, match=r"^e:1: missing 'discount:'"):
        _core.parse_pomdp("# only a comment", "e")
    with pytest.raises(PomdpFormatError,
                       match=r"^b:1: expected a statement .*found malformed token '\?\?\?binary'"):
        _core.parse_pomdp(b"\xff\xfe\x00binary", "b")
    with pytest.raises(PomdpFormatError, match=r"^b:2: expected a number after 'discount:'; "
                                               r"found malformed token '0\.9\?'"):
        _core.parse_pomdp(b"\ndiscount: 0.9\x00\nstates: 2\n", "b")


def test_lone_surrogate_in_str_is_a_format_error():
    with pytest.raises(PomdpFormatError, match=r"^s:2: expected a number after 'discount:'; "
                                               r"found malformed token '0\.9\?\?\?'"):
        POMDP.from_string("# x\ndiscount: 0.9\ud800\n", "s")


def test_model_too_large_is_a_format_error():
    # Dense storage keeps the header guard on dense entries ...
    text = "discount: 0.9\nactions: 4\nobservations: 2\nstates: 100000\nT: * identity\n"
    with pytest.raises(PomdpFormatError, match=r"^big:4: model too large: 4 actions x 100000 "
                                               r"states x \(100000 states \+ 2 observations\)"):
        _core.parse_pomdp(text, "big", storage="dense")
    with pytest.raises(PomdpFormatError, match=r"exceeds the limit of 10$"):
        _core.parse_pomdp(base_text(), "small", max_entries=10, storage="dense")
    # ... while the default reads such a model as sparse rows (80 GB dense, 400,000 entries).
    d = _core.parse_pomdp(text + "O: * uniform\n", "big")
    assert d["storage"] == "sparse"
    ptr, idx, val, n_cols = d["T"]
    assert n_cols == 100000 and len(ptr) == 4 * 100000 + 1 and len(idx) == 4 * 100000
    assert np.array_equal(idx, np.tile(np.arange(100000), 4)) and np.all(val == 1.0)
    assert _core.parse_pomdp(base_text(), "small", max_entries=10)["storage"] == "sparse"


def test_error_from_file_names_the_path(tmp_path):
    path = tmp_path / "broken.pomdp"
    path.write_text(base_text(l14="R: listen : nowhere : * : * 1"))
    with pytest.raises(PomdpFormatError, match=r"broken\.pomdp:14: unknown state 'nowhere'") as e:
        POMDP.from_file(path)
    assert e.value.filename == str(path) and e.value.line == 14
    with pytest.raises(FileNotFoundError):
        POMDP.from_file(tmp_path / "missing.pomdp")
