"""Read the metadata of a GGUF file's header without touching its tensors.

A GGUF file opens with a magic word, a version, the tensor count and the
number of key/value pairs, then the pairs (typed scalars, strings, arrays).
``gguf.GGUFReader`` decodes every array element into Python objects (14 s for
Gemma's 262k-token vocabulary on a busy 2-core machine); this reader keeps
the scalars and strings, records only the length of each array, and so
reads a header in well under a second.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.llm.base import BackendError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class ArrayInfo(tuple[int, int]):
    """An array value as the header reader keeps it: ``(element type, length)``, elements skipped."""

    @property
    def length(self) -> int:
        """Number of elements."""
        return self[1]


def _read(fh: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(fh: BinaryIO) -> str:
    length = _read(fh, "<Q")
    return fh.read(length).decode("utf-8", "replace")


def _value(fh: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(fh, _SCALARS[kind])
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        item, count = _read(fh, "<I"), _read(fh, "<Q")
        if item in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _value(fh, item)
        return ArrayInfo((item, count))
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_header(path: str | Path, tensors: bool = False) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The key/value metadata of a GGUF file (arrays as :class:`ArrayInfo`) and, with ``tensors``, the shape of
    every tensor (outermost dimension first, as in PyTorch); a clear error for a file that is not GGUF."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise BackendError(f"{path}: not a GGUF file (bad magic)")
            version = _read(fh, "<I")
            if version < 2:
                raise BackendError(f"{path}: GGUF version {version} is too old")
            n_tensors, pairs = _read(fh, "<Q"), _read(fh, "<Q")
            meta: dict[str, Any] = {}
            for _ in range(pairs):
                key = _string(fh)
                meta[key] = _value(fh, _read(fh, "<I"))
            shapes: dict[str, tuple[int, ...]] = {}
            for _ in range(n_tensors if tensors else 0):
                name = _string(fh)
                dims = [_read(fh, "<Q") for _ in range(_read(fh, "<I"))]
                _read(fh, "<I"), _read(fh, "<Q")  # type, offset
                shapes[name] = tuple(reversed(dims))
            return meta, shapes
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise BackendError(f"{path}: cannot read the GGUF header ({exc})") from None


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (arrays as :class:`ArrayInfo`)."""
    return read_gguf_header(path)[0]


def gguf_context_length(path: str | Path) -> int | None:
    """The context length a GGUF model was trained for (``<architecture>.context_length``), if recorded."""
    meta = read_gguf_metadata(path)
    value = meta.get(f"{meta.get('general.architecture', '')}.context_length")
    return int(value) if isinstance(value, int) else None
