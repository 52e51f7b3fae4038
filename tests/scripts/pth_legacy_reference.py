#!/usr/bin/env python3
"""Reference reader for legacy (non-zip) PyTorch checkpoints, independent of our Rust
converter and of torch itself: Python's own `pickle` with a persistent-id hook.

Writes, per tensor: shape, sum, sum of squares and the first 8 values in row-major
order (strides honoured). tests compare `mmc models fetch`'s safetensors against it.

usage: pth_legacy_reference.py CHECKPOINT.pth OUT.json
"""
import json
import pickle
import struct
import sys
from array import array
from collections import OrderedDict

TYPES = {"FloatStorage": ("f", 4), "LongStorage": ("q", 8), "DoubleStorage": ("d", 8)}


class Ref:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def rebuild_tensor_v2(storage, offset, size, stride, *rest):
    return Ref(storage, offset, tuple(size), tuple(stride))


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in TYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected class {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', type, key, location, numel[, view_metadata])
        return (pid[1], pid[2])


def main(path, out):
    with open(path, "rb") as f:
        for _ in range(3):  # magic, protocol version, sys info
            pickle.load(f)
        state = Unpickler(f).load()
        keys = pickle.load(f)
        storages = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            typ = next(r.storage[0] for r in state.values() if isinstance(r, Ref) and r.storage[1] == key)
            code, size = TYPES[typ]
            data = array(code)
            data.frombytes(f.read(numel * size))
            storages[key] = data
    result = {}
    for name, ref in state.items():
        data = storages[ref.storage[1]]
        values = []
        index = [0] * len(ref.size)
        total = 1
        for d in ref.size:
            total *= d
        for _ in range(total):
            values.append(data[ref.offset + sum(i * s for i, s in zip(index, ref.stride))])
            for d in reversed(range(len(index))):
                index[d] += 1
                if index[d] < ref.size[d]:
                    break
                index[d] = 0
        result[name] = {
            "shape": list(ref.size),
            "sum": float(sum(values)),
            "sum_sq": float(sum(float(v) * float(v) for v in values)),
            "first": [float(v) for v in values[:8]],
        }
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"{len(result)} tensors -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
