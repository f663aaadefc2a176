"""The iperf3 control protocol fed bytes: real exchanges captured between two Debian iperf3 3.12
processes on loopback, our client against our server, refusals, malformed input, and bytes
arriving one at a time or split anywhere."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unikernel.apps.iperf3.protocol import (
    ACCESS_DENIED,
    COOKIE_ALPHABET,
    COOKIE_SIZE,
    DONE,
    FAILED,
    IEACCESSDENIED,
    IEBLOCKSIZE,
    IEMESSAGE,
    IENUMSTREAMS,
    IERECVPARAMS,
    IERECVRESULTS,
    IESERVERTERM,
    IEUNIMP,
    ClientProtocol,
    CreateStreams,
    Done,
    Event,
    ParamsReceived,
    PeerError,
    ProtocolError,
    ResultsReceived,
    ResultsRequested,
    ServerProtocol,
    StreamResult,
    Terminated,
    TestEnded,
    TestParams,
    TestRejected,
    TestResults,
    TestRunning,
    TestStarted,
    deny,
    frame,
    make_cookie,
    parse_cookie,
    server_error,
    stream_id,
)

# Captured with a logging proxy between `iperf3 -c 127.0.0.1 -t 1 -P 2` and `iperf3 -s`
# (Debian's 3.12): the control connection, each direction.
COOKIE = b"pdhs4wya62sih4iszewpwa3srwodl6dnlb74\x00"
FORWARD_PARAMS = (
    b'\x00\x00\x00{{"tcp":true,"omit":0,"time":1,"num":0,"blockcount":0,"parallel":2,'
    b'"len":131072,"pacing_timer":1000,"client_version":"3.12"}'
)
FORWARD_CLIENT_RESULTS = (
    b'\x00\x00\x01\x8d{"cpu_util_total":13.401114627184771,"cpu_util_user":0.83078354872714955,'
    b'"cpu_util_system":12.570923860154895,"sender_has_retransmits":1,"congestion_used":"bbr",'
    b'"streams":[{"id":1,"bytes":107479040,"retransmits":0,"jitter":0,"errors":0,"packets":0,'
    b'"start_time":0,"end_time":1.001008},{"id":3,"bytes":108789760,"retransmits":0,"jitter":0,'
    b'"errors":0,"packets":0,"start_time":0,"end_time":1.001014}]}'
)
FORWARD_CLIENT = COOKIE + FORWARD_PARAMS + b"\x04" + FORWARD_CLIENT_RESULTS + b"\x10"
FORWARD_SERVER_RESULTS = (
    b'\x00\x00\x01\xc5{"cpu_util_total":10.347477102876937,"cpu_util_user":1.9109852653369581,'
    b'"cpu_util_system":8.4352029758824241,"sender_has_retransmits":18446744073709551615,'
    b'"congestion_used":"bbr","streams":[{"id":1,"bytes":102750208,'
    b'"retransmits":18446744073709551615,"jitter":0,"errors":0,"packets":0,"start_time":0,'
    b'"end_time":1.004136},{"id":3,"bytes":103012352,"retransmits":18446744073709551615,'
    b'"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":1.004139}]}'
)
FORWARD_SERVER = b"\t\n\x01\x02\r" + FORWARD_SERVER_RESULTS + b"\x0e"
# `iperf3 -c 127.0.0.1 -R -n 1M -P 3`: the client's parameters.
REVERSE_PARAMS = (
    b'\x00\x00\x00\x90{"tcp":true,"omit":0,"time":0,"num":1048576,"blockcount":0,"parallel":3,'
    b'"reverse":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"}'
)


def feed_bytewise(side: ServerProtocol | ClientProtocol, data: bytes) -> list[Event]:
    """Feed one byte at a time, as a slow link might deliver them."""
    events: list[Event] = []
    for index in range(len(data)):
        events += side.feed(data[index : index + 1])
    return events


def feed_split(side: ServerProtocol | ClientProtocol, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    bounds = [0, *sorted(max(0, min(cut, len(data))) for cut in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            events += side.feed(data[start:end])
    return events


def results_for(ids: list[int], size: int, sender: bool) -> TestResults:
    return TestResults(
        [StreamResult(i, size, retransmits=0 if sender else -1, end_time=1.5) for i in ids],
        cpu_util_total=12.5,
        cpu_util_user=2.5,
        cpu_util_system=10.0,
        sender_has_retransmits=1 if sender else -1,
    )


def test_the_server_takes_a_real_forward_exchange_byte_by_byte() -> None:
    server = ServerProtocol()
    events = feed_bytewise(server, COOKIE)
    assert events == [] and server.data_to_send() == b"\x09"  # PARAM_EXCHANGE
    (event,) = feed_bytewise(server, FORWARD_PARAMS)
    assert isinstance(event, ParamsReceived)
    assert event.cookie == COOKIE[:-1].decode()
    params = event.params
    assert (params.protocol, params.time, params.parallel, params.length) == ("tcp", 1, 2, 131072)
    assert not params.reverse and params.bytes == 0 and params.client_version == "3.12"
    assert params.extra == {"pacing_timer": 1000}
    assert server.data_to_send() == b"\x0a"  # CREATE_STREAMS
    server.start_test()
    assert server.data_to_send() == b"\x01\x02"
    assert feed_bytewise(server, b"\x04") == [TestEnded()]
    server.request_results()
    assert server.data_to_send() == b"\x0d"
    (event,) = feed_bytewise(server, FORWARD_CLIENT_RESULTS)
    assert isinstance(event, ResultsReceived)
    assert [(s.id, s.bytes) for s in event.results.streams] == [(1, 107479040), (3, 108789760)]
    assert event.results.sender_has_retransmits == 1
    assert event.results.congestion_used == "bbr"
    ours = results_for([1, 3], 5000, sender=False)
    server.send_results(ours)
    sent = server.data_to_send()
    assert sent[-1:] == b"\x0e"  # DISPLAY_RESULTS after the results
    assert json.loads(sent[4:-1]) == ours.to_json()
    assert int.from_bytes(sent[:4], "big") == len(sent) - 5
    assert feed_bytewise(server, b"\x10") == [Done()]
    assert server.state == DONE and server.over
    assert server.feed(b"") == []  # the client closes: fine, it is over


def test_the_client_takes_a_real_servers_answers_byte_by_byte() -> None:
    client = ClientProtocol(TestParams(time=1, parallel=2), cookie=COOKIE)
    assert client.data_to_send() == COOKIE
    assert feed_bytewise(client, b"\x09") == []
    assert client.data_to_send() == FORWARD_PARAMS  # the very bytes iperf3 3.12 sends
    assert feed_bytewise(client, b"\x0a") == [CreateStreams(2, COOKIE)]
    assert feed_bytewise(client, b"\x01\x02") == [TestStarted(), TestRunning()]
    client.end_test()
    assert client.data_to_send() == b"\x04"
    assert feed_bytewise(client, b"\x0d") == [ResultsRequested()]
    client.send_results(results_for([1, 3], 7, sender=True))
    assert client.data_to_send()[4:].startswith(b'{"cpu_util_total":12.5,')
    events = feed_bytewise(client, FORWARD_SERVER[5:])
    assert [type(e) for e in events] == [ResultsReceived, Done]
    assert isinstance(events[0], ResultsReceived)
    server = events[0].results
    # iperf3 3.12 prints -1 ("unknown") as an unsigned 64-bit number.
    assert server.sender_has_retransmits == -1
    assert [(s.id, s.bytes, s.retransmits) for s in server.streams] == [
        (1, 102750208, -1),
        (3, 103012352, -1),
    ]
    assert server.bytes == 102750208 + 103012352
    assert client.data_to_send() == b"\x10"  # IPERF_DONE
    assert client.state == DONE


def test_a_reverse_byte_count_test_is_read_as_iperf3_sends_it() -> None:
    server = ServerProtocol()
    server.feed(b"a" * 36 + b"\0")
    (event,) = server.feed(REVERSE_PARAMS)
    assert isinstance(event, ParamsReceived)
    params = event.params
    assert params.reverse and params.bytes == 1 << 20 and params.time == 0
    assert params.parallel == 3 and params.byte_limit == 1 << 20
    assert frame(params.to_json()) == REVERSE_PARAMS  # and written back the same


def test_our_client_and_server_agree_through_a_whole_test() -> None:
    params = TestParams(time=3, parallel=3, reverse=True, omit=1, nodelay=True, window=65536)
    client = ClientProtocol(params)
    server = ServerProtocol()

    def deliver(
        source: ServerProtocol | ClientProtocol, to: ServerProtocol | ClientProtocol
    ) -> list[Event]:
        return feed_bytewise(to, source.data_to_send())

    assert deliver(client, server) == []
    assert deliver(server, client) == []
    (event,) = deliver(client, server)
    assert event == ParamsReceived(params, client.cookie[:-1].decode())
    (event,) = deliver(server, client)
    assert event == CreateStreams(3, client.cookie)
    server.start_test()
    assert deliver(server, client) == [TestStarted(), TestRunning()]
    client.end_test()
    assert deliver(client, server) == [TestEnded()]
    server.request_results()
    assert deliver(server, client) == [ResultsRequested()]
    ids = [stream_id(i) for i in range(3)]
    assert ids == [1, 3, 4]  # as iperf3 numbers them
    client_results = results_for(ids, 1000, sender=False)
    client.send_results(client_results)
    assert deliver(client, server) == [ResultsReceived(client_results)]
    server_results = results_for(ids, 1000, sender=True)
    server.send_results(server_results)
    assert deliver(server, client) == [ResultsReceived(server_results), Done()]
    assert deliver(client, server) == [Done()]
    assert client.state == server.state == DONE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(FORWARD_CLIENT)), max_size=12))
def test_any_split_of_the_clients_bytes_gives_the_same_events(cuts: list[int]) -> None:
    server = ServerProtocol()
    before_end = len(COOKIE) + len(FORWARD_PARAMS)
    events = feed_split(server, FORWARD_CLIENT[:before_end], cuts)
    assert [type(e) for e in events] == [ParamsReceived]
    server.start_test()
    rest = FORWARD_CLIENT[before_end:]
    events = feed_split(server, rest[:1], [])
    assert events == [TestEnded()]
    server.request_results()
    events = feed_split(server, rest[1:-1], [c - before_end for c in cuts])
    assert [type(e) for e in events] == [ResultsReceived]
    server.send_results(results_for([1, 3], 1, sender=False))
    assert feed_split(server, rest[-1:], []) == [Done()]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(FORWARD_SERVER)), max_size=12))
def test_any_split_of_the_servers_bytes_gives_the_same_events(cuts: list[int]) -> None:
    client = ClientProtocol(TestParams(time=1, parallel=2), cookie=COOKIE)
    events: list[Event] = []
    head = FORWARD_SERVER[:4]  # up to TEST_RUNNING; then it is our turn
    events += feed_split(client, head, cuts)
    client.end_test()
    events += client.feed(FORWARD_SERVER[4:5])
    client.send_results(results_for([1, 3], 1, sender=True))
    events += feed_split(client, FORWARD_SERVER[5:], [c - 5 for c in cuts])
    assert [type(e) for e in events] == [
        CreateStreams,
        TestStarted,
        TestRunning,
        ResultsRequested,
        ResultsReceived,
        Done,
    ]


def server_with_params(message: dict[str, object]) -> tuple[ServerProtocol, list[Event]]:
    server = ServerProtocol(max_streams=16)
    server.feed(COOKIE)
    server.data_to_send()
    return server, server.feed(frame(message))


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ({"udp": True, "time": 1, "len": 1460, "bandwidth": 10**6}, IEUNIMP, "UDP"),
        ({"sctp": True, "time": 1}, IEUNIMP, "SCTP"),
        ({"tcp": True, "time": 1, "bidirectional": True}, IEUNIMP, "bidirectional"),
        ({"tcp": True, "time": 1, "reverse": True, "bandwidth": 10**6}, IEUNIMP, "bandwidth"),
        ({"tcp": True, "time": 1, "parallel": 17}, IENUMSTREAMS, "17 streams"),
        ({"tcp": True, "time": 1, "parallel": 0}, IENUMSTREAMS, "0 streams"),
        ({"tcp": True, "time": 1, "len": 2 << 20}, IEBLOCKSIZE, "block size"),
    ],
)
def test_the_server_refuses_what_it_does_not_run_with_server_error(
    message: dict[str, object], code: int, reason: str
) -> None:
    server, events = server_with_params(message)
    (event,) = events
    assert isinstance(event, TestRejected) and event.code == code and reason in event.reason
    assert server.data_to_send() == server_error(code)
    assert server.state == FAILED
    # What the client makes of it: the server's code, and the errno (0).
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    with pytest.raises(PeerError, match="refused the test") as caught:
        feed_bytewise(client, b"\x09" + server_error(code))
    assert caught.value.code == code and caught.value.errno == 0


def test_server_error_bytes_are_those_iperf3_sends() -> None:
    # SERVER_ERROR is -2, ACCESS_DENIED -1, as iperf_api.h defines them (a busy Debian
    # iperf3 -s answers a second client's cookie with 0xff).
    assert server_error(IEUNIMP, 22) == b"\xfe\x00\x00\x00\x0d\x00\x00\x00\x16"
    assert deny() == b"\xff" and ACCESS_DENIED == -1


def test_the_client_reports_access_denied_and_server_terminate() -> None:
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    with pytest.raises(PeerError, match="busy") as caught:
        client.feed(b"\xff")
    assert caught.value.code == IEACCESSDENIED
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    client.feed(b"\x09\x0a\x01\x02")
    with pytest.raises(PeerError, match="server has terminated") as caught:
        client.feed(b"\x0b")
    assert caught.value.code == IESERVERTERM
    with pytest.raises(ProtocolError, match="failed already"):
        client.feed(b"\x04")


def test_a_client_that_gives_up_is_reported_not_an_error() -> None:
    server = ServerProtocol()
    server.feed(COOKIE + FORWARD_PARAMS)
    assert server.feed(b"\x0c") == [Terminated(12)]
    assert server.state == FAILED
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    client.feed(b"\x09")
    client.terminate()
    assert client.data_to_send().endswith(b"\x0c") and client.over


@pytest.mark.parametrize(
    ("data", "code", "match"),
    [
        (b"x" * 37, IEMESSAGE, "NUL"),
        (b"a" * 35 + b"\n\0", IEMESSAGE, "not printable"),
        (COOKIE + b"\x00\x00\x00\x00", IERECVPARAMS, "0 bytes"),
        (COOKIE + b"\x7f\xff\xff\xff", IERECVPARAMS, "2147483647 bytes"),
        (COOKIE + frame({"tcp": True})[:4] + b"{]" + b" " * 10, IERECVPARAMS, "malformed JSON"),
        (COOKIE + b"\x00\x00\x00\x02\xff\xfe", IERECVPARAMS, "malformed JSON"),
        (COOKIE + (4000).to_bytes(4, "big") + b"[" * 2000 + b"]" * 2000, IERECVPARAMS, "JSON"),
        (COOKIE + frame([1, 2]), IERECVPARAMS, "not a JSON object"),  # type: ignore[arg-type]
        (COOKIE + frame({"tcp": True, "time": "ten"}), IERECVPARAMS, "'time' is 'ten'"),
        (COOKIE + frame({"tcp": True, "time": -1}), IERECVPARAMS, "not a count"),
        (COOKIE + frame({"tcp": True, "time": 1.5}), IERECVPARAMS, "whole number"),
        (COOKIE + frame({"tcp": True, "udp": True}), IERECVPARAMS, "tcp and udp"),
        (COOKIE + frame({"tcp": True, "reverse": "yes"}), IERECVPARAMS, "not a boolean"),
        (COOKIE + FORWARD_PARAMS + b"\x07", IEMESSAGE, "unknown state 7"),
        (COOKIE + FORWARD_PARAMS + b"\x10", IEMESSAGE, "IPERF_DONE while creating streams"),
    ],
)
def test_malformed_client_input_is_a_protocol_error_answered_with_server_error(
    data: bytes, code: int, match: str
) -> None:
    server = ServerProtocol()
    with pytest.raises(ProtocolError, match=match) as caught:
        feed_bytewise(server, data)
    assert caught.value.code == code
    assert server.data_to_send().endswith(server_error(code))
    assert server.state == FAILED
    with pytest.raises(ProtocolError):
        server.feed(b"more")


def test_bad_results_are_refused_with_their_own_code() -> None:
    server = ServerProtocol()
    server.feed(COOKIE + FORWARD_PARAMS)
    server.start_test()
    server.feed(b"\x04")
    server.request_results()
    server.data_to_send()
    with pytest.raises(ProtocolError, match="'cpu_util_user' is None") as caught:
        server.feed(frame({"cpu_util_total": 1.0, "streams": []}))
    assert caught.value.code == IERECVRESULTS
    assert server.data_to_send() == server_error(IERECVRESULTS)


@pytest.mark.parametrize(
    ("results", "match"),
    [
        ({"streams": "none"}, "'streams' is missing or not a list"),
        ({"streams": [1]}, "not a JSON object"),
        ({"streams": [{"id": 1}]}, "'bytes' is missing"),
        ({"streams": [{"id": 1, "bytes": -5}]}, "not a count"),
        ({"streams": [{"id": 1, "bytes": 2**70}]}, "out of range"),
        ({"streams": [{"id": 1, "bytes": 1, "retransmits": 0, "jitter": "x"}]}, "'jitter'"),
    ],
)
def test_results_must_carry_what_iperf3_requires(results: dict[str, object], match: str) -> None:
    message: dict[str, object] = {
        "cpu_util_total": 1,
        "cpu_util_user": 0.5,
        "cpu_util_system": 0.5,
        "sender_has_retransmits": 0,
    }
    message.update(results)
    with pytest.raises(ProtocolError, match=match):
        TestResults.from_json(message)


def test_ids_must_not_repeat_and_optional_times_default_to_zero() -> None:
    stream = {"id": 1, "bytes": 1, "retransmits": 0, "jitter": 0, "errors": 0, "packets": 0}
    message = {
        "cpu_util_total": 1,
        "cpu_util_user": 0.5,
        "cpu_util_system": 0.5,
        "sender_has_retransmits": 0,
        "streams": [stream],
    }
    parsed = TestResults.from_json(message)
    assert parsed.streams[0].start_time == parsed.streams[0].end_time == 0.0
    with pytest.raises(ProtocolError, match="ids repeat"):
        TestResults.from_json({**message, "streams": [stream, stream]})


def test_a_control_connection_that_closes_early_is_an_error() -> None:
    server = ServerProtocol()
    server.feed(COOKIE[:10])
    with pytest.raises(ProtocolError, match="closed while cookie"):
        server.feed(b"")
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    client.feed(b"\x09\x0a")
    with pytest.raises(ProtocolError, match="closed while creating streams"):
        client.feed(b"")
    # After DISPLAY_RESULTS the client has everything: closing without IPERF_DONE is fine.
    server = ServerProtocol()
    server.feed(COOKIE + FORWARD_PARAMS)
    server.start_test()
    server.feed(b"\x04")
    server.request_results()
    server.feed(FORWARD_CLIENT_RESULTS)
    server.send_results(results_for([1, 3], 1, sender=False))
    assert server.feed(b"") == []
    assert server.state == DONE


def test_the_application_must_take_its_turns() -> None:
    server = ServerProtocol()
    with pytest.raises(RuntimeError, match="not allowed while cookie"):
        server.start_test()
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    with pytest.raises(RuntimeError, match="not allowed while cookie"):
        client.end_test()
    with pytest.raises(ProtocolError):
        ClientProtocol(TestParams(), cookie=b"short")


def test_data_after_the_end_is_an_error() -> None:
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    client.feed(b"\x09\x0a\x01\x02")
    client.end_test()
    client.feed(b"\x0d")
    client.send_results(results_for([1], 1, sender=True))
    with pytest.raises(ProtocolError, match="after the end"):
        client.feed(FORWARD_SERVER_RESULTS + b"\x0e\x01")


def test_cookies_look_like_iperf3s() -> None:
    cookies = {make_cookie() for _ in range(50)}
    assert len(cookies) == 50
    for cookie in cookies:
        assert len(cookie) == COOKIE_SIZE and cookie[-1] == 0
        assert set(cookie[:-1].decode()) <= set(COOKIE_ALPHABET)
        assert parse_cookie(cookie) == cookie[:-1].decode()
    with pytest.raises(ProtocolError, match="37 bytes, not 3"):
        parse_cookie(b"ab\0")


def test_params_written_out_carry_every_option_we_model() -> None:
    params = TestParams(
        time=0,
        bytes=5,
        blocks=0,
        parallel=4,
        reverse=True,
        length=1000,
        omit=2,
        rate=0,
        nodelay=True,
        mss=1400,
        window=1 << 20,
        congestion="reno",
        extra={"title": "x", "pacing_timer": 1000},
    )
    message = params.to_json()
    assert list(message)[:3] == ["tcp", "omit", "time"]
    assert message["MSS"] == 1400 and message["window"] == 1 << 20
    assert message["congestion"] == "reno" and message["title"] == "x"
    assert TestParams.from_json(json.loads(json.dumps(message))) == params
    assert TestParams(blocks=3, length=10).byte_limit == 30


# Fuzzing: whatever the bytes, the only exception is ProtocolError.

PREFIXES = [b"", COOKIE, COOKIE + FORWARD_PARAMS, COOKIE + FORWARD_PARAMS + b"\x04"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PREFIXES), st.binary(max_size=300), st.lists(st.integers(0, 300)))
def test_arbitrary_bytes_never_crash_the_server(
    prefix: bytes, data: bytes, cuts: list[int]
) -> None:
    server = ServerProtocol()
    try:
        feed_split(server, prefix, [])
        if server.state == "creating streams":
            server.start_test()
        feed_split(server, data, cuts)
        server.feed(b"")
    except ProtocolError:
        assert server.state == FAILED
    server.data_to_send()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"", b"\x09", b"\x09\x0a\x01\x02"]),
    st.binary(max_size=300),
    st.lists(st.integers(0, 300)),
)
def test_arbitrary_bytes_never_crash_the_client(
    prefix: bytes, data: bytes, cuts: list[int]
) -> None:
    client = ClientProtocol(TestParams(), cookie=COOKIE)
    try:
        client.feed(prefix)
        if client.state == "running":
            client.end_test()
        feed_split(client, data, cuts)
        client.feed(b"")
    except ProtocolError:
        assert client.state == FAILED
