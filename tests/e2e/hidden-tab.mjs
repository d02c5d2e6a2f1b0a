// hidden-tab.mjs: how fast the page trains in a tab behind another one, in a Chromium launched
// without playwright (playwright keeps every page visible and switches Chrome's background
// throttling off, so it cannot show what a visitor's hidden tab does). Used by the test "a hidden
// tab trains on" (page.test.mjs) and, run as a script, for BENCHMARKS.md:
//   node tests/e2e/hidden-tab.mjs DIST...    (each DIST a `trunk build` output, side by side)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, CHROMIUM_ARGS, CHROMIUM } from './serve.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Chromium spoken to over the DevTools protocol on a pipe (fds 3 and 4, messages ended by a NUL).
function rawChromium(tmp) {
  const profile = fs.mkdtempSync(path.join(tmp, 'profile-'));
  const proc = spawn(CHROMIUM, [...CHROMIUM_ARGS, '--headless', '--remote-debugging-pipe', `--user-data-dir=${profile}`, 'about:blank'],
    { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });
  const waiting = new Map();
  let id = 0, buf = '';
  proc.stdio[4].on('data', (d) => {
    const parts = (buf + d.toString()).split('\0');
    buf = parts.pop();
    for (const p of parts) {
      const m = JSON.parse(p);
      const w = waiting.get(m.id);
      if (!w) continue;
      waiting.delete(m.id);
      if (m.error) w.reject(new Error(`${w.method}: ${m.error.message}`)); else w.resolve(m.result);
    }
  });
  // A browser that died or never answers fails the caller instead of hanging it.
  proc.on('exit', (code) => { for (const w of waiting.values()) w.reject(new Error(`${w.method}: chromium exited (${code})`)); waiting.clear(); });
  const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
    const n = ++id;
    const timer = setTimeout(() => { waiting.delete(n); reject(new Error(`${method}: no answer from chromium in 60 s`)); }, 60000);
    waiting.set(n, { resolve: (r) => { clearTimeout(timer); resolve(r); }, reject: (e) => { clearTimeout(timer); reject(e); }, method });
    proc.stdio[3].write(JSON.stringify({ id: n, method, params, sessionId }) + '\0');
  });
  return { send, close: () => proc.kill() };
}

// Train on the CPU engine (the sample) at `url`: steps/s over 5 s in front, frames painted over
// 4 s in front, then steps/s over 10 s once another tab is opened in front of it. Each rate
// carries the tab's document.visibilityState.
export async function hiddenTabSpeeds(url, tmp) {
  const { send, close } = rawChromium(tmp);
  try {
    const { targetId } = await send('Target.createTarget', { url: `${url}/?engine=cpu&epochs=200&autostart=1` });
    const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
    // The page is cross-origin isolated (COOP): its navigation may swap the tab into a new
    // process, and until the new document is there it has no context to evaluate in.
    const evaluate = async (expression) => {
      for (let i = 0; ; i++) {
        try {
          return (await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId)).result.value;
        } catch (e) {
          if (i > 100 || !/execution context/.test(e.message)) throw e;
          await sleep(100);
        }
      }
    };
    const look = () => evaluate('({ step: +document.querySelector("#metrics")?.dataset.step || 0, visibility: document.visibilityState })');
    const rate = async (seconds) => {
      const a = await look();
      await sleep(seconds * 1000);
      const b = await look();
      return { steps: (b.step - a.step) / seconds, visibility: b.visibility };
    };
    const end = Date.now() + 60000;
    while ((await look()).step < 50 && Date.now() < end) await sleep(200);
    const shown = await rate(5);
    const frames = await evaluate('new Promise((done) => { let n = 0; const end = performance.now() + 4000; const f = () => (performance.now() < end ? (n++, requestAnimationFrame(f)) : done(n)); requestAnimationFrame(f); })');
    // Another tab in front: the training tab is hidden, as when a visitor switches tabs.
    await send('Target.createTarget', { url: 'about:blank' });
    await sleep(2000);
    const hidden = await rate(10);
    return { shown, frames, hidden };
  } finally {
    close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tabcnn-hidden-'));
  console.log('| build | steps/s in front | frames/s in front | steps/s hidden |\n| --- | ---: | ---: | ---: |');
  for (const dist of process.argv.slice(2)) {
    const { server, url } = await serve(dist);
    const { shown, frames, hidden } = await hiddenTabSpeeds(url, tmp);
    server.close();
    console.log(`| ${dist} | ${shown.steps.toFixed(0)} (${shown.visibility}) | ${(frames / 4).toFixed(1)} | ${hidden.steps.toFixed(0)} (${hidden.visibility}) |`);
  }
  fs.rmSync(tmp, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 }); // a closing browser may still write its profile
}
