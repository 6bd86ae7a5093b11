"""Alpha-vector policies for discrete POMDPs.

A policy is a set of K alpha vectors, one ``(K, n_states)`` array, and a ``(K,)`` map from
vector to action.  The value of a belief ``b`` is the upper envelope

    V(b) = max_k  sum_s alphas[k, s] b(s),

and the policy takes the action of the maximising vector,
``pi(b) = actions[argmax_k alphas[k] . b]`` (ties go to the lowest index k, so the choice
is deterministic).  A point-based solver's lower bound is exactly such a policy: every
alpha vector is the value function of a conditional plan that starts with its action.

Policies are saved as a single ``.npz`` file holding the arrays and a JSON metadata string
(with ``format_version``), read back with ``allow_pickle=False``; and they can be written
to and read from SARSOP's ``.policy`` XML so results can be compared with SARSOP's own
``pomdpsim``/``pomdpeval``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp._io import Artefact
from trim_pomdp.errors import PolicyFormatError

__all__ = ["AlphaVectorPolicy", "FORMAT_VERSION"]

#: Version of the ``.npz`` policy layout written by :meth:`AlphaVectorPolicy.save`.
FORMAT_VERSION = 1
_FORMAT = Artefact(kind="trim_pomdp.AlphaVectorPolicy", version=FORMAT_VERSION, oldest=1,
                   what="policy file", error=PolicyFormatError, arrays=("alphas", "actions"))


class _ForbiddenDeclaration(Exception):
    """Raised from inside expat when a document declares a DTD or an entity."""


def _parse_xml_without_dtd(data: bytes, path: Path) -> Any:
    """Parse ``data`` into an ElementTree element with expat, refusing any DTD.

    A policy file has no use for a document type, entities or notations, so the parser
    stops at the first such declaration, whatever the encoding (expat decodes UTF-16 and
    the declared encodings before its handlers see anything, unlike a byte search), before
    any entity can be expanded (billion laughs) or fetched (external entities).  Raises
    :class:`PolicyFormatError` naming ``path`` and the line.
    """
    import xml.etree.ElementTree as ET
    from xml.parsers import expat

    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=None)
    # Never read parameter entities or an external DTD subset, even before a handler runs.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.ordered_attributes = False

    def forbid(what: str) -> Any:
        def handler(*_args: Any) -> None:
            raise _ForbiddenDeclaration(what)

        return handler

    parser.StartDoctypeDeclHandler = forbid("a DTD (<!DOCTYPE>)")
    parser.EntityDeclHandler = forbid("an entity declaration (<!ENTITY>)")
    parser.UnparsedEntityDeclHandler = forbid("an entity declaration (<!ENTITY>)")
    parser.NotationDeclHandler = forbid("a notation declaration (<!NOTATION>)")
    parser.ExternalEntityRefHandler = forbid("an external entity reference")
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except _ForbiddenDeclaration as exc:
        raise PolicyFormatError(
            f"{path}:{parser.CurrentLineNumber}: DTD/entity declarations are not allowed "
            f"in a policy file; found {exc}"
        ) from None
    except expat.ExpatError as exc:
        raise PolicyFormatError(f"{path}: malformed XML: {exc}") from None
    except ValueError as exc:  # e.g. an encoding expat does not know
        raise PolicyFormatError(f"{path}: malformed XML: {exc}") from None
    return builder.close()


def _readonly(a: np.ndarray, copy: bool = True) -> np.ndarray:
    # Copy by default: the policy must not change when the caller mutates its input array.
    a = np.array(a, order="C", copy=True) if copy else np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _all_finite(a: np.ndarray, rows: int = 256) -> bool:
    # Row block by row block: np.isfinite of the whole array is a K x S temporary (49 MB for
    # 3,900 vectors of RockSample[7,8]'s 12,545 states).
    return all(bool(np.isfinite(a[i:i + rows]).all()) for i in range(0, a.shape[0], rows))


class AlphaVectorPolicy:
    """A POMDP policy represented by alpha vectors.

    Parameters
    ----------
    alphas : array_like, shape (K, n_states)
        Alpha vectors, finite, K >= 1.
    actions : array_like of int, shape (K,)
        ``actions[k]`` is the action taken when vector ``k`` is the maximiser.
    action_names : sequence of str, optional
        Names of the actions; when given, every entry of ``actions`` must index it.
    metadata : mapping, optional
        JSON-serialisable information stored with the policy (e.g. the solver's bounds,
        the model file).  Saved and loaded verbatim.

    Attributes
    ----------
    alphas : ndarray, shape (K, n_states)
        Read-only float64 copy of the vectors (float32 when given float32, as from a
        single-precision solve, ``SolverConfig.alpha_precision``).
    actions : ndarray of int64, shape (K,)
        Read-only.
    action_names : list of str or None
    metadata : dict

    Notes
    -----
    ``value(b) = max_k alphas[k] . b`` and ``action(b) = actions[argmax_k alphas[k] . b]``;
    among tied vectors the one with the lowest index wins.

    Examples
    --------
    >>> import numpy as np
    >>> pol = AlphaVectorPolicy(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1])
    >>> pol.action(np.array([0.3, 0.7]))
    1
    >>> pol.value(np.array([0.3, 0.7]))
    0.7
    """

    # True only inside _adopt: the arrays are the library's own and are not copied.
    _adopting = False

    @classmethod
    def _adopt(
        cls, alphas: NDArray[np.floating[Any]], actions: ArrayLike, **kwargs: Any
    ) -> AlphaVectorPolicy:
        """A policy that takes ``alphas`` over instead of copying it: for an array
        nobody else holds (the solver's result, which for a large model is hundreds of MB);
        validated as by the constructor, and made read-only."""
        self = cls.__new__(cls)
        self._adopting = True
        try:
            self.__init__(alphas, actions, **kwargs)  # type: ignore[misc]
        finally:
            del self._adopting
        return self

    def __init__(
        self,
        alphas: ArrayLike,
        actions: ArrayLike,
        *,
        action_names: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        alphas_arr = np.asarray(alphas)
        if alphas_arr.ndim != 2:
            raise ValueError(
                f"alphas must be a 2-D array of shape (n_vectors, n_states); got shape "
                f"{alphas_arr.shape}"
            )
        if alphas_arr.shape[0] < 1 or alphas_arr.shape[1] < 1:
            raise ValueError(
                f"alphas must have at least one vector and one state; got shape {alphas_arr.shape}"
            )
        if not (
            np.issubdtype(alphas_arr.dtype, np.floating)
            or np.issubdtype(alphas_arr.dtype, np.integer)
        ):
            raise TypeError(f"alphas must be a real numeric array; got dtype {alphas_arr.dtype}")
        # float32 stays float32 (a single-precision solve: half the memory; the values
        # are exact in the float64 arithmetic of value/action); anything else is float64.
        if alphas_arr.dtype != np.float32:
            alphas_arr = alphas_arr.astype(np.float64, copy=False)
        if not _all_finite(alphas_arr):
            k, s = np.argwhere(~np.isfinite(alphas_arr))[0]
            raise ValueError(f"alphas must be finite; alphas[{k}, {s}] = {alphas_arr[k, s]}")
        actions_arr = np.asarray(actions)
        k_vec = alphas_arr.shape[0]
        if actions_arr.shape != (k_vec,):
            raise ValueError(
                f"actions must have shape (n_vectors,) = ({k_vec},); got {actions_arr.shape}"
            )
        if actions_arr.dtype.kind == "f":
            if not np.all(np.isfinite(actions_arr)) or np.any(actions_arr != np.round(actions_arr)):
                raise ValueError("actions must be integer action indices")
        elif actions_arr.dtype.kind not in "iub":
            raise TypeError(
                f"actions must be integer action indices; got dtype {actions_arr.dtype}"
            )
        actions_arr = actions_arr.astype(np.int64)
        if np.any(actions_arr < 0):
            k = int(np.argmax(actions_arr < 0))
            raise ValueError(f"actions must be >= 0; actions[{k}] = {actions_arr[k]}")
        names: list[str] | None = None
        # An empty sequence means "no names" (e.g. a .pomdp file that only gave counts).
        if action_names is not None and (isinstance(action_names, str) or len(action_names)):
            if isinstance(action_names, str):
                raise TypeError("action_names must be a sequence of str, not a single str")
            names = [str(n) for n in action_names]
            bad = actions_arr >= len(names)
            if np.any(bad):
                k = int(np.argmax(bad))
                raise ValueError(
                    f"actions[{k}] = {actions_arr[k]} but only {len(names)} action names given"
                )
        meta = dict(metadata) if metadata is not None else {}
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
        self._alphas = _readonly(alphas_arr, copy=not self._adopting)
        self._actions = _readonly(actions_arr)
        self._action_names = names
        self.metadata: dict[str, Any] = meta

    # ------------------------------------------------------------------ properties
    @property
    def alphas(self) -> NDArray[np.floating[Any]]:
        """Alpha vectors, shape (K, n_states), read-only (float64, or float32)."""
        return self._alphas

    @property
    def actions(self) -> NDArray[np.int64]:
        """Action of each alpha vector, shape (K,), read-only."""
        return self._actions

    @property
    def action_names(self) -> list[str] | None:
        return None if self._action_names is None else list(self._action_names)

    @property
    def n_states(self) -> int:
        return int(self._alphas.shape[1])

    @property
    def n_vectors(self) -> int:
        return int(self._alphas.shape[0])

    def __len__(self) -> int:
        return self.n_vectors

    def __repr__(self) -> str:
        return (
            f"AlphaVectorPolicy(n_vectors={self.n_vectors}, n_states={self.n_states}, "
            f"actions used={sorted(set(self._actions.tolist()))})"
        )

    # ------------------------------------------------------------------ evaluation
    def _check_belief(self, b: ArrayLike, name: str = "b") -> NDArray[np.float64]:
        arr = np.asarray(b, dtype=np.float64)
        if arr.shape != (self.n_states,):
            raise ValueError(
                f"{name} must have shape (n_states,) = ({self.n_states},); got {arr.shape}"
            )
        return arr

    def _check_beliefs(self, B: ArrayLike, name: str = "B") -> NDArray[np.float64]:
        arr = np.asarray(B, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_states:
            raise ValueError(
                f"{name} must have shape (n_beliefs, n_states) = (N, {self.n_states}); "
                f"got {arr.shape}"
            )
        return arr

    def best_vector(self, b: ArrayLike) -> int:
        """Index k of the maximising alpha vector at belief ``b`` (lowest index on ties)."""
        return int(np.argmax(self._alphas @ self._check_belief(b)))

    def value(self, b: ArrayLike) -> float:
        """``V(b) = max_k alphas[k] . b``."""
        return float(np.max(self._alphas @ self._check_belief(b)))

    def action(self, b: ArrayLike) -> int:
        """``actions[argmax_k alphas[k] . b]``."""
        return int(self._actions[self.best_vector(b)])

    def values(self, B: ArrayLike) -> NDArray[np.float64]:
        """Batched :meth:`value`: ``B`` has shape (N, n_states); returns shape (N,)."""
        B = self._check_beliefs(B)
        if B.shape[0] == 0:
            return np.zeros(0)
        values: NDArray[np.float64] = np.max(B @ self._alphas.T, axis=1)
        return values

    def actions_for(self, B: ArrayLike) -> NDArray[np.int64]:
        """Batched :meth:`action`: ``B`` has shape (N, n_states); returns int64 shape (N,)."""
        B = self._check_beliefs(B)
        if B.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        acts: NDArray[np.int64] = self._actions[np.argmax(B @ self._alphas.T, axis=1)]
        return acts

    # ------------------------------------------------------------------ model check
    def check_model(self, model: Any) -> AlphaVectorPolicy:
        """Check that this policy fits ``model`` (anything with ``n_states``/``n_actions``).

        Raises
        ------
        PolicyFormatError
            If the vectors' length differs from ``model.n_states``, an action index is not
            an action of the model, or both carry action names and they differ.

        Returns
        -------
        self
        """
        n_states = int(model.n_states)
        n_actions = int(model.n_actions)
        if self.n_states != n_states:
            raise PolicyFormatError(
                f"policy alpha vectors have length {self.n_states} but the model has "
                f"{n_states} states"
            )
        bad = self._actions >= n_actions
        if np.any(bad):
            k = int(np.argmax(bad))
            raise PolicyFormatError(
                f"alpha vector {k} has action {int(self._actions[k])} but the model has "
                f"{n_actions} actions (valid indices 0..{n_actions - 1})"
            )
        model_names = getattr(model, "action_names", None)
        if self._action_names is not None and model_names:
            model_names = [str(n) for n in model_names]
            if self._action_names[: len(model_names)] != model_names[: len(self._action_names)]:
                raise PolicyFormatError(
                    f"policy action names {self._action_names} differ from the model's "
                    f"{model_names}"
                )
        return self

    # ------------------------------------------------------------------ .npz + JSON
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as one ``.npz`` file: arrays ``alphas``, ``actions`` and ``metadata_json``.

        ``metadata_json`` is a JSON string with ``format_version``, ``kind``, the shapes,
        ``action_names`` and the user ``metadata``.  Values round-trip bit for bit.
        Returns the path written (``.npz`` is appended when missing, so the returned path
        is the real one).
        """
        meta = {
            "n_vectors": self.n_vectors,
            "n_states": self.n_states,
            "action_names": self._action_names,
            "metadata": self.metadata,
        }
        return _FORMAT.save(path, {"alphas": self._alphas, "actions": self._actions}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AlphaVectorPolicy:
        """Load a policy written by :meth:`save` (never unpickles).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        PolicyFormatError
            If the file is not such a policy: not an ``.npz``, keys or metadata missing,
            object arrays, a newer ``format_version``, inconsistent shapes, non-finite values.
        """
        path = Path(path)
        arrays, meta = _FORMAT.load(path)
        alphas, actions = arrays["alphas"], arrays["actions"]
        if alphas.dtype not in (np.float64, np.float32) or alphas.ndim != 2:
            raise PolicyFormatError(
                f"{path}: alphas must be a float64 (or float32) 2-D array; got {alphas.dtype} "
                f"{alphas.shape}"
            )
        if actions.dtype.kind not in "iu" or actions.shape != (alphas.shape[0],):
            raise PolicyFormatError(
                f"{path}: actions must be an integer array of shape ({alphas.shape[0]},); got "
                f"{actions.dtype} {actions.shape}"
            )
        expected = (meta.get("n_vectors"), meta.get("n_states"))
        if expected != alphas.shape:
            raise PolicyFormatError(
                f"{path}: metadata says (n_vectors, n_states) = {expected} but alphas has shape "
                f"{alphas.shape}"
            )
        names = meta.get("action_names")
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise PolicyFormatError(f"{path}: action_names must be a list of strings or null")
        user_meta = meta.get("metadata", {})
        if not isinstance(user_meta, dict):
            raise PolicyFormatError(f"{path}: metadata.metadata must be a JSON object")
        try:
            # the arrays were just read and nobody else holds them: no copy (a 30 s
            # RockSample[7,8] policy is 200-400 MB)
            return cls._adopt(alphas, actions, action_names=names, metadata=user_meta)
        except (ValueError, TypeError) as exc:
            raise PolicyFormatError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ SARSOP XML
    def to_sarsop_policy(self, path: str | os.PathLike[str], *, model: str = "") -> Path:
        """Write SARSOP's ``.policy`` XML (dense ``<Vector>`` entries, ``numObsValue=1``).

        Numbers are written with 17 significant digits so that :meth:`from_sarsop_policy`
        reads back exactly the same float64 values.  ``model`` fills the ``model``
        attribute (SARSOP writes the problem file name there).
        """
        from xml.sax.saxutils import quoteattr

        path = Path(path)
        lines = [
            '<?xml version="1.0" encoding="ISO-8859-1"?>',
            f'<Policy version="0.1" type="value" model={quoteattr(str(model))} '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:noNamespaceSchemaLocation="policyx.xsd">',
            f'<AlphaVector vectorLength="{self.n_states}" numObsValue="1" '
            f'numVectors="{self.n_vectors}">',
        ]
        for k in range(self.n_vectors):
            nums = " ".join(repr(float(v)) for v in self._alphas[k])
            lines.append(f'<Vector action="{int(self._actions[k])}" obsValue="0">{nums} </Vector>')
        lines.append("</AlphaVector> </Policy>")
        path.write_text("\n".join(lines) + "\n", encoding="iso-8859-1", errors="xmlcharrefreplace")
        return path

    @classmethod
    def from_sarsop_policy(
        cls,
        path: str | os.PathLike[str],
        *,
        action_names: Sequence[str] | None = None,
    ) -> AlphaVectorPolicy:
        """Read SARSOP's ``.policy`` XML (dense ``<Vector>`` or ``<SparseVector>`` entries).

        Only flat POMDP policies (``numObsValue="1"``) are supported; SARSOP's factored
        MOMDP policies (``numObsValue > 1``) raise :class:`PolicyFormatError`.

        Raises
        ------
        PolicyFormatError
            Malformed XML, wrong root/element, missing or non-integer attributes, vector
            lengths that do not match ``vectorLength``, a count different from
            ``numVectors``, bad numbers.
        """
        import xml.etree.ElementTree as ET

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"policy file not found: {path}")
        root = _parse_xml_without_dtd(path.read_bytes(), path)
        if root.tag != "Policy":
            raise PolicyFormatError(f"{path}: root element is <{root.tag}>; expected <Policy>")
        if root.get("type", "value") != "value":
            raise PolicyFormatError(
                f"{path}: Policy type is {root.get('type')!r}; only 'value' is supported"
            )
        av = root.find("AlphaVector")
        if av is None:
            raise PolicyFormatError(f"{path}: no <AlphaVector> element")

        def int_attr(el: ET.Element, name: str) -> int:
            raw = el.get(name)
            if raw is None:
                raise PolicyFormatError(f"{path}: <{el.tag}> lacks attribute {name}")
            try:
                return int(raw)
            except ValueError:
                raise PolicyFormatError(
                    f"{path}: <{el.tag}> attribute {name}={raw!r} is not an integer"
                ) from None

        n_states = int_attr(av, "vectorLength")
        if av.get("numObsValue", "1").strip() != "1":
            raise PolicyFormatError(
                f"{path}: numObsValue={av.get('numObsValue')!r}; only flat POMDP policies "
                "(numObsValue=1) are supported"
            )
        n_vectors_decl = int_attr(av, "numVectors")
        if n_states < 1:
            raise PolicyFormatError(f"{path}: vectorLength must be >= 1; got {n_states}")
        alphas: list[np.ndarray] = []
        actions: list[int] = []
        for i, el in enumerate(av):
            where = f"{path}: vector {i}"
            if el.tag not in ("Vector", "SparseVector"):
                raise PolicyFormatError(f"{where}: unexpected element <{el.tag}>")
            a = int_attr(el, "action")
            obs_value = int_attr(el, "obsValue") if el.get("obsValue") is not None else 0
            if obs_value != 0:
                raise PolicyFormatError(f"{where}: obsValue={obs_value}; expected 0")
            if el.tag == "Vector":
                try:
                    vec = np.array([float(t) for t in (el.text or "").split()], dtype=np.float64)
                except ValueError as exc:
                    raise PolicyFormatError(f"{where}: bad number: {exc}") from None
                if vec.shape != (n_states,):
                    raise PolicyFormatError(
                        f"{where}: has {vec.size} entries; vectorLength is {n_states}"
                    )
            else:
                # SARSOP's sparse form: <Entry>index value</Entry>, absent entries are 0.
                vec = np.zeros(n_states)
                for entry in el:
                    parts = (entry.text or "").split()
                    if entry.tag != "Entry" or len(parts) != 2:
                        raise PolicyFormatError(f"{where}: bad sparse <{entry.tag}> entry")
                    try:
                        idx, val = int(parts[0]), float(parts[1])
                    except ValueError as exc:
                        raise PolicyFormatError(f"{where}: bad sparse entry: {exc}") from None
                    if not 0 <= idx < n_states:
                        raise PolicyFormatError(
                            f"{where}: sparse index {idx} outside 0..{n_states - 1}"
                        )
                    vec[idx] = val
            if not np.all(np.isfinite(vec)):
                raise PolicyFormatError(f"{where}: non-finite value")
            if a < 0:
                raise PolicyFormatError(f"{where}: action {a} is negative")
            alphas.append(vec)
            actions.append(a)
        if len(alphas) != n_vectors_decl:
            raise PolicyFormatError(
                f"{path}: numVectors={n_vectors_decl} but {len(alphas)} vectors found"
            )
        if not alphas:
            raise PolicyFormatError(f"{path}: the policy has no vectors")
        try:
            return cls(
                np.vstack(alphas),
                np.array(actions, dtype=np.int64),
                action_names=action_names,
                metadata={"source": "sarsop", "model": root.get("model", "")},
            )
        except (ValueError, TypeError) as exc:
            raise PolicyFormatError(f"{path}: {exc}") from None
