#!/usr/bin/env python3
"""Regenerates the seed corpora of the outbound WebSocket fuzz targets (fuzz/corpus/upgrade_check/
and fuzz/corpus/accepted_session/) from fixtures/outbound (recorded from a real Asterisk):

    python3 fuzz/seed_outbound.py

Input formats: see fuzz/src/outbound.rs. Files are named `seed-<sha1 of the content>`.
"""
import base64
import hashlib
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
MAX = 16 * 1024
PASSWORD = "Zq9-fuzz-secret"


def lines(name):
    with open(ROOT / "fixtures" / "outbound" / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(target, data):
    if len(data) > MAX:
        return
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


FILES = ["persistent-master", "persistent-20", "per-call-master", "per-call-20",
         "per-call-drop-master", "per-call-drop-20"]


def head(request_line, headers):
    out = request_line + "\r\n"
    for n, v in headers:
        out += f"{n}: {v}\r\n"
    return (out + "\r\n").encode()


def upgrade_seeds():
    reqs = [l for f in FILES for l in lines(f) if l["type"] == "http-request"]
    seen = set()
    for r in reqs:
        line = r["request_line"].replace("/ari-ob/persistent", "/ari-ob").replace("/ari-ob/percall", "/ari-ob")
        hs = [(n, v) for n, v in r["headers"]]
        good_auth = "Basic " + base64.b64encode(f"obuser:{PASSWORD}".encode()).decode()
        hs_good = [(n, good_auth if n == "Authorization" else v) for n, v in hs]
        key = (line, tuple(hs))
        if key in seen:
            continue
        seen.add(key)
        for flags in range(8):
            write("upgrade_check", bytes([flags]) + head(line, hs_good))
        write("upgrade_check", bytes([7]) + head(line, hs))  # the recording's password: 401
    base_line = "GET /ari-ob?token=abc123 HTTP/1.1"
    good_auth = "Basic " + base64.b64encode(f"obuser:{PASSWORD}".encode()).decode()
    base = [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Host", "127.0.0.1:18731"), ("Authorization", good_auth),
            ("Sec-WebSocket-Protocol", "ari"), ("Sec-WebSocket-Key", "8B3dGAAAAABi6TYFAAAAAA==")]
    variants = [
        [(n, v) for n, v in base if n != "Authorization"],
        [(n, "Basic " + base64.b64encode(b"obuser:wrong").decode() if n == "Authorization" else v) for n, v in base],
        [(n, "Basic !!" if n == "Authorization" else v) for n, v in base],
        [(n, "keep-alive, Upgrade" if n == "Connection" else v) for n, v in base],
        [(n, "8" if n == "Sec-WebSocket-Version" else v) for n, v in base],
        [(n, "c2hvcnQ=" if n == "Sec-WebSocket-Key" else v) for n, v in base],
        [(n, "media" if n == "Sec-WebSocket-Protocol" else v) for n, v in base],
        [(n, "ari, media" if n == "Sec-WebSocket-Protocol" else v) for n, v in base],
        [(n.lower(), v) for n, v in base],
        base + [("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")],
    ]
    for flags in (0, 3, 7):
        for hs in variants:
            write("upgrade_check", bytes([flags]) + head(base_line, hs))
        write("upgrade_check", bytes([flags]) + head("POST /ari-ob HTTP/1.1", base))
        write("upgrade_check", bytes([flags]) + head("GET /elsewhere HTTP/1.1", base))
        write("upgrade_check", bytes([flags]) + head("GET /ari-ob HTTP/1.0", base))
        write("upgrade_check", bytes([flags]) + head(base_line, base)[:60])
        write("upgrade_check", bytes([flags]) + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")


def frame(text):
    b = text.encode()
    return bytes([1]) + struct.pack("<H", len(b)) + b


def session_seeds():
    for f in FILES:
        for flags in (0, 1, 6):
            out = bytearray([flags])
            for l in lines(f):
                if l["type"] == "tcp-accept" and l.get("listener_mode") == "ws":
                    if len(out) > 1 and f.startswith("per-call") and "drop" not in f:
                        write("accepted_session", bytes(out))
                        out = bytearray([flags])
                    out.append(0)
                elif l["type"] == "ws" and l.get("opcode") == "text" and l["dir"] == "in":
                    fr = frame(l["text"])
                    if len(out) + len(fr) > MAX - 16:
                        write("accepted_session", bytes(out))
                        out = bytearray([flags, 0])
                    out += fr
                elif l["type"] == "ws" and l.get("opcode") == "text" and l["dir"] == "out":
                    out.append(6)
                elif l["type"] in ("tcp-eof",) or (l["type"] == "ws" and l.get("opcode") == "close" and l["dir"] == "in"):
                    out.append(2)
            out += bytes([5, 5, 8])
            write("accepted_session", bytes(out))
    # Synthetic: accept, register, subscribe, requests, replace, keepalive, answers, stop.
    write("accepted_session", bytes([1, 0, 11, 0, 11, 1, 10, 2, 6, 6, 7, 0, 0, 5, 5, 3, 5, 15, 12, 0, 2, 0, 7, 0, 8]))
    write("accepted_session", bytes([7, 0, 6, 6, 6, 6, 6, 7, 1, 13, 14, 15, 16, 4, 0x10, 0x27, 2, 9, 0, 5, 8, 0]))
    write("accepted_session", bytes([2, 0, 6, 0, 6, 2, 6, 0, 5, 5, 5, 11, 3, 12, 3, 8]))


if __name__ == "__main__":
    upgrade_seeds()
    session_seeds()
