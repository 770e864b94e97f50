"""Checks on model files that came from somewhere else (an import folder), before anything parses them.

A folder put in the import directory may hold anything: a pickle renamed `model.safetensors`, a header
length of 2^62, a 90 MB header, tensor offsets past the end of the file, a `config.json` that is a link
to /etc/passwd. Each check here reads only what it must, never follows a link, and raises
`ModelFileError(file name, problem)` so the caller can answer with the file and the problem.

The safetensors layout (https://github.com/huggingface/safetensors, "Format"): 8 bytes little-endian
header length N, N bytes of JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__"?}, then the tensor bytes; offsets are relative to the end of the header.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

MAX_CONFIG_BYTES = 1 << 20          # a config.json is a few hundred bytes
MAX_HEADER_BYTES = 100 * (1 << 20)  # safetensors' own limit
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
PICKLE_START = b"\x80"  # pickle protocol 2+ opcode PROTO; a zip (torch.save) starts with "PK"


class ModelFileError(ValueError):
    """`file` (a name inside the imported folder) cannot be used: `problem` says why."""

    def __init__(self, file: str, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


def open_regular_file(path: Path):
    """`path` opened for reading, refusing a link (at the file itself) and anything but a regular file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ModelFileError(path.name, "is missing") from None
    except OSError as error:  # ELOOP: the name is a symbolic link
        raise ModelFileError(path.name, "is a symbolic link; links are not followed" if path.is_symlink()
                             else f"cannot be opened ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ModelFileError(path.name, "is not a regular file")
    return os.fdopen(descriptor, "rb")


def read_config_json(path: Path) -> dict:
    """A small JSON object from `path` (a regular file, not a link)."""
    with open_regular_file(path) as file:
        raw = file.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelFileError(path.name, f"is larger than {MAX_CONFIG_BYTES:,} bytes; not a model config")
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(path.name, f"is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ModelFileError(path.name, "is not a JSON object")
    return config


def check_safetensors(path: Path) -> None:
    """Raise ModelFileError unless `path` is a regular file with a sane safetensors header whose tensors
    lie inside the file, one after another, each of the size its dtype and shape say."""
    with open_regular_file(path) as file:
        size = os.fstat(file.fileno()).st_size
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ModelFileError(path.name, "is too short to be a safetensors file")
        header_length = int.from_bytes(prefix, "little")
        if prefix.startswith(PICKLE_START) or prefix.startswith(b"PK"):
            raise ModelFileError(path.name, "is a pickle or a torch.save zip, not safetensors; pickles are refused "
                                            "(convert it with safetensors.torch.save_file)")
        if header_length > MAX_HEADER_BYTES or header_length > size - 8:
            raise ModelFileError(path.name, f"declares a header of {header_length:,} bytes in a file of {size:,} "
                                            "bytes: not a safetensors file")
        try:
            header = json.loads(file.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelFileError(path.name, f"has a header that is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ModelFileError(path.name, "has a header that is not a JSON object")
    data_bytes = size - 8 - header_length
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(entry, data_bytes)
        if problem:
            raise ModelFileError(path.name, f"tensor {name[:100]!r}: {problem}")
        spans.append(tuple(entry["data_offsets"]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise ModelFileError(path.name, f"tensor data overlaps or leaves a gap at byte {begin:,}")
        position = end
    if position != data_bytes:
        raise ModelFileError(path.name, f"tensor data covers {position:,} of the file's {data_bytes:,} data bytes")


def _entry_problem(entry, data_bytes: int) -> str | None:
    if not isinstance(entry, dict):
        return "is not a JSON object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        return f"unknown dtype {str(dtype)[:20]!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        return "shape is not a list of non-negative integers"
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        return "data_offsets is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        return f"data_offsets [{begin}, {end}] lie outside the file's {data_bytes:,} data bytes"
    if math.prod(shape) * DTYPE_BYTES[dtype] != end - begin:
        return f"shape {shape} of {dtype} does not take {end - begin:,} bytes"
    return None
