"""The microblog's HTTP handler: routes, statuses, content types, JSON shapes, sessions by
bearer token and by cookie, HTML pages (escaped), and malformed requests."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unikernel.apps.microblog.test_model import Clock, MemoryStore
from unikernel.apps.http.messages import Headers, Request, Response
from unikernel.apps.microblog.api import MicroblogApp
from unikernel.apps.microblog.model import Microblog
from unikernel.core.scheduler import run


def make_app(clock: Clock | None = None) -> MicroblogApp:
    async def main() -> Microblog:
        return await Microblog.open(MemoryStore(), clock=clock or Clock())

    return MicroblogApp(run(main))


def call(
    app: MicroblogApp,
    method: str,
    target: str,
    body: object = None,
    headers: list[tuple[str, str]] | None = None,
    token: str | None = None,
) -> Response:
    fields = list(headers or [])
    if token is not None:
        fields.append(("Authorization", f"Bearer {token}"))
    if isinstance(body, bytes):
        raw = body
    elif body is None:
        raw = b""
    else:
        raw = json.dumps(body).encode()
        fields.append(("Content-Type", "application/json"))
    request = Request(method, target, Headers(fields), raw)

    async def main() -> Response:
        return await app.handle(request)

    response: Response = run(main)
    return response


def header(response: Response, name: str) -> str | None:
    found = [value for key, value in response.headers if key.lower() == name.lower()]
    assert len(found) <= 1, found
    return found[0] if found else None


def body_json(response: Response) -> Any:
    assert header(response, "Content-Type") == "application/json"
    return json.loads(bytes(response.body))


def session(app: MicroblogApp, name: str, password: str = "pw") -> str:
    assert call(app, "POST", "/api/users", {"name": name, "password": password}).status == 201
    response = call(app, "POST", "/api/sessions", {"name": name, "password": password})
    assert response.status == 201
    token: str = body_json(response)["token"]
    return token


def test_the_api_registers_logs_in_follows_posts_and_serves_timelines() -> None:
    clock = Clock()
    app = make_app(clock)
    created = call(app, "POST", "/api/users", {"name": "Alice", "password": "pw"})
    assert created.status == 201 and body_json(created) == {"name": "alice"}
    assert bytes(created.body) == b'{"name":"alice"}'  # compact
    taken = call(app, "POST", "/api/users", {"name": "ALICE", "password": "x"})
    assert taken.status == 409 and "taken" in body_json(taken)["error"]
    bob = session(app, "bob")

    login = call(app, "POST", "/api/sessions", {"name": "alice", "password": "pw"})
    assert login.status == 201 and header(login, "Cache-Control") == "no-store"
    alice = body_json(login)["token"]
    cookie = header(login, "Set-Cookie")
    assert cookie is not None and cookie.startswith(f"session={alice}; Path=/;")
    assert "HttpOnly" in cookie
    wrong = call(app, "POST", "/api/sessions", {"name": "alice", "password": "nope"})
    assert wrong.status == 401 and body_json(wrong) == {"error": "wrong name or password"}
    assert header(wrong, "WWW-Authenticate") == "Bearer"

    follow = call(app, "POST", "/api/follow", {"name": "Bob"}, token=alice)
    assert follow.status == 204 and follow.body == b""
    assert header(follow, "Cache-Control") == "no-store"
    missing = call(app, "POST", "/api/follow", {"name": "nobody"}, token=alice)
    assert missing.status == 404 and "nobody" in body_json(missing)["error"]
    itself = call(app, "POST", "/api/follow", {"name": "alice"}, token=alice)
    assert itself.status == 422

    clock.now += 1
    posted = call(app, "POST", "/api/posts", {"text": "héllo from bob"}, token=bob)
    assert posted.status == 201 and header(posted, "Cache-Control") == "no-store"
    post = body_json(posted)
    assert post == {
        "id": "bob/0",
        "user": "bob",
        "seq": 0,
        "time": clock.now,
        "text": "héllo from bob",
    }
    assert "héllo".encode() in bytes(posted.body)  # UTF-8, not \u escapes
    clock.now += 1
    call(app, "POST", "/api/posts", {"text": "alice here"}, token=alice)

    timeline = call(app, "GET", "/api/timeline", token=alice)
    assert timeline.status == 200 and header(timeline, "Cache-Control") == "no-store"
    assert [p["text"] for p in body_json(timeline)["posts"]] == ["alice here", "héllo from bob"]
    one = call(app, "GET", "/api/timeline?limit=1", token=alice)
    assert [p["id"] for p in body_json(one)["posts"]] == ["alice/0"]
    older = call(app, "GET", f"/api/timeline?limit=5&before={clock.now}", token=alice)
    assert [p["id"] for p in body_json(older)["posts"]] == ["bob/0"]
    by_cookie = call(app, "GET", "/api/timeline", headers=[("Cookie", f"x=1; session={alice}")])
    assert by_cookie.status == 200 and body_json(by_cookie) == body_json(timeline)

    user = call(app, "GET", "/api/users/ALICE")
    assert user.status == 200 and body_json(user) == {
        "name": "alice",
        "following": ["bob"],
        "posts": 1,
    }
    assert header(user, "Cache-Control") is None  # public
    posts = call(app, "GET", "/api/users/bob/posts?limit=10")
    assert posts.status == 200 and body_json(posts) == {"posts": [post]}
    assert call(app, "GET", "/api/users/nobody").status == 404
    assert call(app, "GET", "/api/users/nobody/posts").status == 404

    unfollow = call(app, "DELETE", "/api/follow/bob", token=alice)
    assert unfollow.status == 204
    assert call(app, "DELETE", "/api/follow/bob", token=alice).status == 204  # idempotent
    assert call(app, "DELETE", "/api/follow/nobody", token=alice).status == 404
    assert body_json(call(app, "GET", "/api/users/alice"))["following"] == []
    after = call(app, "GET", "/api/timeline", token=alice)
    assert [p["id"] for p in body_json(after)["posts"]] == ["alice/0"]


def test_requests_without_a_valid_session_get_401() -> None:
    app = make_app()
    token = session(app, "alice")
    for method, target, body in [
        ("GET", "/api/timeline", None),
        ("POST", "/api/posts", {"text": "hi"}),
        ("POST", "/api/follow", {"name": "alice"}),
        ("DELETE", "/api/follow/alice", None),
    ]:
        for headers in [
            [],
            [("Authorization", "Bearer nonsense")],
            [("Authorization", f"Basic {token}")],  # the right token, the wrong scheme
            [("Authorization", f"Bearer {token}x")],
            [("Cookie", "session=nonsense")],
            [("Cookie", f"sessionx={token}")],
        ]:
            response = call(app, method, target, body, headers=headers)
            assert response.status == 401, (method, target, headers)
            assert header(response, "WWW-Authenticate") == "Bearer"
            assert "log in" in body_json(response)["error"]
    assert (
        call(app, "GET", "/api/timeline", headers=[("authorization", f"bearer {token}")]).status
        == 200
    )


def test_malformed_bodies_and_queries_get_400_with_the_reason() -> None:
    app = make_app()
    token = session(app, "alice")
    cases = [
        (b"", "empty"),
        (b"{", "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (b"[1, 2]", "JSON object, not list"),
        (b'"name"', "JSON object, not str"),
        (b"[" * 100_000, "not JSON"),  # too deep for the parser
        (b'{"name": "x"}', "'password' must be a string; it is missing"),
        (b'{"name": 5, "password": "x"}', "'name' must be a string; it is a int"),
        (b'{"name": "x", "password": null}', "'password' must be a string; it is missing"),
    ]
    for body, reason in cases:
        response = call(app, "POST", "/api/users", body)
        assert response.status == 400, body
        assert reason in body_json(response)["error"], (body, body_json(response))
    # Whatever the Content-Type says, the body is read as JSON.
    plain = call(
        app,
        "POST",
        "/api/users",
        b'{"name": "bob", "password": "pw"}',
        headers=[("Content-Type", "text/plain")],
    )
    assert plain.status == 201
    invalid = call(app, "POST", "/api/users", {"name": "no spaces", "password": "pw"})
    assert invalid.status == 422 and "a name is 1 to 32" in body_json(invalid)["error"]
    short = call(app, "POST", "/api/users", {"name": "carl", "password": ""})
    assert short.status == 422 and "password" in body_json(short)["error"]
    long = call(app, "POST", "/api/posts", {"text": "x" * 281}, token=token)
    assert long.status == 422 and "280" in body_json(long)["error"]
    for query in ["limit=0", "limit=101", "limit=ten", "before=soon", "before=nan", "limit="]:
        response = call(app, "GET", f"/api/timeline?{query}", token=token)
        assert response.status == 400, query
        assert body_json(response)["error"]
        assert call(app, "GET", f"/api/users/alice/posts?{query}").status == 400


def test_unknown_paths_get_404_and_wrong_methods_405_with_allow() -> None:
    app = make_app()
    for target in [
        "/nope",
        "/api",
        "/api/",
        "/api/nope",
        "/api/users/",
        "/api/users/alice/followers",
        "/api/users/alice/posts/1",
        "/api/follow/alice/x",
        "/users",
        "/users/alice/posts",
        "/timeline/x",
        "*",
        "",
    ]:
        response = call(app, "GET", target)
        assert response.status == 404, target
        is_api = target.startswith("/api/")
        expected = "application/json" if is_api else "text/html; charset=utf-8"
        assert header(response, "Content-Type") == expected, target
    for method, target, allow in [
        ("GET", "/api/users", "POST"),
        ("PUT", "/api/sessions", "POST"),
        ("GET", "/api/follow", "POST"),
        ("POST", "/api/follow/alice", "DELETE"),
        ("DELETE", "/api/posts", "POST"),
        ("POST", "/api/timeline", "GET, HEAD"),
        ("DELETE", "/api/users/alice", "GET, HEAD"),
        ("POST", "/api/users/alice/posts", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("PUT", "/timeline", "GET, HEAD"),
        ("OPTIONS", "/users/alice", "GET, HEAD"),
    ]:
        response = call(app, method, target)
        assert response.status == 405, (method, target)
        assert header(response, "Allow") == allow
    session(app, "alice")
    head = call(app, "HEAD", "/api/users/alice")
    assert head.status == 200 and header(head, "Content-Type") == "application/json"
    assert call(app, "GET", "/api/users/%61lice").status == 200  # percent-decoded


def test_html_pages_escape_what_users_wrote() -> None:
    clock = Clock()
    app = make_app(clock)
    token = session(app, "alice")
    evil = "<script>alert('x')</script> & \"friends\""
    assert call(app, "POST", "/api/posts", {"text": evil}, token=token).status == 201

    home = call(app, "GET", "/")
    assert home.status == 200 and header(home, "Content-Type") == "text/html; charset=utf-8"
    page = bytes(home.body).decode()
    assert page.startswith("<!DOCTYPE html>") and "/api/timeline" in page
    assert "Logged in as" not in page
    mine = call(app, "GET", "/", headers=[("Cookie", f"session={token}")])
    assert "Logged in as <a href='/users/alice'>alice</a>" in bytes(mine.body).decode()
    assert header(mine, "Cache-Control") == "no-store"

    for response in [
        call(app, "GET", "/timeline", headers=[("Cookie", f"session={token}")]),
        call(app, "GET", "/timeline", token=token),
        call(app, "GET", "/users/alice"),
    ]:
        assert response.status == 200
        assert header(response, "Content-Type") == "text/html; charset=utf-8"
        text = bytes(response.body).decode()
        assert "<script>" not in text and evil not in text
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;friends&quot;" in text
    assert header(call(app, "GET", "/timeline", token=token), "Cache-Control") == "no-store"
    user_page = bytes(call(app, "GET", "/users/ALICE").body).decode()
    assert "<h1>alice</h1>" in user_page and "1 posts; follows nobody." in user_page

    anonymous = call(app, "GET", "/timeline")
    assert anonymous.status == 401
    assert header(anonymous, "Content-Type") == "text/html; charset=utf-8"
    assert "log in" in bytes(anonymous.body).decode()
    unknown = call(app, "GET", "/users/%3Cb%3E")
    assert unknown.status == 404 and "<b>" not in bytes(unknown.body).decode()


@settings(max_examples=200, deadline=None)
@given(
    target=st.sampled_from(
        ["/api/users", "/api/sessions", "/api/follow", "/api/posts", "/api/follow/x"]
    ),
    method=st.sampled_from(["POST", "DELETE", "GET"]),
    body=st.one_of(
        st.binary(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["name", "password", "text", "x"]), inner)
            ),
            max_leaves=6,
        ).map(lambda value: json.dumps(value).encode()),
    ),
)
def test_any_body_gets_a_json_answer_never_an_exception(
    target: str, method: str, body: bytes
) -> None:
    app = make_app()
    token = session(app, "x")
    response = call(app, method, target, body, token=token)
    assert response.status in (201, 204, 400, 401, 404, 405, 409, 422)
    if response.status != 204:
        body_json(response)
