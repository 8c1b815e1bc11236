"""Runs a checkout end to end against CHECKOUT_DSN and checks every answer; exits 1 on a surprise.

    CHECKOUT_DSN="host=127.0.0.1 dbname=shop user=app" python demo.py

The organization and product come from setup.sql (override with CHECKOUT_ORGANIZATION_ID and
CHECKOUT_PRODUCT_ID). Webhook calls use CHECKOUT_WEBHOOK_DSN, the worker's role, if set.
"""

import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from checkout_service import CheckoutError, CheckoutService, open_pool
from webhook_worker import Event, WebhookWorker, record_event

ORGANIZATION = os.environ.get("CHECKOUT_ORGANIZATION_ID", "d0000000-0000-4000-8000-000000000001")
PRODUCT = os.environ.get("CHECKOUT_PRODUCT_ID", "d0000000-0000-4000-8000-0000000000a1")


def expect(condition: bool, what: str, got: Any) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}; got {got!r}")
    print(f"ok: {what}")


def expect_refusal(sqlstate: str, what: str, action: Any) -> None:
    try:
        action()
    except CheckoutError as error:
        print(f"    refused: {error}")  # what an application would log: SQLSTATE, detail, hint
        expect(error.sqlstate == sqlstate, f"{what} is refused with {sqlstate}", error.sqlstate)
    else:
        raise SystemExit(f"FAILED: {what} was accepted")


def main() -> None:
    dsn = os.environ.get("CHECKOUT_DSN") or sys.exit("set CHECKOUT_DSN, e.g. 'host=127.0.0.1 dbname=shop user=app'")
    run = uuid.uuid4().hex[:8]  # fresh emails and keys, so the demo can run again on one database
    with open_pool(dsn) as pool, open_pool(os.environ.get("CHECKOUT_WEBHOOK_DSN", dsn)) as webhook_pool:
        shop = CheckoutService(pool)

        # 1. The customer signs up: created once; the same email again updates the same customer.
        jane = shop.upsert_customer(ORGANIZATION, f"jane.{run}@gmail.com", name="Jane")
        expect(jane["created"] is True, "a new email creates a customer", jane)
        again = shop.upsert_customer(ORGANIZATION, f"JANE.{run}@gmail.com", name="Jane Doe")
        expect(again == {**jane, "created": False}, "the same email, other case: the same customer", again)
        expect_refusal("22023", "an invalid email", lambda: shop.upsert_customer(ORGANIZATION, "jane@localhost"))

        # 2. Before offering a trial: has this person (under any variant of the email) had one?
        trial = shop.check_trial(ORGANIZATION, jane["customer_id"], PRODUCT)
        expect(trial["eligible"] is True and trial["reason"] == "no_previous_trial", "Jane may have a trial", trial)

        # 3. Checkout completes: subscribe with the checkout session's id as the idempotency key.
        now = datetime.now(timezone.utc).replace(microsecond=0)
        plan = {"status": "trialing", "amount": 1999, "currency": "usd", "interval": "month",
                "current_period_start": now.isoformat(), "current_period_end": (now + timedelta(days=30)).isoformat(),
                "trial_end": (now + timedelta(days=14)).isoformat()}
        key = f"checkout-session-cs_{run}"
        created = shop.create_subscription(ORGANIZATION, jane["customer_id"], PRODUCT, plan, key)
        expect(created["success"] is True and created["status"] == "trialing" and created["trial_eligible"] is True,
               "the subscription is created, on trial", created)
        # The answer was lost (timeout, crash, the user clicked twice): the retry replays it.
        replay = shop.create_subscription(ORGANIZATION, jane["customer_id"], PRODUCT, plan, key)
        expect(replay.get("replayed") is True and replay["subscription_id"] == created["subscription_id"],
               "a retry with the same key replays the same subscription", replay)
        expect_refusal("55000", "the same key with another amount", lambda: shop.create_subscription(
            ORGANIZATION, jane["customer_id"], PRODUCT, {**plan, "amount": 999}, key))

        # 4. A second account with a variant of Jane's address (Gmail ignores dots and +tags).
        alias = shop.upsert_customer(ORGANIZATION, f"J.a.n.e.{run}+promo@GMail.com")
        expect(alias["created"] is True and alias["customer_id"] != jane["customer_id"], "the alias is another customer", alias)
        verdict = shop.check_trial(ORGANIZATION, alias["customer_id"], PRODUCT)
        expect(verdict["eligible"] is False and verdict["reason"] == "email_variation_detected"
               and verdict["matched_customer_id"] == jane["customer_id"], "the alias gets no second trial", verdict)

        # 5. The provider's webhook arrives (twice, as providers do) and a worker applies it.
        event = f"evt_{run}"
        payload = {"data": {"object": {"id": created["subscription_id"], "status": "trialing"}}}
        first = record_event(webhook_pool, ORGANIZATION, event, "customer.subscription.created", payload, now)
        redelivery = record_event(webhook_pool, ORGANIZATION, event, "customer.subscription.created", payload, now)
        expect(first["duplicate"] is False and redelivery == {**first, "duplicate": True},
               "a redelivered event is stored once", redelivery)
        applied: list[Event] = []

        def flaky_handler(event: Event) -> None:  # its first attempt fails, as if a downstream API timed out
            if event["attempts"] == 1:
                raise TimeoutError("downstream API did not answer")
            applied.append(event)
        worker = WebhookWorker(webhook_pool, flaky_handler)
        while worker.run_once():  # until the queue is empty: the failed attempt was deferred, then retried
            pass
        ours = [e["attempts"] for e in applied if e["provider_event_id"] == event]
        expect(ours == [2], "the worker applied the event once, at its second attempt", ours)
    print("demo: all checks passed")


if __name__ == "__main__":
    main()
