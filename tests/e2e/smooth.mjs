// smooth.mjs: how smooth the page is while it trains. Used by the test "smooth while it trains"
// (page.test.mjs) and, run as a script, for BENCHMARKS.md ("The page while it trains"):
//   node tests/e2e/smooth.mjs DIST...    (each DIST a `trunk build` output, side by side)
// For each build and engine (cpu, gpu), while training: frames painted per second in front
// (requestAnimationFrame over 4 s), the longest main-thread task (PerformanceObserver
// 'longtask', Chromium only), the time from a real click on Pause (its input event) to the page
// showing "paused" (median and slowest of three), and the images/s the run reached.
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { serve, CHROMIUM_ARGS, CHROMIUM } from './serve.mjs';

// Installed before the page's own scripts: every long task from the start is kept.
export function watchLongTasks() {
  window.__longTasks = [];
  try {
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push({ start: e.startTime, ms: e.duration }); })
      .observe({ type: 'longtask', buffered: true });
  } catch (e) {
    window.__longTasks = null; // this browser has no long-task timing (Firefox)
  }
}

// The figures of a page that trains now (state "training"), over `seconds` of frames.
export async function smoothness(page, seconds = 4, clicks = 3) {
  const { frames, longest, tasks } = await page.evaluate((seconds) => new Promise((done) => {
    const t0 = performance.now();
    let n = 0;
    const f = () => {
      if (performance.now() - t0 < seconds * 1000) { n++; requestAnimationFrame(f); return; }
      const lt = window.__longTasks;
      const during = lt ? lt.filter((e) => e.start >= t0) : null;
      done({ frames: n, longest: during ? Math.max(0, ...during.map((e) => e.ms)) : null, tasks: during ? during.length : null });
    };
    requestAnimationFrame(f);
  }), seconds);
  // Real clicks (through the browser's input pipeline) on Pause: from the input event to the
  // page showing "paused" (the worker answers between two chunks), then Resume and training
  // again; `clicks` times, the median and the slowest kept.
  const box = await page.locator('#pause').boundingBox();
  const at = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
  const answers = [];
  let ips = 0;
  for (let i = 0; i < clicks; i++) {
    const answered = page.evaluate(() => new Promise((done) => {
      let at = null;
      document.querySelector('#pause').addEventListener('click', (e) => { at = e.timeStamp; }, { once: true, capture: true });
      const m = document.querySelector('#metrics');
      const obs = new MutationObserver(() => {
        if (at !== null && m.dataset.state === 'paused') { obs.disconnect(); done(performance.now() - at); }
      });
      obs.observe(m, { attributes: true });
    }));
    await page.waitForTimeout(300 + 200 * i); // not in step with the page's own rhythm
    await page.mouse.click(at.x, at.y);
    answers.push(await answered);
    ips = Math.max(ips, +(await page.getAttribute('#metrics', 'data-images-per-second')));
    await page.mouse.click(at.x, at.y);
    await page.waitForFunction(() => document.querySelector('#metrics').dataset.state === 'training', null, { timeout: 60000 });
  }
  answers.sort((a, b) => a - b);
  const click = answers[answers.length >> 1];
  const slowest = answers[answers.length - 1];
  return { fps: frames / seconds, longest, tasks, click, slowest, ips };
}

// Open `url` with `query` in a fresh context, wait until it trains, and measure.
export async function measure(browser, url, query) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 1000 } });
  await context.addInitScript(watchLongTasks);
  const page = await context.newPage();
  await page.goto(`${url}/${query}`);
  await page.waitForFunction(() => document.querySelector('#metrics').dataset.state === 'training' && +document.querySelector('#metrics').dataset.step > 20, null, { timeout: 120000 });
  await page.waitForTimeout(1500); // past the first evaluations and the engine measurement
  const m = await smoothness(page);
  await context.close();
  return m;
}

const fmt = (v, d = 1) => (v === null || v === undefined ? 'n/a' : v.toFixed(d));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  console.log('| build | engine | frames/s | longest task (ms) | click to answer, median (slowest) (ms) | images/s |\n| --- | --- | ---: | ---: | ---: | ---: |');
  for (const engine of ['cpu', 'gpu']) {
    for (const dist of process.argv.slice(2)) {
      const { server, url } = await serve(dist);
      const m = await measure(browser, url, `?engine=${engine}&epochs=200&autostart=1`);
      server.close();
      console.log(`| ${dist} | ${engine} | ${fmt(m.fps)} | ${fmt(m.longest, 0)} | ${fmt(m.click, 0)} (${fmt(m.slowest, 0)}) | ${fmt(m.ips, 0)} |`);
    }
  }
  await browser.close();
}
