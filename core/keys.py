"""Every Redis key the fleet writes or reads, built in one place.

Layout (``<p>`` is ``redis.key_prefix``, empty by default; Celery's own queue and result
keys get the same prefix through kombu's ``global_keyprefix``):

    <p>logs:system                         capped list of recent log records (the seed's name)
    <p>fleet:health:<queue>                last health round trip per queue (hash)
    <p><queue>                             kombu's list of a queue's messages at priority
                                           step 0; step ``<n>`` (3, 6, 9) is the list
                                           ``<p><queue>\\x06\\x16<n>`` (read for queue depths)
    <p>unacked                             kombu's hash of fetched, unacknowledged messages
                                           (read by a run's waiter for stalled stages)

Analysis runs (``<r>`` a run id, ``<x>`` exchange, ``<s>`` symbol without the slash):

    <p>run:<r>:<x>:<s>:<stage>             a stage's output (JSON, with a TTL): news,
                                           snapshot, long, short, plan, execution, report,
                                           and ``error``: the first failed stage's one line
    <p>run:*:<x>:*:<stage>                 (SCAN pattern) a stage's outputs on one exchange
                                           in every run, e.g. ``execution`` to reconcile
    <p>run:<r>:<x>:<s>:llm                 the symbol's LLM usage per stage (hash, fields
                                           ``<stage>:<counter>``: calls, failed,
                                           unmetered, prompt_tokens, completion_tokens,
                                           seconds, cost; same TTL as the outputs)
    <p>run:<r>:llm                         the whole run's LLM usage (hash, same counters)
    <p>runs:index                          run ids by start time (sorted set)
    <p>fleet:kill_switch                   set: no order leaves the fleet (JSON: who, when;
                                           ``crypto-ai kill``, cleared by ``kill --off``)
    <p>fleet:kill:audit                    every ``crypto-ai kill``: who, when, the orders
                                           cancelled, the positions closed (capped stream)

Monitoring and scheduling:

    <p>fleet:stats:<bucket>                the fleet's exchange calls, errors, latency and
                                           bans in one second (hash, 15 minutes TTL)
    <p>alerts:state                        the alerts firing now: since, last sent (hash)
    <p>alerts:stream                       every alert notification (capped stream)
    <p>schedule:<name>:<slot>              a beat entry's claim of its time slot, so two
                                           beats run it once (string, TTL)
    <p>fleet:reconcile:<x>                 the last reconciliation summary (JSON, 7 days)
    <p>fleet:llm:<day>                     the fleet's LLM usage on a UTC day (``YYYY-MM-DD``):
                                           the same counters (hash, 4 days TTL), checked
                                           against ``llm.budget_per_day``

Orders (the order gate, ``resilience/orders.py``; ``<c>`` a client order id):

    <p>{order:<x>}:claim:<c>               the claim of one client order id: who sends it,
                                           then its outcome (JSON, TTL)
    <p>{order:<x>}:symbol:<s>              the lease of the one order in flight per symbol
    <p>{order:<x>}:last                    when each symbol's last order was sent (hash)
    <p>orders:audit                        every order decision of the gate (capped stream)

Reconciliation (``tasks/reconcile.py``; one hash tag per exchange account):

    <p>{recon:<x>}:orders                  every fleet order by client order id: its last
                                           known status, symbol, side, exchange id (hash
                                           of JSON; final ones are never asked again)
    <p>{recon:<x>}:pending                 the client order ids whose last known status is
                                           not final: open, partially filled, unknown (set)
    <p>{recon:<x>}:ids                     client order id by the exchange's order id
                                           (hash), to name the fills
    <p>{recon:<x>}:trades                  the last fill seen per symbol: its time (ms)
                                           and the trade ids at that time (hash of JSON)
    <p>{recon:<x>}:cursor                  ``audit``: the last ``orders:audit`` entry
                                           indexed; ``records``: when the execution
                                           records were indexed (once, on the first run)
    <p>{recon:<x>}:lock                    the one reconciliation running (string, TTL)

The position ledger (``resilience/ledger.py``; one hash tag per exchange account, so one
WATCH/MULTI transaction covers a fill's keys on Redis Cluster):

    <p>{ledger:<x>}:positions              open positions by symbol (hash of JSON)
    <p>{ledger:<x>}:fill:<c>               how much of an order's fill is applied: filled,
                                           cost, fee, base_fee (JSON, 30 days TTL)
    <p>{ledger:<x>}:realized:<day>         P&L realised per symbol on a UTC day
                                           (``YYYY-MM-DD``; hash of floats, 8 days TTL)
    <p>{ledger:<x>}:history                closed positions, newest first (capped list)
    <p>{ledger:<x>}:marks                  the last price seen per symbol: price, at (hash)
    <p>{ledger:<x>}:wallet                 the paper wallet's balances per asset (hash)
    <p>{ledger:<x>}:exits                  why each symbol's last position was closed by
                                           the fleet: reason, order, at (hash of JSON)
    <p>ledger:exchanges                    the exchanges the ledger has written (set)

Protective exits (``resilience/exits.py``, ``tasks/protection.py``):

    <p>protection:lock                     the one fleet watch running (string, TTL)
    <p>protection:checked:<x>              when each symbol's exchange protection was last
                                           read (hash of epoch seconds)

Rate limiter (one hash tag per exchange account, so one Lua call can touch all its pools on
Redis Cluster; ``<x>`` is the exchange's key under ``exchanges:`` in the config):

    <p>{rl:<x>}:pool:<pool>                a pool's state: hash (buckets, fixed window) or
                                           sorted set of charges (sliding window)
    <p>{rl:<x>}:pool:<pool>:aux            sliding window's running sum and sequence (hash)
    <p>{rl:<x>}:cooldown:<pool>            a pool's cooldown after a 429/418 (PX TTL)
    <p>{rl:<x>}:cooldown                   the whole exchange's cooldown (PX TTL)
    <p>{rl:<x>}:learned                    limits learned from the exchange's 429s: per
                                           pool, ``<pool>`` the lowered limit and
                                           ``<pool>:at`` when (Redis time); hash, 1 day TTL
    <p>{rl:llm}:slots                      holders of ``llm.max_concurrency`` slots: sorted
                                           set, scored by when each lease ends (Redis ms)

Resilience:

    <p>{cb:<x>:<class>}                    circuit breaker of an exchange's endpoint class
                                           (public, private, orders): hash
    <p>{cache}:entry:<digest>              a cached response (string, TTL)
    <p>{cache}:index                       cache entries by write order, for the size bound
    <p>{cache}:seq                         the write order counter
    <p>coalesce:<digest>:lock              the fleet-wide leader of an in-flight request
    <p>coalesce:<digest>:result            its result, kept briefly for the followers
    <p>{batch:<kind>}:open                 the batch of a request kind taking members
                                           (``<kind>`` e.g. ``binance:fetch_ticker``)
    <p>{batch:<kind>}:<id>:members         the requests that joined batch ``<id>`` (list)
    <p>{batch:<kind>}:<id>:lead            its leader's lease
    <p>{batch:<kind>}:<id>:result          each request's outcome (hash, kept briefly)

Keys that one Lua script touches together share a ``{hash tag}`` so they live in one
Redis Cluster slot; later sections of this table document them as they are added.
"""

