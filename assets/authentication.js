// Admin → Authentication: the password sign-in switch. Turning it off asks first, and the
// server's lock-out guard may refuse (409 lockout_risk): the switch goes back and the page
// says why and what to do.
import { api, confirmDialog, el, errorMessage, notify, reloadWith } from './lib.js';

const toggle = document.getElementById('password-toggle');
const box = document.getElementById('password-notice');

if (toggle) {
  toggle.addEventListener('change', async () => {
    const wanted = toggle.checked;
    toggle.checked = !wanted; // unchanged until the server agrees
    if (!wanted) {
      const ok = await confirmDialog({
        title: 'Turn off password sign-in?',
        message: 'Everyone, administrators included, will then have to sign in through SSO, and the sign-in page will show only the SSO button. '
          + 'If SSO stops working, an operator can turn password sign-in back on from the server with: latchkey settings set enable-password-login true',
        confirm: 'Turn off password sign-in',
        danger: true,
      });
      if (!ok) { toggle.focus(); return; }
    }
    toggle.disabled = true;
    try {
      await api('PUT', '/api/setting/enable-password-login', { value: wanted });
      reloadWith(wanted
        ? 'Password sign-in is on again: people can use their email and password.'
        : 'Password sign-in is off: everyone now signs in through SSO.');
    } catch (e) {
      toggle.disabled = false;
      if (e.code === 'lockout_risk') {
        notify(box, 'error',
          el('p', {}, el('strong', { text: 'Password sign-in is still on. ' }), e.message),
          el('p', { text: 'What to do: open the sign-in page in a private window, choose “Sign in with SSO” and sign in with an administrator account (or make an account that signs in through SSO an administrator under People). Then come back here and try again.' }));
      } else {
        notify(box, 'error', `Nothing was changed: ${errorMessage(e)}`);
      }
      toggle.focus();
    }
  });
}
