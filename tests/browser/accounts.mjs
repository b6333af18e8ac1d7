// A real browser for the e2e test of the hosted account pages (tests/tests/e2e/account_pages.rs):
// Debian's Chromium, headless, driven by playwright-core. The test talks to it over standard
// input and output, one JSON object a line each way, so that one browser (and its cookies) lives
// across a scenario while the test reads mail, computes TOTP codes and asks the gateway between
// the steps. The pages need no JavaScript: the browser types into their forms and submits them,
// as a person would.
//
//   node accounts.mjs            (CHROMIUM overrides /usr/bin/chromium)
//
// It prints `{"ready":true}` once Chromium runs, then answers each command with one line:
// `{"ok":true, ...}` or `{"ok":false,"error":"..."}`. Commands (`context` names a browser
// context, created on first use: its own cookies, like another browser):
//
//   {"op":"goto","context":"a","url":URL}
//       Navigates; follows redirects.
//   {"op":"submit","context":"a","fields":{NAME:VALUE},"click":"#submit"}
//       Fills the inputs named NAME on the current page, clicks the element `click` (a CSS
//       selector) and waits for the navigation it starts. A missing field or button is an error
//       naming it and the page, not a timeout.
//   {"op":"cookies","context":"a"}
//       `cookies`: the context's cookies, with their attributes.
//   {"op":"close_context","context":"a"}
//   {"op":"quit"}
//
// Every answer of a navigation describes the page it ended on: `url`, `status` (of its
// document), `headers` (of its document's response, names in lower case), `navigations` (every
// document URL requested on the way, redirects included), `ids` (the text of every element with
// an id, by id: `error`, `totp-secret`, `recovery-codes`, …), `text` (the start of the body's
// text) and `ms`.

import { launch, serve } from './chromium.mjs';

const STEP_TIMEOUT_MS = 15_000;

const browser = await launch();

const contexts = new Map();

async function context(name) {
  let entry = contexts.get(name);
  if (!entry) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    entry = { ctx, page, navigations: [] };
    page.on('request', (request) => {
      if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
        entry.navigations.push(request.url());
      }
    });
    contexts.set(name, entry);
  }
  return entry;
}

/** What a navigation answer carries about the page now. */
async function pageState(entry, response, started) {
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
    // Not an HTML page, or no body: the URL, status and headers say enough.
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

async function goto(command) {
  const started = Date.now();
  const entry = await context(command.context ?? 'default');
  entry.navigations.length = 0;
  const response = await entry.page.goto(command.url, { waitUntil: 'load' });
  return pageState(entry, response, started);
}

async function submit(command) {
  const started = Date.now();
  const entry = await context(command.context ?? 'default');
  const { page } = entry;
  entry.navigations.length = 0;
  for (const [name, value] of Object.entries(command.fields ?? {})) {
    const field = page.locator(`[name="${name}"]`);
    if ((await field.count()) !== 1) {
      throw new Error(`no single field name=${name} on ${page.url()}: ${await bodyStart(page)}`);
    }
    await field.fill(String(value));
  }
  const button = page.locator(command.click);
  if ((await button.count()) !== 1) {
    throw new Error(`no single ${command.click} on ${page.url()}: ${await bodyStart(page)}`);
  }
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    button.click(),
  ]);
  return pageState(entry, response, started);
}

async function bodyStart(page) {
  try {
    return (await page.locator('body').innerText({ timeout: 1000 })).slice(0, 300);
  } catch {
    return '(no body)';
  }
}

async function run(command) {
  switch (command.op) {
    case 'goto':
      return goto(command);
    case 'submit':
      return submit(command);
    case 'cookies': {
      const entry = await context(command.context ?? 'default');
      return { cookies: await entry.ctx.cookies() };
    }
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

await serve(browser, run);
