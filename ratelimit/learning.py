"""Limits learned from an exchange's throttle answers, shared by the fleet.

An exchange that publishes no usage count (OKX, Kraken, Coinbase, HTX) is also *learned
from*: a throttle answer to a request the fleet admitted says the pool's real limit is
below ours, so the pool's limit is cut, fleet-wide, by AIMD (:meth:`UsageFeedback.learn`):

- multiplicative decrease: the limit in force is multiplied by :data:`DECREASE` (halved),
  never below one request (the pool's lightest weight, plus its high-priority reserve),
  and at most once per pool window across the fleet: every answer refused in the window
  of one overrun (the in-flight requests of every process) is one signal, not N;
- additive increase: after :data:`RECOVER_AFTER` seconds without a decrease the limit
  climbs back by :data:`RECOVER_STEP` of the table's value per further quiet period, up to
  the table's (a slow probe: the real limit may have been raised, or the 429 was not ours).

The learned limits live in Redis (``KeySpace.learned_limits``: per pool the lowered limit
and the Redis time of the cut; recovery is computed from them on read, so nothing writes
while quiet). Every process re-reads them at most every :data:`REFRESH_EVERY` seconds
from its response path and prices its pools with them; the decision stays one EVALSHA.

Limits the exchange *publishes* (Binance's ``exchangeInfo.rateLimits``, OKX's
``trade/account-rate-limit``, the limit HTX's interval headers imply) are adopted when lower
than the configured ones (:meth:`LimitLearning.adopt_limits`: the lower of the two, again
whenever the published value changes, up or down) and shared in the same hash
(``published:<pool>``), so every process adopts what one of them read. A limit the exchange
must be asked for is asked once per fleet (:meth:`LimitLearning.aclaim_published`: one
process claims the question for :data:`ASK_EVERY` seconds).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.config import RateLimitingConfig
from core.events import emit
from ratelimit.backend import LimiterBackend, Op
from ratelimit.limits import share
from ratelimit.pools import PoolSpec
from ratelimit.tables import ExchangeTable, min_weight

log = logging.getLogger(__name__)

#: Learned limits (see the module docstring): the multiplicative decrease per overrun, the
#: quiet period before (and between) recovery steps, each step as a share of the table's
#: limit, how long the fleet keeps what it learned, how often a process re-reads it.
DECREASE = 0.5
RECOVER_AFTER = 30.0
RECOVER_STEP = 0.05
LEARNED_TTL = 86400.0
REFRESH_EVERY = 1.0
#: How long one process's claim to ask the exchange for its published limits holds (OKX
#: recomputes an account's order limit daily): the rest of the fleet reads the answer.
ASK_EVERY = 3600.0
#: Fields of the learned hash besides the learned limits: the published ones, the claim.
PUBLISHED, ASKED = "published:", "asked:at"

#: KEYS[1] the learned hash; ARGV: recovery period, TTL (ms), pool count, then per pool
#: name, table limit, recovery step, floor, hold-off (s), decrease factor. Replies with
#: the Redis time (seconds, microseconds) and the hash after the cut, as _READ does.
_LEARN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local every = tonumber(ARGV[1])
for i = 0, tonumber(ARGV[3]) - 1 do
  local b = 4 + i * 6
  local name = ARGV[b]
  local tbl, step, floor = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local holdoff, factor = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local limit = tonumber(redis.call('HGET', KEYS[1], name))
  local at = tonumber(redis.call('HGET', KEYS[1], name .. ':at'))
  if not (at and now - at < holdoff) then
    local current = tbl
    if limit and at then
      current = math.min(tbl, limit + step * math.floor(math.max(0, now - at) / every))
    end
    local cut = math.max(floor, current * factor)
    redis.call('HSET', KEYS[1], name, string.format('%.17g', math.min(cut, current)),
      name .. ':at', string.format('%.6f', now))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local reply = {t[1], t[2]}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do reply[#reply + 1] = v end
return reply
"""

#: KEYS[1] the learned hash; ARGV: TTL (ms), then field, value pairs (published limits).
#: Replies as _READ does.
_PUBLISH = """
local t = redis.call('TIME')
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local reply = {t[1], t[2]}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do reply[#reply + 1] = v end
return reply
"""

