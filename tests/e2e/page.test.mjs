// page.test.mjs: the in-tab app end to end, in Debian's headless Chromium driven by
// playwright-core (WebGPU through SwiftShader, no GPU). Serves dist/ (built by
// `trunk build --release`), so run it through scripts/test-web.sh. Screenshots go to
// target/e2e/. Exits non-zero on the first failed check.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { serve, CHROMIUM_ARGS, CHROMIUM } from './serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = path.join(ROOT, 'dist');
const SHOTS = path.join(ROOT, 'target', 'e2e');
fs.mkdirSync(SHOTS, { recursive: true });

// A small archive in the official layout (the bundled sample), served as the "full" dataset.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tabcnn-e2e-'));
const archive = path.join(tmp, 'cifar-10-binary.tar.gz');
execFileSync('tar', ['czf', archive, '-C', path.join(ROOT, 'data', 'sample'), 'cifar-10-batches-bin']);
const { server, url } = await serve(DIST, { '/data/cifar-10-binary.tar.gz': archive });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });

let failed = false;
async function test(name, fn) {
  const t = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}: ${e.stack ?? e}`);
  }
}

// A page with its console errors collected.
async function open(query, { noWebGpu = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 1000 } });
  if (noWebGpu) {
    await context.addInitScript(() => { delete Navigator.prototype.gpu; });
  }
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${url}/${query}`);
  return { page, errors, close: () => context.close() };
}

const metrics = (page) => page.evaluate(() => {
  const m = document.querySelector('#metrics');
  return Object.fromEntries([...m.attributes].filter((a) => a.name.startsWith('data-')).map((a) => [a.name.slice(5), a.value]));
});

// Poll #metrics until `pred` holds; returns the metrics. Fails with the last metrics seen.
async function until(page, pred, what, seconds = 120) {
  const end = Date.now() + seconds * 1000;
  let m;
  while (Date.now() < end) {
    m = await metrics(page);
    if (pred(m)) return m;
    await page.waitForTimeout(200);
  }
  const err = await page.textContent('#error');
  throw new Error(`timed out after ${seconds} s waiting for ${what}; metrics ${JSON.stringify(m)}; #error "${err}"`);
}

// Pixels of the prediction grid: drawn (not blank) and with green/red verdict frames.
const gridPixels = (page) => page.evaluate(() => {
  const c = document.querySelector('#predictions');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let drawn = 0, green = 0, red = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0) drawn++;
    if (d[i] === 0x1f && d[i + 1] === 0x8a && d[i + 2] === 0x3a) green++;
    if (d[i] === 0xc6 && d[i + 1] === 0x28 && d[i + 2] === 0x28) red++;
  }
  return { drawn, green, red, total: d.length / 4 };
});

