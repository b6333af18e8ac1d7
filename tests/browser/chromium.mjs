// What a test's browser driver needs around its own commands: Debian's Chromium launched
// headless for a closed network, and the line protocol the Rust tests speak to a driver over its
// standard input and output (one JSON object a line each way).

import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

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
      // name fails at once rather than waiting on a closed network. Tests use IP literals.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*',
    ],
  });
}

/**
 * Prints `{"ready":true}`, then answers each command line with one line: `{"ok":true, ...}` with
 * what `run(command)` returned, or `{"ok":false,"error":"..."}`. `{"op":"quit"}` or the end of
 * the input closes `browser` and exits.
 */
export async function serve(browser, run) {
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
}
