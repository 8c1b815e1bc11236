"""A checkout service over the checkout extension: one method per business operation, each one SQL
call in its own transaction, retried whole when PostgreSQL says that running it again may succeed."""

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

log = logging.getLogger("checkout")
T = TypeVar("T")
Id = UUID | str

# serialization_failure, deadlock_detected, lock_not_available: PostgreSQL rolled the whole
# transaction back (an idempotency key claimed in it included), so running it again is safe and may
# succeed. Any other SQLSTATE is a verdict on the request; retrying would get the same answer.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


class CheckoutError(Exception):
    """A refusal from the database, with what a caller (or a log) needs to act on it."""

    def __init__(self, error: psycopg.Error) -> None:
        self.sqlstate, diag = error.sqlstate, error.diag
        self.message: str = diag.message_primary or str(error)
        self.detail, self.hint = diag.message_detail, diag.message_hint
        super().__init__(f"[{self.sqlstate}] {self.message}" + (f" (detail: {self.detail})" if self.detail else "")
                         + (f" (hint: {self.hint})" if self.hint else ""))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.05  # seconds
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        # Exponential backoff with "full jitter": a random wait below the cap, so that the sessions
        # that just collided do not come back in lockstep and collide again.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


RetryHook = Callable[[int, CheckoutError], None]


def in_transaction(
    pool: ConnectionPool,
    work: Callable[[psycopg.Connection[Any]], T],
    policy: RetryPolicy = RetryPolicy(),
    on_retry: RetryHook | None = None,
) -> T:
    """Run work(conn) in one transaction; on a retryable SQLSTATE run the whole of it again."""
    attempt = 1
    while True:
        try:
            # The pool's connection block commits when work returns and rolls back when it raises.
            with pool.connection() as conn:
                return work(conn)
        except psycopg.Error as error:
            if error.sqlstate is None:
                raise  # no answer from the server (connection lost): not ours to judge here
            failure = CheckoutError(error)
            if error.sqlstate not in RETRYABLE_SQLSTATES or attempt >= policy.max_attempts:
                raise failure from error
            log.warning("attempt %d failed, retrying: %s", attempt, failure)
            if on_retry:
                on_retry(attempt, failure)
            time.sleep(policy.delay(attempt))
            attempt += 1


def open_pool(dsn: str, *, lock_timeout: str = "5s", max_size: int = 4,
              application_name: str = "checkout-example") -> ConnectionPool:
    """A pool of the app's connections. lock_timeout makes a call stuck behind another
    transaction's row lock fail (55P03) and go through the retry's backoff instead of queueing
    indefinitely; application_name shows the service in pg_stat_activity."""
    pool = ConnectionPool(
        dsn, min_size=1, max_size=max_size, open=True,
        kwargs={"application_name": application_name, "options": f"-c lock_timeout={lock_timeout}"},
    )
    try:
        pool.wait(timeout=10)  # fail now on a wrong DSN or a missing role, not at the first request
    except Exception:
        pool.close()
        raise
    return pool


class CheckoutService:
    def __init__(self, pool: ConnectionPool, retry: RetryPolicy = RetryPolicy(),
                 on_retry: RetryHook | None = None) -> None:
        self.pool, self.retry, self.on_retry = pool, retry, on_retry

    def transaction(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Several calls in one transaction, retried together (a retry must redo all of them)."""
        return in_transaction(self.pool, work, self.retry, self.on_retry)

    def _call(self, sql: str, params: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.transaction(lambda conn: call(conn, sql, params))
        return answer

    def upsert_customer(self, organization_id: Id, email: str, *, external_id: str | None = None,
                        name: str | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call(UPSERT_CUSTOMER, dict(org=organization_id, email=email, external_id=external_id,
                                                name=name, metadata=Jsonb(metadata or {})))

    def check_trial(self, organization_id: Id, customer_id: Id, product_id: Id) -> dict[str, Any]:
        return self._call(CHECK_TRIAL, dict(org=organization_id, customer=customer_id, product=product_id))

    def create_subscription(self, organization_id: Id, customer_id: Id, product_id: Id,
                            subscription: dict[str, Any], idempotency_key: str,
                            features: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        # The key makes the call safe to repeat: a retry after a lost answer (timeout, crash,
        # dropped connection) replays the first answer instead of subscribing twice.
        return self._call(CREATE_SUBSCRIPTION, dict(
            subscription=Jsonb(subscription), features=[Jsonb(f) for f in features] or None,
            customer=customer_id, product=product_id, org=organization_id, key=idempotency_key))


def call(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> Any:
    """The one value a checkout function returns (jsonb arrives as a dict)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


# Named arguments, and ids cast to uuid: with untyped ids PostgreSQL could pick another overload
# (check_trial_eligibility's seed form answers for any tenant).
UPSERT_CUSTOMER = """SELECT checkout.upsert_customer_atomic(
  p_organization_id => %(org)s::uuid, p_email => %(email)s, p_external_id => %(external_id)s,
  p_name => %(name)s, p_metadata => %(metadata)s)"""
CHECK_TRIAL = """SELECT checkout.check_trial_eligibility(
  p_organization_id => %(org)s::uuid, p_customer_id => %(customer)s::uuid, p_product_id => %(product)s::uuid)"""
CREATE_SUBSCRIPTION = """SELECT checkout.create_subscription_atomic(
  p_subscription => %(subscription)s, p_features => %(features)s::jsonb[], p_customer_id => %(customer)s::uuid,
  p_product_id => %(product)s::uuid, p_organization_id => %(org)s::uuid, p_idempotency_key => %(key)s)"""
