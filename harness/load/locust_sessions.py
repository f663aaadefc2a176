"""The web suite's locustfile: the users locust runs (FastHttpUser), one session per task.

Locust imports this file in its own processes (never the harness's: it patches the standard
library with gevent). What a session is comes from the environment the harness sets:

    UNIBENCH_WEB_APP     static: fetch the site's pages (UNIBENCH_WEB_PAGES, comma-separated)
                         dynamic: log in, post, read the timeline (JSON), read it as HTML
    UNIBENCH_WEB_PAGES   the static session's paths, in order

A session opens a connection, makes its requests on it (keep-alive), and closes it with its
last request (Connection: close), as a visitor's browser would: sessions per second are also
connections per second, the paper's Fig. 13 measure. Each finished session is counted as a
request of type SESSION, named "session", taking the session's whole time, so locust's own
statistics carry sessions beside requests; a session with any failed request fails.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from typing import Any

from locust import FastHttpUser, task

from harness.load.report import SESSION_TYPE

APP = os.environ.get("UNIBENCH_WEB_APP", "static")
PAGES = [page for page in os.environ.get("UNIBENCH_WEB_PAGES", "/").split(",") if page]
SESSION_NAME = "session"
PASSWORD = "unibench-load"
FOLLOWS = 5  # users each new user follows, among those registered before it in its process
_CLOSE = {"Connection": "close"}
_numbers = itertools.count()
_registered: list[str] = []  # this worker process's users so far


class SessionUser(FastHttpUser):
    """One visitor after another: each task is one session on a connection of its own."""

    # One connection per user: a session's requests share it, and its last one closes it.
    concurrency = 1
    insecure = True

    def on_start(self) -> None:
        self.name = ""
        if APP != "dynamic":
            return
        # Sign-up is not part of the measured sessions: a visitor signs up once, then comes
        # back many times. A failure here counts as a failed session.
        start = time.perf_counter()
        self.name = f"w{os.getpid()}n{next(_numbers)}"
        try:
            self._request("POST", "/api/users", json={"name": self.name, "password": PASSWORD})
            auth = self._auth(self._login())
            for other in random.sample(_registered, min(FOLLOWS, len(_registered))):
                self._request("POST", "/api/follow", json={"name": other}, headers=auth)
        except SessionFailed as failure:
            self._count_session(start, failure)
            return
        _registered.append(self.name)

    @task
    def session(self) -> None:
        start = time.perf_counter()
        try:
            if APP == "dynamic":
                self._dynamic_session()
            else:
                for index, page in enumerate(PAGES):
                    last = index == len(PAGES) - 1
                    self._request("GET", page, headers=_CLOSE if last else None)
        except SessionFailed as failure:
            self._count_session(start, failure)
        else:
            self._count_session(start, None)

    def _dynamic_session(self) -> None:
        auth = self._auth(self._login())
        text = f"post {next(_numbers)} from {self.name} at {time.time():.3f}"
        self._request("POST", "/api/posts", json={"text": text}, headers=auth)
        self._request("GET", "/api/timeline?limit=20", headers=auth)
        self._request("GET", "/timeline", headers={**auth, **_CLOSE})

    def _login(self) -> str:
        reply = self._request(
            "POST", "/api/sessions", json={"name": self.name, "password": PASSWORD}
        )
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str):
            raise SessionFailed("the login gave no token")
        return token

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        # Every request is one statistics entry per method ("request"), whatever its path:
        # the harness merges them into one latency distribution.
        with self.client.request(
            method, path, json=json, headers=headers, name="request", catch_response=True
        ) as response:
            if response.status_code is None or not 200 <= response.status_code < 300:
                reason = f"{method} {path}: status {response.status_code}"
                response.failure(reason)
                raise SessionFailed(reason)
            if response.headers.get("content-type", "").startswith("application/json"):
                return response.json()
            return None

    def _count_session(self, start: float, failure: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=SESSION_TYPE,
            name=SESSION_NAME,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0,
            exception=failure,
            context={},
        )


class SessionFailed(Exception):
    """A request of the session failed: the session is counted failed and ends."""
