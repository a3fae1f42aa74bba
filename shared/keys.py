"""Every Redis key, stream and group name Tickertape uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

RUNNERS_GROUP = "runners"
WEBHOOKS_GROUP = "webhooks"
"""The consumer group that derives webhook deliveries from terminal events (the outbox is the log)."""
PROJECTOR_GROUP = "projector"
"""The consumer group of the default projector: the one name it had before projectors were
replicas, kept so that an existing deployment neither replays nor skips anything on upgrade."""
DEFAULT_PROJECTOR = "default"


def projector_group(name: str) -> str:
    """The consumer group through which projector ``name`` folds the global log."""
    return PROJECTOR_GROUP if name == DEFAULT_PROJECTOR else f"{PROJECTOR_GROUP}:{name}"


def projector_of_group(group: str) -> str | None:
    """The projector whose group ``group`` is; None for another service's group."""
    if group == PROJECTOR_GROUP:
        return DEFAULT_PROJECTOR
    name = group.removeprefix(f"{PROJECTOR_GROUP}:")
    return name if name != group and name else None


EVENT_FIELD = "e"
"""The one stream field that holds an encoded event."""
RUN_ID_FIELD = "r"
"""Queue entries and global-log entries name their run here."""
SOURCE_ID_FIELD = "s"
"""Global-log entries carry the ID the same event has in its run stream."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (default ``tt:``)."""

    prefix: str = "tt:"

    @property
    def queue(self) -> str:
        return f"{self.prefix}queue"

    @property
    def queue_high(self) -> str:
        return f"{self.prefix}queue:high"

    @property
    def queues(self) -> tuple[str, str]:
        """Work queues, highest priority first."""
        return (self.queue_high, self.queue)

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def projectors(self) -> str:
        """A hash: projector name → ``<first log ID it still needs> <Redis ms when it said so>``."""
        return f"{self.prefix}projectors"

    @property
    def cancels(self) -> str:
        """A stream of every cancel of a running run: what runners watch, instead of every run stream."""
        return f"{self.prefix}cancels"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def replicated(self) -> str:
        """A pub/sub channel no one listens on: a PUBLISH to it before ``WAIT`` (``shared.durability``)."""
        return f"{self.prefix}replicated"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def meta(self, run_id: str) -> str:
        """A small hash beside the run stream: phase (queued/running/ended), owner, fence."""
        return f"{self.prefix}runmeta:{run_id}"

    def run_id_of(self, key: str | bytes) -> str:
        """The run id of a run-stream key."""
        text = key.decode() if isinstance(key, bytes) else key
        return text.removeprefix(f"{self.prefix}run:")

    def idem(self, user_id: str, key: str) -> str:
        return f"{self.prefix}idem:{user_id}:{key}"

    def join(self, user_id: str, fingerprint: str) -> str:
        """A string: the run id of the user's newest run with this request fingerprint; cleared
        when that run ends (a submit joins it only while its meta hash says it is not ended)."""
        return f"{self.prefix}join:{user_id}:{fingerprint}"

    def webhook_secret(self, run_id: str) -> str:
        """A string with the run's TTL: the run's webhook signing secret (never in an event)."""
        return f"{self.prefix}whsecret:{run_id}"

    @property
    def webhooks_due(self) -> str:
        """A sorted set: webhook delivery id → Redis ms of its next attempt (the retry schedule)."""
        return f"{self.prefix}webhooks:due"

    def webhook_delivery(self, delivery_id: str) -> str:
        """A hash: one delivery's run, URL, signed body and attempt count."""
        return f"{self.prefix}webhook:{delivery_id}"

    @property
    def webhook_endpoints_disabled(self) -> str:
        """A hash: ``<user>/<endpoint name>`` → the URL of an operator endpoint that answered 410
        (no more deliveries to that URL until the operator changes it or deletes the field)."""
        return f"{self.prefix}webhooks:disabled"

    def active(self, user_id: str) -> str:
        return f"{self.prefix}active:{user_id}"

    def rate(self, user_id: str) -> str:
        return f"{self.prefix}rate:{user_id}"

    def wakeup(self, process_id: str) -> str:
        """A per-process stream appended to so a blocked multiplexing reader wakes up."""
        return f"{self.prefix}wake:{process_id}"

    def market_cache(self, provider: str, symbol: str, day: str) -> str:
        return f"{self.prefix}cache:{provider}:{symbol}:{day}"

    def memory(self, user_id: str, provider: str, symbol: str) -> str:
        """Hash run id → ``user_id``'s past call on ``symbol`` with ``provider``'s data (the desk's
        memory). Per user: a run never learns another user's decisions."""
        return f"{self.prefix}memory:{user_id}:{provider}:{symbol}"

    def memory_owner(self, key: str) -> tuple[str, str, str]:
        """(user, provider, symbol) of a ``memory`` key (provider and symbol hold no ':')."""
        user, provider, symbol = key.removeprefix(f"{self.prefix}memory:").rsplit(":", 2)
        return user, provider, symbol

    @property
    def outcomes_backfilled(self) -> str:
        """Set once the calls recorded before outcomes were swept have been scheduled."""
        return f"{self.prefix}outcomes:backfilled"

    @property
    def outcomes_due(self) -> str:
        """A sorted set: run id → Redis ms when its call's outcome is next to be measured (its
        horizon's end, a retry's time, or a sweeper's lease while it measures it)."""
        return f"{self.prefix}outcomes:due"

    @property
    def outcomes_pending(self) -> str:
        """A hash: run id → its call awaiting an outcome (user, provider, symbol, tries so far)."""
        return f"{self.prefix}outcomes:pending"

    def eta(self, config: str) -> str:
        return f"{self.prefix}eta:{config}"

    def graph(self, thread_id: str) -> str:
        """Prefix of a LangGraph thread's checkpoint keys (``…:cps``, ``…:writes``); thread = run."""
        return f"{self.prefix}graph:{thread_id}"

    @property
    def graph_threads(self) -> str:
        """A sorted set: thread id → Redis ms its keys expire at (listing across threads)."""
        return f"{self.prefix}graph-threads"
