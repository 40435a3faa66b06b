// Admin → Authentication → JWT: the settings form (saved all-or-nothing through
// PUT /api/setting, with the API's field errors shown in place), the signing-key
// generator, the group-mappings dialog and the "Test a token" panel (the dry run).
import {
  api, busy, clearFieldErrors, clearNotice, confirmDialog, el, errorMessage, notify,
  openDialog, pageData, reloadWith, showFieldError,
} from './lib.js';

const data = pageData();
const groups = data.groups || [];
const savedMappings = data.mappings || {};
let mappings = clone(savedMappings);

const form = document.getElementById('jwt-form');
const formNotice = document.getElementById('jwt-form-notice');

function clone(value) { return JSON.parse(JSON.stringify(value)); }

function groupName(id) {
  const g = groups.find((x) => x.id === id);
  return g ? g.name : `group ${id} (deleted)`;
}

function sameMappings(a, b) {
  const norm = (m) => JSON.stringify(Object.keys(m).sort().map((k) => [k, [...m[k]].sort((x, y) => x - y)]));
  return norm(a) === norm(b);
}

// ---- the form's values ------------------------------------------------------------

function pemBlocks(text) {
  const trimmed = text.trim();
  if (!trimmed) return [];
  const blocks = trimmed.match(/-----BEGIN [^-]+-----[\s\S]*?-----END [^-]+-----/g);
  return blocks && blocks.length ? blocks : [trimmed];
}

function currentValue(input) {
  switch (input.dataset.kind) {
    case 'bool': return input.checked;
    case 'algorithms':
      return [...input.querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value);
    case 'int': {
      const v = input.value.trim();
      if (v === '') return null;
      return /^-?\d+$/.test(v) ? Number(v) : v;
    }
    case 'pem': return pemBlocks(input.value);
    default: {
      const v = input.value.trim();
      return v === '' ? null : v;
    }
  }
}

function initialValue(input) {
  const raw = input.dataset.initial;
  switch (input.dataset.kind) {
    case 'bool': return raw === 'true';
    case 'algorithms': return JSON.parse(raw);
    case 'int': return raw === '' ? null : Number(raw);
    case 'pem': return pemBlocks(raw);
    default: return raw === '' ? null : raw;
  }
}

function changes() {
  const out = {};
  for (const input of form.querySelectorAll('[data-setting]')) {
    if (input.disabled) continue;
    const key = input.dataset.setting;
    if (input.dataset.kind === 'secret') {
      if (input.value.trim() !== '') out[key] = input.value.trim();
      continue;
    }
    let now = currentValue(input);
    let before = initialValue(input);
    if (input.dataset.kind === 'algorithms') {
      now = [...now].sort();
      before = [...before].sort();
      if (JSON.stringify(now) !== JSON.stringify(before)) out[key] = currentValue(input);
      continue;
    }
    if (JSON.stringify(now) !== JSON.stringify(before)) out[key] = now;
  }
  if (!document.getElementById('edit-mappings').disabled && !sameMappings(mappings, savedMappings)) {
    out['jwt-group-mappings'] = mappings;
  }
  return out;
}

// Editing a field clears its error: the message described the old value.
form.addEventListener('input', (event) => {
  const input = event.target.closest('[data-setting]');
  if (!input || !input.hasAttribute('aria-invalid')) return;
  input.removeAttribute('aria-invalid');
  const slot = document.getElementById(`err-${input.dataset.setting}`);
  if (slot) slot.textContent = '';
  if (!form.querySelector('[aria-invalid]')) clearNotice(formNotice);
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors(form);
  clearNotice(formNotice);
  const body = changes();
  if (Object.keys(body).length === 0) {
    notify(formNotice, 'info', 'Nothing has changed, so there is nothing to save.');
    return;
  }
  await busy(document.getElementById('save'), async () => {
    try {
      await api('PUT', '/api/setting', body);
      reloadWith('Saved. The new settings apply from the next sign-in, on every server.');
    } catch (e) {
      if (e.field) {
        // "jwt-max-age-seconds: must be …" under a field that has a label of its own.
        const prefix = `${e.field}: `;
        const text = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
        const { input } = showFieldError(e.field, text, form);
        notify(formNotice, 'error', `Nothing was saved: ${e.message} Fix the highlighted field and save again.`);
        // A fieldset (the algorithms) cannot take the focus; its first box can.
        const target = input && input.matches('fieldset') ? input.querySelector('input') : input;
        if (target && target.focus) target.focus();
        else formNotice.focus();
      } else {
        notify(formNotice, 'error', `Nothing was saved: ${errorMessage(e)}`);
        formNotice.focus();
      }
    }
  });
});

