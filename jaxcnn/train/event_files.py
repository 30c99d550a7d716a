"""TensorBoard event files of a resumed run: one consistent scalar history.

A run killed after its last checkpoint leaves events of the steps it will write again, and
maybe a last record cut short. Before a resumed run opens its own event file,
:func:`truncate_events_after` rewrites each existing event file without the records of later
steps and without a damaged tail (atomically: a kill during the rewrite loses nothing), as
``metrics.jsonl`` is truncated.

Event files are TFRecord files: each record is ``uint64 length, uint32 masked CRC-32C of the
length, data, uint32 masked CRC-32C of the data``; ``data`` is an ``Event`` protocol buffer.
"""

from __future__ import annotations

import os
import struct

_HEADER = 12  # uint64 length + uint32 length CRC
_FOOTER = 4  # uint32 data CRC


def read_records(path: str) -> tuple[list[bytes], bool]:
    """``(complete records as raw bytes, header and footer included; whether a cut-short tail followed)``."""
    with open(path, "rb") as f:
        data = f.read()
    records, offset = [], 0
    while offset + _HEADER <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        end = offset + _HEADER + length + _FOOTER
        if end > len(data):
            break
        records.append(data[offset:end])
        offset = end
    return records, offset != len(data)


def record_step(record: bytes) -> int | None:
    """The ``step`` of an ``Event`` record (``None``: unparseable)."""
    from tensorboardX.proto import event_pb2

    event = event_pb2.Event()
    try:
        event.ParseFromString(record[_HEADER:-_FOOTER])
    except Exception:  # a damaged record: dropped by the caller
        return None
    return int(event.step)


def truncate_events_after(folder: str, step: int) -> int:
    """Rewrites the event files in ``folder`` without records after ``step``; returns how many were dropped.

    Records that do not parse and a cut-short last record are dropped too.
    """
    if not os.path.isdir(folder):
        return 0
    dropped = 0
    for name in sorted(os.listdir(folder)):
        if "tfevents" not in name or name.endswith(".tmp"):
            continue
        path = os.path.join(folder, name)
        records, cut = read_records(path)
        kept = []
        for record in records:
            record_at = record_step(record)
            if record_at is not None and record_at <= step:
                kept.append(record)
        dropped += len(records) - len(kept) + int(cut)
        if len(kept) == len(records) and not cut:
            continue
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(kept))
        os.replace(tmp, path)
    return dropped
