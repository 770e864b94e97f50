"""Brute-force protection for logins: failures counted per account and per client address, with a
growing lockout, checked *before* the password is (a throttled attempt costs no bcrypt).

The rule (one place; HTTP Basic on /api and the Gradio login form both go through `web.auth`):

- Failures of a key (an account name, a client address) are counted in a row; the count starts over
  after FAILURE_MEMORY_SECONDS without a failure. Each attempt counts as a failure from the moment it
  starts and is taken back if the password turns out right, so 40 parallel guesses cannot all slip
  past the check before the first one has failed: only MAX_FREE_FAILURES reach bcrypt.
- From MAX_FREE_FAILURES failures on, the key is locked for FIRST_LOCKOUT_SECONDS after its latest
  failure, doubling with each further failure, up to MAX_LOCKOUT_SECONDS. A locked attempt is answered
  429 with Retry-After and is not counted (it runs no check, so it learns nothing).
- A success takes back only what its own address failed at that account (the owner's typos), from the
  address's count and the account's: an attacker guessing from other addresses keeps their failures until
  they expire with time, however often the owner logs in meanwhile (else each of the owner's logins would
  give the attacker MAX_FREE_FAILURES more guesses). One valid account must not unlock guessing at all the
  others from the same address, so the address's failures at other accounts stay too.

Why an attacker cannot lock an admin out for good: a lockout lasts MAX_LOCKOUT_SECONDS at most, and an
address that logged in to an account successfully in the last KNOWN_ADDRESS_SECONDS is exempt from
that account's lockout (it still has its own address count). So someone guessing the admin's password
from elsewhere locks the admin's account only for addresses the admin has never used; the admin's
usual machine keeps working. The price: after a restart (the state is in memory, per process; the
server runs one) or from a new machine, the admin waits out the lockout like everyone else.

Addresses are the client address uvicorn reports: behind a reverse proxy, run uvicorn with
``FORWARDED_ALLOW_IPS`` naming the proxy (127.0.0.1 is trusted by default), or every client looks
like the proxy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_FREE_FAILURES = 5
FAILURE_MEMORY_SECONDS = 15 * 60
FIRST_LOCKOUT_SECONDS = 30.0
MAX_LOCKOUT_SECONDS = 15 * 60
KNOWN_ADDRESS_SECONDS = 30 * 24 * 3600
MAX_TRACKED_KEYS = 100_000  # beyond this, the oldest failures are forgotten (memory stays bounded)


class LoginThrottled(Exception):
    """Too many failed logins for this account or address; try again in `retry_after` seconds."""

    def __init__(self, retry_after: int, reason: str):
        super().__init__(f"too many failed logins {reason}; try again in {retry_after} seconds")
        self.retry_after = retry_after
        self.reason = reason


@dataclass
class _Failures:
    count: int
    last_at: float
    by_account: dict[str, int] = field(default_factory=dict)  # for an address: its failures per account


@dataclass
class Attempt:
    """A full password check let through `LoginThrottle.attempt`; `done(ok)` reports how it ended."""

    throttle: "LoginThrottle"
    name: str
    address: str
    reported: bool = False

    def done(self, ok: bool) -> None:
        self.reported = True
        if ok:
            self.throttle.succeeded(self.name, self.address)
        else:
            self.throttle._failed(self.name, self.address)


def lockout_seconds(failures: int) -> float:
    """How long a key with `failures` failures in a row stays locked after its latest one (0: not locked)."""
    if failures < MAX_FREE_FAILURES:
        return 0.0
    return min(FIRST_LOCKOUT_SECONDS * 2 ** min(failures - MAX_FREE_FAILURES, 32), MAX_LOCKOUT_SECONDS)


class LoginThrottle:
    """Failure counts per account and per address, in memory, thread-safe (one per app).

    Use: `check` (cheap, before anything else), then either `succeeded` for a password verified without
    bcrypt (the cache of `web.auth`), or ``with throttle.attempt(name, address) as attempt:`` around the
    full check, calling `attempt.done(ok)`. Full checks of one account run one at a time (striped locks),
    so parallel guesses at one account are counted exactly and parallel requests of its owner wait for
    the first check and then find the cache warm. Only a failed check counts against its address: a team
    behind one address (an office, a NAT) logging in at the same moment must not lock itself out, so checks
    still running are not counted (measured: eight labelers logging in at once from 127.0.0.1 were locked
    out when they were).
    """

    STRIPES = 64

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._account_locks = [threading.Lock() for _ in range(self.STRIPES)]
        self._failures: dict[tuple[str, str], _Failures] = {}
        self._known_addresses: dict[tuple[str, str], float] = {}  # (account, address) -> valid until

    def check(self, name: str, address: str) -> None:
        """Raise LoginThrottled when the account (unless `address` is known for it) or the address is locked."""
        now = self._clock()
        with self._lock:
            self._raise_if_locked(name, address, now)

    @contextmanager
    def attempt(self, name: str, address: str) -> Iterator["Attempt"]:
        """A full password check of `name` from `address`: one at a time per account, re-checked for a
        lockout once its turn comes; report the outcome with `Attempt.done` (no report = a failure)."""
        with self._account_locks[hash(name) % self.STRIPES]:
            now = self._clock()
            with self._lock:
                self._raise_if_locked(name, address, now)
                self._bound_memory(now)
            attempt = Attempt(self, name, address)
            try:
                yield attempt
            finally:
                if not attempt.reported:
                    attempt.done(False)

    def succeeded(self, name: str, address: str) -> None:
        """A right password: take back the failures `address` made at this account (from the address's count
        and the account's; others' failures at the account stay until they expire) and remember the address
        for the account."""
        now = self._clock()
        with self._lock:
            own = 0
            failures = self._failures.get(("address", address))
            if failures is not None:
                own = failures.by_account.pop(name, 0)
                failures.count -= own
                if failures.count <= 0:
                    del self._failures[("address", address)]
            account = self._failures.get(("account", name))
            if account is not None:
                account.count -= own
                if account.count <= 0:
                    del self._failures[("account", name)]
            self._known_addresses[(name, address)] = now + KNOWN_ADDRESS_SECONDS

    def _failed(self, name: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            self._add_failure(("account", name), now)
            self._add_failure(("address", address), now, account=name)
            count = self._failures[("account", name)].count
        log.warning("failed login: user %r from %s (%d failures in a row for this account)", name, address, count)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._known_addresses.clear()

    # ------------------------------------------------------------------ inside the lock

    def _raise_if_locked(self, name: str, address: str, now: float) -> None:
        keys = [("address", address)]
        if self._known_addresses.get((name, address), 0.0) <= now:
            keys.insert(0, ("account", name))
        for key in keys:
            wait = self._locked_for(key, now)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                what = f"for account {name!r}" if key[0] == "account" else f"from address {address}"
                log.warning("login throttled: user %r from %s (%s locked for %d s more)",
                            name, address, key[0], retry_after)
                raise LoginThrottled(retry_after, what)

    def _current(self, key: tuple[str, str], now: float) -> _Failures | None:
        failures = self._failures.get(key)
        if failures is not None and now - failures.last_at > FAILURE_MEMORY_SECONDS + lockout_seconds(failures.count):
            del self._failures[key]
            return None
        return failures

    def _locked_for(self, key: tuple[str, str], now: float) -> float:
        failures = self._current(key, now)
        if failures is None:
            return 0.0
        return failures.last_at + lockout_seconds(failures.count) - now

    def _add_failure(self, key: tuple[str, str], now: float, account: str | None = None) -> None:
        failures = self._current(key, now)
        if failures is None:
            failures = self._failures[key] = _Failures(0, now)
        failures.count += 1
        failures.last_at = now
        if account is not None:
            failures.by_account[account] = failures.by_account.get(account, 0) + 1

    def _bound_memory(self, now: float) -> None:
        if len(self._failures) > MAX_TRACKED_KEYS:
            for key in list(self._failures):
                self._current(key, now)  # drops the expired ones
            if len(self._failures) > MAX_TRACKED_KEYS:
                oldest = sorted(self._failures, key=lambda k: self._failures[k].last_at)
                for key in oldest[: len(self._failures) - MAX_TRACKED_KEYS // 2]:
                    del self._failures[key]
        if len(self._known_addresses) > MAX_TRACKED_KEYS:
            for key, until in list(self._known_addresses.items()):
                if until <= now:
                    del self._known_addresses[key]
