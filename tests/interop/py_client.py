"""A WebSocket client built on Python `websockets`, driven by tests/interop.rs.

Usage: py_client.py URL [--ca PEM]

Reads commands from stdin, one per line:
  text DATA          send DATA as a text message
  binary HEX         send the bytes HEX as a binary message
  bigtext N          send N bytes of text: "abc...z" repeated
  bigbinary N        send N bytes: 0, 1, ..., 250, 0, 1, ...
  ping HEX           send a ping with payload HEX (may be empty); prints
                     "pong HEX" once the matching pong arrived
  close CODE [REASON]  close with CODE and REASON

Prints events on stdout, one per line:
  open
  text LEN FNV DATA      (DATA only for messages up to 256 bytes)
  binary LEN FNV HEX     (HEX only for messages up to 256 bytes)
  pong HEX
  closed CODE REASON     the close frame the server sent (1006 if none)
  error WHAT
FNV is the 32-bit FNV-1a hash of the payload in 8 hex digits. The process
exits when the connection has ended.
"""

import argparse
import ssl
import sys
import threading

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

SHOWN = 256
print_lock = threading.Lock()


def say(*parts):
    with print_lock:
        print(*parts, flush=True)


def fnv1a(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def report(msg):
    if isinstance(msg, str):
        raw = msg.encode()
        say("text", len(raw), fnv1a(raw), msg if len(raw) <= SHOWN else "")
    else:
        say("binary", len(msg), fnv1a(msg), msg.hex() if len(msg) <= SHOWN else "")


def big_text(n):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return (letters * (n // 26 + 1))[:n]


def big_binary(n):
    return bytes(i % 251 for i in range(n))


def command(ws, line):
    verb, _, rest = line.partition(" ")
    if verb == "text":
        ws.send(rest)
    elif verb == "binary":
        ws.send(bytes.fromhex(rest))
    elif verb == "bigtext":
        ws.send(big_text(int(rest)))
    elif verb == "bigbinary":
        ws.send(big_binary(int(rest)))
    elif verb == "ping":
        if ws.ping(bytes.fromhex(rest)).wait(10):
            say("pong", rest)
        else:
            say("error", "no pong within 10 s")
    elif verb == "close":
        code, _, reason = rest.partition(" ")
        ws.close(int(code), reason)
    else:
        say("error", f"unknown command {verb!r}")


def read_commands(ws):
    for line in sys.stdin:
        try:
            command(ws, line.rstrip("\r\n"))
        except Exception as e:  # report and go on: the test reads it
            say("error", f"{type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--ca")
    args = ap.parse_args()
    ctx = ssl.create_default_context(cafile=args.ca) if args.ca else None
    try:
        ws = connect(args.url, ssl=ctx, proxy=None, max_size=None, ping_interval=None)
    except Exception as e:
        say("error", f"connect: {type(e).__name__}: {e}")
        sys.exit(1)
    say("open")
    threading.Thread(target=read_commands, args=(ws,), daemon=True).start()
    try:
        for msg in ws:
            report(msg)
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        say("closed", 1006, "")
    else:
        say("closed", rcvd.code, rcvd.reason)


if __name__ == "__main__":
    main()
