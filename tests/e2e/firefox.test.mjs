// firefox.test.mjs: the page's end-to-end tests in a second browser, Debian's Firefox ESR
// (headless, WebGPU switched on with dom.webgpu.enabled), driven by puppeteer-core over
// WebDriver BiDi; nothing downloads a browser. Firefox here has navigator.gpu but no adapter,
// so the page trains on the CPU engine: it must say so in words for a visitor, and the
// controls, the model file and the saved runs must work as in Chromium (page.test.mjs).
//   node tests/e2e/firefox.test.mjs      (after `trunk build --release`; E2E_ONLY as there)
import puppeteer from 'puppeteer-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from './serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tabcnn-firefox-'));
const { server, url } = await serve(path.join(ROOT, 'dist'));
const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: FIREFOX,
  headless: true,
  userDataDir: fs.mkdtempSync(path.join(tmp, 'profile-')),
  extraPrefsFirefox: { 'dom.webgpu.enabled': true, 'dom.webgpu.workers.enabled': true },
});
console.log(`     ${await browser.version()}`);

let failed = false;
async function test(name, fn) {
  if (process.env.E2E_ONLY && !name.includes(process.env.E2E_ONLY)) return;
  const t = Date.now();
  try {
    await fn();
    console.log(`ok   firefox: ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed = true;
    console.log(`FAIL firefox: ${name}: ${e.stack ?? e}`);
  }
}

// A page in a fresh context, with its errors collected and its downloads kept in
// window.__downloads (name -> bytes): the page offers a download through a clicked link.
async function open(query) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.evaluateOnNewDocument(() => {
    window.__downloads = {};
    const click = HTMLAnchorElement.prototype.click;
    HTMLAnchorElement.prototype.click = function () {
      if (this.download) {
        const name = this.download;
        fetch(this.href).then((r) => r.arrayBuffer()).then((b) => { window.__downloads[name] = Array.from(new Uint8Array(b)); });
        return;
      }
      return click.call(this);
    };
  });
  await page.goto(`${url}/${query}`);
  return { page, errors, close: () => context.close() };
}

// #metrics' data- attributes by their names as written ('test-accuracy', 'images-per-second').
const metrics = (page) => page.evaluate(() => Object.fromEntries([...document.querySelector('#metrics').attributes]
  .filter((a) => a.name.startsWith('data-')).map((a) => [a.name.slice(5), a.value])));
const text = (page, sel) => page.evaluate((sel) => document.querySelector(sel).textContent, sel);

async function until(page, pred, what, seconds = 120) {
  const end = Date.now() + seconds * 1000;
  let m;
  while (Date.now() < end) {
    m = await metrics(page);
    if (pred(m)) return m;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${seconds} s waiting for ${what}; metrics ${JSON.stringify(m)}; #error "${await text(page, '#error')}"`);
}

const click = (page, sel) => page.evaluate((sel) => document.querySelector(sel).click(), sel);

// Words a person in a browser cannot act on: the CLI's advice and wgpu's backend list.
const NOT_FOR_A_VISITOR = /apt-get|mesa-vulkan|--engine|not compiled in|Vulkan|wgpu/;

await test('the CPU engine trains, and the page says why in words for a visitor', async () => {
  const { page, errors, close } = await open('?autostart=1&limit=800&epochs=1&lr=0.01');
  const m = await until(page, (m) => m.state === 'done', 'one epoch on 800 images');
  const adapter = await text(page, '#adapter');
  const panel = await text(page, '#engine-panel');
  console.log(`     ${adapter}`);
  console.log(`     ${panel}; ${m['images-per-second']} images/s; test accuracy ${m['test-accuracy']}`);
  assert.equal(m.engine, 'cpu');
  assert.match(adapter, /CPU engine/);
  assert.doesNotMatch(adapter, NOT_FOR_A_VISITOR);
  assert.doesNotMatch(await text(page, '#error'), NOT_FOR_A_VISITOR);
  assert.ok(+m['images-per-second'] > 50, 'it trains');
  assert.ok(+m['test-accuracy'] > 0.1, 'and learns');
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await test('the CPU engine splits a batch of 16 over helper workers on every core (the page is cross-origin isolated)', async () => {
  const { page, errors, close } = await open('?autostart=1&limit=800&epochs=1&lr=0.01&batch=16');
  const m = await until(page, (m) => m.state === 'done', 'one epoch on 800 images at batch 16');
  const [isolated, cores] = await page.evaluate(() => [crossOriginIsolated, navigator.hardwareConcurrency]);
  const threads = await page.evaluate(() => document.querySelector('#engine-panel').dataset.cpuThreads);
  console.log(`     ${cores} cores, isolated ${isolated}: ${await text(page, '#engine-panel')}; test accuracy ${m['test-accuracy']}`);
  assert.ok(isolated, 'served with COOP/COEP');
  assert.equal(+threads, Math.min(cores, 8));
  assert.ok(+m['test-accuracy'] > 0.1, 'it learns');
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await test('controls: evaluate, start, pause/resume, reset', async () => {
  const { page, errors, close } = await open('?limit=400&epochs=200&lr=0.01');
  await until(page, (m) => m.state === 'idle' && m.engine !== '', 'the page to be ready');
  await page.waitForFunction(() => document.querySelector('#data-status').textContent.startsWith('sample'), { timeout: 60000 });
  await click(page, '#evaluate');
  await until(page, (m) => m['test-accuracy'] !== '', 'an evaluation of the untrained network');
  await click(page, '#start');
  await until(page, (m) => m.state === 'training' && +m.step > 20, 'training');
  await click(page, '#pause');
  const paused = await until(page, (m) => m.state === 'paused', 'paused');
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal((await metrics(page)).step, paused.step, 'no steps while paused');
  await click(page, '#pause');
  await until(page, (m) => m.state === 'training' && +m.step > +paused.step, 'resumed');
  await click(page, '#reset');
  await until(page, (m) => m.state === 'idle' && m.step === '0' && m.loss === '', 'reset');
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await test('keep the work: download the model, reload, upload it, and the test accuracy is unchanged', async () => {
  const { page, errors, close } = await open('?lr=0.01&epochs=200&limit=400&autostart=1&seed=5');
  await until(page, (m) => m.state === 'training' && +m.step > 100, 'training');
  await click(page, '#pause');
  await until(page, (m) => m.state === 'paused', 'paused');
  const step = (await metrics(page)).step;
  // The metrics may still show an earlier evaluation's accuracy: wait for this one's answer
  // (every evaluation redraws the confusion matrix), however long the worker takes to get to it.
  await page.evaluate(() => {
    window.evaluations = 0;
    new MutationObserver(() => window.evaluations++).observe(document.querySelector('#confusion'), { attributes: true, attributeFilter: ['data-total'] });
  });
  await click(page, '#evaluate');
  await page.waitForFunction(() => window.evaluations > 0, { timeout: 300000 });
  const before = await until(page, (m) => m.state === 'paused' && m['test-accuracy'] !== '' && m.step === step, 'evaluated');
  await click(page, '#download');
  const name = `tabcnn-lenet-step${before.step}.safetensors`;
  await page.waitForFunction((n) => window.__downloads[n], { timeout: 30000 }, name);
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.from(await page.evaluate((n) => window.__downloads[n], name)));
  console.log(`     ${name}: ${fs.statSync(file).size} bytes; test accuracy ${before['test-accuracy']}`);
  await page.goto(`${url}/?lr=0.01&epochs=200&limit=400&seed=5`);
  await until(page, (m) => m.state === 'idle' && m.engine !== '', 'the reloaded page');
  await page.waitForFunction(() => document.querySelector('#data-status').textContent.startsWith('sample'), { timeout: 60000 });
  await (await page.$('#upload')).uploadFile(file);
  const after = await until(page, (m) => m['test-accuracy'] !== '', 'the uploaded model evaluated');
  assert.ok(+before['test-accuracy'] > 0, `an accuracy was measured (${before['test-accuracy']})`);
  assert.equal(after['test-accuracy'], before['test-accuracy'], 'the same test accuracy');
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await test('a reload keeps the run: saved in IndexedDB, offered, resumed from the last save', async () => {
  const { page, errors, close } = await open('?lr=0.01&epochs=30&limit=400&seed=4&autostart=1');
  await page.waitForFunction(() => +document.querySelector('#runs-status').dataset.savedStep > 20, { timeout: 120000 });
  const saved = +(await page.evaluate(() => document.querySelector('#runs-status').dataset.savedStep));
  await page.goto(`${url}/?lr=0.01&epochs=30&limit=400&seed=4`);
  await page.waitForSelector('#resume-offer:not([hidden])', { timeout: 30000 });
  await until(page, (m) => m.state === 'idle' && m.engine !== '', 'the reloaded page');
  await click(page, '#resume-last');
  const resumed = await until(page, (m) => m.state === 'paused', 'the run resumed, paused');
  console.log(`     saved at step ${saved} or later, resumed at step ${resumed.step}`);
  assert.ok(+resumed.step >= saved, `resumed from the last save (step ${resumed.step} >= ${saved})`);
  await click(page, '#pause');
  await until(page, (m) => m.state === 'training' && +m.step > +resumed.step, 'training on from there');
  assert.deepEqual(errors, [], 'no console errors');
  await close();
});

await browser.close();
server.close();
fs.rmSync(tmp, { recursive: true, force: true });
if (failed) {
  console.log('some Firefox end-to-end tests failed');
  process.exit(1);
}
console.log('all Firefox end-to-end tests passed');
