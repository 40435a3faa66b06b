// Admin → Groups: create a group; on a group's page rename, delete, find people and add
// them, remove members. Changes go through the JSON API, then the server re-renders.
import {
  api, busy, clearNotice, confirmDialog, el, errorMessage, notify, pageData, reloadWith,
} from './lib.js';

const createForm = document.getElementById('create-group-form');
if (createForm) {
  createForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = document.getElementById('group-name');
    const error = document.getElementById('err-group-name');
    error.textContent = '';
    input.removeAttribute('aria-invalid');
    await busy(document.getElementById('create-group'), async () => {
      try {
        const group = await api('POST', '/api/permissions/group', { name: input.value });
        reloadWith(`The group ${group.name} was created.`);
      } catch (e) {
        input.setAttribute('aria-invalid', 'true');
        error.textContent = errorMessage(e);
        input.focus();
      }
    });
  });
}

const group = pageData();

const renameForm = document.getElementById('rename-form');
if (renameForm) {
  renameForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = document.getElementById('rename-name');
    const error = document.getElementById('err-rename');
    error.textContent = '';
    await busy(document.getElementById('rename-group'), async () => {
      try {
        const renamed = await api('PUT', `/api/permissions/group/${group.id}`, { name: input.value });
        reloadWith(`Renamed to ${renamed.name}.`);
      } catch (e) {
        input.setAttribute('aria-invalid', 'true');
        error.textContent = errorMessage(e);
        input.focus();
      }
    });
  });
}

const deleteButton = document.getElementById('delete-group');
if (deleteButton) {
  deleteButton.addEventListener('click', async () => {
    const ok = await confirmDialog({
      title: `Delete ${group.name}?`,
      message: 'Every membership of this group and every SSO mapping to it are removed. People keep their accounts and other groups. This cannot be undone.',
      confirm: 'Delete group',
      danger: true,
    });
    if (!ok) return;
    try {
      await api('DELETE', `/api/permissions/group/${group.id}`);
      reloadWith(`The group ${group.name} was deleted.`, '/admin/people/groups');
    } catch (e) {
      notify(document.getElementById('flash'), 'error', `The group was not deleted: ${errorMessage(e)}`);
    }
  });
}

document.querySelectorAll('.remove-member').forEach((button) => {
  button.addEventListener('click', async () => {
    const ok = await confirmDialog({
      title: `Remove ${button.dataset.email} from ${group.name}?`,
      message: group.id === 2
        ? 'They stop being an administrator at once.'
        : 'They lose this group at once. If SSO maps this group, their next SSO sign-in may add it back.',
      confirm: 'Remove',
      danger: true,
    });
    if (!ok) return;
    try {
      await api('DELETE', `/api/permissions/membership/${button.dataset.membershipId}`);
      reloadWith(`${button.dataset.email} was removed from ${group.name}.`);
    } catch (e) {
      notify(document.getElementById('flash'), 'error', `Nothing was changed: ${errorMessage(e)}`);
    }
  });
});

const searchForm = document.getElementById('member-search-form');
if (searchForm) {
  const results = document.getElementById('member-results');
  const memberNotice = document.getElementById('member-notice');
  searchForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearNotice(memberNotice);
    const query = document.getElementById('member-query').value.trim();
    try {
      const page = await api('GET', `/api/user?limit=10&query=${encodeURIComponent(query)}`);
      if (page.data.length === 0) {
        results.replaceChildren(el('li', { class: 'muted', text: 'No one matches.' }));
        return;
      }
      results.replaceChildren(...page.data.map((u) => el('li', { class: 'member-result' },
        el('span', { text: '' }),
        el('span', { text: u.common_name }),
        el('span', { class: 'row' }, el('span', { class: 'muted', text: u.email }), el('span', { class: 'spacer' }),
          el('button', {
            type: 'button', class: 'small', text: 'Add', 'aria-label': `Add ${u.email} to ${group.name}`,
            onclick: async (e) => {
              await busy(e.target, async () => {
                try {
                  await api('POST', '/api/permissions/membership', { group_id: group.id, user_id: u.id });
                  reloadWith(`${u.email} was added to ${group.name}.`);
                } catch (err) {
                  notify(memberNotice, 'error', errorMessage(err));
                }
              });
            },
          })))));
    } catch (e) {
      notify(memberNotice, 'error', errorMessage(e));
    }
  });
}
