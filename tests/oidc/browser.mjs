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
// Every answer of a navigation describes the page it ended on as in tests/browser/chromium.mjs
// (`url`, `status`, `headers`, `navigations`, `ids`, `text`, `ms`); that file also launches
// Chromium, runs `goto` and `close_context` and speaks the protocol. `playwright-core` comes from
// tests/browser/node_modules through it (`npm ci` in tests/browser).
//
// Host names other than localhost do not resolve (see the launch flags): the test uses loopback
// addresses only, and the provider's page asks for a web font by name.

import { Contexts, launch, navigating, pageState, serve } from '../browser/chromium.mjs';

const browser = await launch();
const contexts = new Contexts(browser);

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

async function signIn(command) {
  const started = Date.now();
  const entry = await contexts.get(command.context);
  const { page } = entry;
  entry.navigations.length = 0;
  // The callback URLs held back (`stop_at`), by `intercept`.
  entry.held = [];
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

await serve(browser, contexts, { sign_in: signIn });
