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
// text) and `ms` (tests/browser/chromium.mjs, which also runs `goto`, `close_context` and the
// protocol).

import { Contexts, launch, navigating, pageState, serve } from './chromium.mjs';

const browser = await launch();
const contexts = new Contexts(browser);

async function submit(command) {
  const started = Date.now();
  const entry = await contexts.get(command.context);
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
  const response = await navigating(page, () => button.click());
  return pageState(entry, response, started);
}

async function bodyStart(page) {
  try {
    return (await page.locator('body').innerText({ timeout: 1000 })).slice(0, 300);
  } catch {
    return '(no body)';
  }
}

await serve(browser, contexts, {
  submit,
  async cookies(command) {
    const entry = await contexts.get(command.context);
    return { cookies: await entry.ctx.cookies() };
  },
});