#: KEYS[1] the learned hash; ARGV: hold (s), TTL (ms), '1' to claim or '0' to release.
#: Replies 1 when this caller holds the claim to ask the exchange, else 0.
_CLAIM = """
if ARGV[3] == '0' then redis.call('HDEL', KEYS[1], 'asked:at') return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local at = tonumber(redis.call('HGET', KEYS[1], 'asked:at'))
if at and now - at < tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'asked:at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

#: KEYS[1] the learned hash. Replies with the Redis time and the hash.
_READ = """
local t = redis.call('TIME')
local reply = {t[1], t[2]}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do reply[#reply + 1] = v end
return reply
"""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def recovered(limit: float, at: float, now: float, table: float, step: float) -> float:
    """Return a limit cut to ``limit`` at ``at``, recovered by ``now`` (additive increase)."""
    quiet = math.floor(max(0.0, now - at) / RECOVER_AFTER)
    return min(table, limit + step * quiet)


def _floor(table: ExchangeTable, pool: PoolSpec) -> float:
    """Return the least a pool is cut to: one lightest request past its reserve."""
    lightest = min_weight(table, pool.name) or 1.0
    return min(pool.limit, lightest / (1.0 - pool.reserve))


def _holdoff(pool: PoolSpec) -> float:
    """Return how long one overrun's refusals keep arriving: one window (or refill)."""
    return pool.window if pool.window > 0 else pool.limit / pool.rate


def _fields(reply: Any) -> tuple[float, dict[str, str]]:
    """Read a learn/read/publish reply: the Redis time and the hash."""
    sec, usec, *flat = (_text(v) for v in reply)
    return float(sec) + float(usec) / 1e6, dict(zip(flat[::2], flat[1::2], strict=True))


def _published(fields: Mapping[str, str]) -> dict[str, float]:
    """Return the published limits in a learned hash, by pool."""
    return {
        name[len(PUBLISHED) :]: float(value)
        for name, value in fields.items()
        if name.startswith(PUBLISHED)
    }


def _learned(table: ExchangeTable, now: float, fields: Mapping[str, str]) -> dict[str, float]:
    """Return each pool's learned limit ``now`` in a learned hash, recovery included."""
    learned: dict[str, float] = {}
    for pool in table.pools:
        raw, at = fields.get(pool.name), fields.get(f"{pool.name}:at")
        if raw is None or at is None:
            continue
        limit = recovered(float(raw), float(at), now, pool.limit, RECOVER_STEP * pool.limit)
        if limit < pool.limit:
            learned[pool.name] = limit
    return learned


class LimitLearning:
    """The limiter's learning half; ``ExchangeRateLimitManager`` provides the tables."""

    backend: LimiterBackend
    #: Learned limits: when this process last read them (monotonic seconds), the scripts,
    #: and, without Redis, the hashes themselves; set on first use.
    _learn_state: dict[str, Any] | None = None

    tables: dict[str, ExchangeTable]
    settings: RateLimitingConfig
    _local_tables: dict[str, ExchangeTable]
    _untaught: dict[str, ExchangeTable] | None
    _taught: dict[str, dict[str, float]] | None
    #: The tables as configured, before any published limit; set on first adoption.
    _configured: dict[str, ExchangeTable] | None = None

    def table(self, exchange: str) -> ExchangeTable:
        """Return the effective limits of a configured exchange."""
        raise NotImplementedError

    def adopt_limits(self, exchange: str, published: Mapping[str, float]) -> dict[str, float]:
        """Price pools at the lower of the configured limit and what the exchange publishes
        (less the safety margin); return the pools changed and their new limits.

        A later publication replaces an earlier one (a raised limit is followed back up, never
        above the configured one: the table, or the operator's override, may be deliberately
        lower). What this process adopts is shared with the fleet on its next refresh."""
        self._pending_publish().setdefault(exchange, {}).update(published)
        return self._adopt(exchange, published)

    def _adopt(self, exchange: str, published: Mapping[str, float]) -> dict[str, float]:
        if self._configured is None:
            self._configured = {}
        configured = self._configured.setdefault(exchange, self.untaught(exchange))
        margin = 1.0 - self.settings.safety_margin
        changed: dict[str, float] = {}
        pools = []
        for pool in self.untaught(exchange).pools:
            limit = pool.limit
            if published.get(pool.name, 0) > 0:
                limit = min(configured.pool(pool.name).limit, published[pool.name] * margin)
            if not math.isclose(limit, pool.limit):
                changed[pool.name] = limit
            pools.append(dataclasses.replace(pool, limit=limit))
        if changed:
            if self._untaught is None:
                self._untaught = {}
            self._untaught[exchange] = dataclasses.replace(
                self.untaught(exchange), pools=tuple(pools)
            )
            self._price(exchange)
            emit("limiter.adopted", exchange=exchange, pools=len(changed))
            log.warning(
                "%s publishes limits other than the fleet's; now %s",
                exchange,
                ", ".join(f"{name} {limit:g}" for name, limit in changed.items()),
            )
        return changed

    def published_limit(self, exchange: str, pool: str) -> float:
        """Return a pool's limit as the exchange counts it: the adopted (or configured)
        limit without the safety margin."""
        return self.untaught(exchange).pool(pool).limit / (1.0 - self.settings.safety_margin)

    def untaught(self, exchange: str) -> ExchangeTable:
        """Return an exchange's limits before what the fleet learned from its 429s: the
        table, less the limits the exchange published."""
        return (self._untaught or {}).get(exchange) or self.table(exchange)

    def apply_learned(self, exchange: str, learned: Mapping[str, float]) -> dict[str, float]:
        """Price this process's pools with the fleet's learned limits (``ratelimit.feedback``:
        cut after a 429, recovering toward the table); return the pools whose limit changed.

        A bucket's rate is scaled with its capacity, so the learned limit is its rate too."""
        before = self.table(exchange)
        if self._untaught is None:
            self._untaught = {}
        self._untaught.setdefault(exchange, before)  # no learned limit applied yet
        if self._taught is None:
            self._taught = {}
        self._taught[exchange] = dict(learned)
        self._price(exchange)
        after = self.table(exchange)
        changed = {
            new.name: new.limit
            for old, new in zip(before.pools, after.pools, strict=True)
            if not math.isclose(old.limit, new.limit)
        }
        if changed:
            emit("limiter.learned", exchange=exchange, pools=len(changed))
            log.warning(
                "%s: limits learned from its throttle answers: %s",
                exchange,
                ", ".join(f"{name} {limit:g}" for name, limit in changed.items()),
            )
        return changed

    def _price(self, exchange: str) -> None:
        """Set the table in force: the untaught one, each pool at most its learned limit."""
        table = self.untaught(exchange)
        learned = (self._taught or {}).get(exchange, {})
        pools = tuple(
            p.scaled(learned[p.name] / p.limit) if learned.get(p.name, p.limit) < p.limit else p
            for p in table.pools
        )
        self.tables[exchange] = dataclasses.replace(table, pools=pools)
        self._local_tables = share(self.tables, self.settings.fleet_processes)

    def _state(self) -> dict[str, Any]:
        if self._learn_state is None:
            self._learn_state = {
                "read": {},
                "local": {},
                "scripts": {},
                "publish": {},
                "published": {},
            }
        return self._learn_state

    def _pending_publish(self) -> dict[str, dict[str, float]]:
        """Return the published limits this process adopted and has not shared yet."""
        pending: dict[str, dict[str, float]] = self._state()["publish"]
        return pending

    def _applied(self, exchange: str, reply: Any) -> dict[str, float]:
        """Adopt the fleet's published limits in a reply, then price its learned ones."""
        now, fields = _fields(reply)
        published = _published(fields)
        self._state()["published"][exchange] = published
        if published:
            self._adopt(exchange, published)
        return self.apply_learned(exchange, _learned(self.untaught(exchange), now, fields))

    def _learned_op(
        self,
        exchange: str,
        text: str,
        args: list[str],
        parse: Callable[[Any], Any] | None = None,
    ) -> Op[Any]:
        """Run a learned-limits script in Redis, or (another backend) on a local hash."""
        state = self._state()
        clients, keys = getattr(self.backend, "clients", None), getattr(self.backend, "keys", None)
        read = parse or (lambda reply: self._applied(exchange, reply))
        if clients is None or keys is None:  # one process: the same arithmetic, here
            fields: dict[str, str] = state["local"].setdefault(exchange, {})
            return Op(read, local=lambda: _run_locally(fields, text, args))
        script = state["scripts"].get(text)
        if script is None:
            script = state["scripts"][text] = clients.script(text)
        return Op(read, script, [keys.learned_limits(exchange)], args)

    def publishing(self, exchange: str, published: Mapping[str, float]) -> Op[dict[str, float]]:
        """Return the op that shares published limits with the fleet and adopts them here
        (and what the fleet shared before); its result is the pools re-priced."""
        self._pending_publish().pop(exchange, None)
        args = [str(math.ceil(LEARNED_TTL * 1000))]
        for name, limit in published.items():
            args += [f"{PUBLISHED}{name}", repr(float(limit))]
        self._state()["read"][exchange] = time.monotonic()
        return self._learned_op(exchange, _PUBLISH, args)

    def fleet_published(self, exchange: str) -> dict[str, float]:
        """Return the published limits the fleet shared, as last read (by pool)."""
        found: dict[str, float] = self._state()["published"].get(exchange, {})
        return dict(found)

    def _claiming(self, exchange: str, claim: bool) -> Op[bool]:
        args = [repr(ASK_EVERY), str(math.ceil(LEARNED_TTL * 1000)), "1" if claim else "0"]
        return self._learned_op(exchange, _CLAIM, args, parse=lambda reply: int(reply) == 1)

    async def aclaim_published(self, exchange: str) -> bool:
        """Claim, for the fleet, the question "what limits do you publish?" to the exchange:
        True for one process per :data:`ASK_EVERY` seconds, False for the rest (they adopt
        the answer from Redis on their next refresh)."""
        return await self.backend.arun(self._claiming(exchange, claim=True))

    async def arelease_published(self, exchange: str) -> None:
        """Give the claim back (the question failed): the next process to claim asks."""
        await self.backend.arun(self._claiming(exchange, claim=False))

    def learnable_pools(
        self, exchange: str, scope: str | None, pool: str | None = None
    ) -> list[str]:
        """Return the pools a throttle answer teaches: the one it names, else the request
        scope's own pools (not the config's mirrors); none for an exchange that reports its
        usage (Binance: its count is adopted, and its published limits)."""
        table = self.untaught(exchange)
        if table.usage_headers:
            return []
        if pool is not None:
            return [pool]
        if scope is None or scope not in table.scopes:
            return []
        return list(table.scopes[scope])

    def _learning(self, exchange: str, pools: Iterable[str]) -> Op[dict[str, float]]:
        table = self.untaught(exchange)
        specs = [table.pool(name) for name in dict.fromkeys(pools)]
        args = [repr(RECOVER_AFTER), str(math.ceil(LEARNED_TTL * 1000)), str(len(specs))]
        for p in specs:
            step, floor = RECOVER_STEP * p.limit, _floor(table, p)
            args += [p.name, repr(p.limit), repr(step), repr(floor), repr(_holdoff(p))]
            args.append(repr(DECREASE))
        self._state()["read"][exchange] = time.monotonic()
        return self._learned_op(exchange, _LEARN, args)

    def learn(self, exchange: str, pools: Iterable[str]) -> dict[str, float]:
        """Cut ``pools`` after the exchange refused a request the fleet admitted (AIMD, see
        the module docstring), fleet-wide; return the pools this process re-priced."""
        names = list(pools)
        return self.backend.run(self._learning(exchange, names)) if names else {}

    async def alearn(self, exchange: str, pools: Iterable[str]) -> dict[str, float]:
        """:meth:`learn` for async code."""
        names = list(pools)
        return await self.backend.arun(self._learning(exchange, names)) if names else {}

    def _reading(self, exchange: str, force: bool) -> Op[dict[str, float]]:
        pending = self._pending_publish().get(exchange)
        if pending:  # what this process adopted goes to the fleet now
            return self.publishing(exchange, pending)
        read: dict[str, float] = self._state()["read"]
        now = time.monotonic()
        if not force and now - read.get(exchange, -REFRESH_EVERY) < REFRESH_EVERY:
            return Op(lambda _: {}, local=lambda: None)
        read[exchange] = now
        return self._learned_op(exchange, _READ, [])

    def refresh_learned(self, exchange: str, *, force: bool = False) -> dict[str, float]:
        """Share the limits this process adopted, and re-read the fleet's learned and
        published limits (at most every :data:`REFRESH_EVERY` s unless ``force``)."""
        return self.backend.run(self._reading(exchange, force))

    async def arefresh_learned(self, exchange: str, *, force: bool = False) -> dict[str, float]:
        """:meth:`refresh_learned` for async code."""
        return await self.backend.arun(self._reading(exchange, force))


def _run_locally(fields: dict[str, str], text: str, args: list[str]) -> Any:
    """Run one of the learned-limits scripts on a local hash (no TTL), as the Lua does."""
    now = time.time()
    if text == _CLAIM:
        at = fields.get(ASKED)
        if args[2] == "0":
            fields.pop(ASKED, None)
            return 0
        if at is not None and now - float(at) < float(args[0]):
            return 0
        fields[ASKED] = f"{now:.6f}"
        return 1
    if text == _PUBLISH:
        fields.update(zip(args[1::2], args[2::2], strict=True))
    if text == _LEARN:
        _learn_locally(fields, args, now)
    sec = math.floor(now)
    return [str(sec), str(round((now - sec) * 1e6)), *(x for kv in fields.items() for x in kv)]


def _learn_locally(fields: dict[str, str], args: list[str], now: float) -> None:
    every = float(args[0])
    for i in range(int(args[2])):
        name, *rest = args[3 + i * 6 : 9 + i * 6]
        table, step, floor, holdoff, factor = (float(v) for v in rest)
        raw, at = fields.get(name), fields.get(f"{name}:at")
        if at is not None and now - float(at) < holdoff:
            continue
        current = table
        if raw is not None and at is not None:
            quiet = math.floor(max(0.0, now - float(at)) / every)
            current = min(table, float(raw) + step * quiet)
        fields[name] = repr(min(max(floor, current * factor), current))
        fields[f"{name}:at"] = f"{now:.6f}"
