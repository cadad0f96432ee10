/* ReplyX chat page (served by GET /api/chat-iframe): one visitor's conversation.
 *
 * Flow: keep a guest id in localStorage -> POST the site/widget dialogs door (get or create)
 * -> load the history -> open the dialog's WebSocket with since=<last seq> -> render live
 * frames. Every message is drawn with textContent (never innerHTML) and de-duplicated by its
 * seq; the visitor's own messages carry a client_message_id, so a resend after a reconnect
 * is idempotent. Close codes follow DESIGN §5: no reconnect after 1000/1002/1008/4002/4003/
 * 4004, a long backoff after 4008, at once after 4009, exponential backoff otherwise.
 */
(function () {
  'use strict';

  var RECONNECT_BASE_MS = 1000;
  var RECONNECT_MAX_MS = 10000;
  var RECONNECT_FAST_ATTEMPTS = 5;
  var SLOW_RECONNECT_MS = 30000;
  var SLOW_RECONNECT_JITTER_MS = 30000;
  var START_RETRY_MS = 5000;
  var TYPING_SEND_EVERY_MS = 3000;
  var TYPING_HIDE_AFTER_MS = 10000;
  var NOTICE_HIDE_AFTER_MS = 8000;
  var MAX_TEXT_CHARS = 10000;
  var SENDERS = { user: 1, assistant: 1, manager: 1, system: 1 };
  var FINAL_CLOSE = {
    1000: 'The chat was closed.',
    1002: 'The chat was closed.',
    1008: 'The chat was closed.',
    4002: 'This chat link is no longer valid.',
    4003: 'The chat is not available on this site.',
    4004: 'This conversation is no longer available.'
  };

  var config = JSON.parse(document.getElementById('chat-config').textContent);
  var el = {
    log: document.getElementById('chat-log'),
    messages: document.getElementById('chat-messages'),
    pending: document.getElementById('chat-pending'),
    status: document.getElementById('chat-status'),
    typing: document.getElementById('chat-typing'),
    notice: document.getElementById('chat-notice'),
    human: document.getElementById('chat-human'),
    form: document.getElementById('chat-form'),
    input: document.getElementById('chat-input'),
    send: document.getElementById('chat-send')
  };
  var state = {
    dialogId: null,
    lastSeq: 0,
    seen: {},
    socket: null,
    ready: false,
    attempts: 0,
    stopped: false,
    outbox: [],
    aiBubbles: {},
    droppedGenerations: {},
    handoff: 'none',
    lastTypingSent: 0,
    typingTimer: null,
    noticeTimer: null,
    welcome: null
  };
  var memoryGuestId = null;

  if (config.accent) {
    document.documentElement.style.setProperty('--accent', config.accent);
  }

  // --- small helpers ------------------------------------------------------------------------

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      return window.crypto.randomUUID();
    }
    var bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = [];
    for (var i = 0; i < bytes.length; i++) {
      hex.push((bytes[i] + 0x100).toString(16).slice(1));
    }
    return hex.slice(0, 4).join('') + '-' + hex.slice(4, 6).join('') + '-' +
      hex.slice(6, 8).join('') + '-' + hex.slice(8, 10).join('') + '-' + hex.slice(10).join('');
  }

  function guestId() {
    // One id per credential scope, so two businesses using this page cannot link a visitor.
    var key = 'replyx_guest_id:' + config.scope;
    try {
      var stored = window.localStorage.getItem(key);
      if (stored) {
        return stored;
      }
      var fresh = uuid();
      window.localStorage.setItem(key, fresh);
      return fresh;
    } catch (blocked) {
      // Third-party storage may be blocked: the visitor keeps the chat for this page view.
      memoryGuestId = memoryGuestId || uuid();
      return memoryGuestId;
    }
  }

  var guest = guestId();

  function credentials() {
    var query = new URLSearchParams();
    if (config.mode === 'site') {
      query.set('site_token', config.siteToken);
    } else {
      query.set('assistant_id', String(config.assistantId));
    }
    query.set('guest_id', guest);
    return query;
  }

  function request(method, path, body) {
    var options = { method: method, credentials: 'omit', cache: 'no-store', headers: {} };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    return window.fetch(path + '?' + credentials().toString(), options).then(function (response) {
      if (!response.ok) {
        var failure = new Error('HTTP ' + response.status);
        failure.status = response.status;
        throw failure;
      }
      return response.json();
    });
  }

  function setStatus(text) {
    el.status.textContent = text;
  }

  function showNotice(text) {
    el.notice.textContent = String(text || '');
    el.notice.hidden = !text;
    window.clearTimeout(state.noticeTimer);
    state.noticeTimer = window.setTimeout(function () { el.notice.hidden = true; },
      NOTICE_HIDE_AFTER_MS);
  }

  function setEnabled(enabled) {
    el.input.disabled = !enabled;
    el.send.disabled = !enabled;
    if (!enabled) {
      el.human.disabled = true;
    } else {
      setHandoff(state.handoff);
    }
  }

  function scrollDown() {
    el.log.scrollTop = el.log.scrollHeight;
  }

  // --- drawing messages ----------------------------------------------------------------------

  function bubble(sender, text, author) {
    var kind = SENDERS[sender] ? sender : 'system';
    var node = document.createElement('div');
    node.className = 'msg msg-' + kind;
    if (author) {
      var label = document.createElement('div');
      label.className = 'msg-author';
      label.textContent = author;
      node.appendChild(label);
    }
    var body = document.createElement('div');
    body.className = 'msg-text';
    body.textContent = String(text == null ? '' : text);
    node.appendChild(body);
    return node;
  }

  function insertBySeq(node, seq) {
    // Committed messages stay in seq order even if one arrives late (replay + live overlap).
    node.setAttribute('data-seq', String(seq));
    var after = el.messages.lastElementChild;
    while (after && Number(after.getAttribute('data-seq')) > seq) {
      after = after.previousElementSibling;
    }
    el.messages.insertBefore(node, after ? after.nextElementSibling : el.messages.firstElementChild);
  }

  function renderMessage(message) {
    if (!message || typeof message.seq !== 'number') {
      return;
    }
    if (state.seen[message.seq]) {
      return;
    }
    state.seen[message.seq] = true;
    if (message.seq > state.lastSeq) {
      state.lastSeq = message.seq;
    }
    if (message.client_message_id) {
      confirmSent(message.client_message_id);
    }
    if (message.sender === 'assistant') {
      dropAiBubbles();
    }
    if (message.sender === 'assistant' || message.sender === 'manager') {
      hideTyping();
    }
    if (state.welcome) {
      state.welcome.remove();
      state.welcome = null;
    }
    var author = message.sender === 'manager' ? (config.operatorName || 'Operator') : null;
    insertBySeq(bubble(message.sender, message.text, author), message.seq);
    scrollDown();
  }

  function aiDelta(generationId, delta) {
    if (!generationId || typeof delta !== 'string' || state.droppedGenerations[generationId]) {
      return;
    }
    var node = state.aiBubbles[generationId];
    if (!node) {
      node = bubble('assistant', '', null);
      node.className += ' msg-streaming';
      state.aiBubbles[generationId] = node;
      el.pending.appendChild(node);
    }
    var body = node.lastElementChild;
    body.textContent = body.textContent + delta;
    hideTyping();
    scrollDown();
  }

  function dropAiBubbles() {
    // The final text arrives as message:new; a cancelled or interrupted stream just goes.
    Object.keys(state.aiBubbles).forEach(function (generationId) {
      state.aiBubbles[generationId].remove();
      state.droppedGenerations[generationId] = true;
    });
    state.aiBubbles = {};
  }

  function showTyping(sender) {
    el.typing.textContent = sender === 'manager'
      ? (config.operatorName || 'Operator') + ' is typing…'
      : 'Assistant is typing…';
    el.typing.hidden = false;
    window.clearTimeout(state.typingTimer);
    state.typingTimer = window.setTimeout(hideTyping, TYPING_HIDE_AFTER_MS);
  }

  function hideTyping() {
    el.typing.hidden = true;
  }

  function setHandoff(status, manager) {
    state.handoff = status || 'none';
    if (state.handoff === 'requested') {
      el.human.disabled = true;
      el.human.textContent = 'Waiting for an operator…';
    } else if (state.handoff === 'active') {
      el.human.disabled = true;
      el.human.textContent = manager && manager.name
        ? String(manager.name) + ' has joined the chat'
        : 'An operator has joined the chat';
    } else {
      el.human.disabled = state.dialogId === null;
      el.human.textContent = 'Talk to a human';
    }
  }

  // --- sending -------------------------------------------------------------------------------

  function socketOpen() {
    return state.socket !== null && state.ready && state.socket.readyState === 1;
  }

  function sendFrame(frame) {
    if (state.socket !== null && state.socket.readyState === 1) {
      state.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    }
  }

  function flushOutbox() {
    if (!socketOpen()) {
      return;
    }
    state.outbox.forEach(function (item) {
      if (!item.sent) {
        sendFrame({ type: 'message', text: item.text, client_message_id: item.id });
        item.sent = true;
      }
    });
  }

  function confirmSent(clientMessageId) {
    state.outbox = state.outbox.filter(function (item) {
      if (item.id === clientMessageId) {
        item.node.remove();
        return false;
      }
      return true;
    });
  }

  function submit(event) {
    event.preventDefault();
    var text = el.input.value.trim();
    if (!text || state.stopped) {
      return;
    }
    if (text.length > MAX_TEXT_CHARS) {
      showNotice('The message is too long (at most ' + MAX_TEXT_CHARS + ' characters).');
      return;
    }
    var node = bubble('user', text, null);
    node.className += ' msg-pending';
    el.pending.insertBefore(node, el.pending.firstElementChild);
    state.outbox.push({ id: uuid(), text: text, node: node, sent: false });
    el.input.value = '';
    scrollDown();
    flushOutbox();
  }

  function typed() {
    var now = Date.now();
    if (socketOpen() && now - state.lastTypingSent > TYPING_SEND_EVERY_MS) {
      state.lastTypingSent = now;
      sendFrame({ type: 'typing' });
    }
  }

  function askForHuman() {
    if (state.dialogId === null) {
      return;
    }
    el.human.disabled = true;
    request('POST', '/api/dialogs/' + state.dialogId + '/handoff/request',
      { request_id: uuid(), reason: 'manual' })
      .then(function (handoff) {
        setHandoff(handoff.status, handoff.assigned_manager);
      })
      .catch(function (failure) {
        showNotice(failure.status === 409
          ? 'An operator is already in this conversation.'
          : 'Could not reach an operator. Please try again.');
        setHandoff(state.handoff);
      });
  }

  // --- the socket ----------------------------------------------------------------------------

  function socketUrl() {
    var query = credentials();
    query.set('since', String(state.lastSeq));
    var path = config.mode === 'site' ? '/ws/site/dialogs/' : '/ws/widget/dialogs/';
    var scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
    return scheme + window.location.host + path + state.dialogId + '?' + query.toString();
  }

  function connect() {
    if (state.stopped || state.dialogId === null || state.socket !== null) {
      return;
    }
    var socket;
    try {
      socket = new window.WebSocket(socketUrl());
    } catch (refused) {
      closed(1006);
      return;
    }
    state.socket = socket;
    state.ready = false;
    socket.onmessage = function (event) {
      if (state.socket === socket) {
        handleFrame(event.data);
      }
    };
    socket.onclose = function (event) {
      if (state.socket === socket) {
        state.socket = null;
        state.ready = false;
        closed(event.code);
      }
    };
  }

  function handleFrame(raw) {
    if (raw === '__ping__') {
      sendFrame('__pong__');
      return;
    }
    var frame;
    try {
      frame = JSON.parse(raw);
    } catch (notJson) {
      return;
    }
    if (!frame || typeof frame.type !== 'string') {
      return;
    }
    switch (frame.type) {
      case 'ready':
        state.ready = true;
        state.attempts = 0;
        dropAiBubbles();  // deltas missed while away cannot be pieced together
        setStatus('Online');
        setEnabled(true);
        flushOutbox();
        break;
      case 'message:new':
        renderMessage(frame.message);
        break;
      case 'ai_delta':
        aiDelta(frame.generation_id, frame.delta);
        break;
      case 'typing_start':
        if (frame.sender !== 'user') {
          showTyping(frame.sender);
        }
        break;
      case 'typing_stop':
        hideTyping();
        break;
      case 'handoff_requested':
        setHandoff('requested');
        break;
      case 'handoff_started':
        dropAiBubbles();
        setHandoff('active', frame.manager);
        break;
      case 'handoff_released':
      case 'handoff_cancelled':
      case 'handoff_reset':
        setHandoff('none');
        break;
      case 'message_received':
        showNotice(frame.message);
        break;
      case 'error':
        showNotice(frame.detail || 'Something went wrong.');
        break;
      case 'ping':
        sendFrame({ type: 'pong' });
        break;
      default:
        break;
    }
  }

  function reconnectDelay(code) {
    if (code === 4009) {
      return 0;
    }
    if (code === 4008 || state.attempts >= RECONNECT_FAST_ATTEMPTS) {
      return SLOW_RECONNECT_MS + Math.random() * SLOW_RECONNECT_JITTER_MS;
    }
    var delay = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * Math.pow(2, state.attempts));
    state.attempts += 1;
    return delay;
  }

  function closed(code) {
    state.outbox.forEach(function (item) { item.sent = false; });  // resent after ready
    dropAiBubbles();
    hideTyping();
    if (Object.prototype.hasOwnProperty.call(FINAL_CLOSE, code)) {
      state.stopped = true;
      setEnabled(false);
      setStatus(FINAL_CLOSE[code]);
      return;
    }
    setStatus('Reconnecting…');
    window.setTimeout(connect, reconnectDelay(code));
  }

  // --- start ---------------------------------------------------------------------------------

  function showWelcome() {
    if (config.welcome && el.messages.firstElementChild === null) {
      state.welcome = bubble('assistant', config.welcome, null);
      el.pending.appendChild(state.welcome);
    }
  }

  function start() {
    var base = config.mode === 'site' ? '/api/site/dialogs' : '/api/widget/dialogs';
    setStatus('Connecting…');
    request('POST', base)
      .then(function (dialog) {
        state.dialogId = dialog.id;
        setHandoff(dialog.handoff_status);
        return request('GET', base + '/' + dialog.id + '/messages');
      })
      .then(function (messages) {
        messages.forEach(renderMessage);
        showWelcome();
        connect();
      })
      .catch(function (failure) {
        if (failure.status === 401 || failure.status === 403 || failure.status === 404) {
          state.stopped = true;
          setStatus('The chat is not available right now.');
          return;
        }
        setStatus('Cannot reach the chat, retrying…');
        window.setTimeout(start, START_RETRY_MS);
      });
  }

  el.form.addEventListener('submit', submit);
  el.input.addEventListener('input', typed);
  el.input.addEventListener('keydown', function (event) {
    if (event.key === 'Enter' && !event.shiftKey) {
      submit(event);
    }
  });
  el.human.addEventListener('click', askForHuman);
  window.addEventListener('online', function () {
    if (!state.stopped && state.socket === null && state.dialogId !== null) {
      connect();
    }
  });
  start();
}());
