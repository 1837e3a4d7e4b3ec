"""The organizations a sandbox serves, each with its own API key and its own store, so one agent
(or several) can be tried against many Qonto organizations at once.

The primary organization is `settings.login`/`settings.secret_key`: every bearer token belongs to
it, and it keeps the random generator `seed` gives, so a single-organization sandbox stays as it
always was. The others are `settings.organizations` (login, secret key) pairs, read at each use;
each gets its store the first time it is needed.
"""

from __future__ import annotations

import hmac
import random
import threading

from agent.sandbox.settings import SandboxSettings, check_organizations
from agent.sandbox.store import Store


class Organizations:
    """Every organization's store, found by login or by the API key of a request."""

    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.primary = Store(random.Random(settings.seed))
        self._others: dict[str, Store] = {}

    def login(self, login: str | None) -> str:
        """The login named, or the primary one for None; KeyError (a sentence) if it is not served."""
        if login is None or login == self._settings.login:
            return self._settings.login
        if login not in dict(self._settings.organizations):
            served = ", ".join([self._settings.login, *dict(self._settings.organizations)])
            raise KeyError(f"The sandbox serves no organization {login!r}; it serves {served}.")
        return login

    def store(self, login: str | None = None) -> Store:
        """The store of the organization `login` (None: the primary); KeyError if it is not served."""
        login = self.login(login)
        if login == self._settings.login:
            return self.primary
        with self._lock:
            if login not in self._others:
                # Its own generator, derived from the seed: ids stay reproducible and never collide.
                self._others[login] = Store(random.Random(f"{self._settings.seed}/{login}"))
            return self._others[login]

    def stores(self) -> list[Store]:
        """Every store created so far, the primary first."""
        with self._lock:
            return [self.primary, *self._others.values()]

    def by_api_key(self, header: str) -> str | None:
        """The login whose `<login>:<secret_key>` is `header`, or None. Every pair is compared, so
        the time taken does not tell which login exists."""
        pairs = [(self._settings.login, self._settings.secret_key), *self._settings.organizations]
        found = None
        for login, secret_key in pairs:
            if hmac.compare_digest(header.encode(), f"{login}:{secret_key}".encode()) and found is None:
                found = login
        return found

    def add(self, login: str, secret_key: str) -> None:
        """Serve one more organization from now on; ValueError (a sentence) if the login is taken or
        the pair cannot be an API key."""
        with self._lock:
            organizations = (*self._settings.organizations, (login, secret_key))
            check_organizations(self._settings.login, organizations)
            self._settings.organizations = organizations

