// End-to-end test of the page wshub-server serves, in Debian's Chromium
// driven headless by playwright-core.
//
// tests/browser.rs runs this script. It owns the wshub-server and
// wshub-client processes; when this script needs something done to them it
// prints one line "@@ REQUEST" and reads one line back ("ok" or an error):
//
//   @@ carol-next TEXT       the wshub-client's next message is exactly TEXT
//   @@ stop-server           stop the server (SIGTERM) and wait for it to exit
//   @@ start-server          start it again on the same port
//   @@ start-token-server    start a second server with --token s3cret;
//                            the answer is "ok BASE_URL"
//
// usage: node e2e.mjs BASE_URL ARTIFACT_DIR CHROMIUM
// Every wait has a deadline; nothing sleeps to synchronise.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { join } from "node:path";

const [baseUrl, artifacts, executablePath] = process.argv.slice(2);
if (!executablePath) {
  console.error("usage: node e2e.mjs BASE_URL ARTIFACT_DIR CHROMIUM");
  process.exit(2);
}

/** Longest wait for any one thing the page should do. */
const WAIT = 15_000;
/** Longest wait for a reconnect (the page retries every 3 s). */
const RECONNECT_WAIT = 20_000;
/** The whole run; a hang ends the process instead of the CI job. */
const WATCHDOG = 180_000;

const desktop = { viewport: { width: 1100, height: 720 } };
const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };

// ---- talking to tests/browser.rs ---------------------------------------

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks tests/browser.rs for `request`; returns what follows its "ok". */
async function ask(request) {
  console.log(`@@ ${request}`);
  const { value, done } = await replies.next();
  if (done || !(value === "ok" || value.startsWith("ok "))) {
    throw new Error(`the harness answered ${done ? "nothing" : JSON.stringify(value)} to ${request}`);
  }
  return value.slice(3);
}

function step(text) {
  console.log(`-- ${text}`);
}

// ---- the page ----------------------------------------------------------

const problems = []; // page errors and policy violations, from every page

/** A fresh browser context (its own storage) showing the page at `url`. */
async function load(browser, name, device, url) {
  const context = await browser.newContext(device);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content.Security.Policy/i.test(m.text())) {
      problems.push(`${name}: ${m.text()}`);
    }
  });
  await page.goto(url);
  return page;
}

async function openAs(browser, name, device, { pressEnter = false } = {}) {
  const page = await load(browser, name, device, baseUrl);
  await page.fill("#name", name);
  if (pressEnter) {
    await page.press("#name", "Enter"); // the form works from the keyboard
  } else {
    await page.click("#connect");
  }
  await stateIs(page, new RegExp(`^online as ${name}$`));
  return page;
}

async function stateIs(page, pattern, timeout = WAIT) {
  await page.locator("#state").filter({ hasText: pattern }).waitFor({ timeout });
}

/** Log entries of `kind` ("in", "out", "in.direct", "sys", …) containing `text`. */
function entries(page, text, kind) {
  return page.locator(`#log li.entry.${kind}`, { hasText: text });
}

async function sees(page, text, kind) {
  await entries(page, text, kind).first().waitFor();
}

