"""An echo server built on Python `websockets`, driven by tests/interop.rs.

Usage: py_echo_server.py [--port N] [--tls CERT KEY]

Prints "listening on PORT" once it accepts connections, then for each
connection "connect PATH", each message it received ("text LEN FNV DATA"
or "binary LEN FNV HEX", as py_client.py prints them) and "closed CODE
REASON" with the close frame the client sent (1006 if none). It sends
every message back, except the text "!close CODE REASON", which makes it
close the connection with CODE and REASON. SIGTERM stops it gracefully:
every client gets 1001.
"""

import argparse
import signal
import ssl
import sys
import threading

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

sys.dont_write_bytecode = True  # no __pycache__ beside the test programs
from py_client import report, say  # noqa: E402


def handler(ws):
    say("connect", ws.request.path)
    try:
        for msg in ws:
            report(msg)
            if isinstance(msg, str) and msg.startswith("!close "):
                code, _, reason = msg[len("!close "):].partition(" ")
                ws.close(int(code), reason)
                break
            ws.send(msg)
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    say("closed", 1006 if rcvd is None else rcvd.code, "" if rcvd is None else rcvd.reason)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
    with serve(handler, "127.0.0.1", args.port, ssl=ctx, max_size=None) as server:
        stop = lambda *_: threading.Thread(target=server.shutdown).start()
        signal.signal(signal.SIGTERM, stop)
        say("listening on", server.socket.getsockname()[1])
        server.serve_forever()


if __name__ == "__main__":
    main()
