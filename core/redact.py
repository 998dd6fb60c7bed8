"""The one redaction of the project: no credential in any text that is stored, logged or sent.

:func:`redact` removes, from any text,

- every configured secret value: each ``SecretStr`` of the configuration (exchange keys,
  secrets and passphrases, the LLM key, news API tokens, the Redis password, the webhook
  URL, Flower's basic auth), also in its URL-encoded and JSON-escaped forms; the values of
  the configuration the process runs with are kept in a process-wide registry
  (:func:`register`, filled where the configuration is installed), so code with no config
  at hand redacts them too;
- credentials by their shape: a URL's userinfo (``redis://:pw@host`` becomes
  ``redis://:***@host``), parameters whose name is a credential's (``auth_token=``,
  ``apiKey=``, ``signature=``, ``"password": "..."``), credential headers
  (``Authorization: Bearer ...``, ``X-MBX-APIKEY: ...``), bearer tokens and ``sk-`` keys.

:func:`redact_data` does the same to every string of a JSON-like value, and
:func:`scrub_exception` to an exception and its whole chain (cause and context), so that
its text, repr and traceback are fit for a task result or a log. Secrets shorter than
:data:`MIN_SECRET` characters are not replaced by value (they would mangle ordinary words);
their shapes still are.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from core.config import AppConfig

T = TypeVar("T")

#: What a credential is replaced with.
MASK = "***"
#: Secrets shorter than this are not replaced by value, only by shape.
MIN_SECRET = 4

_lock = threading.Lock()
_registered: set[str] = set()

_NAME = (
    r"[A-Za-z0-9_.-]*?(?:token|key|secret|signature|sign|passw(?:or)?d|pwd|passphrase"
    r"|authorization|auth|credentials?|cookie)"
)
_HEADER = (
    r"(?:proxy-)?authorization|(?:set-)?cookie|api-?key|api-sign"
    r"|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*-(?:api-?key|key|token|secret|sign|signature|passphrase)"
)
_SCHEME = r"(?:(?P<scheme>Bearer|Basic|Token|Digest|Bot)\s+)?"
_USERINFO = re.compile(r"(?P<start>[A-Za-z][A-Za-z0-9+.-]*://)(?P<auth>[^\s/?#'\"<>]*)@")
_QUOTED_VALUE = rf"(?P<q>['\"]){_SCHEME}(?P<value>(?:\\.|(?!(?P=q)).)*)(?P=q)"
#: ``"password": "..."`` (JSON, Python reprs) and ``api_key='...'`` (keyword reprs).
_QUOTED = re.compile(
    rf"(?P<lead>(?P<nq>['\"])(?P<name>{_NAME})(?P=nq)\s*:\s*"
    rf"|(?<![A-Za-z0-9_.-]){_NAME}\s*=\s*){_QUOTED_VALUE}",
    re.IGNORECASE,
)
#: ``auth_token=...`` in a query string, a form body or a log line.
_ASSIGNED = re.compile(
    rf"(?P<lead>(?<![A-Za-z0-9_.-]){_NAME}=)(?P<value>[^\s&#;,'\"<>(){{}}\[\]]++)(?!\()",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(
    rf"(?<![A-Za-z0-9_-])(?P<name>{_HEADER}):[ \t]*{_SCHEME}(?P<value>[^\s,;'\"<>]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
_NOT_SECRET = {"", MASK, "*" * 10, "none", "null", "true", "false"}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret (given or registered) and credential shape masked."""
    if not text:
        return text
    with _lock:
        known = frozenset(_registered.union(secrets))
    pattern = _secret_pattern(known)
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _USERINFO.sub(_mask_userinfo, text)
    text = _QUOTED.sub(_mask_quoted, text)
    text = _ASSIGNED.sub(_mask_assigned, text)
    text = _HEADER_LINE.sub(_mask_header, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _SK_KEY.sub(f"sk-{MASK}", text)


def redact_data(value: T, secrets: Iterable[str] = ()) -> T:
    """Return a copy of a JSON-like value with every string redacted.

    A string stored under a credential's name (``api_key``, ``token``) is masked whole.
    """
    known = tuple(secrets)
    return _walk(value, known)  # type: ignore[no-any-return]


def _walk(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str) and isinstance(v, str) and _is_credential_name(k)
            else _walk(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_walk(v, secrets) for v in value]
    if isinstance(value, tuple):
        items = [_walk(v, secrets) for v in value]
        named = getattr(type(value), "_make", None)  # a plain tuple would lose its field names
        return named(items) if named is not None else tuple(items)
    return value


class RedactedError(Exception):
    """Stand in for an exception whose text held a credential that redaction could not reach."""


E = TypeVar("E", bound=BaseException)


def scrub_exception(exc: E, secrets: Iterable[str] = ()) -> E | RedactedError:
    """Return ``exc`` with no credential in its text, repr, notes or chain.

    Arguments are redacted in place, so the exception keeps its type and identity. An
    exception whose text does not come from its arguments (aiohttp's ClientResponseError
    prints its request URL) is replaced by a :class:`RedactedError` that names its class and
    carries its redacted text, traceback and (scrubbed) chain.
    """
    return _scrub(exc, tuple(secrets), {})  # type: ignore[return-value]


def _scrub(
    exc: BaseException, secrets: tuple[str, ...], seen: dict[int, BaseException]
) -> BaseException:
    if id(exc) in seen:
        return seen[id(exc)]
    seen[id(exc)] = exc
    result = exc
    try:
        exc.args = tuple(_redact_arg(a, secrets) for a in exc.args)
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            exc.__notes__ = [redact(n, secrets) if isinstance(n, str) else n for n in notes]
        clean = _renders_clean(exc, secrets)
    except Exception:  # an exception that refuses new arguments: replace it
        clean = False
    if not clean:
        result = RedactedError(f"{type(exc).__qualname__}: {redact(_text(exc), secrets)}")
        result.__traceback__ = exc.__traceback__
        seen[id(exc)] = result
    suppress = exc.__suppress_context__
    for link in ("__cause__", "__context__"):
        inner = getattr(exc, link)
        cleaned = _scrub(inner, secrets, seen) if inner is not None else None
        if cleaned is not getattr(result, link):
            setattr(result, link, cleaned)
    result.__suppress_context__ = suppress  # setting __cause__ sets it: restore the original
    return result


def _redact_arg(arg: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(arg, str | list | tuple | dict):
        return _walk(arg, secrets)
    return arg


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception that cannot print itself
        return "<unprintable>"


def _renders_clean(exc: BaseException, secrets: tuple[str, ...]) -> bool:
    shown = (str(exc), repr(exc))
    return all(redact(s, secrets) == s for s in shown)


def secrets_of(config: AppConfig) -> list[str]:
    """Return every secret value of a configuration, longest first, and the parts that leak.

    Each ``SecretStr`` counts; a URL counts by its credentials (userinfo, credential query
    values, and for http(s) webhooks the path and query, where their token lives), so that
    a Redis URL is still shown as ``redis://:***@host:6379/0``; ``user:password`` lists
    (Flower's basic auth) count by each password too.
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            found.extend(_parts(node.get_secret_value()))
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(config)
    return sorted({s for s in found if len(s) >= MIN_SECRET}, key=len, reverse=True)


def _parts(value: str) -> list[str]:
    if "://" not in value:
        items = [value]
        for item in value.split(","):
            items += [item, item.partition(":")[2]] if ":" in item else [item]
        return items
    url = urlsplit(value)
    parts: list[str] = []
    if url.password:
        parts += [url.password, unquote(url.password)]
    elif url.username:
        parts += [url.username, unquote(url.username)]
    query = parse_qsl(url.query, keep_blank_values=True)
    web = url.scheme in ("http", "https")
    parts += [v for k, v in query if web or _is_credential_name(k)]
    if web:
        path = url.path.rstrip("/")
        parts += [path, f"{path}?{url.query}" if url.query else path]
    return parts


def _is_credential_name(name: str) -> bool:
    return re.fullmatch(_NAME, name, re.IGNORECASE) is not None


def register(values: Iterable[str]) -> None:
    """Add secret values to this process's registry; every later redaction masks them."""
    with _lock:
        _registered.update(v for v in values if len(v) >= MIN_SECRET)


def register_config(config: AppConfig) -> None:
    """Register every secret of a configuration (call it where the process installs it)."""
    register(secrets_of(config))


def registered() -> frozenset[str]:
    """Return the secret values registered in this process."""
    with _lock:
        return frozenset(_registered)


@functools.lru_cache(maxsize=32)
def _secret_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) >= MIN_SECRET:
            forms |= {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    if not forms:
        return None
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


def _mask_userinfo(match: re.Match[str]) -> str:
    auth = match["auth"]
    if ":" in auth:
        return f"{match['start']}{auth.split(':', 1)[0]}:{MASK}@"
    return f"{match['start']}{MASK}@"


def _masked(value: str, scheme: str | None) -> str:
    if value.strip().lower() in _NOT_SECRET:
        return value if scheme is None else f"{scheme} {value}"
    return MASK if scheme is None else f"{scheme} {MASK}"


def _mask_quoted(match: re.Match[str]) -> str:
    q = match["q"]
    return f"{match['lead']}{q}{_masked(match['value'], match['scheme'])}{q}"


def _mask_assigned(match: re.Match[str]) -> str:
    return f"{match['lead']}{_masked(match['value'], None)}"


def _mask_header(match: re.Match[str]) -> str:
    return f"{match['name']}: {_masked(match['value'], match['scheme'])}"