from __future__ import annotations

from dataclasses import dataclass

#: kombu's Redis transport names a queue's priority-step lists ``<queue><sep><step>``.
KOMBU_PRIORITY_SEP = "\x06\x16"


@dataclass(frozen=True)
class KeySpace:
    """Build the fleet's Redis keys under one optional prefix."""

    prefix: str = ""

    def broker_queue(self, queue: str, step: int = 0, sep: str = "\x06\x16") -> str:
        """Return kombu's Redis list of ``queue`` at priority ``step`` (0: the queue's name)."""
        return self.prefix + (f"{queue}{sep}{step}" if step else queue)

    def broker_unacked(self, name: str = "unacked") -> str:
        """Return kombu's hash of fetched, not yet acknowledged messages."""
        return f"{self.prefix}{name}"

    def logs_system(self) -> str:
        """Return the capped list that mirrors recent log records."""
        return f"{self.prefix}logs:system"

    def health(self, queue: str) -> str:
        """Return the hash that records the last health round trip through ``queue``."""
        return f"{self.prefix}fleet:health:{queue}"

    def limiter_tag(self, exchange: str) -> str:
        """Return the Redis Cluster hash tag shared by all of one exchange's limiter keys."""
        return f"{self.prefix}{{rl:{exchange}}}"

    def pool_state(self, exchange: str, pool: str) -> str:
        """Return the key holding a pool's state."""
        return f"{self.limiter_tag(exchange)}:pool:{pool}"

    def pool_aux(self, exchange: str, pool: str) -> str:
        """Return the sliding window's auxiliary hash (running sum, sequence)."""
        return f"{self.limiter_tag(exchange)}:pool:{pool}:aux"

    def pool_cooldown(self, exchange: str, pool: str) -> str:
        """Return the key whose TTL is a pool's remaining cooldown."""
        return f"{self.limiter_tag(exchange)}:cooldown:{pool}"

    def exchange_cooldown(self, exchange: str) -> str:
        """Return the key whose TTL is the whole exchange's remaining cooldown."""
        return f"{self.limiter_tag(exchange)}:cooldown"

    def learned_limits(self, exchange: str) -> str:
        """Return the hash of the pool limits the fleet learned from the exchange's 429s."""
        return f"{self.limiter_tag(exchange)}:learned"

    def llm_slots(self) -> str:
        """Return the sorted set of the LLM server's slot holders (``llm.max_concurrency``)."""
        return f"{self.limiter_tag('llm')}:slots"

    def breaker(self, exchange: str, endpoint_class: str) -> str:
        """Return the hash holding one circuit breaker's shared state."""
        return f"{self.prefix}{{cb:{exchange}:{endpoint_class}}}"

    def cache_entry(self, digest: str) -> str:
        """Return the key of one cached response."""
        return f"{self.prefix}{{cache}}:entry:{digest}"

    def cache_index(self) -> str:
        """Return the sorted set that orders cache entries by write time."""
        return f"{self.prefix}{{cache}}:index"

    def coalesce_lock(self, digest: str) -> str:
        """Return the lock held by the one process making an in-flight request."""
        return f"{self.prefix}coalesce:{digest}:lock"

    def coalesce_result(self, digest: str) -> str:
        """Return the key where that process leaves the result for the others."""
        return f"{self.prefix}coalesce:{digest}:result"

    def batch_base(self, kind: str) -> str:
        """Return the prefix of a request kind's batch keys (one hash tag per kind)."""
        return f"{self.prefix}{{batch:{kind}}}:"

    def batch_open(self, kind: str) -> str:
        """Return the pointer to the batch of ``kind`` taking members."""
        return f"{self.batch_base(kind)}open"

    def batch_members(self, kind: str, id: str) -> str:
        """Return the list of the requests that joined a batch."""
        return f"{self.batch_base(kind)}{id}:members"

    def batch_lead(self, kind: str, id: str) -> str:
        """Return a batch leader's lease."""
        return f"{self.batch_base(kind)}{id}:lead"

    def batch_result(self, kind: str, id: str) -> str:
        """Return the hash of each request's outcome in a batch."""
        return f"{self.batch_base(kind)}{id}:result"

    def cache_sequence(self) -> str:
        """Return the counter that orders cache writes."""
        return f"{self.prefix}{{cache}}:seq"

    def stage(self, run_id: str, exchange: str, symbol: str, stage: str) -> str:
        """Return the key of one stage's output in one analysis run."""
        return f"{self.prefix}run:{run_id}:{exchange}:{symbol.replace('/', '')}:{stage}"

    def llm_usage_run(self, run_id: str) -> str:
        """Return the hash of a whole run's LLM usage (every symbol and stage)."""
        return f"{self.prefix}run:{run_id}:llm"

    def llm_usage_day(self, day: str) -> str:
        """Return the hash of the fleet's LLM usage on a UTC day (``YYYY-MM-DD``)."""
        return f"{self.prefix}fleet:llm:{day}"

    def runs_index(self) -> str:
        """Return the sorted set of run ids by start time."""
        return f"{self.prefix}runs:index"

    def ledger_tag(self, exchange: str) -> str:
        """Return the hash tag shared by one exchange account's ledger keys."""
        return f"{self.prefix}{{ledger:{exchange}}}"

    def ledger_positions(self, exchange: str) -> str:
        """Return the hash of an exchange account's open positions by symbol (JSON)."""
        return f"{self.ledger_tag(exchange)}:positions"

    def ledger_fill(self, exchange: str, client_order_id: str) -> str:
        """Return the record of how much of one order's fill the ledger has applied."""
        return f"{self.ledger_tag(exchange)}:fill:{client_order_id}"

    def ledger_realized(self, exchange: str, day: str) -> str:
        """Return the hash of P&L realised per symbol on a UTC day (``YYYY-MM-DD``)."""
        return f"{self.ledger_tag(exchange)}:realized:{day}"

    def ledger_history(self, exchange: str) -> str:
        """Return the capped list of an exchange account's closed positions, newest first."""
        return f"{self.ledger_tag(exchange)}:history"

    def ledger_marks(self, exchange: str) -> str:
        """Return the hash of the last price the ledger saw per symbol."""
        return f"{self.ledger_tag(exchange)}:marks"

    def ledger_wallet(self, exchange: str) -> str:
        """Return the hash of the paper wallet's balances per asset."""
        return f"{self.ledger_tag(exchange)}:wallet"

    def ledger_exits(self, exchange: str) -> str:
        """Return the hash of why each symbol's last position was closed by the fleet."""
        return f"{self.ledger_tag(exchange)}:exits"

    def protection_lock(self) -> str:
        """Return the lease of the one fleet watch running."""
        return f"{self.prefix}protection:lock"

    def protection_checked(self, exchange: str) -> str:
        """Return the hash of when each symbol's exchange protection was last read."""
        return f"{self.prefix}protection:checked:{exchange}"

    def ledger_exchanges(self) -> str:
        """Return the set of exchanges the ledger has written."""
        return f"{self.prefix}ledger:exchanges"

    def order_claim(self, exchange: str, client_order_id: str) -> str:
        """Return the claim of one client order id (who sends it, then its outcome)."""
        return f"{self.prefix}{{order:{exchange}}}:claim:{client_order_id}"

    def order_symbol(self, exchange: str, symbol: str) -> str:
        """Return the lease that serialises orders of one symbol on one exchange account."""
        return f"{self.prefix}{{order:{exchange}}}:symbol:{symbol.replace('/', '')}"

    def order_last(self, exchange: str) -> str:
        """Return the hash of when each symbol's last order was sent (epoch seconds)."""
        return f"{self.prefix}{{order:{exchange}}}:last"

    def order_audit(self) -> str:
        """Return the capped stream of every decision the order gate made."""
        return f"{self.prefix}orders:audit"

    def kill_switch(self) -> str:
        """Return the key that, when set, stops every order."""
        return f"{self.prefix}fleet:kill_switch"

    def kill_audit(self) -> str:
        """Return the stream of every kill switch change, with what it cancelled and closed."""
        return f"{self.prefix}fleet:kill:audit"

    def queue(self, queue: str, step: int = 0) -> str:
        """Return kombu's list of ``queue``'s messages at priority ``step`` (0: the bare name)."""
        return self.prefix + (queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}")

    def fleet_stats(self, bucket: int) -> str:
        """Return the hash of the fleet's exchange-call counters in one time bucket."""
        return f"{self.prefix}fleet:stats:{bucket}"

    def alert_state(self) -> str:
        """Return the hash of the alerts firing now (when each started, when last sent)."""
        return f"{self.prefix}alerts:state"

    def alert_stream(self) -> str:
        """Return the capped stream of every alert notification sent."""
        return f"{self.prefix}alerts:stream"

    def schedule_slot(self, name: str, slot: int) -> str:
        """Return the claim of one scheduled entry's time slot (first claimer runs it)."""
        return f"{self.prefix}schedule:{name}:{slot}"

    def reconcile_summary(self, exchange: str) -> str:
        """Return the key of the last reconciliation summary of ``exchange``."""
        return f"{self.prefix}fleet:reconcile:{exchange}"

    def reconcile_tag(self, exchange: str) -> str:
        """Return the hash tag shared by one exchange account's reconciliation keys."""
        return f"{self.prefix}{{recon:{exchange}}}"

    def reconcile_orders(self, exchange: str) -> str:
        """Return the hash of the fleet's orders by client order id (last known status)."""
        return f"{self.reconcile_tag(exchange)}:orders"

    def reconcile_pending(self, exchange: str) -> str:
        """Return the set of client order ids whose last known status is not final."""
        return f"{self.reconcile_tag(exchange)}:pending"

    def reconcile_ids(self, exchange: str) -> str:
        """Return the hash of client order ids by the exchange's order id."""
        return f"{self.reconcile_tag(exchange)}:ids"

    def reconcile_trades(self, exchange: str) -> str:
        """Return the hash of the last fill seen per symbol (time and trade ids)."""
        return f"{self.reconcile_tag(exchange)}:trades"

    def reconcile_cursor(self, exchange: str) -> str:
        """Return the hash of how far the index has read its sources (audit, records)."""
        return f"{self.reconcile_tag(exchange)}:cursor"

    def reconcile_lock(self, exchange: str) -> str:
        """Return the lease of the one reconciliation of ``exchange`` running."""
        return f"{self.reconcile_tag(exchange)}:lock"

    def stage_pattern(self, exchange: str, stage: str) -> str:
        """Return the SCAN pattern of ``stage``'s outputs on ``exchange`` in every run."""
        return self.stage("*", exchange, "*", stage)