// ---- signing key ----------------------------------------------------------------------

const keyInput = document.getElementById('jwt-key');
const generate = document.getElementById('generate-key');
const copy = document.getElementById('copy-key');
const keyNotice = document.getElementById('key-notice');

if (generate) {
  generate.addEventListener('click', async () => {
    const replacing = generate.dataset.hasKey === 'true' || keyInput.value.trim() !== '';
    if (replacing) {
      const ok = await confirmDialog({
        title: 'Replace the signing key?',
        message: 'Once you save, identity providers that sign with the current key stop working until you give them the new one: people cannot sign in through SSO in between. '
          + 'People who are already signed in stay signed in.',
        confirm: 'Generate a new key',
        danger: true,
      });
      if (!ok) { generate.focus(); return; }
    }
    await busy(generate, async () => {
      try {
        const { token } = await api('GET', '/api/util/random_token');
        keyInput.value = token;
        keyInput.removeAttribute('aria-invalid');
        generate.textContent = 'Regenerate key';
        if (navigator.clipboard && window.isSecureContext) copy.hidden = false;
        notify(keyNotice, 'warn', 'New key generated (not saved yet). Copy it into your identity provider’s configuration, then press Save.');
        keyInput.focus();
        keyInput.select();
      } catch (e) {
        notify(keyNotice, 'error', `No key was generated: ${errorMessage(e)}`);
      }
    });
  });
}

if (copy) {
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(keyInput.value);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Copy failed: select the key and copy it';
    }
  });
}

// ---- group mappings -------------------------------------------------------------------

const summary = document.getElementById('mappings-summary');
const dialog = document.getElementById('mappings-dialog');
const list = document.getElementById('mapping-list');
const nameInput = document.getElementById('new-mapping-name');
const nameError = document.getElementById('new-mapping-error');
const dialogError = document.getElementById('mappings-dialog-error');
// The dialog's working copy, without a prototype: a group named `__proto__` is a key like any
// other (on a plain object, assigning it would set the object's prototype instead).
let draft = Object.create(null);

function renderSummary() {
  const names = Object.keys(mappings);
  if (names.length === 0) {
    summary.replaceChildren(el('p', { class: 'muted', text: 'No mappings yet: SSO does not change anyone’s groups.' }));
    return;
  }
  const items = names.map((name) => el('li', {},
    el('code', { text: name }), ' → ', mappings[name].map(groupName).join(', ') || '(no groups)'));
  const parts = [el('ul', { id: 'mappings-list-summary' }, items)];
  if (!sameMappings(mappings, savedMappings)) {
    parts.push(el('p', { class: 'notice warn', text: 'Mappings changed: press Save to apply them.' }));
  }
  summary.replaceChildren(...parts);
}

