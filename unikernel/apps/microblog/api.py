"""The microblog over HTTP: a JSON API and a few HTML pages, as one handler for our server.

    POST   /api/users               {"name", "password"}  201 {"name"}; 409 taken; 422 invalid
    POST   /api/sessions            {"name", "password"}  201 {"token"} and a session cookie;
                                                          401 wrong name or password
    POST   /api/follow              {"name"}      (auth)  204; 404 no such user
    DELETE /api/follow/<name>                     (auth)  204; 404 no such user
    POST   /api/posts               {"text"}      (auth)  201 the post
    GET    /api/timeline?limit=&before=           (auth)  200 {"posts": [post, ...]}
    GET    /api/users/<name>                              200 {"name", "following", "posts"}
    GET    /api/users/<name>/posts?limit=&before=         200 {"posts": [post, ...]}
    GET    /                                              200 HTML: what this is
    GET    /timeline                              (auth)  200 HTML timeline; 401 HTML page
    GET    /users/<name>                                  200 HTML list of their posts

A post is {"id": "<name>/<seq>", "user", "seq", "time", "text"}; `limit` is 1 to 100 (20 if
absent), `before` a post time (only older posts). Authentication is `Authorization: Bearer
<token>` or else a `session=<token>` cookie. Errors are JSON {"error": "why"} under /api/,
HTML elsewhere: 400 for a body that is not a JSON object with the fields as strings or a bad
query, 422 for values out of bounds, 401 without a valid session, 404 for unknown paths and
users, 405 (with Allow) for a method a path does not take. HEAD goes wherever GET does.
Responses needing a session carry `Cache-Control: no-store`.
"""

from __future__ import annotations

import html
import json
import math
import time
from urllib.parse import parse_qsl, unquote

