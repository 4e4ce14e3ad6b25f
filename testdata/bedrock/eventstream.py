#!/usr/bin/env python3
"""Build the binary Bedrock event streams of the fixtures.

For every case directory here with `upstream_response.frames.json`, writes
`upstream_response.eventstream`: the frames encoded as AWS event-stream
messages (application/vnd.amazon.eventstream), with both CRCs computed by
zlib's CRC-32, independently of the filter's decoder. The fixture walker
feeds the binary file; the JSON next to it is its readable source.

frames.json: {"frames": [{"headers": {name: string value}, "payload": JSON
value | "payload_text": raw text}], "flip": [{"frame": i, "offset": n,
"xor": b}], "truncate": n}. `flip` corrupts bytes after encoding (offset
from the frame's start, negative from its end: -1 is the last byte of the
message CRC); `truncate` cuts the whole stream to its first n bytes.

`--check` decodes every written stream with botocore's own event-stream
parser when botocore is installed (it is not a dependency of the project:
`pip install botocore` in any venv to run the check).

Standard library only; run from anywhere: python3 testdata/bedrock/eventstream.py [--check]
"""

import json
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def encode(headers, payload):
    h = b""
    for name, value in headers.items():
        n = name.encode()
        v = value.encode()
        h += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 16 + len(h) + len(payload)
    prelude = struct.pack(">II", total, len(h))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def build(spec):
    frames = []
    for f in spec["frames"]:
        if "payload_text" in f:
            payload = f["payload_text"].encode()
        else:
            payload = json.dumps(f["payload"], separators=(",", ":"), ensure_ascii=False).encode()
        frames.append(bytearray(encode(f["headers"], payload)))
    for flip in spec.get("flip", []):
        fr = frames[flip["frame"]]
        fr[flip["offset"]] ^= flip["xor"]
    out = b"".join(bytes(f) for f in frames)
    if "truncate" in spec:
        out = out[: spec["truncate"]]
    return out


def check(path, spec):
    try:
        from botocore.eventstream import EventStreamBuffer
    except ImportError:
        print("botocore not installed: --check skipped", file=sys.stderr)
        return
    buf = EventStreamBuffer()
    buf.add_data(path.read_bytes())
    corrupt = bool(spec.get("flip")) or "truncate" in spec
    try:
        msgs = list(buf)
    except Exception as e:  # botocore raises its own parser errors
        if corrupt:
            print(f"{path.parent.name}: botocore rejects it as intended ({type(e).__name__})")
            return
        raise
    if corrupt and "truncate" not in spec:
        raise SystemExit(f"{path}: botocore accepted a corrupt stream")
    for m, f in zip(msgs, spec["frames"]):
        assert {k: v for k, v in m.headers.items()} == f["headers"], path
    print(f"{path.parent.name}: botocore decodes {len(msgs)} frames")


def main():
    for spec_path in sorted(HERE.glob("*/upstream_response.frames.json")):
        spec = json.loads(spec_path.read_text())
        out = spec_path.parent / "upstream_response.eventstream"
        out.write_bytes(build(spec))
        if "--check" in sys.argv:
            check(out, spec)


if __name__ == "__main__":
    main()
