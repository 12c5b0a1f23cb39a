// harness.test.mjs - the browser harness's own checks, needing no dashboard: chromium starts
// through playwright-core, checkA11y runs axe-core on a page whose CSP forbids inline scripts
// (as the dashboard's does) and fails on a serious or critical violation, and shot() writes
// PNGs at both widths.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { VIEWPORTS, checkA11y, launchChromium } from './harness.mjs';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'";
const PAGES = {
  '/clean': '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Clean</title></head>' +
    '<body><main><h1>Clean</h1><label for="e">Email</label><input id="e" type="email"></main></body></html>',
  '/broken': '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Broken</title></head>' +
    '<body><main><h1>Broken</h1><img src="x.png"><input type="text"><button></button></main></body></html>',
};

describe('browser harness', () => {
  let site;
  let url;
  let browser;
  before(async () => {
    site = createServer((req, res) => {
      const body = PAGES[req.url];
      res.writeHead(body ? 200 : 404, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': CSP });
      res.end(body ?? 'not found');
    });
    await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${site.address().port}`;
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => site?.close(resolve));
  });

  test('checkA11y passes a clean page under a strict CSP', async () => {
    const page = await browser.newPage();
    await page.goto(`${url}/clean`);
    const result = await checkA11y(page, 'clean');
    assert.ok(result.passes.length > 0, 'axe ran its rules');
    await page.close();
  });

  test('checkA11y fails on serious and critical violations, naming them', async () => {
    const page = await browser.newPage();
    await page.goto(`${url}/broken`);
    await assert.rejects(checkA11y(page, 'broken'), (e) => {
      assert.match(e.message, /on the broken screen/);
      assert.match(e.message, /image-alt \(critical\)/);
      assert.match(e.message, /button-name \(critical\)/);
      assert.match(e.message, /label \(critical\)/);
      return true;
    });
    await page.close();
  });

  test('shot writes a desktop and a phone PNG and restores the viewport', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'koumpa-shots-'));
    process.env.KOUMPA_SCREENSHOTS = dir;
    // SCREENSHOTS is read when the module loads: import a fresh copy for this directory
    const { shot } = await import(`./harness.mjs?dir=${encodeURIComponent(dir)}`);
    const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
    await page.goto(`${url}/clean`);
    await shot(page, 'clean');
    for (const [kind, size] of Object.entries(VIEWPORTS)) {
      const png = await readFile(path.join(dir, `clean-${kind}.png`));
      assert.equal(png.subarray(1, 4).toString(), 'PNG');
      assert.equal(png.readUInt32BE(16), size.width, `${kind} width`);
      assert.equal(png.readUInt32BE(20), size.height, `${kind} height`);
    }
    assert.deepEqual(page.viewportSize(), { width: 900, height: 600 });
    await page.close();
    await rm(dir, { recursive: true, force: true });
  });
});