function renderDraft(focusName) {
  dialogError.textContent = '';
  const names = Object.keys(draft);
  if (names.length === 0) {
    list.replaceChildren(el('p', { class: 'muted', text: 'No mappings. Add a JWT group name above.' }));
    return;
  }
  list.replaceChildren(...names.map((name, index) => {
    const ids = draft[name];
    const selectId = `mapping-select-${index}`;
    // All Users (id 1) is never changed by group sync (SPEC §4.5): mapping to it does nothing.
    const available = groups.filter((g) => g.id !== 1 && !ids.includes(g.id));
    const select = el('select', { id: selectId, 'data-mapping': name },
      el('option', { value: '', text: 'Choose a Latchkey group…' }),
      available.map((g) => el('option', { value: String(g.id), text: g.name })));
    const add = el('button', {
      type: 'button', class: 'small', 'data-mapping': name, text: 'Add group',
      'aria-label': `Add group to ${name}`,
      onclick: () => {
        if (!select.value) { select.focus(); return; }
        draft[name].push(Number(select.value));
        renderDraft(name);
      },
    });
    const chips = ids.length
      ? el('ul', { class: 'chips', 'aria-label': `Groups for ${name}` }, ids.map((id) => el('li', { class: 'chip' },
        groupName(id),
        el('button', {
          type: 'button', 'aria-label': `Remove ${groupName(id)} from ${name}`, text: '×',
          onclick: () => { draft[name] = draft[name].filter((x) => x !== id); renderDraft(name); },
        }))))
      : el('p', { class: 'muted small', text: 'No groups yet: choose at least one.' });
    const section = el('section', { class: 'mapping', 'data-mapping-name': name, 'aria-label': `Mapping for ${name}` },
      el('div', { class: 'mapping-head' },
        el('span', { class: 'name' }, el('code', { text: name })),
        el('span', { class: 'spacer' }),
        el('button', {
          type: 'button', class: 'small danger', text: 'Remove mapping', 'aria-label': `Remove mapping ${name}`,
          onclick: () => { delete draft[name]; renderDraft(); nameInput.focus(); },
        })),
      chips,
      el('div', { class: 'row' }, el('label', { class: 'visually-hidden', for: selectId, text: `Latchkey group for ${name}` }), select, add));
    return section;
  }));
  if (focusName !== undefined) {
    const select = list.querySelector(`select[data-mapping="${CSS.escape(focusName)}"]`);
    if (select) select.focus();
  }
}

document.getElementById('edit-mappings').addEventListener('click', () => {
  draft = Object.assign(Object.create(null), clone(mappings));
  nameInput.value = '';
  nameError.textContent = '';
  dialogError.textContent = '';
  renderDraft();
  openDialog(dialog, nameInput);
});

document.getElementById('add-mapping-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = nameInput.value.trim();
  nameError.textContent = '';
  if (!name) {
    nameError.textContent = 'Type the group name exactly as the identity provider sends it.';
    nameInput.focus();
    return;
  }
  if (Object.prototype.hasOwnProperty.call(draft, name)) {
    nameError.textContent = `${name} is already mapped: add groups to it below.`;
    return;
  }
  draft[name] = [];
  nameInput.value = '';
  renderDraft(name);
});

document.getElementById('mappings-cancel').addEventListener('click', () => dialog.close());

document.getElementById('mappings-done').addEventListener('click', () => {
  const empty = Object.keys(draft).filter((name) => draft[name].length === 0);
  if (empty.length) {
    dialogError.textContent = `Choose at least one group for ${empty.join(', ')}, or remove ${empty.length > 1 ? 'those mappings' : 'that mapping'}.`;
    const select = list.querySelector(`select[data-mapping="${CSS.escape(empty[0])}"]`);
    if (select) select.focus();
    return;
  }
  mappings = clone(draft);
  renderSummary();
  dialog.close();
});

renderSummary();

// ---- test a token (dry run) -------------------------------------------------------------

const testForm = document.getElementById('test-form');
const result = document.getElementById('test-result');

const ACTIONS = {
  create: 'would be created (first sign-in)',
  update: 'already has an account, which would be updated',
  refuse: 'would be refused',
};

