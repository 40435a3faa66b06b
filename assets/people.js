// Admin → People: add a person, and the "Manage" dialog (details, password, sessions,
// deactivate / reactivate). Everything goes through the JSON API; the list is re-rendered
// by the server after each change.
import {
  api, busy, clearFieldErrors, clearNotice, confirmDialog, el, errorMessage, notify,
  openDialog, reloadWith, wireCloseButtons,
} from './lib.js';

wireCloseButtons();

// ---- add a person ---------------------------------------------------------------------

const createDialog = document.getElementById('create-dialog');
const createForm = document.getElementById('create-form');
const createNotice = document.getElementById('create-notice');

document.getElementById('add-person').addEventListener('click', () => {
  createForm.reset();
  clearFieldErrors(createForm);
  clearNotice(createNotice);
  openDialog(createDialog, document.getElementById('new-email'));
});

function fieldSlot(form, field) {
  const map = { email: 'new-email', password: 'new-password' };
  return map[field] ? form.querySelector(`#${map[field]}`) : null;
}

createForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors(createForm);
  clearNotice(createNotice);
  const body = {
    email: document.getElementById('new-email').value.trim(),
    first_name: document.getElementById('new-first').value.trim() || null,
    last_name: document.getElementById('new-last').value.trim() || null,
    is_superuser: document.getElementById('new-admin').checked,
  };
  const password = document.getElementById('new-password').value;
  if (password) body.password = password;
  await busy(document.getElementById('create-submit'), async () => {
    try {
      const user = await api('POST', '/api/user', body);
      // The list is in the order people were added: show the new person by name.
      reloadWith(`${user.email} was added.${password ? ' They can sign in with the password you set.' : ' They can sign in through SSO.'}`,
        `/admin/people?q=${encodeURIComponent(user.email)}`);
    } catch (e) {
      const input = e.field && fieldSlot(createForm, e.field);
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        createForm.querySelector(`#err-${input.id}`).textContent = e.message;
        input.focus();
      } else {
        notify(createNotice, 'error', errorMessage(e));
      }
    }
  });
});

// ---- manage a person ------------------------------------------------------------------

const dialog = document.getElementById('user-dialog');
const notice = document.getElementById('user-notice');
let user = null;
let isMe = false;

function sourceText(u) {
  const ways = [];
  if (u.sso_source === 'jwt') ways.push('JWT single sign-on');
  if (u.has_password) ways.push('email and password');
  return ways.length ? ways.join(' and ') : 'nothing yet (no password, never signed in through SSO)';
}

function fill(u) {
  user = u;
  document.getElementById('user-title').textContent = u.common_name;
  document.getElementById('user-status').replaceChildren(u.is_active
    ? el('span', { class: 'badge ok', text: 'Active' })
    : el('span', { class: 'badge danger', text: 'Deactivated' }));
  document.getElementById('user-source').textContent = sourceText(u);
  document.getElementById('user-groups').replaceChildren(...(u.groups || []).map((g) => el('li', { class: 'chip', text: g.name })));
  const attrs = Object.entries(u.login_attributes || {});
  document.getElementById('user-attributes').replaceChildren(attrs.length
    ? el('dl', { class: 'facts' }, attrs.map(([k, v]) => [el('dt', {}, el('code', { text: k })), el('dd', {}, el('code', { text: typeof v === 'string' ? v : JSON.stringify(v) }))]))
    : el('span', { class: 'muted', text: 'None (they come from the SSO token).' }));
  document.getElementById('user-last-login').textContent = u.last_login ? u.last_login.replace('T', ' ').replace('Z', ' UTC') : 'never';
  document.getElementById('edit-email').value = u.email;
  document.getElementById('edit-first').value = u.first_name || '';
  document.getElementById('edit-last').value = u.last_name || '';
  document.getElementById('edit-admin').checked = u.is_superuser;
  document.getElementById('set-password').value = '';
  document.getElementById('deactivate-user').hidden = !u.is_active;
  document.getElementById('reactivate-user').hidden = u.is_active;
}

document.querySelectorAll('.manage-user').forEach((button) => {
  button.addEventListener('click', async () => {
    clearNotice(notice);
    clearFieldErrors(dialog);
    try {
      fill(await api('GET', `/api/user/${button.dataset.userId}`));
      isMe = button.dataset.me === '1';
      openDialog(dialog, document.getElementById('edit-email'));
    } catch (e) {
      notify(document.getElementById('flash'), 'error', `Could not open this person: ${errorMessage(e)}`);
    }
  });
});

