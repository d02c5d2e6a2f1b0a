// bench.mjs: the page in headless Chromium on the full shared CIFAR-10 archive, for the
// figures in BENCHMARKS.md and the README (not a test). Usage:
//   [DIST=build] node tests/e2e/bench.mjs [--seconds S] [--inspect] QUERY...
// Each QUERY (e.g. "batch=4", "batch=64&engine=gpu", "epochs=2&seed=0") opens the page with
// ?data=full&autostart=1&QUERY, waits until the run is done (or S seconds of training), and
// prints the engine, steps, images/s (training chunks only) and the test accuracy. With
// --inspect it clicks the first image of the prediction grid once training runs (the feature
// maps are then refreshed with the grid) and prints what the views and the autosaves cost.
// With --scrub it then pauses, moves the timeline to its middle kept step and prints how long
// the views of that step take (the confusion matrix on 500 test images, then on all).
import { chromium } from 'playwright-core';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, CHROMIUM_ARGS, CHROMIUM } from './serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
let seconds = Infinity;
if (args[0] === '--seconds') { seconds = +args[1]; args.splice(0, 2); }
let inspect = false;
if (args[0] === '--inspect') { inspect = true; args.splice(0, 1); }
let scrub = false;
if (args[0] === '--scrub') { scrub = true; args.splice(0, 1); }
const archive = process.env.CIFAR ?? path.join(ROOT, '..', 'shared', 'data', 'cifar-10-binary.tar.gz');
// DIST=path benchmarks another build (a before/after comparison).
const { server, url } = await serve(process.env.DIST ?? path.join(ROOT, 'dist'), { '/data/cifar-10-binary.tar.gz': archive });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
const metrics = (page) => page.evaluate(() => Object.fromEntries([...document.querySelector('#metrics').attributes]
  .filter((a) => a.name.startsWith('data-')).map((a) => [a.name.slice(5), a.value])));
for (const q of args) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log('pageerror', e.message));
  await page.goto(`${url}/?data=full&autostart=1&${q}`);
  let m = await metrics(page);
  let t0 = null;
  let lastPrint = Date.now();
  while (true) {
    await page.waitForTimeout(500);
    m = await metrics(page);
    if (m.state === 'error') { console.log(q, 'error:', await page.textContent('#error')); break; }
    if (t0 === null && m.state === 'training' && +m.step > 0) {
      t0 = Date.now();
      if (inspect) await page.click('#predictions', { position: { x: 50, y: 50 } });
    }
    if (Date.now() - lastPrint > 30000) { console.log(`  ${q}: epoch ${m.epoch} step ${m.step} loss ${m.loss} test ${m['test-accuracy']} ${m['images-per-second']} images/s`); lastPrint = Date.now(); }
    if (m.state === 'done' || (t0 !== null && (Date.now() - t0) / 1000 > seconds)) break;
  }
  const wall = t0 === null ? 0 : (Date.now() - t0) / 1000;
  console.log(`${q}: engine ${m.engine} (${m.adapter}), ${m.state}, ${m.step} steps in ${wall.toFixed(0)} s wall (evaluations included), ${m['images-per-second']} images/s training, loss ${m.loss}, test accuracy ${m['test-accuracy']}`);
  const share = (sel, k) => page.evaluate(([sel, k]) => document.querySelector(sel).dataset[k], [sel, k]);
  console.log(`  views ${await share('#inspect', 'viewMs')} ms (${(100 * await share('#inspect', 'viewShare')).toFixed(2)} % of training time, image ${await share('#inspect', 'record') || 'none'} followed); autosaves ${await share('#runs-status', 'saveMs')} ms (${(100 * await share('#runs-status', 'saveShare')).toFixed(2)} %)`);
  if (scrub) {
    await page.click('#pause');
    await page.waitForFunction(() => document.querySelector('#metrics').dataset.state === 'paused');
    const steps = (await page.getAttribute('#timeline', 'data-steps')).split(',');
    const i = Math.floor(steps.length / 2);
    const t0 = Date.now();
    await page.$eval('#timeline-slider', (e, i) => { e.value = String(i); e.dispatchEvent(new Event('input')); }, i);
    await page.waitForFunction((s) => document.querySelector('#filters').dataset.what === `weights of step ${s} (the timeline)`, steps[i], { timeout: 60000 });
    const t1 = Date.now();
    await page.waitForFunction(() => document.querySelector('#confusion').dataset.total === '500', null, { timeout: 60000 });
    const t2 = Date.now();
    await page.waitForFunction(() => +document.querySelector('#confusion').dataset.total > 500, null, { timeout: 120000 });
    console.log(`  scrubbed to step ${steps[i]} of ${steps.length} kept: filters, grid and maps in ${t1 - t0} ms, the confusion matrix on 500 images in ${t2 - t0} ms, on all ${await page.getAttribute('#confusion', 'data-total')} in ${Date.now() - t0} ms`);
  }
  await page.close();
}
await browser.close();
server.close();
