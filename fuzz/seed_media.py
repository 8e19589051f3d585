#!/usr/bin/env python3
"""Regenerates the seed corpora of the media fuzz targets from the recorded media fixtures
(fixtures/media/):

    python3 fuzz/seed_media.py

- media_control: every control message on a media socket, both directions (events and
  commands, plain text and JSON).
- audiosocket_decode: the AudioSocket stream Asterisk sent, rebuilt from the log (audio
  payloads are the logged head, zero-padded), cut into pieces of a few messages, each prefixed
  with a chunk-size byte.
"""
import hashlib
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
MEDIA = ROOT / "fixtures" / "media"


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


def media_conn(line):
    conn = line.get("conn", "")
    return conn == "media" or conn.startswith("mc#")


def main():
    for path in sorted(MEDIA.glob("*.jsonl")):
        for line in lines(path):
            if media_conn(line) and line.get("type") == "ws" and line.get("opcode") == "text":
                write("media_control", line["text"].encode())

    for path in sorted(MEDIA.glob("audiosocket-*.jsonl")):
        messages = []
        for line in lines(path):
            if line.get("type") != "audiosocket" or line.get("dir") != "in":
                continue
            kind = int(line["kind"], 16)
            if kind == 0x01:
                payload = bytes.fromhex(line["uuid"].replace("-", ""))
            elif kind == 0x03:
                payload = line["digit"].encode()
            else:
                payload = bytes.fromhex(line.get("head_hex", "")).ljust(line["len"], b"\0")
            messages.append(struct.pack(">BH", kind, len(payload)) + payload)
        for i, chunk in enumerate([1, 3, 7, 64, 255]):
            start = (i * 5) % max(1, len(messages) - 4)
            write("audiosocket_decode", bytes([chunk]) + b"".join(messages[start:start + 4]))
        # The UUID and both DTMF digits, and the app's hangup.
        small = [m for m in messages if m[0] != 0x10] + [b"\x00\x00\x00"]
        write("audiosocket_decode", bytes([2]) + b"".join(small))


if __name__ == "__main__":
    main()
