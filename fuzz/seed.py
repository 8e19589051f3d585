#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/<target>/ from the recorded fixtures
(fixtures/asterisk-master and fixtures/asterisk-20). Run from anywhere:

    python3 fuzz/seed.py

Files are named `seed-<sha1 of the content>`; inputs the fuzzer found worth keeping (minimized
with `cargo fuzz cmin`) are committed beside them without the prefix. Seeds above 16 KiB are
left out (a few module and sound lists): large inputs slow libFuzzer down and add no coverage.
"""
import base64
import hashlib
import json
import pathlib
import random
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
MAX = 16 * 1024
BRANCHES = ["asterisk-master", "asterisk-20"]


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(target, data):
    if len(data) > MAX:
        return
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


def operations():
    """(method, path template, name) of every operation, read from the generated catalog."""
    src = (ROOT / "ari-proto/src/generated/catalog.rs").read_text()
    ops = []
    for m in re.finditer(
        r'OperationInfo \{\s*resource: "(\w+)",\s*nickname: "(\w+)",\s*method: "(\w+)",\s*'
        r'path: "([^"]+)"',
        src,
    ):
        resource, nickname, method, path = m.groups()
        ops.append((method, path, f"{resource}.{nickname}"))
    return ops


OPS = operations()


def find_op(method, path):
    """The operation of a recorded exchange: same method, template with the most literal
    segments matching the path (as ari-proto/tests/fixtures.rs does)."""
    segs = path.split("?")[0].strip("/").split("/")
    best = None
    for m, template, name in OPS:
        t = template.strip("/").split("/")
        if (method is None or m == method) and len(t) == len(segs) and all(
            a.startswith("{") or a == b for a, b in zip(t, segs)
        ):
            literal = sum(1 for a in t if not a.startswith("{"))
            if best is None or literal > best[0]:
                best = (literal, name)
    return best[1] if best else None


def body_bytes(ex):
    resp = ex.get("response")
    if resp is None:
        return b""
    if "json" in (ex.get("content_type") or ""):
        return resp.encode()
    try:
        return base64.b64decode(resp)
    except ValueError:
        return resp.encode()


def main():
    for target in ["event_decode", "response_decode", "rest_response_frame"]:
        for f in (CORPUS / target).glob("seed-*"):
            f.unlink()
    for branch in BRANCHES:
        for line in lines(ROOT / "fixtures" / branch / "events.jsonl"):
            frame = line["frame"].encode()
            write("event_decode", frame)
            if b'"RESTResponse"' in frame:
                write("rest_response_frame", frame)
        for ex in lines(ROOT / "fixtures" / branch / "rest.jsonl"):
            name = find_op(ex["method"], ex["path"]) or "unknown.operation"
            body = body_bytes(ex)
            write("response_decode", f"{name} {ex['status']}\n".encode() + body)
            # The same exchange as a REST-over-WebSocket answer.
            if "json" in (ex.get("content_type") or "") or not body:
                frame = {
                    "type": "RESTResponse",
                    "application": "test",
                    "timestamp": "2026-11-26T11:14:38.299+0000",
                    "request_id": "r1",
                    "transaction_id": "",
                    "status_code": ex["status"],
                    "reason_phrase": "",
                    "uri": ex["path"],
                    "content_type": ex.get("content_type") or "application/json",
                    "message_body": body.decode("utf-8", "replace"),
                }
                write("rest_response_frame", json.dumps(frame).encode())
    # session_actions: `arbitrary` decodes any bytes, so the seeds are deterministic random
    # bytes; the fuzzer's own finds (minimized) are committed beside them.
    rng = random.Random(0xA21)
    for i in range(16):
        write("session_actions", bytes(rng.randrange(256) for _ in range(64 << (i % 5))))
    for target in sorted(p.name for p in CORPUS.iterdir()):
        files = list((CORPUS / target).iterdir())
        print(f"{target}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
