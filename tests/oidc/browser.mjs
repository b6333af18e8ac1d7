// A real browser for the e2e social-login test (tests/tests/e2e/social_login.rs): Debian's
// Chromium, headless, driven by playwright-core. The test talks to it over standard input and
// output, one JSON object a line each way, so that one browser (and its cookies) lives across the
// steps of a scenario while the test inspects and tampers with what comes back.
//
//   node browser.mjs            (CHROMIUM overrides /usr/bin/chromium)
//
// It prints `{"ready":true}` once Chromium runs, then answers each command with one line:
// `{"ok":true, ...}` or `{"ok":false,"error":"..."}`. Commands (`context` names a browser
// context, created on first use: its own cookies, like another browser):
//
//   {"op":"sign_in","context":"a","start":URL,"until":PREFIX,"login":"alice","password":"pw",
//    "consent":"accept"|"deny","stop_at":PREFIX?,"rewrite":[REWRITE]?}
//       Opens `start` and walks the provider's sign-in and consent pages until the page's URL
//       starts with `until` (the client's redirect_to). With `stop_at` (the callback URL), the
//       request to it is held back instead of sent, and its URL returned as `stopped_at`; the
//       browser still holds the sign-in cookie, so `goto` can deliver it later. `consent:"deny"`
//       clicks the provider's Cancel link on the consent page.
//       REWRITE = {"prefix":P,"origin":O?,"set":{NAME:VALUE},"drop":[NAME]}: the first
//       navigation whose URL starts with P is answered by the browser itself with a 302 to that
//       URL with its origin replaced by O and its query changed (a mix-up attack's redirect, a
//       stripped `iss`).
//   {"op":"goto","context":"a","url":URL}
//       Navigates; follows redirects.
//   {"op":"close_context","context":"a"}
//   {"op":"quit"}
//
// Every answer of a navigation has `url` (where the page ended), `status` (of its document),
// `text` (the start of its text), `navigations` (every document URL requested on the way, in
// order: redirects included) and `ms`.
//
// Host names other than localhost do not resolve (see the launch flags): the test uses loopback
// addresses only, and the provider's page asks for a web font by name.

import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const STEP_TIMEOUT_MS = 15_000;

const browser = await chromium.launch({
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
    // Names never resolve (the provider's page loads a web font by name): nothing leaves the
    // machine, and nothing waits on a closed network. The test's addresses are IP literals.
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*',
  ],
});

const contexts = new Map();

async function context(name) {
  let entry = contexts.get(name);
  if (!entry) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    entry = { ctx, page, navigations: [], held: [] };
    page.on('request', (request) => {
      if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
        entry.navigations.push(request.url());
      }
    });
    contexts.set(name, entry);
  }
  return entry;
}

/** The URL `from` with `rewrite` applied: origin replaced, parameters set or dropped. */
function rewritten(from, rewrite) {
  const url = new URL(from);
  const to = rewrite.origin ? new URL(url.pathname + url.search, rewrite.origin) : url;
  for (const name of rewrite.drop ?? []) {
    to.searchParams.delete(name);
  }
  for (const [name, value] of Object.entries(rewrite.set ?? {})) {
    to.searchParams.set(name, value);
  }
  return to.toString();
}

/**
 * Installs the one-shot rewrites and the hold at `stop_at`; returns what undoes them.
 *
 * Through the DevTools protocol's Fetch domain, not Playwright's `route`: a route sees only the
 * first request of a navigation, and the callback is always a redirect's target (the provider
 * answers the consent form with a 303 to it). Fetch pauses every hop of a redirect chain.
 */
