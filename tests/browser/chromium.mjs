// What a test's browser driver shares with the others around its own commands: Debian's Chromium
// launched headless for a closed network, named browser contexts that record their navigations,
// the answer that describes a page, the `goto` and `close_context` commands, and the line
// protocol the Rust tests (`e2e::browser::Driver`) speak to a driver over its standard input and
// output (one JSON object a line each way).
//
// A driver elsewhere (tests/oidc/browser.mjs) imports this file by its path: `playwright-core`
// then resolves from tests/browser/node_modules, which `npm ci` here installs.

import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

/** How long one step (a navigation, a click) may take. */
const STEP_TIMEOUT_MS = 15_000;

/** Debian's Chromium (`CHROMIUM` overrides /usr/bin/chromium), headless. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    // As root there is no sandbox; the rest keeps Chromium from calling home on a closed network.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Names never resolve: nothing leaves the machine, and a page that asks for something by
      // name (a web font) fails at once rather than waiting on a closed network. Tests use IP
      // literals.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*',
    ],
  });
}

/**
 * The browser contexts of `browser` by name, each created on first use with one page: its own
 * cookies, like another browser. An entry is `{ ctx, page, navigations }`; `navigations` collects
 * every document URL its page requests (redirects included) until a page answer takes them.
 */
export class Contexts {
  #browser;
  #entries = new Map();

  constructor(browser) {
    this.#browser = browser;
  }

  async get(name = 'default') {
    let entry = this.#entries.get(name);
    if (!entry) {
      const ctx = await this.#browser.newContext();
      const page = await ctx.newPage();
      page.setDefaultTimeout(STEP_TIMEOUT_MS);
      entry = { ctx, page, navigations: [] };
      page.on('request', (request) => {
        if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
          entry.navigations.push(request.url());
        }
      });
      this.#entries.set(name, entry);
    }
    return entry;
  }

  async close(name) {
    const entry = this.#entries.get(name);
    this.#entries.delete(name);
    await entry?.ctx.close();
  }
}

/**
 * What a navigation's answer carries about the page now: `url`, `status` (of its document),
 * `headers` (of its document's response, names in lower case), `navigations` (every document URL
 * requested on the way, redirects included), `ids` (the text of every element with an id, an
 * input's value, by id), `text` (the start of the body's text) and `ms` (since `started`).
 */
export async function pageState(entry, response, started) {
  const { page } = entry;
  let text = '';
  let ids = {};
  try {
    text = (await page.locator('body').innerText({ timeout: 1000 })).slice(0, 4000);
    ids = await page.evaluate(() =>
      Object.fromEntries(
        [...document.querySelectorAll('[id]')].map((element) => [
          element.id,
          // `innerText` keeps list items on lines of their own; inputs have a value instead.
          (element.value ?? element.innerText ?? '').slice(0, 2000),
        ]),
      ),
    );
  } catch {
    // Not an HTML page, or no body yet: the URL, status and headers say enough.
  }
  return {
    url: page.url(),
    status: response ? response.status() : null,
    headers: response ? await response.allHeaders() : {},
    navigations: entry.navigations.splice(0),
    ids,
    text,
    ms: Date.now() - started,
  };
}

/** Runs `action` (which starts a navigation) and waits until that navigation has loaded. */
export async function navigating(page, action) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    action(),
  ]);
  return response;
}

/**
 * Prints `{"ready":true}`, then answers each command line with one line: `{"ok":true, ...}` with
 * what `ops[command.op](command)` returned, or `{"ok":false,"error":"..."}`. Besides `ops`, every
 * driver answers
 *
 *   {"op":"goto","context":"a","url":URL}
 *       Navigates; follows redirects; answers with the page (`pageState`).
 *   {"op":"close_context","context":"a"}
 *
 * `{"op":"quit"}` or the end of the input closes `browser` and exits.
 */
export async function serve(browser, contexts, ops) {
  const all = {
    async goto(command) {
      const started = Date.now();
      const entry = await contexts.get(command.context);
      entry.navigations.length = 0;
      const response = await entry.page.goto(command.url, { waitUntil: 'load' });
      return pageState(entry, response, started);
    },
    async close_context(command) {
      await contexts.close(command.context);
      return {};
    },
    ...ops,
  };
  const lines = createInterface({ input: process.stdin });
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  for await (const line of lines) {
    if (!line.trim()) {
      continue;
    }
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: `not JSON: ${error.message}` })}\n`);
      continue;
    }
    if (command.op === 'quit') {
      break;
    }
    let answer;
    try {
      if (!Object.hasOwn(all, command.op)) {
        throw new Error(`unknown op ${JSON.stringify(command.op)}`);
      }
      answer = { ok: true, ...(await all[command.op](command)) };
    } catch (error) {
      answer = { ok: false, error: String(error?.stack ?? error) };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
  await browser.close();
  // Standard input may still be open (the test sent `quit`): nothing else is left to do.
  process.exit(0);
}
