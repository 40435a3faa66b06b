// Helpers shared by the admin pages: JSON calls to Latchkey's API, notices, inline field
// errors, a confirmation dialog and a one-shot "flash" message that survives a reload.
// Plain ES module, no build step.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `The server answered ${status}.`);
    this.status = status;
    this.code = (body && body.error) || 'unknown';
    this.field = body && body.field;
    this.requestId = body && body.request_id;
  }
}

// Same-origin fetch with the session cookie; the browser adds Origin, which the API's
// CSRF check expects for changes.
export async function api(method, path, body) {
  const options = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, options);
  } catch {
    throw new ApiError(0, { error: 'network', message: 'The server could not be reached. Check the connection and try again; nothing was changed.' });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    if (res.status === 401 && data && data.error === 'unauthenticated') {
      data.message = 'Your session has ended. Sign in again in another tab, then retry.';
    }
    throw new ApiError(res.status, data || {});
  }
  return data;
}

// el('p', {class: 'x', text: 'hi'}, child, …): builds DOM without innerHTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function errorMessage(error) {
  if (error instanceof ApiError) {
    const id = error.requestId ? ` (request id ${error.requestId})` : '';
    return error.message + id;
  }
  return String(error && error.message ? error.message : error);
}

// Shows a notice in a box: kind is 'ok', 'error', 'warn' or 'info'.
export function notify(box, kind, ...content) {
  // A message of an earlier action (shown after a reload) would sit beside this one.
  const flash = document.getElementById('flash');
  if (flash && flash !== box) clearNotice(flash);
  box.className = `notice ${kind}`;
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  box.replaceChildren(...content.map((c) => (c instanceof Node ? c : el('p', { text: c }))));
  box.hidden = false;
}

export function clearNotice(box) {
  box.hidden = true;
  box.replaceChildren();
}

// Marks the input bound to `field` as invalid and shows the message under it.
export function showFieldError(field, message, root = document) {
  const slot = root.querySelector(`#err-${CSS.escape(field)}`);
  const input = root.querySelector(`[data-setting="${CSS.escape(field)}"]`) || root.querySelector(`[data-field="${CSS.escape(field)}"]`);
  if (slot) slot.textContent = message;
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    const details = input.closest('details');
    if (details) details.open = true;
  }
  return { slot, input };
}

export function clearFieldErrors(root = document) {
  root.querySelectorAll('.field-error').forEach((e) => { e.textContent = ''; });
  root.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
}

// A modal question with Cancel / confirm buttons; resolves true when confirmed.
export function confirmDialog({ title, message, confirm = 'Continue', danger = false }) {
  const dialog = document.getElementById('confirm-dialog');
  dialog.querySelector('#confirm-title').textContent = title;
  dialog.querySelector('#confirm-message').textContent = message;
  const ok = dialog.querySelector('#confirm-ok');
  ok.textContent = confirm;
  ok.className = danger ? 'danger solid' : 'primary';
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    dialog.querySelector('#confirm-cancel').focus();
  });
}

// Opens a <dialog> and gives focus back to the opener when it closes.
export function openDialog(dialog, focusTarget) {
  const opener = document.activeElement;
  dialog.addEventListener('close', () => {
    if (opener && document.contains(opener)) opener.focus();
  }, { once: true });
  dialog.showModal();
  if (focusTarget) focusTarget.focus();
}

// Wires every `.close-dialog` button to close its dialog.
export function wireCloseButtons(root = document) {
  root.querySelectorAll('.close-dialog').forEach((b) => {
    b.addEventListener('click', () => b.closest('dialog').close());
  });
}

const FLASH_KEY = 'latchkey.flash';

// Reloads the page (or goes to `href`) and shows `message` once it has loaded.
export function reloadWith(message, href) {
  try { sessionStorage.setItem(FLASH_KEY, message); } catch { /* private mode: no flash */ }
  if (href) window.location.assign(href); else window.location.reload();
}

function showFlash() {
  let message = null;
  try {
    message = sessionStorage.getItem(FLASH_KEY);
    sessionStorage.removeItem(FLASH_KEY);
  } catch { /* ignore */ }
  const box = document.getElementById('flash');
  if (message && box) notify(box, 'ok', message);
}

export function pageData() {
  const node = document.getElementById('page-data');
  return node ? JSON.parse(node.textContent) : {};
}

// Disables a button while a request runs, so a double click cannot send twice. Disabling
// the focused button drops the focus to the page; it is given back unless the work moved it.
export async function busy(button, work) {
  const hadFocus = document.activeElement === button;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    const lost = !document.activeElement || document.activeElement === document.body;
    if (hadFocus && lost && document.contains(button) && button.offsetParent !== null) button.focus();
  }
}

showFlash();
