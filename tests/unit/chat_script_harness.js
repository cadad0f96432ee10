// Runs widget_static/chat.js against a tiny fake DOM, fetch, WebSocket and timer queue, then
// plays the scenario named on the command line and prints what the page did as JSON.
// Used by tests/unit/test_chat_script.py (node, no browser, no network).
'use strict';

const fs = require('fs');
const vm = require('vm');
const { webcrypto } = require('crypto');

const [scriptPath, scenario] = process.argv.slice(2);

class Element {
  constructor(id) {
    this.id = id || null; this.children = []; this.parent = null; this.attributes = {};
    this.className = ''; this.hidden = false; this.disabled = false; this.value = '';
    this.listeners = {}; this._text = '';
  }
  get textContent() { return this.children.length ? this.children.map((c) => c.textContent).join('') : this._text; }
  set textContent(v) { this.children = []; this._text = String(v); }
  get firstElementChild() { return this.children[0] || null; }
  get lastElementChild() { return this.children[this.children.length - 1] || null; }
  get previousElementSibling() { return this._sibling(-1); }
  get nextElementSibling() { return this._sibling(1); }
  _sibling(step) { if (!this.parent) return null; const i = this.parent.children.indexOf(this); return this.parent.children[i + step] || null; }
  appendChild(child) { return this.insertBefore(child, null); }
  insertBefore(child, before) {
    if (child.parent) child.remove();
    const i = before ? this.children.indexOf(before) : -1;
    if (i < 0) this.children.push(child); else this.children.splice(i, 0, child);
    child.parent = this; return child;
  }
  remove() { if (this.parent) { this.parent.children.splice(this.parent.children.indexOf(this), 1); this.parent = null; } }
  setAttribute(k, v) { this.attributes[k] = String(v); }
  getAttribute(k) { return k in this.attributes ? this.attributes[k] : null; }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  dispatch(type, event) { (this.listeners[type] || []).forEach((fn) => fn(event)); }
  set innerHTML(_v) { throw new Error('innerHTML used'); }
}

const ids = ['chat-log', 'chat-messages', 'chat-pending', 'chat-status', 'chat-typing',
  'chat-notice', 'chat-human', 'chat-form', 'chat-input', 'chat-send', 'chat-config'];
const elements = Object.fromEntries(ids.map((id) => [id, new Element(id)]));
elements['chat-config'].textContent = JSON.stringify({
  mode: 'site', scope: 'u1a2', siteToken: 'tok', assistantId: null, accent: '#123456',
  operatorName: 'Anna', welcome: 'Hello!'
});

const timers = [];
const sockets = [];
const requests = [];
const responses = {
  'POST /api/site/dialogs': { id: 7, handoff_status: 'none' },
  'GET /api/site/dialogs/7/messages': [
    { id: 1, seq: 1, sender: 'user', text: 'hi', client_message_id: null },
    { id: 2, seq: 2, sender: 'assistant', text: '<b>hello</b>', client_message_id: null }
  ],
  'POST /api/dialogs/7/handoff/request': { status: 'requested', assigned_manager: null }
};
const storage = {};

