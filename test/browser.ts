// The one place the tests find a browser. In order:
//   1. CHROMIUM_PATH, when set (an error if it names no file: a typo should not silently fall through);
//   2. a system Chromium on the PATH (chromium, chromium-browser, google-chrome-stable, google-chrome);
//   3. the headless Chromium shipped inside the npm dev dependency @sparticuz/chromium, which
//      `npm install` brings, so `npm install && npm test` works on a machine with no browser.
// TYPELENS_NO_SYSTEM_CHROMIUM=1 skips 1 and 2 (to check the fresh-machine path on a machine that has one).
// @sparticuz/chromium unpacks its binary into the OS temp dir (/tmp/chromium) on first use and reuses it after.
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { chromium as playwright, type Browser } from 'playwright-core';

export interface ChromiumChoice {
  executablePath: string;
  args: string[];
  /** where it came from, for messages */
  source: string;
}

const SYSTEM_NAMES = ['chromium', 'chromium-browser', 'google-chrome-stable', 'google-chrome'];

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

// Running as root (CI, containers) Chromium refuses to start with its sandbox on.
const SYSTEM_ARGS = ['--no-sandbox'];

export async function findChromium(): Promise<ChromiumChoice> {
  const skipSystem = process.env.TYPELENS_NO_SYSTEM_CHROMIUM === '1';
  if (!skipSystem) {
    const fromEnv = process.env.CHROMIUM_PATH;
    if (fromEnv) {
      if (!existsSync(fromEnv)) throw new Error(`CHROMIUM_PATH=${fromEnv} does not exist`);
      return { executablePath: fromEnv, args: SYSTEM_ARGS, source: 'CHROMIUM_PATH' };
    }
    for (const name of SYSTEM_NAMES) {
      const p = onPath(name);
      if (p) return { executablePath: p, args: SYSTEM_ARGS, source: `${name} on the PATH` };
    }
  }
  let bundled: typeof import('@sparticuz/chromium').default;
  try {
    bundled = (await import('@sparticuz/chromium')).default;
  } catch (e) {
    throw new Error(
      `no Chromium found: CHROMIUM_PATH unset${skipSystem ? ' (system lookup skipped)' : ''}, none of ${SYSTEM_NAMES.join(', ')} on the PATH, ` +
        `and the dev dependency @sparticuz/chromium could not be loaded (${String(e)}); run npm install, or set CHROMIUM_PATH`,
      { cause: e },
    );
  }
  const executablePath = await bundled.executablePath();
  return { executablePath, args: bundled.args, source: '@sparticuz/chromium (npm)' };
}

/**
 * Launch a headless Chromium found by findChromium(). `isolation`: leave out the switches that
 * keep a page from being cross-origin isolated (@sparticuz/chromium's --single-process, made for
 * Lambda, never grants crossOriginIsolated and dies when a page closes), for pages that need threads.
 */
export async function launchChromium(
  opts: { isolation?: boolean } = {},
): Promise<{ browser: Browser; choice: ChromiumChoice }> {
  const choice = await findChromium();
  const args = opts.isolation ? choice.args.filter((a) => a !== '--single-process') : choice.args;
  try {
    const browser = await playwright.launch({
      executablePath: choice.executablePath,
      headless: true,
      args,
    });
    return { browser, choice };
  } catch (e) {
    throw new Error(`could not launch Chromium from ${choice.source} (${choice.executablePath}): ${String(e)}`, {
      cause: e,
    });
  }
}
