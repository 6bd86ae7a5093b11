"""The C++ parser against an independent, deliberately naive pure-Python reading of the
same files: dense R(a, s, s', o) filled statement by statement with NumPy slicing, then
reduced with einsum.  Two implementations of the format must agree on every shared file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from trim_pomdp import POMDP

KEYWORDS = {"discount", "values", "states", "actions", "observations", "start", "T", "O", "R"}


def reference_parse(text: str) -> dict:
    """A slow reader of the `.pomdp` subset used by the shared files (no error handling)."""
    text = re.sub(r"#[^\n]*", " ", text)
    toks = re.findall(r"[:*]|[^\s:*]+", text)
    # Split into statements: a keyword followed by ':' (or "start include/exclude").
    stmts, cur = [], []
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in KEYWORDS and (nxt == ":" or (t == "start" and nxt in ("include", "exclude"))):
            if cur:
                stmts.append(cur)
            cur = [t]
        else:
            cur.append(t)
    stmts.append(cur)

    decl: dict[str, list[str] | int] = {}
    out: dict = {"cost": False, "b0": None}
    for st in stmts:
        if st[0] in ("states", "actions", "observations"):
            body = st[2:]
            decl[st[0]] = int(body[0]) if body[0].isdigit() else body
        elif st[0] == "discount":
            out["discount"] = float(st[2])
        elif st[0] == "values":
            out["cost"] = st[2].startswith("cost")

    def size(k):
        v = decl[k]
        return v if isinstance(v, int) else len(v)

    S, A, O = size("states"), size("actions"), size("observations")  # noqa: E741
    T = np.zeros((A, S, S))
    Z = np.zeros((A, S, O))
    R4 = np.zeros((A, S, S, O))

    def idx(k, tok):
        if tok == "*":
            return slice(None)
        if tok.isdigit():
            return int(tok)
        return decl[k].index(tok)

    def numbers(body):
        vals = []
        i = 0
        while i < len(body):
            if body[i] in ("-", "+"):  # a lone sign
                vals.append(float(body[i] + body[i + 1]))
                i += 2
            else:
                vals.append(float(body[i]))
                i += 1
        return np.array(vals)

    for st in stmts:
        kw = st[0]
        if kw == "start":
            if st[1] in ("include", "exclude"):
                listed = np.zeros(S, bool)
                for tok in st[3:]:
                    listed[idx("states", tok)] = True
                keep = listed if st[1] == "include" else ~listed
                out["b0"] = keep / keep.sum()
            elif len(st) == 3 and (not re.fullmatch(r"[\d.]+", st[2]) or S > 1):
                # a single state name or index
                b = np.zeros(S)
                b[idx("states", st[2])] = 1.0
                out["b0"] = b
            else:
                out["b0"] = numbers(st[2:])
            continue
        if kw not in ("T", "O", "R"):
            continue
        # refs are the tokens separated by ':' after the keyword; the rest are values
        parts, i = [], 2
        parts.append(st[i])
        i += 1
        while i < len(st) and st[i] == ":":
            parts.append(st[i + 1])
            i += 2
        body = st[i:]
        kinds = {"T": ("actions", "states", "states"), "O": ("actions", "states", "observations"),
                 "R": ("actions", "states", "states", "observations")}[kw]
        ix = tuple(idx(k, p) for k, p in zip(kinds, parts, strict=False))
        if kw == "T":
            if body == ["identity"]:
                T[ix] = np.eye(S)
            elif body == ["uniform"]:
                T[ix] = 1.0 / S
            else:
                v = numbers(body)
                T[ix] = v.reshape((S, S)) if len(parts) == 1 else (v if len(parts) == 2 else v[0])
        elif kw == "O":
            if body == ["uniform"]:
                Z[ix] = 1.0 / O
            elif body == ["identity"]:
                Z[ix] = np.eye(S)
            else:
                v = numbers(body)
                Z[ix] = v.reshape((S, O)) if len(parts) == 1 else (v if len(parts) == 2 else v[0])
        else:
            v = numbers(body)
            if len(parts) == 2:
                R4[ix] = v.reshape((S, O))
            elif len(parts) == 3:
                R4[ix] = v
            else:
                R4[ix] = v[0]
    R = np.einsum("ast,ato,asto->as", T, Z, R4)
    # The expectation of a reward that does not depend on (s', o) is that reward, exactly
    # (rows of six-decimal files sum to 1 only within ~1e-5).
    flat = R4.reshape(A, S, S * O)
    constant = (flat == flat[:, :, :1]).all(axis=2)
    R[constant] = flat[:, :, 0][constant]
    if out["cost"]:
        R = -R
    b0 = out["b0"] if out["b0"] is not None else np.full(S, 1.0 / S)
    return {"T": T, "Z": Z, "R": R, "b0": b0, "discount": out["discount"]}


def shared_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.iterdir() if p.suffix.lower() == ".pomdp")


def test_cpp_parser_matches_python_reference(pomdp_problems_dir, pomdp_collection_dir):
    files = shared_files(pomdp_problems_dir, pomdp_collection_dir)
    assert len(files) == 63
    for path in files:
        ref = reference_parse(path.read_text())
        m = POMDP.from_file(path)
        # T, Z and b0 are copied numbers: identical.  R is a sum of products, so the two
        # summation orders may differ in the last bits.
        np.testing.assert_array_equal(m.T, ref["T"], err_msg=path.name)
        np.testing.assert_array_equal(m.Z, ref["Z"], err_msg=path.name)
        np.testing.assert_array_equal(m.b0, ref["b0"], err_msg=path.name)
        assert m.discount == ref["discount"], path.name
        scale = max(1.0, float(np.abs(ref["R"]).max()))
        np.testing.assert_allclose(m.R, ref["R"], rtol=0, atol=1e-12 * scale, err_msg=path.name)
