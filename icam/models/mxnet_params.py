"""Reader for MXNet's NDArray-list files (`.params`), written with numpy and struct only.

Byte layout (little-endian), after MXNet's `NDArray::Save(stream, arrays, names)`:

    uint64 magic 0x112, uint64 reserved 0
    uint64 count, then `count` arrays
    uint64 count, then `count` names, each uint64 length + ASCII bytes

Each array starts with a uint32 that selects its version:

    0xF993FAC9 (V2) / 0xF993FACA (V3): int32 storage type (0 = dense), shape, [context, dtype, data]
    0xF993FAC8 (V1): shape, [context, dtype, data]
    anything else (legacy): the uint32 is ndim, then ndim uint32 dims, context, dtype, data

where shape = int32 ndim + ndim int64 dims (V1-V3), context = int32 device type + int32 device
id, dtype = int32 mshadow type flag, and data = the C-order values. A legacy/V1/V2 array with
ndim 0 (V3: ndim -1) is empty and stops after its shape.
"""

import struct
from pathlib import Path

import numpy as np

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?"}


class _Cursor:
    """Sequential little-endian reads over a byte buffer, with errors that name the file."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: byte {self.pos}: {message}")

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.fail(f"file ends early (wanted {size} more bytes)")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def take_bytes(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail(f"file ends early (wanted {size} more bytes)")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def _read_array(cur: _Cursor) -> np.ndarray | None:
    magic = cur.take("I")
    if magic in (V2_MAGIC, V3_MAGIC):
        storage = cur.take("i")
        if storage != 0:
            raise cur.fail(f"sparse storage type {storage} is not supported")
    if magic in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        ndim = cur.take("i")
        empty = ndim == -1 if magic == V3_MAGIC else ndim == 0
        if empty:
            return None
        if ndim < 0 or ndim > 32:
            raise cur.fail(f"bad number of dimensions {ndim}")
        shape = cur.take(f"{ndim}q") if ndim else ()
    else:
        ndim = magic
        if ndim == 0:
            return None
        if ndim > 32:
            raise cur.fail(f"unknown array header 0x{magic:08X}")
        shape = cur.take(f"{ndim}I")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(d < 0 for d in shape):
        raise cur.fail(f"array shape {shape} has an unknown dimension")
    cur.take("ii")  # device type and id: arrays are always read onto the CPU
    flag = cur.take("i")
    if flag not in DTYPES:
        raise cur.fail(f"unknown dtype flag {flag}")
    dtype = np.dtype(DTYPES[flag])
    count = int(np.prod(shape, dtype=np.int64))
    raw = cur.take_bytes(count * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_ndarray_list(path: str | Path) -> dict[str, np.ndarray]:
    """All named arrays of an MXNet `.params` file, in file order (e.g. `arg:conv1a_weight`)."""
    cur = _Cursor(Path(path).read_bytes(), str(path))
    magic, _reserved = cur.take("QQ")
    if magic != LIST_MAGIC:
        raise ValueError(f"{path}: not an MXNet NDArray list (magic 0x{magic:X}, want 0x112)")
    arrays = [_read_array(cur) for _ in range(cur.take("Q"))]
    num_names = cur.take("Q")
    names = [cur.take_bytes(cur.take("Q")).decode("ascii") for _ in range(num_names)]
    if len(names) != len(arrays):
        raise cur.fail(f"{len(arrays)} arrays but {len(names)} names")
    if cur.pos != len(cur.data):
        raise cur.fail(f"{len(cur.data) - cur.pos} trailing bytes")
    return {name: array for name, array in zip(names, arrays, strict=True) if array is not None}
