#!/usr/bin/env python3
"""Regenerates the seed corpus of the fuzz target `ws_handshake` (fuzz/corpus/ws_handshake/):
WebSocket upgrade answers (client side) and upgrade requests (server side), valid and broken,
followed by frames:

    python3 fuzz/seed_ws_handshake.py

Input format: see fuzz/src/ws_handshake.rs (a flags byte, a read-size byte, the peer's bytes).
Files are named `seed-<sha1 of the content>`.
"""
import base64
import hashlib
import os
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus" / "ws_handshake"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(
    hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
).decode()
AUTH = "Basic YXN0ZXJpc2s6YXN0ZXJpc2s="
CLIENT, SERVER, SMALL = 0, 1, 2


def frame(opcode, payload, fin=True, mask=None):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + bytes(mask) + masked


def write(flags, chunk, data):
    blob = bytes([flags, chunk]) + data
    name = "seed-" + hashlib.sha1(blob).hexdigest()
    (CORPUS / name).write_bytes(blob)


def answer(status="101 Switching Protocols", headers=None, sep="\r\n"):
    if headers is None:
        headers = [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {ACCEPT}",
        ]
    return (f"HTTP/1.1 {status}{sep}" + "".join(h + sep for h in headers) + sep).encode()


def request(headers=None, method="GET", path="/ari/events?app=hello", version="HTTP/1.1"):
    if headers is None:
        headers = [
            "Host: 127.0.0.1:8088",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: ari",
            f"Authorization: {AUTH}",
        ]
    return (f"{method} {path} {version}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


EVENT = b'{"type":"StasisStart","application":"hello","channel":{"id":"1.1"}}'
MASK = (1, 2, 3, 4)


def main():
    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.glob("seed-*"):
        os.remove(old)
    frames = frame(1, EVENT) + frame(9, b"ping") + frame(8, struct.pack(">H", 1000))
    ok = answer()
    # Client side: what a server answers.
    for chunk in (255, 0, 6):
        write(CLIENT, chunk, ok + frames)
    write(CLIENT, 255, ok)
    write(CLIENT, 255, answer(sep="\n") + frame(1, EVENT))
    write(CLIENT, 255, answer(headers=["upgrade: WebSocket", "connection: keep-alive, Upgrade",
                                       f"sec-websocket-accept: {ACCEPT}", "Server: Asterisk/22.4.0"]))
    write(CLIENT, 255, answer(headers=["Upgrade: websocket", "Connection: Upgrade",
                                       "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA="]))
    write(CLIENT, 255, answer(headers=["Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"]))
    write(CLIENT, 255, answer(headers=["Upgrade: websocket", f"Sec-WebSocket-Accept: {ACCEPT}"]))
    write(CLIENT, 255, answer(headers=["Upgrade: websocket", "Connection: Upgrade"]))
    write(CLIENT, 255, answer(headers=["Upgrade: websocket", "Connection: Upgrade",
                                       f"Sec-WebSocket-Accept: {ACCEPT}", "Sec-WebSocket-Protocol: ari"]))
    write(CLIENT, 255, answer(headers=["Upgrade: websocket", "Connection: Upgrade",
                                       f"Sec-WebSocket-Accept: {ACCEPT}",
                                       "Sec-WebSocket-Extensions: permessage-deflate"]))
    write(CLIENT, 255, answer("401 Unauthorized", ["Content-Type: application/json", "Content-Length: 37",
                                                   "WWW-Authenticate: Basic realm=\"asterisk\""])
          + b'{"message":"Authentication required"}')
    write(CLIENT, 255, answer("404 Not Found", ["Content-Length: 0"]))
    write(CLIENT, 255, answer("200 OK", ["Content-Length: 2"]) + b"{}")
    write(CLIENT, 255, b"HTTP/1.1 100 Continue\r\n\r\n" + ok + frames)
    write(CLIENT, 255, b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          + f"Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n".encode())
    write(CLIENT, 255, ok[:40])
    write(CLIENT, 255, b"")
    write(CLIENT, 255, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # TLS where HTTP was expected
    write(CLIENT, 255, ok + frame(1, EVENT, mask=MASK))  # servers never mask
    write(CLIENT, 255, ok + frame(1, EVENT[:10], fin=False) + frame(0, EVENT[10:]))
    write(CLIENT, 255, ok + frame(1, b"\xff\xfe bad utf-8"))
    write(CLIENT, 255, ok + frame(2, bytes(range(40))) + frame(10, b"pong"))
    write(CLIENT | SMALL, 255, ok + frame(1, b"x" * 100))
    write(CLIENT | SMALL, 0, ok + frame(1, EVENT[:30], fin=False) + frame(0, EVENT[30:]))
    write(CLIENT, 255, ok + bytes([0x81, 127]) + struct.pack(">Q", 1 << 62))
    write(CLIENT, 255, ok + frame(8, b"\x03\xe8bye") + frame(1, EVENT))
    write(CLIENT, 255, ok + frame(9, b"p" * 126))  # control frames are at most 125 bytes
    write(CLIENT, 255, ok + bytes([0xf1, 0x00]))  # reserved bits
    # Server side: what a client (Asterisk's outbound connection, a test) sends.
    cframes = frame(1, EVENT, mask=MASK) + frame(9, b"hi", mask=MASK) + frame(8, b"\x03\xe8", mask=MASK)
    for chunk in (255, 0, 9):
        write(SERVER, chunk, request() + cframes)
    write(SERVER, 255, request())
    base = request().decode().split("\r\n")[1:-2]
    no = lambda prefix: [h for h in base if not h.lower().startswith(prefix)]
    write(SERVER, 255, request(no("authorization")))
    write(SERVER, 255, request(no("authorization") + ["Authorization: Basic c2VjcmV0OnNlY3JldA=="]))
    write(SERVER, 255, request(no("authorization") + ["Authorization: Basic \xff\xfe".encode("latin-1").decode("latin-1")]))
    write(SERVER, 255, request(no("sec-websocket-key")))
    write(SERVER, 255, request(no("sec-websocket-version") + ["Sec-WebSocket-Version: 12"]))
    write(SERVER, 255, request(no("upgrade")))
    write(SERVER, 255, request(no("connection") + ["Connection: keep-alive, Upgrade"]))
    write(SERVER, 255, request(no("sec-websocket-protocol")))
    write(SERVER, 255, request(method="POST"))
    write(SERVER, 255, request(version="HTTP/1.0"))
    write(SERVER, 255, request(path="*"))
    write(SERVER, 255, request() + frame(1, EVENT))  # clients must mask
    write(SERVER | SMALL, 255, request() + frame(1, b"y" * 100, mask=MASK))
    write(SERVER, 255, request()[:-2] + b"Content-Length: 5\r\n\r\nhello")
    write(SERVER, 255, request().replace(b"\r\n", b"\n") + cframes)
    write(SERVER, 255, b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n")
    write(SERVER, 255, b"GET /ari/events HTTP/1.1\r\nHost: x\r\n" * 2 + b"\r\n")


if __name__ == "__main__":
    main()