from unikernel.apps.http.messages import Response
from unikernel.apps.microblog.model import (
    MAX_LIMIT,
    SESSION_SECONDS,
    Conflict,
    Invalid,
    MicroblogError,
    NotFound,
    Unauthorized,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from unikernel.apps.http.messages import Request
    from unikernel.apps.microblog.model import Microblog, Post

    Route = Callable[["Request", str], Awaitable[Response]]

JSON = "application/json"
HTML = "text/html; charset=utf-8"
DEFAULT_LIMIT = 20
_NO_STORE = ("Cache-Control", "no-store")
_STATUS = {Conflict: 409, NotFound: 404, Invalid: 422, Unauthorized: 401}


class BadRequest(Exception):
    """The request is malformed: 400, with the message."""


class _NoSession(Exception):
    """The request needs a valid session and has none: 401."""


class MicroblogApp:
    """The HTTP face of a Microblog: `await app.handle(request)` for each request."""

    __slots__ = ("blog", "routes")

    def __init__(self, blog: Microblog) -> None:
        self.blog = blog
        # Route name -> method -> handler; paths are matched to a name by _route().
        self.routes: dict[str, dict[str, Route]] = {
            "users": {"POST": self._register},
            "sessions": {"POST": self._login},
            "follow": {"POST": self._follow},
            "follow/": {"DELETE": self._unfollow},
            "posts": {"POST": self._post},
            "timeline": {"GET": self._timeline},
            "users/": {"GET": self._user},
            "users/posts": {"GET": self._user_posts},
            "page:/": {"GET": self._home_page},
            "page:timeline": {"GET": self._timeline_page},
            "page:users/": {"GET": self._user_page},
        }

    async def handle(self, request: Request) -> Response:
        routed = _route(request.path)
        is_api = request.path.startswith("/api/")
        if routed is None:
            return _error(404, f"nothing at {request.path}", is_api)
        name, argument = routed
        methods = self.routes[name]
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            allow = ", ".join(_allowed(methods))
            response = _error(405, f"{request.path} takes {allow}, not {request.method}", is_api)
            response.headers.append(("Allow", allow))
            return response
        try:
            return await handler(request, argument)
        except BadRequest as error:
            return _error(400, str(error), is_api)
        except _NoSession:
            response = _error(401, "log in first: no valid session token", is_api)
            response.headers.append(("WWW-Authenticate", "Bearer"))
            return response
        except MicroblogError as error:
            status = _STATUS.get(type(error), 400)
            response = _error(status, str(error), is_api)
            if status == 401:
                response.headers.append(("WWW-Authenticate", "Bearer"))
            return response

    def session_user(self, request: Request) -> str | None:
        """Whose session the request carries: a bearer token, or else a session cookie."""
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            return self.blog.user_of(token.strip()) if scheme.lower() == "bearer" else None
        for cookies in request.headers.get_all("cookie"):
            for cookie in cookies.split(";"):
                key, _, value = cookie.strip().partition("=")
                if key == "session":
                    user = self.blog.user_of(value.strip().strip('"'))
                    if user is not None:
                        return user
        return None

    def _require_user(self, request: Request) -> str:
        user = self.session_user(request)
        if user is None:
            raise _NoSession
        return user

    # The API.

    async def _register(self, request: Request, _: str) -> Response:
        fields = _fields(request, "name", "password")
        name = await self.blog.register(fields["name"], fields["password"])
        return _json(201, b'{"name":' + _dump(name) + b"}")

    async def _login(self, request: Request, _: str) -> Response:
        fields = _fields(request, "name", "password")
        token = await self.blog.login(fields["name"], fields["password"])
        cookie = f"session={token}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Lax"
        response = _json(201, b'{"token":' + _dump(token) + b"}", private=True)
        response.headers.append(("Set-Cookie", cookie))
        return response

    async def _follow(self, request: Request, _: str) -> Response:
        user = self._require_user(request)
        await self.blog.follow(user, _fields(request, "name")["name"])
        return Response(204, [_NO_STORE])

    async def _unfollow(self, request: Request, other: str) -> Response:
        user = self._require_user(request)
        await self.blog.unfollow(user, other)
        return Response(204, [_NO_STORE])

    async def _post(self, request: Request, _: str) -> Response:
        user = self._require_user(request)
        post = await self.blog.post(user, _fields(request, "text")["text"])
        return _json(201, post.json, private=True)

    async def _timeline(self, request: Request, _: str) -> Response:
        user = self._require_user(request)
        limit, before = _paging(request.query)
        posts = await self.blog.timeline(user, limit, before)
        return _json(200, _posts_json(posts), private=True)

    async def _user(self, request: Request, name: str) -> Response:
        return _json(200, _dump(self.blog.user_info(name)))

    async def _user_posts(self, request: Request, name: str) -> Response:
        limit, before = _paging(request.query)
        posts = await self.blog.posts_of(name, limit, before)
        return _json(200, _posts_json(posts))

    # The pages.

    async def _home_page(self, request: Request, _: str) -> Response:
        user = self.session_user(request)
        who = (
            f"<p>Logged in as <a href='/users/{_e(user)}'>{_e(user)}</a>: "
            "<a href='/timeline'>your timeline</a>.</p>"
            if user is not None
            else "<p>Log in with <code>POST /api/sessions</code> to see your timeline.</p>"
        )
        body = (
            "<h1>Microblog</h1>\n"
            "<p>A small Twitter-like service running as a unikernel: users register, follow "
            "one another and post short texts; a timeline shows the newest posts of a user and "
            "of everyone they follow. Its data lives in a log-structured key-value store on the "
            "appliance's disk.</p>\n"
            f"{who}\n"
            "<h2>API</h2>\n<ul>\n"
            "<li><code>POST /api/users</code> {name, password}: register</li>\n"
            "<li><code>POST /api/sessions</code> {name, password}: log in, get a token</li>\n"
            "<li><code>POST /api/follow</code> {name}, <code>DELETE /api/follow/NAME</code></li>\n"
            "<li><code>POST /api/posts</code> {text}: post</li>\n"
            "<li><code>GET /api/timeline</code>: your timeline</li>\n"
            "<li><code>GET /api/users/NAME</code>, <code>GET /api/users/NAME/posts</code></li>\n"
            "</ul>\n"
        )
        headers = [("Content-Type", HTML)]
        if user is not None:
            headers.append(_NO_STORE)
        return Response(200, headers, _page("Microblog", body))

    async def _timeline_page(self, request: Request, _: str) -> Response:
        user = self._require_user(request)
        limit, before = _paging(request.query)
        posts = await self.blog.timeline(user, limit, before)
        body = f"<h1>Timeline of {_e(user)}</h1>\n{_posts_html(posts)}"
        return Response(200, [("Content-Type", HTML), _NO_STORE], _page("Timeline", body))

    async def _user_page(self, request: Request, name: str) -> Response:
        limit, before = _paging(request.query)
        posts = await self.blog.posts_of(name, limit, before)
        user = name.casefold()  # posts_of() found them: an ASCII name
        following = ", ".join(
            f"<a href='/users/{_e(other)}'>{_e(other)}</a>" for other in self.blog.following(user)
        )
        body = (
            f"<h1>{_e(user)}</h1>\n"
            f"<p>{self.blog.post_count(user)} posts; follows {following or 'nobody'}.</p>\n"
            f"{_posts_html(posts)}"
        )
        return Response(200, [("Content-Type", HTML)], _page(user, body))


_API = frozenset(("users", "sessions", "follow", "posts", "timeline"))


def _route(path: str) -> tuple[str, str] | None:
    """(route name, the user name in the path or ""), or None: no such path."""
    if path == "/":
        return "page:/", ""
    parts = path.split("/")
    if parts[0] or len(parts) < 2:
        return None  # not absolute: "*", say
    if parts[1] == "api":
        prefix, parts = "", parts[2:]
    else:
        prefix, parts = "page:", parts[1:]
    if len(parts) == 1:
        known = parts[0] in _API if not prefix else parts[0] == "timeline"
        return (prefix + parts[0], "") if known else None
    if len(parts) not in (2, 3) or not parts[1]:
        return None
    name = unquote(parts[1])
    if len(parts) == 2 and (parts[0] == "users" or (not prefix and parts[0] == "follow")):
        return prefix + parts[0] + "/", name
    if len(parts) == 3 and not prefix and parts[0] == "users" and parts[2] == "posts":
        return "users/posts", name
    return None


def _allowed(methods: dict[str, Route]) -> list[str]:
    allowed = sorted(methods)
    if "GET" in methods:
        allowed.append("HEAD")
    return allowed


def _fields(request: Request, *names: str) -> dict[str, str]:
    """The body's JSON object (whatever Content-Type says), which must have `names` as
    strings."""
    if not request.body:
        raise BadRequest(f"the body must be a JSON object with {', '.join(names)}; it is empty")
    try:
        value = json.loads(request.body)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(value).__name__}")
    for name in names:
        field = value.get(name)
        if not isinstance(field, str):
            reason = "missing" if field is None else f"a {type(field).__name__}"
            raise BadRequest(f"the body's {name!r} must be a string; it is {reason}")
    return {name: value[name] for name in names}


