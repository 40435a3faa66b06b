"""Schemathesis hooks for scripts/schemathesis.sh: an admin session that survives the fuzzing.

Fuzzing signs out (DELETE /api/session, GET /auth/logout), revokes sessions, demotes and
deactivates users. Every request gets the current token in X-Latchkey-Session; when an
answer is 401 or 403, or every 30 seconds, the token is checked, and if it no longer belongs
to an active administrator a new administrator is created with `latchkey admin create` and
signed in. Those sign-ins come "through a proxy" from TEST-NET-1 (the server trusts one
X-Forwarded-For hop in this run), so the fuzzer's failed logins from 127.0.0.1 cannot
throttle them.
"""

import itertools
import os
import subprocess

import requests
import schemathesis

BASE = os.environ["LATCHKEY_FUZZ_BASE"]
BIN = os.environ["LATCHKEY_FUZZ_BIN"]
PASSWORD = os.environ["LATCHKEY_FUZZ_PASSWORD"]
HOOK_IP = "192.0.2.1"
_admins = itertools.count(1)


def _is_live_admin(token):
    try:
        r = requests.get(
            f"{BASE}/api/user/current", headers={"X-Latchkey-Session": token}, timeout=20
        )
    except requests.RequestException:
        return False
    return r.status_code == 200 and r.json().get("is_superuser") is True


def _new_admin_session():
    email = f"fuzz-admin-{next(_admins)}@latchkey.test"
    subprocess.run(
        [BIN, "admin", "create", "--email", email, "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        timeout=60,
        capture_output=True,
    )
    r = requests.post(
        f"{BASE}/api/session",
        json={"username": email, "password": PASSWORD},
        headers={"X-Forwarded-For": HOOK_IP},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["id"]


@schemathesis.auth(refresh_interval=30, retry_on=[401, 403])
class LatchkeySession:
    token = os.environ.get("LATCHKEY_FUZZ_TOKEN")

    def get(self, case, ctx):
        if not (self.token and _is_live_admin(self.token)):
            self.token = _new_admin_session()
        return self.token

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["X-Latchkey-Session"] = data