class FakeSocket {
  constructor(url) { this.url = url; this.readyState = 1; this.sent = []; sockets.push(this); }
  send(data) { this.sent.push(data); }
  frame(obj) { this.onmessage({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
  close(code) { this.readyState = 3; this.onclose({ code }); }
}

const window = {
  crypto: webcrypto,
  localStorage: { getItem: (k) => storage[k] || null, setItem: (k, v) => { storage[k] = v; } },
  location: { protocol: 'https:', host: 'chat.example' },
  WebSocket: FakeSocket,
  fetch: (url, options) => {
    const path = url.split('?')[0];
    requests.push({ method: options.method, url, body: options.body || null });
    const body = responses[`${options.method} ${path}`];
    return Promise.resolve({ ok: body !== undefined, status: body === undefined ? 404 : 200,
      json: () => Promise.resolve(body) });
  },
  setTimeout: (fn, ms) => { timers.push({ fn, ms }); return timers.length; },
  clearTimeout: () => {},
  addEventListener: () => {}
};
const documentStub = {
  getElementById: (id) => elements[id],
  createElement: () => new Element(),
  documentElement: { style: { props: {}, setProperty(k, v) { this.props[k] = v; } } }
};
const context = vm.createContext({ window, document: documentStub, URLSearchParams, JSON,
  Object, Math, Date, String, Number, Uint8Array, Promise, Error });

const flush = () => new Promise((resolve) => setImmediate(resolve));
const texts = () => elements['chat-messages'].children.map((c) => c.lastElementChild.textContent);
const pending = () => elements['chat-pending'].children.map((c) => c.className + '|' + c.textContent);
const socket = () => sockets[sockets.length - 1];
const since = (s) => new URL(s.url).searchParams.get('since');

async function main() {
  vm.runInContext(fs.readFileSync(scriptPath, 'utf8'), context);
  await flush(); await flush(); await flush();
  const out = { accent: documentStub.documentElement.style.props['--accent'] };
  out.firstUrl = socket().url;
  out.historyTexts = texts();
  out.welcomeShown = pending().length;
  socket().frame({ type: 'ready', dialog_id: 7, seq: 2 });
  out.inputEnabled = !elements['chat-input'].disabled;

  if (scenario === 'stream') {
    socket().frame({ type: 'message:new', seq: 2, message: { seq: 2, sender: 'assistant', text: 'dup' } });
    socket().frame({ type: 'message:new', seq: 4, message: { seq: 4, sender: 'assistant', text: 'four' } });
    socket().frame({ type: 'message:new', seq: 3, message: { seq: 3, sender: 'user', text: 'three' } });
    socket().frame({ type: 'typing_start', sender: 'assistant' });
    out.typingShown = !elements['chat-typing'].hidden;
    socket().frame({ type: 'ai_delta', generation_id: 'g1', delta: 'Hel' });
    socket().frame({ type: 'ai_delta', generation_id: 'g1', delta: 'lo <i>' });
    out.streaming = pending();
    socket().frame({ type: 'message:new', seq: 5, message: { seq: 5, sender: 'assistant', text: 'Hello <i>' } });
    socket().frame({ type: 'ai_delta', generation_id: 'g1', delta: 'late' });
    out.afterFinal = pending();
    out.texts = texts();
    socket().frame({ type: 'ping' });
    socket().frame('__ping__');
    out.sent = socket().sent;
  } else if (scenario === 'send') {
    elements['chat-input'].value = '  hello there ';
    elements['chat-form'].dispatch('submit', { preventDefault() {} });
    out.firstSend = socket().sent.map((s) => JSON.parse(s));
    out.pendingMine = pending();
    socket().close(1006);
    out.delays = timers.map((t) => t.ms);
    timers.pop().fn();
    out.reconnectSince = since(socket());
    out.sentBeforeReady = socket().sent.length;
    socket().frame({ type: 'ready', dialog_id: 7, seq: 2 });
    out.resent = socket().sent.map((s) => JSON.parse(s));
    const id = out.resent[0].client_message_id;
    socket().frame({ type: 'message:new', seq: 3, message: { seq: 3, sender: 'user', text: 'hello there', client_message_id: id } });
    out.pendingAfterEcho = pending();
    out.texts = texts();
  } else if (scenario === 'close') {
    socket().close(4008);
    out.slowDelay = timers[timers.length - 1].ms;
    timers.pop().fn();
    socket().close(4009);
    out.replacedDelay = timers[timers.length - 1].ms;
    timers.pop().fn();
    const before = timers.length;
    socket().close(4004);
    out.timersAfterFinal = timers.length - before;
    out.status = elements['chat-status'].textContent;
    out.inputDisabled = elements['chat-input'].disabled;
    out.sockets = sockets.length;
  } else if (scenario === 'handoff') {
    elements['chat-human'].dispatch('click', {});
    await flush(); await flush();
    const call = requests[requests.length - 1];
    out.handoffUrl = call.url;
    out.handoffBody = JSON.parse(call.body);
    out.buttonAfterRequest = [elements['chat-human'].textContent, elements['chat-human'].disabled];
    socket().frame({ type: 'handoff_started', handoff: {}, manager: { id: 3, name: '<Anna>' } });
    out.buttonActive = elements['chat-human'].textContent;
    socket().frame({ type: 'message:new', seq: 3, message: { seq: 3, sender: 'manager', text: 'hi' } });
    out.managerBubble = elements['chat-messages'].lastElementChild.textContent;
    socket().frame({ type: 'handoff_released', handoff: {} });
    out.buttonReleased = [elements['chat-human'].textContent, elements['chat-human'].disabled];
  }
  out.guest = Object.values(storage);
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
