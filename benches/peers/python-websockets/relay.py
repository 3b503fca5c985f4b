"""A relay on Python's `websockets` with wshub's routing, for load runs.

ws://127.0.0.1:PORT/ROOM/NAME joins ROOM as NAME. A plain message goes to
every other client in the sender's room; a JSON object with a string
"receiver" goes to the clients with that name. No offline queue, no limits
beyond the library's: the shortest correct relay people write with it.

usage: python3 relay.py [PORT]   (PORT 0, the default, picks a free one)
prints: listening on ws://127.0.0.1:PORT
"""

import asyncio
import itertools
import json
import os
import sys

from websockets.asyncio.server import broadcast, serve

ROOMS = {}  # room -> set of connections
NAMES = {}  # name -> set of connections
ANON = itertools.count(1)


def receiver_of(message):
    """The "receiver" of a directed JSON text message, or None."""
    if not isinstance(message, str) or not message.startswith("{"):
        return None
    try:
        obj = json.loads(message)
    except ValueError:
        return None
    receiver = obj.get("receiver") if isinstance(obj, dict) else None
    return receiver if isinstance(receiver, str) else None


async def handler(ws):
    segments = [s for s in ws.request.path.split("?")[0].split("/") if s]
    name = segments.pop() if segments else f"anon-{next(ANON)}"
    room = "/".join(segments)
    peers = ROOMS.setdefault(room, set())
    peers.add(ws)
    NAMES.setdefault(name, set()).add(ws)
    try:
        async for message in ws:
            receiver = receiver_of(message)
            targets = peers if receiver is None else NAMES.get(receiver, ())
            broadcast([p for p in targets if p is not ws], message)
    finally:
        for index, key in ((ROOMS, room), (NAMES, name)):
            index[key].discard(ws)
            if not index[key]:
                del index[key]


async def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "0"))
    async with serve(
        handler, "127.0.0.1", port, max_size=64 << 20, compression=None
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
