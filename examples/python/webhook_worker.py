"""A webhook worker: claims provider events from checkout's queue, applies them, marks them done.

    python webhook_worker.py --once          # one batch, then exit
    python webhook_worker.py                 # poll until interrupted

Delivery is at least once: a worker that outlives its claim's lease (checkout.webhook_lease) may
have applied an event that another worker then applies again, so handlers must be idempotent.
"""

import argparse
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkout_service import CheckoutError, RetryPolicy, call, in_transaction, open_pool

log = logging.getLogger("checkout.webhooks")
Event = dict[str, Any]
Handler = Callable[[Event], None]


def record_event(pool: ConnectionPool, organization_id: UUID | str, provider_event_id: str,
                 event_type: str, payload: dict[str, Any], created_at: datetime) -> dict[str, Any]:
    """What the HTTP endpoint receiving the provider's webhooks calls: stores the event once
    (a redelivery answers {"duplicate": true}), then answers the provider 2xx."""
    return in_transaction(pool, lambda conn: call(conn, """SELECT checkout.record_webhook_event(
        p_organization_id => %(org)s::uuid, p_provider_event_id => %(event)s, p_type => %(type)s,
        p_payload => %(payload)s, p_event_created_at => %(at)s)""",
        dict(org=organization_id, event=provider_event_id, type=event_type, payload=Jsonb(payload), at=created_at)))


class WebhookWorker:
    def __init__(self, pool: ConnectionPool, handler: Handler, *, batch: int = 10,
                 retry: RetryPolicy = RetryPolicy()) -> None:
        self.pool, self.handler, self.batch, self.retry = pool, handler, batch, retry

    def run_once(self) -> int:
        """Claim one batch and settle each event; returns how many were claimed."""
        # The claim commits on its own: the events are then leased to us ('processing') and other
        # workers skip them, while the handler runs outside any transaction (no locks held).
        events: list[Event] = in_transaction(self.pool, lambda conn: conn.cursor(row_factory=dict_row).execute(
            "SELECT organization_id, id, provider_event_id, type, object_id, payload, attempts"
            " FROM checkout.claim_webhook_events(%s)", (self.batch,)).fetchall(), self.retry)
        for event in events:
            # `attempts` ties complete/fail to this claim: if our lease ran out and another worker
            # claimed the event since, we get false/NULL instead of settling its claim.
            # With its organization: on a Citus cluster the call runs on that organization's node.
            params = dict(organization=event["organization_id"], id=event["id"], attempt=event["attempts"])
            try:
                self.handler(event)
            except Exception as exc:  # the handler's failure: defer the event for a later attempt
                log.exception("event %s failed", event["provider_event_id"])
                params["error"] = f"{type(exc).__name__}: {exc}"[:500]
                in_transaction(self.pool, lambda conn: call(conn, "SELECT checkout.fail_webhook_event("
                               "%(organization)s, %(id)s, %(error)s, %(attempt)s)", params), self.retry)
                continue
            if not in_transaction(self.pool, lambda conn: call(conn, "SELECT checkout.complete_webhook_event("
                                  "%(organization)s, %(id)s, %(attempt)s)", params), self.retry):
                log.warning("lease of event %s lost before completion", event["provider_event_id"])
        return len(events)

    def run(self, max_iterations: int | None = None, idle_sleep: float = 1.0) -> int:
        """Claim max_iterations batches (forever when None); returns how many events were claimed."""
        claimed = iteration = 0
        while iteration != max_iterations:
            iteration, n = iteration + 1, self.run_once()
            claimed += n
            if n == 0 and iteration != max_iterations:
                time.sleep(idle_sleep)  # an empty queue: poll again later
        return claimed


def log_event(event: Event) -> None:
    """Stands in for the application's handler (update its own records, send an email, ...)."""
    log.info("applied %s %s on %s", event["provider_event_id"], event["type"], event["object_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("CHECKOUT_WEBHOOK_DSN") or os.environ.get("CHECKOUT_DSN"))
    parser.add_argument("--once", action="store_true", help="claim one batch, then exit")
    parser.add_argument("--max-iterations", type=int, help="stop after this many batches")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("set CHECKOUT_WEBHOOK_DSN or CHECKOUT_DSN, or pass --dsn")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with open_pool(args.dsn, application_name="checkout-webhook-worker") as pool:
        try:
            print(f"claimed {WebhookWorker(pool, log_event).run(1 if args.once else args.max_iterations)} events")
        except CheckoutError as error:
            raise SystemExit(f"webhook worker: {error}")


if __name__ == "__main__":
    main()
