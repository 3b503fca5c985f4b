// A WebSocket client built on Node `ws`, driven by tests/interop.rs.
//
// Usage: node node_client.mjs URL [--ca PEM]
//
// Speaks the same line protocol as py_client.py: commands on stdin (text,
// binary, bigtext, bigbinary, ping, close), events on stdout (open, text,
// binary, pong, closed, error). Exits when the connection has ended.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import WebSocket from "ws";

const SHOWN = 256;

export function say(...parts) {
  process.stdout.write(parts.join(" ") + "\n");
}

export function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h = Math.imul(h ^ b, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** Prints a received message as "text LEN FNV DATA" or "binary LEN FNV HEX". */
export function report(data, isBinary) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data);
  const shown = buf.length <= SHOWN;
  if (isBinary) {
    say("binary", buf.length, fnv1a(buf), shown ? buf.toString("hex") : "");
  } else {
    say("text", buf.length, fnv1a(buf), shown ? buf.toString("utf8") : "");
  }
}

function bigText(n) {
  return "abcdefghijklmnopqrstuvwxyz".repeat(Math.ceil(n / 26)).slice(0, n);
}

function bigBinary(n) {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = i % 251;
  return buf;
}

function command(ws, line) {
  const space = line.indexOf(" ");
  const verb = space < 0 ? line : line.slice(0, space);
  const rest = space < 0 ? "" : line.slice(space + 1);
  switch (verb) {
    case "text":
      return ws.send(rest);
    case "binary":
      return ws.send(Buffer.from(rest, "hex"));
    case "bigtext":
      return ws.send(bigText(Number(rest)));
    case "bigbinary":
      return ws.send(bigBinary(Number(rest)));
    case "ping":
      return ws.ping(Buffer.from(rest, "hex"));
    case "close": {
      const [code, ...reason] = rest.split(" ");
      return ws.close(Number(code), reason.join(" "));
    }
    default:
      say("error", `unknown command ${verb}`);
  }
}

function main() {
  const args = process.argv.slice(2);
  const url = args[0];
  const caAt = args.indexOf("--ca");
  const options = { maxPayload: 64 * 1024 * 1024 };
  if (caAt >= 0) options.ca = readFileSync(args[caAt + 1]);
  const ws = new WebSocket(url, options);
  // Commands typed before the connection is open wait for it.
  const pending = [];
  const run = (line) => {
    try {
      command(ws, line);
    } catch (e) {
      say("error", String(e));
    }
  };
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (ws.readyState === WebSocket.CONNECTING) pending.push(line);
    else run(line);
  });
  ws.on("open", () => {
    say("open");
    pending.splice(0).forEach(run);
  });
  ws.on("message", report);
  ws.on("pong", (data) => say("pong", data.toString("hex")));
  ws.on("error", (e) => say("error", String(e)));
  ws.on("close", (code, reason) => {
    say("closed", code, reason.toString("utf8"));
    process.exit(0);
  });
}

// Run only as a program, not when node_server.mjs imports the helpers.
if (import.meta.url === pathToFileURL(process.argv[1]).href) main();