let changed = false;
dialog.addEventListener('close', () => {
  if (changed) reloadWith('Changes saved.');
});

document.getElementById('user-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors(dialog);
  clearNotice(notice);
  const body = {
    email: document.getElementById('edit-email').value.trim(),
    first_name: document.getElementById('edit-first').value.trim() || null,
    last_name: document.getElementById('edit-last').value.trim() || null,
    is_superuser: document.getElementById('edit-admin').checked,
  };
  await busy(document.getElementById('save-user'), async () => {
    try {
      fill(await api('PUT', `/api/user/${user.id}`, body));
      changed = true;
      notify(notice, 'ok', 'Details saved.');
    } catch (e) {
      if (e.field === 'email') {
        document.getElementById('edit-email').setAttribute('aria-invalid', 'true');
        document.getElementById('err-edit-email').textContent = e.message;
      } else {
        notify(notice, 'error', `Nothing was changed: ${errorMessage(e)}`);
      }
      document.getElementById('edit-admin').checked = user.is_superuser;
    }
  });
});

document.getElementById('password-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearFieldErrors(dialog);
  clearNotice(notice);
  const input = document.getElementById('set-password');
  await busy(document.getElementById('set-password-button'), async () => {
    try {
      await api('PUT', `/api/user/${user.id}/password`, { password: input.value });
      input.value = '';
      changed = true;
      // "Signs in with" now includes the password; the rest of the form keeps what is typed.
      user.has_password = true;
      document.getElementById('user-source').textContent = sourceText(user);
      notify(notice, 'ok', `The password of ${user.email} is set.`);
    } catch (e) {
      if (e.field === 'password') {
        input.setAttribute('aria-invalid', 'true');
        document.getElementById('err-password').textContent = e.message;
        input.focus();
      } else {
        notify(notice, 'error', `The password was not changed: ${errorMessage(e)}`);
      }
    }
  });
});

document.getElementById('revoke-sessions').addEventListener('click', async (event) => {
  clearNotice(notice);
  const ok = await confirmDialog({
    title: isMe ? 'Sign yourself out everywhere?' : `Sign ${user.email} out everywhere?`,
    message: isMe
      ? 'Every open session of yours ends now, this one included: you will be taken to the sign-in page.'
      : 'Every open session of this person ends now. They can sign in again straight away.',
    confirm: 'End all sessions',
  });
  if (!ok) return;
  await busy(event.target, async () => {
    try {
      const { revoked } = await api('DELETE', `/api/user/${user.id}/sessions`);
      if (isMe) {
        window.location.assign('/auth/login?redirect=%2Fadmin%2Fpeople');
        return;
      }
      notify(notice, 'ok', revoked === 1 ? 'Ended 1 session.' : `Ended ${revoked} sessions.`);
    } catch (e) {
      notify(notice, 'error', errorMessage(e));
    }
  });
});

document.getElementById('deactivate-user').addEventListener('click', async (event) => {
  clearNotice(notice);
  const ok = await confirmDialog({
    title: `Deactivate ${user.email}?`,
    message: 'They are signed out everywhere and cannot sign in again, through SSO or with a password, until you reactivate them. Their account, groups and history are kept.',
    confirm: 'Deactivate',
    danger: true,
  });
  if (!ok) return;
  await busy(event.target, async () => {
    try {
      await api('DELETE', `/api/user/${user.id}`);
      fill(await api('GET', `/api/user/${user.id}`));
      changed = true;
      notify(notice, 'ok', `${user.email} is deactivated.`);
    } catch (e) {
      notify(notice, 'error', `Nothing was changed: ${errorMessage(e)}`);
    }
  });
});

document.getElementById('reactivate-user').addEventListener('click', async (event) => {
  clearNotice(notice);
  await busy(event.target, async () => {
    try {
      fill(await api('PUT', `/api/user/${user.id}/reactivate`));
      changed = true;
      notify(notice, 'ok', `${user.email} is active again and can sign in.`);
    } catch (e) {
      notify(notice, 'error', `Nothing was changed: ${errorMessage(e)}`);
    }
  });
});