def _paging(query: str) -> tuple[int, float | None]:
    limit, before = DEFAULT_LIMIT, None
    try:
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "limit":
                limit = int(value)
            elif key == "before":
                before = float(value)
    except ValueError as error:
        raise BadRequest(f"bad query {query!r}: {error}") from None
    if not 0 < limit <= MAX_LIMIT:
        raise BadRequest(f"limit is 1 to {MAX_LIMIT}, not {limit}")
    if before is not None and not math.isfinite(before):
        raise BadRequest("before must be a finite number")
    return limit, before


def _posts_json(posts: list[Post]) -> bytes:
    return b'{"posts":[' + b",".join(post.json for post in posts) + b"]}"


def _json(status: int, body: bytes, private: bool = False) -> Response:
    headers = [("Content-Type", JSON)]
    if private:
        headers.append(_NO_STORE)
    return Response(status, headers, body)


def _error(status: int, message: str, is_api: bool) -> Response:
    if is_api:
        return _json(status, b'{"error":' + _dump(message) + b"}")
    body = f"<h1>{status}</h1>\n<p>{_e(message)}</p>\n<p><a href='/'>Home</a></p>\n"
    return Response(status, [("Content-Type", HTML)], _page(str(status), body))


def _posts_html(posts: list[Post]) -> str:
    if not posts:
        return "<p>No posts yet.</p>\n"
    items = "".join(
        f"<li><a href='/users/{_e(post.user)}'>{_e(post.user)}</a> "
        f"<time>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(post.time))}</time>: "
        f"{_e(post.text)}</li>\n"
        for post in posts
    )
    return f"<ol>\n{items}</ol>\n"


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title></head>\n<body>\n{body}</body>\n</html>\n"
    ).encode()


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _dump(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
