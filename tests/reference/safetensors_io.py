"""Read and write safetensors files with numpy only.

A safetensors file is: an 8-byte little-endian unsigned header length N, then N bytes of JSON
mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
the end of the header) plus an optional "__metadata__" map of string to string, then the raw
little-endian tensor bytes. This module supports the dtypes the chesslens model files use:
F32, F16, BF16, I32 and I64. BF16 has no numpy dtype; it is read as float32 (the upper 16 bits
of a float32 are the bf16 bits) and written from float32 by round-to-nearest-even.
"""

import json
import struct

import numpy as np

_NUMPY_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}

_ELEMENT_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8}


class SafetensorsError(ValueError):
    """A malformed or unsupported safetensors file."""


def _bf16_to_f32(raw):
    """raw: uint16 array of bf16 bit patterns -> float32 array of the same shape."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(values):
    """values: float32 array -> uint16 bf16 bit patterns, rounded to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    rounded = ((bits.astype(np.uint64) + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    rounded[nan] = 0x7FC0
    return rounded


def read_header(path):
    """Return (header dict without __metadata__, metadata dict, offset of the data section)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise SafetensorsError(f"{path}: shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        raw = f.read(header_len)
        if len(raw) != header_len:
            raise SafetensorsError(f"{path}: header length {header_len} exceeds the file")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not JSON: {e}") from e
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + header_len


def load(path):
    """Read every tensor. Returns (dict name -> numpy array, metadata dict of str -> str).

    F16 tensors are returned as float16 and BF16 as float32 (numpy has no bfloat16).
    """
    header, metadata, data_start = read_header(path)
    with open(path, "rb") as f:
        f.seek(data_start)
        data = f.read()
    tensors = {}
    for name, info in header.items():
        dtype = info.get("dtype")
        if dtype not in _ELEMENT_SIZE:
            raise SafetensorsError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * _ELEMENT_SIZE[dtype] or end > len(data) or begin > end:
            raise SafetensorsError(
                f"{path}: tensor {name}: data_offsets [{begin},{end}] do not fit "
                f"shape {shape} of {dtype} in a data section of {len(data)} bytes"
            )
        chunk = data[begin:end]
        if dtype == "BF16":
            array = _bf16_to_f32(np.frombuffer(chunk, dtype="<u2"))
        else:
            array = np.frombuffer(chunk, dtype=_NUMPY_DTYPES[dtype]).copy()
        tensors[name] = array.reshape(shape)
    return tensors, metadata


def save(path, tensors, metadata=None, dtypes=None):
    """Write tensors (dict name -> numpy array) to path.

    The stored dtype follows the array's dtype (float32 -> F32, float16 -> F16, int32 -> I32,
    int64 -> I64) unless dtypes[name] names one of F32/F16/BF16/I32/I64. Tensors are written in
    order of decreasing element size, then by name, with no gaps between them (as the format
    requires), so every tensor starts at a multiple of its element size when the data section is
    8-byte aligned (the header is padded with spaces to make it so). Metadata values must be
    strings.
    """
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    resolved = {}
    for name, value in tensors.items():
        array = np.asarray(value)
        dtype = dtypes.get(name)
        if dtype is None:
            dtype = {
                np.dtype("float32"): "F32",
                np.dtype("float16"): "F16",
                np.dtype("int32"): "I32",
                np.dtype("int64"): "I64",
            }.get(array.dtype)
            if dtype is None:
                raise SafetensorsError(f"tensor {name}: no safetensors dtype for {array.dtype}")
        if dtype not in _ELEMENT_SIZE:
            raise SafetensorsError(f"tensor {name}: unsupported dtype {dtype}")
        resolved[name] = (array, dtype)
    for name in sorted(resolved, key=lambda n: (-_ELEMENT_SIZE[resolved[n][1]], n)):
        array, dtype = resolved[name]
        if dtype == "BF16":
            blob = _f32_to_bf16(array.astype(np.float32)).tobytes()
        else:
            blob = np.ascontiguousarray(array, dtype=_NUMPY_DTYPES[dtype]).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": [int(s) for s in array.shape],
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SafetensorsError("metadata keys and values must be strings")
        header = {"__metadata__": dict(metadata), **header}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((-len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