/** Types `text` into the message box and presses Enter; `to` "" is everyone. */
async function say(page, text, to = "") {
  if (to) await page.locator(`#to option[value="${to}"]`).waitFor({ state: "attached" });
  await page.selectOption("#to", to);
  await page.fill("#msg", text);
  await page.press("#msg", "Enter");
  await sees(page, text, to ? "out.direct" : "out");
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function shoot(pages, prefix = "") {
  for (const [name, page] of Object.entries(pages)) {
    const path = join(artifacts, `${prefix}${name}.png`);
    await page.screenshot({ path, fullPage: name.endsWith("phone") }).catch(() => {});
    console.log(`screenshot ${path}`);
  }
}

// ---- the scenario ------------------------------------------------------

async function scenario(browser, pages) {
  step("alice (desktop) and bob (phone) open the page and connect");
  const alice = (pages["alice-desktop"] = await openAs(browser, "alice", desktop));
  const bob = (pages["bob-phone"] = await openAs(browser, "bob", phone, { pressEnter: true }));

  step("alice's online list shows bob and the wshub-client carol");
  for (const name of ["bob", "carol"]) {
    await alice.locator("#clients .n", { hasText: name }).waitFor();
  }

  step("alice broadcasts; bob and carol receive it");
  await say(alice, "hello from alice");
  await sees(bob, "hello from alice", "in");
  await ask("carol-next hello from alice");

  step("bob sends alice a directed message; only alice gets it");
  await say(bob, "psst, alice only", "alice");
  await sees(alice, "psst, alice only", "in.direct");
  const who = await entries(alice, "psst, alice only", "in.direct").first().locator(".who").textContent();
  check(who === "bob → you", `the directed message is shown as from bob, got ${who}`);
  // Whatever the hub routes after the directed message reaches bob and
  // carol after it would have: if they see this next, they never got it.
  await say(alice, "after the secret");
  await sees(bob, "after the secret", "in");
  await ask("carol-next after the secret");
  check((await entries(bob, "psst", "in").count()) === 0, "bob did not receive the directed message");

  step("markup in a message shows as text and runs nothing");
  const payload = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold?</b>';
  await say(bob, payload);
  await sees(alice, payload, "in");
  const shown = await alice.evaluate(() => ({
    pwned: window.pwned,
    elements: document.querySelectorAll("#log script, #log img, #log b").length,
    text: [...document.querySelectorAll("#log li.in .text")].at(-1).textContent,
  }));
  check(shown.pwned === undefined, "the payload ran no code");
  check(shown.elements === 0, "the payload created no elements");
  check(shown.text === payload, `the payload shows literally, got ${shown.text}`);
  await ask(`carol-next ${payload}`);

  step("the API answers the page with JSON");
  const api = await alice.evaluate(async () => {
    const clients = await fetch("/api/clients");
    const stats = await fetch("/api/stats");
    return {
      type: clients.headers.get("content-type"),
      names: (await clients.json()).map((c) => c.name).sort(),
      stats: await stats.json(),
    };
  });
  check(api.type === "application/json", `content type ${api.type}`);
  check(JSON.stringify(api.names) === '["alice","bob","carol"]', `online: ${api.names}`);
  check(api.stats.connections_now === 3 && api.stats.messages_in >= 4, JSON.stringify(api.stats));
  await shoot(pages, "before-restart-");

  step("the server stops: both pages say they are reconnecting");
  await ask("stop-server");
  for (const page of [alice, bob]) {
    await stateIs(page, /^reconnecting in \d s/);
    await sees(page, "connection lost: 1001 going away", "sys");
  }

  step("the server comes back on the same port: both pages reconnect by themselves");
  await ask("start-server");
  await stateIs(alice, /^online as alice$/, RECONNECT_WAIT);
  await stateIs(bob, /^online as bob$/, RECONNECT_WAIT);
  await alice.locator("#clients .n", { hasText: "bob" }).waitFor();

  step("and they chat again");
  await say(alice, "back again");
  await sees(bob, "back again", "in");
  await say(bob, "welcome back, alice", "alice");
  await sees(alice, "welcome back, alice", "in.direct");

  await alice.locator("#msg").blur();
  await shoot(pages);

  step("a hub with a token: the page asks for it and sends it to the WebSocket and the API");
  const tokenUrl = await ask("start-token-server");
  const dave = (pages["dave-token"] = await load(browser, "dave", desktop, tokenUrl));
  await dave.locator("#clients-note", { hasText: "needs a token" }).waitFor();
  await dave.fill("#name", "dave");
  await dave.click("#connect");
  await sees(dave, "this hub needs a token", "sys");
  await dave.click("#disconnect");
  await stateIs(dave, /^not connected$/);
  await dave.fill("#token", "s3cret");
  await dave.click("#connect");
  await stateIs(dave, /^online as dave$/);
  await sees(dave, "/dave?token=•••", "sys"); // the log never shows the token
  await dave.locator("#clients .n", { hasText: "dave" }).waitFor();
  await shoot({ "dave-token": dave });

  check(problems.length === 0, `no page errors or policy violations:\n${problems.join("\n")}`);
}

async function main() {
  setTimeout(() => {
    console.error(`e2e: still not done after ${WATCHDOG / 1000} s; giving up`);
    process.exit(3);
  }, WATCHDOG).unref();

  // launch() gives Chromium a fresh --user-data-dir of its own in the temp
  // directory and deletes it afterwards (it refuses that flag in `args`).
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 60_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const pages = {};
  try {
    await scenario(browser, pages);
    console.log("passed");
  } catch (err) {
    console.error(`e2e: FAILED: ${err.stack || err}`);
    if (problems.length) console.error(problems.join("\n"));
    await shoot(pages, "failed-");
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();
process.exit(process.exitCode ?? 0);
