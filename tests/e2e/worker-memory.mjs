// worker-memory.mjs: what the issue-27 link asks of the page's worker, for BENCHMARKS.md. The
// widest network at batch 428 on the CPU engine (`?net=256-256-256-256&batch=428&engine=cpu`):
// refused up front, or trained; then at the largest batch the refusal names: the worker's wasm
// memory after a step and an evaluation (#engine-panel data-heap-mb: a wasm memory never shrinks,
// so this is its peak), the time from Start to the first step, and how a Pause is answered
// (the note at once, the pause after the step in flight).
//   node tests/e2e/worker-memory.mjs DIST    (a `trunk build` output)
import { chromium } from 'playwright-core';
import path from 'node:path';
import { serve, CHROMIUM_ARGS, CHROMIUM } from './serve.mjs';

const dist = path.resolve(process.argv[2] ?? 'dist');
const { server, url } = await serve(dist);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
const state = (page) => page.evaluate(() => ({ ...document.querySelector('#metrics').dataset }));

async function run(batch) {
  const page = await browser.newPage();
  await page.goto(`${url}/?engine=cpu&net=256-256-256-256&batch=${batch}&limit=1280&epochs=5`);
  await page.waitForFunction(() => document.querySelector('#data-status').textContent.startsWith('sample'), null, { timeout: 120000 });
  const t0 = Date.now();
  await page.click('#start');
  await page.waitForFunction(() => ['training', 'error'].includes(document.querySelector('#metrics').dataset.state) && (+document.querySelector('#metrics').dataset.step >= 1 || document.querySelector('#metrics').dataset.state === 'error'), null, { timeout: 1800000 });
  const first = Date.now() - t0;
  const error = await page.textContent('#error');
  if ((await state(page)).state === 'error') {
    await page.close();
    return { batch, refused: error };
  }
  // Past the first evaluation (a quarter epoch) and a refresh of the views.
  await page.waitForFunction(() => document.querySelector('#metrics').dataset.testAccuracy !== '', null, { timeout: 1800000 });
  await page.waitForFunction(() => +document.querySelector('#engine-panel').dataset.heapMb > 0, null, { timeout: 600000 });
  const tp = Date.now();
  await page.click('#pause');
  const note = await page.textContent('#note');
  const noted = Date.now() - tp;
  await page.waitForFunction(() => document.querySelector('#metrics').dataset.state === 'paused', null, { timeout: 1800000 });
  const paused = Date.now() - tp;
  const heap = await page.evaluate(() => document.querySelector('#engine-panel').dataset.heapMb);
  await page.close();
  return { batch, first, heap, note, noted, paused };
}

const wide = await run(428);
console.log(JSON.stringify(wide));
const largest = wide.refused && wide.refused.match(/batch (\d+) fits/);
if (largest) console.log(JSON.stringify(await run(+largest[1])));
await browser.close();
server.close();
