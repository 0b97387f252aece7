"""A restricted unpickler for data files that are pickles by convention (CIFAR batches).

``pickle.load`` runs whatever the file asks for: any importable callable with any
arguments. A data file needs none of that. :func:`load_data_pickle` admits only what the
official CIFAR-10/100 python batches contain:

* the builtin containers and scalars the pickle opcodes build themselves (dict, list,
  tuple, int, float, bool, None, bytes, str), plus ``set``/``frozenset`` and the
  ``_codecs.encode`` protocol-2 pickles use for bytes;
* numpy arrays of numbers: ``numpy.core.multiarray._reconstruct`` (``numpy._core`` in
  numpy 2), ``numpy.ndarray`` and ``numpy.dtype`` (and ``_frombuffer``, which protocol-5
  pickles use, and ``scalar`` for numpy numbers). Object dtypes are refused, so an array cannot smuggle arbitrary objects.

Any other global (``os.system``, ``builtins.eval``, ``builtins.open``, a class with a
``__reduce__``...) raises :class:`~robcurve.errors.UnsafeFileError` before it is called.
The official batches were written by Python 2; read them with ``encoding="bytes"``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from robcurve.errors import DataError, UnsafeFileError, one_line


def _checked_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` as pickles call it, refusing dtypes that hold Python objects."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError("an array of Python objects (dtype object)")
    return dt


def _numpy_private(name: str) -> Any:
    """numpy's own pickle helper ``name`` (``numpy._core`` in numpy 2, ``numpy.core`` before)."""
    import importlib

    for mod in ("numpy._core.multiarray", "numpy._core.numeric", "numpy.core.multiarray", "numpy.core.numeric"):
        try:
            obj = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if obj is not None:
            return obj
    raise pickle.UnpicklingError(f"numpy has no {name}")  # pragma: no cover


def _reconstruct(cls: Any, *args: Any) -> np.ndarray:
    """numpy's array reconstructor (``ndarray.__reduce__``), for ``numpy.ndarray`` itself only."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"an array of subclass {getattr(cls, '__name__', cls)!r}")
    return _numpy_private("_reconstruct")(cls, *args)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 array reconstructor, refusing object dtypes."""
    return _numpy_private("_frombuffer")(buf, _checked_dtype(dtype), shape, order)


def _scalar(dtype: Any, *args: Any) -> Any:
    """numpy's scalar reconstructor (``np.float32(3)`` in a pickle), for numeric dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("a numpy scalar of Python objects (dtype object)")
    return _numpy_private("scalar")(dtype, *args)


# (module, name) -> the object handed to the pickle machinery
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): None,  # filled below: codecs.encode(str, "latin1") for protocol-2 bytes
}


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only text codecs, only to bytes."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "latin", "iso88591", "l1", "utf8"):
        raise pickle.UnpicklingError(f"a call of _codecs.encode with encoding {encoding!r}")
    return text.encode(encoding, errors)


_ALLOWED[("_codecs", "encode")] = _latin1_encode


class DataUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` admits only numeric numpy arrays and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise _Refused(module, name)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a persistent id (a reference outside the file)")


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


def _check_arrays(obj: Any, depth: int = 0) -> None:
    """Refuse object arrays anywhere in the loaded structure (defence in depth)."""
    if depth > 50:
        raise pickle.UnpicklingError("containers nested more than 50 deep")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError("an array of Python objects (dtype object)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_arrays(k, depth + 1)
            _check_arrays(v, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_arrays(v, depth + 1)


def load_data_pickle(path: str | Path, *, kind: str = "data file", fix: str = "replace it with the official file") -> Any:
    """Read a pickled data file with :class:`DataUnpickler` (``encoding="bytes"``, Python 2 batches).

    Args:
        path: the file.
        kind: what the file is, for messages (e.g. ``"CIFAR-10 batch"``).
        fix: how to get a good copy, for messages.

    Raises:
        UnsafeFileError: the file asks for anything beyond numeric arrays and builtin
            containers (nothing it names is imported or called).
        DataError: the file is missing, unreadable, truncated or not a pickle.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {kind} {p}: {e.strerror or type(e).__name__}", where=str(p),
                        fix="check the path and its permissions") from None
    try:
        obj = DataUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise UnsafeFileError(f"refusing to load {kind} {p}: it asks to import and call {e.module}.{e.name}, which a "
                              f"{kind} never contains (loading it with pickle could run code)", where=str(p),
                              fix=f"do not use this file; {fix}") from None
    except pickle.UnpicklingError as e:
        msg = one_line(e, 200)
        if msg.startswith(("an array", "a call of", "a persistent", "containers nested")):
            raise UnsafeFileError(f"refusing to load {kind} {p}: it holds {msg}, which a {kind} never contains",
                                  where=str(p), fix=f"do not use this file; {fix}") from None
        raise DataError(f"cannot read {kind} {p}: not a valid pickle ({msg})", where=str(p),
                        fix=f"the file is damaged; {fix}") from None
    except RecursionError:
        raise UnsafeFileError(f"refusing to load {kind} {p}: it is nested too deeply", where=str(p), fix=fix) from None
    except Exception as e:  # truncated (EOFError), garbage opcodes (KeyError, ValueError, ...), bad numpy state
        raise DataError(f"cannot read {kind} {p}: {type(e).__name__}: {one_line(e, 200) or 'damaged file'}", where=str(p),
                        fix=f"the file is damaged or not a {kind}; {fix}") from None
    try:
        _check_arrays(obj)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(f"refusing to load {kind} {p}: it holds {one_line(e, 200)}, which a {kind} never contains",
                              where=str(p), fix=f"do not use this file; {fix}") from None
    return obj
