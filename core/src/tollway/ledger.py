"""In-process spend ledgers: where a gateway records spend without calling itself over HTTP.

The budgets plugin settles every request's cost into a ledger (SPEC §3: ``POST
/api/internal/gateway/ledger``) and seeds its counters from the ledger's sums (``…/spend``).
When this gateway serves its own control plane, that ledger lives in this very process. Two
plugins meet here without importing each other:

* a plugin that *keeps* a ledger in this process (the control plane, when this gateway serves
  its own) offers a :class:`Ledger` from the :func:`~tollway.hookspecs.register_ledgers` hook;
* a plugin that *writes* spend (budgets) asks :func:`ledger` for it at start-up and uses it
  instead of its signed HTTP client; with none registered it talks to a standalone control plane
  (``LW_GATEWAY_BASE_URL``) over HTTP.

The unit of exchange is what the internal protocol carries: ledger entries and spend queries as
JSON-shaped dicts (see :meth:`Ledger.record` and :meth:`Ledger.spend`). A ledger validates them
exactly as the protocol's endpoints do, and refuses what they would answer with 400 by raising
:class:`LedgerInputError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tollway._context import StashKey
from tollway._registry import collect

if TYPE_CHECKING:
    from tollway.gateway import Gateway

__all__ = ["Ledger", "LedgerInputError", "ledger", "ledgers"]

_LEDGERS: StashKey[list[Ledger]] = StashKey("tollway.ledgers")


class LedgerInputError(ValueError):
    """A ledger refused an entry or a query itself (what the internal protocol answers with
    400): sending the same input again cannot succeed, so a writer drops it rather than retry.

    ``message`` says what is wrong, one ``path: problem`` per refusal (``entries[3].cost_usd:
    …``). Any *other* exception from a :class:`Ledger` means the ledger could not be reached or
    failed; the writer keeps the input and retries later.
    """

    def __init__(self, message: str) -> None:
        """Refuse with ``message`` (what is wrong and where)."""
        super().__init__(message)
        self.message = message


@runtime_checkable
class Ledger(Protocol):
    """A spend ledger inside the gateway process, offered through ``register_ledgers``.

    Both methods are ``async``; they may do blocking store work in a worker thread, never on the
    event loop. They must keep working while the gateway stops (``gateway_stopping``), because a
    writer's final flush arrives then: close the store after the other plugins' flushes (the
    control plane's ``gateway_stopping`` is ``trylast``).
    """

    #: Shown in the writer's start-up log line (``ledger=<name>``).
    name: str

    async def record(self, entries: Sequence[dict[str, Any]], node_id: str) -> int:
        """Record a batch of ledger entries, idempotently: an entry whose ``request_id`` is
        already in the ledger is skipped. ``node_id`` names the writing gateway process (kept on
        entries that carry no ``gateway_node_id``).

        :returns: how many entries were accepted (all of them, or it raises).
        :raises LedgerInputError: an entry is malformed; nothing of the batch was recorded.
        """
        ...

    async def spend(self, queries: Sequence[dict[str, Any]]) -> list[int]:
        """The ledger's sums in micro-USD, one per query ``{organization_id, scope_type,
        scope_id, since, until?}`` (ISO-8601 times), in order.

        :raises LedgerInputError: a query is malformed.
        """
        ...


def ledgers(gateway: Gateway) -> list[Ledger]:
    """The ledgers installed plugins offer through ``register_ledgers``, in hook call order.

    Collected on first use and kept on ``gateway.stash``: call it from ``gateway_started`` or
    later. An object that does not look like a :class:`Ledger` stops start-up naming it.
    """
    return collect(
        gateway,
        _LEDGERS,
        "register_ledgers",
        Ledger,
        "a 'name' and async 'record(entries, node_id)' and 'spend(queries)' methods",
    )


def ledger(gateway: Gateway) -> Ledger | None:
    """The first ledger offered through ``register_ledgers``, or ``None`` when no installed
    plugin keeps one in this process (then spend goes to a standalone control plane over
    HTTP)."""
    found = ledgers(gateway)
    return found[0] if found else None
