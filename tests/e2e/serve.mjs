// serve.mjs: a small static file server for the built page (dist/), for the tests and the
// in-browser benchmark. Files under extra[urlPath] are served from elsewhere (the full
// archive from ../shared) without copying them into dist/. It sends the cross-origin isolation
// headers scripts/serve.sh sends (COOP/COEP: the CPU engine's helper workers need them) unless
// told { isolated: false } (or ISOLATED=0), as a static host without them.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css',
  '.gz': 'application/gzip', '.bin': 'application/octet-stream', '.txt': 'text/plain', '.md': 'text/plain' };

export const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

export function serve(root, extra = {}, port = 0, { isolated = process.env.ISOLATED !== '0' } = {}) {
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = extra[url] ?? path.join(root, path.normalize(url).replace(/^(\.\.[/\\])+/, ''));
    if (!extra[url] && url.endsWith('/')) file = path.join(file, 'index.html');
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) { res.writeHead(404, { 'content-type': 'text/plain' }); res.end(`not found: ${url}`); return; }
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'content-length': st.size, ...(isolated ? ISOLATION : {}) });
      fs.createReadStream(file).pipe(res);
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

// The flags every run of Debian's Chromium here needs: WebGPU (SwiftShader, no GPU), and no
// calls home on a machine without internet.
export const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
