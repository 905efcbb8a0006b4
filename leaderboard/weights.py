"""What a checkpoint's weights hold, read from the safetensors headers without loading a tensor."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

MAX_SAFETENSORS_HEADER = 100 * 2**20  # a header is JSON metadata; larger is a broken or hostile file


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets; `__metadata__`).
    Raises ValueError for a file that is not one."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_SAFETENSORS_HEADER:
            raise ValueError(f"header length {length} is not plausible")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def parameter_count(folder: Path) -> int | None:
    """The number of parameters in a folder's *.safetensors files (an adapter's too); None when the
    folder holds none or one cannot be read."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            for name, entry in safetensors_header(path).items():
                if name != "__metadata__":
                    total += math.prod(entry["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total
