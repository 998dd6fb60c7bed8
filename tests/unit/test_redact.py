"""The one redaction: configured secrets and credential shapes, in texts, data and exceptions."""

from __future__ import annotations

import io
import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import fakeredis
import pytest
import yarl
from celery import Celery
from multidict import CIMultiDict, CIMultiDictProxy

import core.redact as redact_module
from core.config_loader import load_config
from core.errors import AuthenticationError, BackOffError, CryptoAIError, InvalidRequestError
from core.redact import (
    MASK,
    RedactedError,
    redact,
    redact_data,
    register,
    register_config,
    registered,
    scrub_exception,
    secrets_of,
)
from core.redis_target import redact_url
from exchanges.errors import translated

KEY = "k3y-AAAA1111-binance"
SECRET = "s3c-BBBB2222-binance"
# raised below by name: a traceback quotes the source line, and a literal there would show
SIGNED = "GET http://h/account?signature=abcdef0123"
TOKEN_URL = "http://h/posts?auth_token=tok-SECRET-1"


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Give each test an empty process registry (and leave the real one as it was)."""
    fresh: set[str] = set()
    monkeypatch.setattr(redact_module, "_registered", fresh)
    yield fresh


# -- values ---------------------------------------------------------------------------------


def test_given_and_registered_secrets_are_masked_in_every_form() -> None:
    assert redact(f"signing {KEY} now", [KEY]) == f"signing {MASK} now"
    assert KEY in redact(f"signing {KEY} now"), "not registered, not given: no shape either"
    register([SECRET, "abc"])
    assert registered() == {SECRET}, "values shorter than MIN_SECRET are not kept"
    odd = 'p@ss/w"rd+1 2'
    register([odd])
    for shown in (SECRET, "p%40ss%2Fw%22rd%2B1%202", "p%40ss%2Fw%22rd%2B1+2", 'p@ss/w\\"rd+1 2'):
        assert redact(f"x {shown} y") == f"x {MASK} y", shown
    assert redact("abc stays") == "abc stays"


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    assert redact("tok-12345-extra", ["tok-12345", "tok-12345-extra"]) == MASK


# -- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:1/0", "rediss://user:***@h:1/0"),
        ("redis://:p@ss@h:1/0", "redis://:***@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("https://ghp_token@github.com/x", "https://***@github.com/x"),
        (
            "url='http://bob:hunter2@h/x' and mail bob@h.org",
            "url='http://bob:***@h/x' and mail bob@h.org",
        ),
        ("see http://example.com/a then bob@h.org", "see http://example.com/a then bob@h.org"),
    ],
)
def test_url_userinfo_keeps_the_user_and_the_host(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "auth_token",
        "access_token",
        "apikey",
        "api_key",
        "apiKey",
        "key",
        "listenKey",
        "secret",
        "client_secret",
        "signature",
        "password",
        "passphrase",
    ],
)
def test_credential_parameters_are_masked(name: str) -> None:
    url = f"http://h/x?symbol=BTCUSDT&{name}=v4lue-1&timestamp=17&recvWindow=5000"
    assert redact(url) == f"http://h/x?symbol=BTCUSDT&{name}={MASK}&timestamp=17&recvWindow=5000"
    assert redact(f"{name}=v4lue-1&limit=5") == f"{name}={MASK}&limit=5", "a form body"


def test_other_parameters_and_config_messages_are_left_alone() -> None:
    for text in (
        "GET /api/v3/depth?symbol=BTCUSDT&limit=20",
        "exchanges.binance.api_key: trading.mode is 'live' but this exchange has no api_key",
        "unknown key; expected one of: api_key, api_secret",
        "ChatOpenAI(api_key=SecretStr('**********'), model='m')",
        '{"api_key": null, "tokens": 70}',
        "Invalid API-key, IP, or permissions for action.",
    ):
        assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefgh123", "Authorization: Bearer ***"),
        ("authorization: Basic YWRtaW46cGFzcw==", "authorization: Basic ***"),
        ("X-MBX-APIKEY: abc123\r\nHost: h", "X-MBX-APIKEY: ***\r\nHost: h"),
        ("OK-ACCESS-PASSPHRASE: hunter2", "OK-ACCESS-PASSPHRASE: ***"),
        ("API-Key: k1 API-Sign: s1", "API-Key: *** API-Sign: ***"),
        ("{'Authorization': 'Bearer abcdefgh123'}", "{'Authorization': 'Bearer ***'}"),
        ('{"X-MBX-APIKEY": "abc", "Host": "h"}', '{"X-MBX-APIKEY": "***", "Host": "h"}'),
        ('{"password":"p", "user": "u"}', '{"password":"***", "user": "u"}'),
        ("Request(api_key='abc', timeout=5)", "Request(api_key='***', timeout=5)"),
        ("sent Bearer abcdefgh123 upstream", "sent Bearer *** upstream"),
        (
            "Incorrect API key provided: sk-proj-abcdefghijklmnop1234",
            "Incorrect API key provided: sk-***",
        ),
    ],
)
def test_credential_headers_bodies_and_tokens_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redaction_is_idempotent() -> None:
    text = (
        "GET http://bob:pw@h/x?auth_token=t0k&symbol=BTC Authorization: Bearer abcdefgh123 "
        f"{{'apiKey': 'abc'}} signature=ff00 {KEY}"
    )
    once = redact(text, [KEY])
    assert redact(once, [KEY]) == once
    assert KEY not in once and "pw@" not in once and "t0k" not in once and "ff00" not in once


# -- configuration --------------------------------------------------------------------------


def test_every_secret_of_a_loaded_config_and_its_leaking_parts(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "exchanges:\n  binance: {}\n"
        "news:\n  apis: [{name: panic, url: 'http://n/api', token: tok-NEWS-5555}]\n"
    )
    env = {
        "BINANCE_API_KEY": KEY,
        "BINANCE_API_SECRET": SECRET,
        "BINANCE_API_PASSWORD": "pp-CCCC3333",
        "OPENAI_API_KEY": "sk-DDDD4444",
        "REDIS_URL": "redis://:pw%40EEEE5555@redis.internal:6379/0",
        "CRYPTO_AI__MONITORING__ALERTS__WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/XXXXYYYY?token=wh-FFFF6666",
        "CRYPTO_AI__MONITORING__FLOWER__BASIC_AUTH": "admin:fl-GGGG7777,ops:fl-HHHH8888",
    }
    config = load_config(tmp_path / "c.yaml", env=env)
    found = set(secrets_of(config))
    expected = {KEY, SECRET, "pp-CCCC3333", "sk-DDDD4444", "tok-NEWS-5555", "pw@EEEE5555"}
    assert expected | {"wh-FFFF6666", "fl-GGGG7777", "fl-HHHH8888"} <= found
    register_config(config)
    # a Redis URL is still shown with its host; a webhook keeps only its host
    assert redact_url(env["REDIS_URL"]) == "redis://:***@redis.internal:6379/0"
    hook = redact(f"POST {env['CRYPTO_AI__MONITORING__ALERTS__WEBHOOK_URL']} failed")
    assert hook == "POST https://hooks.example.com*** failed"
    assert redact("path /services/T0/B0/XXXXYYYY only") == "path *** only"
    basic = redact(f"auth {env['CRYPTO_AI__MONITORING__FLOWER__BASIC_AUTH']}")
    assert "fl-GGGG7777" not in basic and "fl-HHHH8888" not in basic


# -- data -----------------------------------------------------------------------------------


def test_data_keeps_its_shape_and_loses_its_secrets() -> None:
    report = {
        "plan": {"fallback_reason": f"llm unavailable: Incorrect API key provided: {KEY}"},
        "news": [{"url": "http://n/1?token=abc", "sentiment": 0.5}],
        "headers": {"X-MBX-APIKEY": "plain-value", "count": 3},
        "pair": ("ok", f"x {KEY}"),
        "flag": True,
    }
    clean = redact_data(report, [KEY])
    assert json.loads(json.dumps(clean)) == {
        "plan": {"fallback_reason": f"llm unavailable: Incorrect API key provided: {MASK}"},
        "news": [{"url": f"http://n/1?token={MASK}", "sentiment": 0.5}],
        "headers": {"X-MBX-APIKEY": MASK, "count": 3},
        "pair": ["ok", f"x {MASK}"],
        "flag": True,
    }
    assert isinstance(clean["pair"], tuple)
    assert KEY in report["plan"]["fallback_reason"], "the input is not changed"


# -- exceptions -----------------------------------------------------------------------------


def test_project_errors_redact_their_message_when_made() -> None:
    register([KEY])
    assert str(CryptoAIError(f"refused {KEY}")) == f"refused {MASK}"
    throttled = BackOffError(f"429 for http://h/x?apiKey={KEY}", 5.0)
    assert str(throttled) == f"429 for http://h/x?apiKey={MASK}" and throttled.retry_after == 5.0


def test_a_chained_vendor_error_is_scrubbed_in_place_with_its_type() -> None:
    register([KEY])
    try:
        try:
            raise ccxt.AuthenticationError(f'binance {{"msg": "Invalid API-key {KEY}"}}')
        except ccxt.AuthenticationError as vendor:
            raise RuntimeError(SIGNED) from vendor
    except RuntimeError as exc:
        caught = exc
    clean = scrub_exception(caught)
    assert clean is caught and isinstance(clean.__cause__, ccxt.AuthenticationError)
    assert clean.__suppress_context__
    text = "".join(traceback.format_exception(clean))
    assert KEY not in text and "abcdef0123" not in text
    assert "Invalid API-key ***" in text and "signature=***" in text


def _client_response_error(url: str) -> aiohttp.ClientResponseError:
    headers = CIMultiDictProxy(CIMultiDict[str]())
    info = aiohttp.RequestInfo(yarl.URL(url), "GET", headers, yarl.URL(url))
    return aiohttp.ClientResponseError(info, (), status=401, message="Unauthorized")


def test_an_error_that_prints_more_than_its_arguments_gets_a_stand_in() -> None:
    try:
        raise _client_response_error(TOKEN_URL)
    except aiohttp.ClientResponseError as exc:
        caught = exc
    clean = scrub_exception(caught)
    assert isinstance(clean, RedactedError)
    assert str(clean) == (
        "ClientResponseError: 401, message='Unauthorized', url='http://h/posts?auth_token=***'"
    )
    assert clean.__traceback__ is caught.__traceback__
    assert "tok-SECRET-1" not in "".join(traceback.format_exception(clean))


def test_a_clean_error_is_returned_unchanged() -> None:
    error = ValueError("nothing to hide")
    assert scrub_exception(error) is error and error.args == ("nothing to hide",)


def test_translated_ccxt_errors_carry_no_credential_and_keep_their_cause_type() -> None:
    register([KEY])
    with pytest.raises(AuthenticationError) as info, translated(write=False):
        raise ccxt.AuthenticationError(
            f'binance {{"code":-2014,"msg":"Invalid API-key {KEY}"}} '
            "GET https://api/x?timestamp=1&signature=ffee0011"
        )
    assert KEY not in str(info.value) and "ffee0011" not in str(info.value)
    assert isinstance(info.value.__cause__, ccxt.AuthenticationError)
    assert KEY not in str(info.value.__cause__) and "ffee0011" not in str(info.value.__cause__)
    with pytest.raises(InvalidRequestError) as missing, translated(write=False):
        raise ccxt.OrderNotFound(f"binance order not found for {KEY}")
    assert isinstance(missing.value.__cause__, ccxt.OrderNotFound), "find_order relies on it"


# -- where the text goes: task results, logs, alerts ----------------------------------------


@pytest.fixture
def eager_app() -> Celery:
    from workers.app import RedactingTask

    app = Celery("redaction-test", task_cls=RedactingTask, set_as_current=False)
    app.conf.update(task_always_eager=True, task_eager_propagates=False, result_backend=None)
    return app


def test_task_results_and_failures_are_redacted(eager_app: Celery) -> None:
    register([KEY])

    @eager_app.task(bind=True, name="t.leaky")
    def leaky(self: Any, kind: str) -> Any:
        if kind == "vendor":
            raise RuntimeError(f"openai said: Incorrect API key provided: {KEY}")
        if kind == "aiohttp":
            raise _client_response_error(TOKEN_URL)
        return {"id": self.request.id, "echo": f"key {KEY}", "url": "redis://:pw@h/0"}

    done = leaky.apply(args=["ok"], task_id="task-1")
    assert done.result == {"id": "task-1", "echo": f"key {MASK}", "url": "redis://:***@h/0"}
    assert leaky("ok")["echo"] == f"key {MASK}", "called directly, as a function"
    with pytest.raises(RuntimeError, match=r"provided: \*\*\*$"):
        leaky("vendor")
    failed = leaky.apply(args=["vendor"])
    assert isinstance(failed.result, RuntimeError), "an argument-based error keeps its type"
    assert KEY not in str(failed.result) and KEY not in failed.traceback
    assert "Incorrect API key provided: ***" in failed.traceback
    stand_in = leaky.apply(args=["aiohttp"])
    assert isinstance(stand_in.result, RedactedError)
    assert "tok-SECRET-1" not in stand_in.traceback and "auth_token=***" in stand_in.traceback


def test_every_record_of_the_process_is_redacted_whatever_its_handler() -> None:
    from monitoring.logs import redact_every_record

    register([KEY])
    previous = logging.getLogRecordFactory()
    logger = logging.getLogger("test.redact.factory")
    logger.propagate = False  # like Celery's task logger: no root handler sees it
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        redact_every_record()
        redact_every_record()  # a second install does not wrap twice
        assert getattr(logging.getLogRecordFactory(), "redacts", False)
        logger.info("calling %s with %s", "http://h/x?auth_token=t0ken-1", KEY)
        try:
            raise RuntimeError(f"boom {KEY}")
        except RuntimeError:
            logger.exception("failed: Authorization: Bearer abcdefgh1234")
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "t0ken-1" not in out and KEY not in out and "abcdefgh1234" not in out
    assert "calling http://h/x?auth_token=*** with ***" in out and "boom ***" in out


def test_alerts_reach_the_log_and_the_stream_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from core.config import AlertsConfig
    from core.keys import KeySpace
    from monitoring.alerts import AlertEngine, Notification

    register([KEY])
    client = fakeredis.FakeRedis()
    engine = AlertEngine(client, KeySpace("t:"), AlertsConfig())
    with caplog.at_level(logging.WARNING, logger="monitoring.alerts"):
        engine.send(Notification("breaker_open", "firing", 1.0, 0.0, f"binance {KEY}", 0.0))
    entries = client.xrange("t:alerts:stream")
    stored = json.dumps([{k.decode(): v.decode() for k, v in e[1].items()} for e in entries])
    assert KEY not in stored + caplog.text and "binance ***" in stored
    assert "binance ***" in caplog.text