function renderResult(report) {
  const parts = [];
  if (report.ok) {
    parts.push(el('div', { class: 'notice ok', id: 'test-verdict' },
      el('p', {}, el('strong', { text: 'This token would sign in ' }), el('strong', { text: report.user.email }), '.')));
  } else {
    parts.push(el('div', { class: 'notice error', id: 'test-verdict' },
      el('p', {}, el('strong', { text: 'This token would be refused: ' }), report.message || 'it did not pass the checks.'),
      report.reason ? el('p', { class: 'small' }, 'Reason code ', el('code', { text: report.reason })) : null));
  }
  if (!report.sso_enabled) {
    parts.push(el('p', { class: 'notice warn', text: 'SSO is not active yet, so a real sign-in would be refused with sso_not_configured; this shows what would happen once it is.' }));
  }
  parts.push(el('h3', { text: 'Checks' }));
  parts.push(el('ul', { class: 'check-list', id: 'test-checks' }, (report.checks || []).map((c) => el('li', { 'data-check': c.name, 'data-ok': String(c.ok) },
    el('span', { class: c.ok ? 'mark-ok' : 'mark-fail', 'aria-label': c.ok ? 'passed' : 'failed', text: c.ok ? '✓' : '✗' }),
    el('span', { class: 'mono', text: c.name }),
    el('span', { class: 'detail', text: c.detail })))));
  if (report.user) {
    const u = report.user;
    parts.push(el('h3', { text: 'User' }));
    parts.push(el('dl', { class: 'facts', id: 'test-user' },
      el('dt', { text: 'Email' }), el('dd', { text: u.email }),
      el('dt', { text: 'First name' }), el('dd', { text: u.first_name ?? '(not in the token: left as it is)' }),
      el('dt', { text: 'Last name' }), el('dd', { text: u.last_name ?? '(not in the token: left as it is)' }),
      el('dt', { text: 'Account' }), el('dd', { text: ACTIONS[u.action] || u.action })));
  }
  if (report.login_attributes) {
    const attrs = Object.entries(report.login_attributes);
    parts.push(el('h3', { text: 'Login attributes' }));
    parts.push(attrs.length
      ? el('dl', { class: 'facts', id: 'test-attributes' }, attrs.map(([k, v]) => [el('dt', {}, el('code', { text: k })), el('dd', {}, el('code', { text: JSON.stringify(v) }))]))
      : el('p', { class: 'muted', text: 'None.' }));
  }
  if (report.groups) {
    const g = report.groups;
    const label = (entry) => {
      const name = typeof entry.name === 'string' ? entry.name : groupName(entry.id);
      const from = entry.mapped_from && entry.mapped_from.length ? ` (from ${entry.mapped_from.join(', ')})` : '';
      return name + from;
    };
    parts.push(el('h3', { text: 'Groups' }));
    if (!g.sync) {
      parts.push(el('p', { class: 'muted', id: 'test-groups', text: 'Group synchronisation is off: no group would change.' }));
    } else if (g.claim === null || g.claim === undefined) {
      parts.push(el('p', { class: 'muted', id: 'test-groups', text: 'The token has no groups claim: no group would change.' }));
    } else {
      parts.push(el('dl', { class: 'facts', id: 'test-groups' },
        el('dt', { text: 'Groups claim' }), el('dd', { text: g.claim.length ? g.claim.join(', ') : '(empty)' }),
        el('dt', { text: 'Would add' }), el('dd', { id: 'test-groups-add', text: g.add.length ? g.add.map(label).join(', ') : 'nothing' }),
        el('dt', { text: 'Would remove' }), el('dd', { id: 'test-groups-remove', text: g.remove.length ? g.remove.map(label).join(', ') : 'nothing' }),
        g.kept_last_admin.length ? [el('dt', { text: 'Kept' }), el('dd', { text: 'Administrators (the last active administrator is never removed)' })] : null));
    }
  }
  result.replaceChildren(el('div', { class: 'card', id: 'test-report' }, parts));
}

testForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = document.getElementById('test-token').value.trim();
  if (!token) {
    result.replaceChildren(el('p', { class: 'field-error', text: 'Paste a token first.' }));
    return;
  }
  await busy(document.getElementById('run-test'), async () => {
    try {
      renderResult(await api('POST', '/api/sso/jwt/test', { token }));
    } catch (e) {
      result.replaceChildren(el('div', { class: 'notice error', role: 'alert' }, el('p', { text: `The test could not run: ${errorMessage(e)}` })));
    }
  });
});