await test('WebGPU: a link presets the controls, training on the sample learns, the grid is drawn, no console errors', async () => {
  const { page, errors, close } = await open('?engine=gpu&lr=0.01&epochs=2&batch=4&seed=3&autostart=1');
  assert.equal(await page.inputValue('#lr'), '0.01');
  assert.equal(await page.inputValue('#epochs'), '2');
  assert.equal(await page.inputValue('#seed'), '3');
  const first = await until(page, (m) => m.state === 'training' && m.loss !== '', 'the first loss');
  assert.equal(first.engine, 'gpu', `the GPU engine (adapter "${first.adapter}")`);
  console.log(`     adapter: ${first.adapter}`);
  // Losses of the early and the late chunks (each a mean over a few steps).
  const losses = [];
  let last = '';
  const done = await until(page, (m) => {
    if (m.step !== last && m.loss !== '') { losses.push({ step: +m.step, loss: +m.loss }); last = m.step; }
    return m.state === 'done';
  }, 'the end of 2 epochs on the sample', 400);
  const early = losses.filter((l) => l.step <= 100).map((l) => l.loss);
  const late = losses.slice(-8).map((l) => l.loss);
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  console.log(`     loss ${mean(early).toFixed(3)} (steps <= 100) -> ${mean(late).toFixed(3)} (last 8 readings); test accuracy ${done['test-accuracy']}; ${done['images-per-second']} images/s`);
  assert.ok(early.length >= 2 && late.length >= 4, `enough readings (${losses.length})`);
  assert.ok(mean(late) < mean(early) - 0.05, 'the loss fell');
  assert.equal(done.step, '1000', '2 epochs of 500 steps');
  assert.ok(+done['test-accuracy'] > 0.15, `test accuracy ${done['test-accuracy']} beats chance (0.10)`);
  const g = await gridPixels(page);
  console.log(`     prediction grid: ${g.drawn} of ${g.total} pixels drawn, ${g.green} green and ${g.red} red frame pixels`);
  assert.ok(g.drawn > g.total * 0.3 && g.green + g.red > 20 * 300, 'the prediction grid shows 20 images with verdicts');
  assert.ok(g.green > 0, 'some predictions are right');
  await page.screenshot({ path: path.join(SHOTS, 'webgpu-trained.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await test('controls: evaluate, start, pause/resume, reset; a corrupt archive and a missing one are errors that lose nothing', async () => {
  // Enough epochs that the run is still going through every check below (the CPU engine is fast).
  const { page, errors, close } = await open('?limit=400&epochs=200&lr=0.01');
  await until(page, (m) => m.state === 'idle' && m.engine !== '', 'the page to be ready');
  await page.waitForFunction(() => document.querySelector('#data-status').textContent.startsWith('sample'));
  await page.click('#evaluate');
  const ev = await until(page, (m) => m['test-accuracy'] !== '', 'an evaluation of the untrained network');
  console.log(`     untrained: test accuracy ${ev['test-accuracy']} on the ${ev.engine.toUpperCase()} engine`);
  await page.click('#start');
  await until(page, (m) => m.state === 'training' && +m.step > 20, 'training');
  await page.click('#pause');
  const paused = await until(page, (m) => m.state === 'paused', 'paused');
  await page.waitForTimeout(1000);
  assert.equal((await metrics(page)).step, paused.step, 'no steps while paused');
  await page.click('#pause');
  await until(page, (m) => m.state === 'training' && +m.step > +paused.step, 'resumed');
  // A corrupt archive (a gzip stream cut in the middle) picked from disk.
  const good = fs.readFileSync(archive);
  await page.setInputFiles('#file', { name: 'cifar-10-binary.tar.gz', mimeType: 'application/gzip', buffer: good.subarray(0, good.length >> 1) });
  const bad = await until(page, (m) => m.state === 'error', 'the corrupt archive to be refused');
  const msg = await page.textContent('#error');
  console.log(`     #error: ${msg}`);
  assert.match(msg, /cifar-10-binary\.tar\.gz: corrupt or truncated archive/);
  assert.ok(await page.isVisible('#error'));
  // Not an archive at all.
  await page.setInputFiles('#file', { name: 'photo.png', mimeType: 'image/png', buffer: Buffer.from('\x89PNG\r\n\x1a\n not an archive', 'binary') });
  await page.waitForFunction(() => document.querySelector('#error').textContent.includes('photo.png: not a gzip archive'));
  // Training continues from where it was.
  await page.click('#start');
  const after = await until(page, (m) => m.state === 'training' && +m.step > +bad.step + 10, 'training again after the errors');
  assert.ok(+after.step > +bad.step, `continued from step ${bad.step}, not from 0`);
  assert.ok(!(await page.isVisible('#error')), 'the error is cleared once training goes on');
  // The "full" dataset from the page's server (here the sample packed as the official archive).
  await page.selectOption('#dataset', 'full');
  await page.waitForFunction(() => /^data\/cifar-10-binary\.tar\.gz: 2000 training records.*first 400 images/.test(document.querySelector('#data-status').textContent), null, { timeout: 60000 });
  const fresh = await until(page, (m) => m.state === 'idle' && m.step === '0', 'a new run on the new dataset');
  assert.equal(fresh['test-accuracy'], '');
  await page.click('#start');
  await until(page, (m) => m.state === 'training' && +m.step > 5, 'training on the fetched archive');
  await page.click('#reset');
  await until(page, (m) => m.state === 'idle' && m.step === '0' && m.loss === '', 'reset');
  await page.screenshot({ path: path.join(SHOTS, 'controls.png'), fullPage: true });
  // Console errors: only the 404-free, panic-free kind are allowed (the failed loads above are
  // reported in the page, not as exceptions).
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await test('a missing full archive says where to put it', async () => {
  const { server: bare, url: bareUrl } = await serve(DIST);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${bareUrl}/?data=full`);
  await page.waitForFunction(() => document.querySelector('#error').textContent.includes('data/cifar-10-binary.tar.gz: not on this server'), null, { timeout: 60000 });
  const msg = await page.textContent('#error');
  console.log(`     #error: ${msg}`);
  assert.match(msg, /see the README/);
  // The sample still trains.
  await page.click('#start');
  await until(page, (m) => m.state === 'training' && +m.step > 5, 'training on the sample');
  await context.close();
  bare.close();
});

await test('without WebGPU the CPU engine trains', async () => {
  const { page, errors, close } = await open('?autostart=1&limit=800&epochs=1&lr=0.01', { noWebGpu: true });
  const m = await until(page, (m) => m.state === 'done', 'one epoch on 800 images on the CPU engine', 120);
  assert.equal(m.engine, 'cpu');
  const adapter = await page.textContent('#adapter');
  console.log(`     ${adapter}; ${m['images-per-second']} images/s; test accuracy ${m['test-accuracy']}`);
  assert.match(adapter, /no WebGPU/);
  assert.equal(m.step, '200');
  assert.ok(Number.isFinite(+m.loss) && +m.loss < 2.35, `loss ${m.loss}`);
  assert.ok(+m['test-accuracy'] > 0.1, `test accuracy ${m['test-accuracy']}`);
  await page.screenshot({ path: path.join(SHOTS, 'cpu-engine.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await browser.close();
server.close();
fs.rmSync(tmp, { recursive: true, force: true });
if (failed) {
  console.log('some end-to-end tests failed');
  process.exit(1);
}
console.log('all end-to-end tests passed');
