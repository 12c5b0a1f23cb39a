// apps.mjs - what the fake model "writes" in the browser suite: the model's text with
// <file path="..."> blocks (gen/fileblocks.h's format), and the scenario of each prompt.
import { byPrompt } from './harness.mjs';

/** A sentence outside every file block: it appears once in the streamed text. */
export const INTRO = 'Here is a tiny counter, written for the browser suite.';
export const INDEX =
  '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Counter</title>' +
  '<link rel="stylesheet" href="style.css"></head>\n<body><main><h1>Counter app</h1>' +
  '<button id="b" type="button">0</button></main><script src="app.js"></script></body></html>';
export const CSS = 'body { font-family: sans-serif; }';
export const JS = "let n = 0;\ndocument.getElementById('b').onclick = (e) => { e.target.textContent = ++n; };";
export const APP =
  `${INTRO}\n<file path="index.html">\n${INDEX}\n</file>\n<file path="style.css">\n${CSS}\n</file>\n` +
  `<file path="app.js">\n${JS}\n</file>\nClick the button.\n`;
/** The follow-up: app.js changed, about.html added, style.css deleted. */
export const JS2 = "let n = 10;\ndocument.getElementById('b').onclick = (e) => { e.target.textContent = --n; };";
export const ABOUT = '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>About</title></head><body><h1>About</h1></body></html>';
export const UPDATE =
  `Now it counts down, with an about page.\n<file path="app.js">\n${JS2}\n</file>\n` +
  `<file path="about.html">\n${ABOUT}\n</file>\n<delete path="style.css"/>\n`;

/** An app that keeps what it saw in localStorage and shows it: "owner=<title of the last writer> visits=<n>". */
export function storageApp(title) {
  const index =
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>\n` +
    `<body><main><h1>${title}</h1><p id="out">loading</p></main><script src="app.js"></script></body></html>`;
  const js =
    "const seen = localStorage.getItem('koumpa-test-owner');\n" +
    "const visits = Number(localStorage.getItem('koumpa-test-visits') || 0) + 1;\n" +
    "localStorage.setItem('koumpa-test-owner', document.title);\n" +
    "localStorage.setItem('koumpa-test-visits', String(visits));\n" +
    "document.getElementById('out').textContent = 'owner=' + seen + ' visits=' + visits;\n";
  return `Storage app ${title}.\n<file path="index.html">\n${index}\n</file>\n<file path="app.js">\n${js}\n</file>\n`;
}

/** The scenario of each prompt the suite sends (harness.mjs byPrompt); any other prompt gets APP at once. */
export const PROMPTS = {
  live: 'A counter you can click',
  update: 'Make it count down and add an about page',
  storeA: 'A notebook that remembers',
  storeB: 'A scoreboard that remembers',
};
export const SCENARIOS = byPrompt(
  [
    [PROMPTS.update, { type: 'text', text: UPDATE }],
    // the stream's last chunk waits for anthropic.openGate('live'): the text and files are out, the end is not
    [PROMPTS.live, { type: 'text', text: APP, gate: 'live' }],
    [PROMPTS.storeA, { type: 'text', text: storageApp('Store A') }],
    [PROMPTS.storeB, { type: 'text', text: storageApp('Store B') }],
  ],
  { type: 'text', text: APP },
);
