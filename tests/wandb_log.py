"""Read a W&B offline run file (`run-<id>.wandb`) back, for the tracking tests.

wandb 0.19+ writes it from its Go core and ships no Python reader; the format is
LevelDB's log (wandb's `leveldblog`): a 7-byte file header (":W&B", magic 0xBEE1,
version 0), then 32 KiB blocks of records, each a 7-byte header (CRC-32, length,
type: 1 full, 2 first, 3 middle, 4 last) and a piece of one serialized
`wandb_internal_pb2.Record`; a block tail shorter than a header is zero padding.
"""

from __future__ import annotations

import json
import struct

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str):
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B run file"
    pos, pending = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # zero padding to the next block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # the end of what was written
            break
        piece = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pending = piece if kind in (FULL, FIRST) else pending + piece
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def run_contents(path: str) -> dict:
    """{"run": the run record, "config": {key: value}, "history": [{key: value} per logged step]}."""
    out = {"run": None, "config": {}, "history": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
    return out