async function intercept(entry, command) {
  const rewrites = [...(command.rewrite ?? [])];
  if (rewrites.length === 0 && !command.stop_at) {
    return async () => {};
  }
  const cdp = await entry.ctx.newCDPSession(entry.page);
  cdp.on('Fetch.requestPaused', async (event) => {
    const { requestId, request, resourceType } = event;
    try {
      if (resourceType === 'Document') {
        const index = rewrites.findIndex((rewrite) => request.url.startsWith(rewrite.prefix));
        if (index >= 0) {
          const [rewrite] = rewrites.splice(index, 1);
          await cdp.send('Fetch.fulfillRequest', {
            requestId,
            responseCode: 302,
            responseHeaders: [
              { name: 'Location', value: rewritten(request.url, rewrite) },
              { name: 'Cache-Control', value: 'no-store' },
            ],
          });
          return;
        }
        if (command.stop_at && request.url.startsWith(command.stop_at)) {
          entry.held.push(request.url);
          await cdp.send('Fetch.fulfillRequest', {
            requestId,
            responseCode: 200,
            responseHeaders: [{ name: 'Content-Type', value: 'text/plain' }],
            body: Buffer.from('held by the test browser').toString('base64'),
          });
          return;
        }
      }
      await cdp.send('Fetch.continueRequest', { requestId });
    } catch {
      // The page went away meanwhile; nothing is waiting for this request any more.
    }
  });
  await cdp.send('Fetch.enable', { patterns: [{ urlPattern: '*', requestStage: 'Request' }] });
  return async () => {
    await cdp.send('Fetch.disable').catch(() => {});
    await cdp.detach().catch(() => {});
  };
}

/** What a navigation answer carries about the page now. */
async function pageState(entry, response, started) {
  const { page } = entry;
  let text = '';
  try {
    text = (await page.locator('body').innerText({ timeout: 1000 })).slice(0, 2000);
  } catch {
    // Not an HTML page, or no body yet: the URL and status say enough.
  }
  return {
    url: page.url(),
    status: response ? response.status() : null,
    text,
    navigations: entry.navigations.splice(0),
    ms: Date.now() - started,
  };
}

/** Runs `action` (which starts a navigation) and waits until that navigation has loaded. */
async function navigating(page, action) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    action(),
  ]);
  return response;
}

async function signIn(command) {
  const started = Date.now();
  const entry = await context(command.context ?? 'default');
  const { page } = entry;
  entry.navigations.length = 0;
  entry.held.length = 0;
  const undo = await intercept(entry, command);
  try {
    let response = await page.goto(command.start, { waitUntil: 'load' });
    // Sign-in, consent, and perhaps one page more; more than that is a loop.
    for (let step = 0; step < 6; step += 1) {
      if (entry.held.length > 0) {
        return { ...(await pageState(entry, response, started)), stopped_at: entry.held[0] };
      }
      if (page.url().startsWith(command.until)) {
        return await pageState(entry, response, started);
      }
      const login = page.locator('input[name=login]');
      const consent = page.locator('input[name=prompt][value=consent]');
      if (await login.count() > 0) {
        await login.fill(command.login);
        await page.locator('input[name=password]').fill(command.password ?? 'any password');
        response = await navigating(page, () => page.locator('button[type=submit]').click());
      } else if (await consent.count() > 0) {
        // A hidden input: attached, never visible.
        await consent.waitFor({ state: 'attached' });
        if (command.consent === 'deny') {
          response = await navigating(page, () => page.getByText('[ Cancel ]').click());
        } else {
          response = await navigating(page, () => page.locator('button[type=submit]').click());
        }
      } else {
        const state = await pageState(entry, response, started);
        return {
          ...state,
          ok: false,
          error: `unexpected page at ${state.url} (status ${state.status}): ${state.text.slice(0, 300)}`,
        };
      }
    }
    const state = await pageState(entry, response, started);
    return { ...state, ok: false, error: `no end after 6 pages, at ${state.url}` };
  } catch (error) {
    // Where it broke tells more than the error: the navigations so far come along.
    return { ...(await pageState(entry, null, started)), ok: false, error: String(error?.message ?? error) };
  } finally {
    await undo();
  }
}

async function goto(command) {
  const started = Date.now();
  const entry = await context(command.context ?? 'default');
  entry.navigations.length = 0;
  const response = await entry.page.goto(command.url, { waitUntil: 'load' });
  return pageState(entry, response, started);
}

async function run(command) {
  switch (command.op) {
    case 'sign_in':
      return signIn(command);
    case 'goto':
      return goto(command);
    case 'close_context': {
      const entry = contexts.get(command.context);
      contexts.delete(command.context);
      await entry?.ctx.close();
      return {};
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(command.op)}`);
  }
}

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
    answer = { ok: true, ...(await run(command)) };
  } catch (error) {
    answer = { ok: false, error: String(error?.stack ?? error) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await browser.close();
// Standard input may still be open (the test sent `quit`): nothing else is left to do.
process.exit(0);
