"""The retry wrapper against a real server: a lock timeout (55P03), a deadlock (40P01) and a
serialization failure (40001), each retried whole until the call succeeds; any other error
surfaces at once.

    CHECKOUT_DSN="host=127.0.0.1 dbname=shop user=app" python -m unittest -v test_retries

CHECKOUT_HOLDER_DSN (default: CHECKOUT_DSN) is the other instance's connection; for the deadlock
test its role should have a long deadlock_timeout (ALTER ROLE ... SET deadlock_timeout = '1min'),
so that the service, not the holder, is the one PostgreSQL rolls back.
"""

import os
import time
import unittest
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from checkout_service import CheckoutError, CheckoutService, RetryPolicy, call, open_pool
from demo import ORGANIZATION

DSN = os.environ.get("CHECKOUT_DSN", "")
HOLDER_DSN = os.environ.get("CHECKOUT_HOLDER_DSN", DSN)
UPSERT = "SELECT checkout.upsert_customer_atomic(%(org)s::uuid, %(email)s)"
UPSERT_NAMED = "SELECT checkout.upsert_customer_atomic(%(org)s::uuid, %(email)s, p_name => %(name)s)"


@unittest.skipUnless(DSN, "set CHECKOUT_DSN")
class RetryTest(unittest.TestCase):
    def setUp(self) -> None:
        self.name = f"retry-test-{uuid.uuid4().hex[:8]}"
        self.failures: list[str | None] = []  # the SQLSTATE of each failed attempt
        self.release_after = 0  # commit the holder's transaction after this many failures
        # Another instance of the application, whose transaction stays open while it holds rows.
        self.holder = psycopg.connect(HOLDER_DSN)
        self.addCleanup(self.holder.close)

    def service(self, lock_timeout: str) -> CheckoutService:
        pool = open_pool(DSN, lock_timeout=lock_timeout, application_name=self.name)
        self.addCleanup(pool.close)
        return CheckoutService(pool, RetryPolicy(max_attempts=10, base_delay=0.01), self.on_retry)

    def on_retry(self, attempt: int, error: CheckoutError) -> None:
        self.failures.append(error.sqlstate)
        if attempt == self.release_after:
            self.holder.commit()

    def customer(self, n: int) -> dict[str, str]:
        params = {"org": ORGANIZATION, "email": f"{self.name}.{n}@example.com"}
        with psycopg.connect(DSN, autocommit=True) as conn:
            call(conn, UPSERT, params)
        return params

    def test_lock_timeout_is_retried_until_the_holder_commits(self) -> None:
        jane = self.customer(1)
        call(self.holder, UPSERT, jane)  # the holder now locks Jane's row until it commits
        self.release_after = 2
        answer = self.service("100ms").upsert_customer(ORGANIZATION, jane["email"], name="Jane")
        self.assertEqual(self.failures, ["55P03", "55P03"])
        self.assertIs(answer["created"], False)

    def test_deadlock_is_retried_as_a_whole_transaction(self) -> None:
        first, second = self.customer(1), self.customer(2)
        shop = self.service("10s")  # above deadlock_timeout (1s): the wait ends in the deadlock check
        call(self.holder, UPSERT, first)

        def second_then_first(conn: psycopg.Connection[Any]) -> Any:  # the holder's opposite order
            call(conn, UPSERT, second)
            return call(conn, UPSERT, first)
        with ThreadPoolExecutor(1) as threads:
            outcome = threads.submit(shop.transaction, second_then_first)
            self.wait_until_blocked()  # the service holds `second` and waits for `first`
            # Each session checks for a deadlock deadlock_timeout after it began to wait: 1 s for
            # the service, a minute for the holder (its role's setting), so the service's check
            # finds the cycle and rolls the service back.
            call(self.holder, UPSERT, second)  # closes the cycle; returns once the service rolled back
            self.holder.commit()
            answer = outcome.result(timeout=30)
        self.assertEqual(self.failures, ["40P01"])
        self.assertIs(answer["created"], False)

    def test_serialization_failure_is_retried(self) -> None:
        jane = self.customer(1)
        shop = self.service("5s")

        def rename_in_a_snapshot(conn: psycopg.Connection[Any]) -> Any:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT 1")  # the snapshot
            if not self.failures:  # first attempt: another instance renames Jane meanwhile
                with psycopg.connect(HOLDER_DSN, autocommit=True) as other:
                    call(other, UPSERT_NAMED, {**jane, "name": "Jane (other instance)"})
            return call(conn, UPSERT_NAMED, {**jane, "name": "Jane"})
        answer = shop.transaction(rename_in_a_snapshot)
        self.assertEqual(self.failures, ["40001"])  # her row changed after the snapshot
        self.assertIs(answer["created"], False)

    def test_other_errors_are_not_retried(self) -> None:
        with self.assertRaises(CheckoutError) as refused:
            self.service("5s").upsert_customer(ORGANIZATION, "not an email")
        self.assertEqual((refused.exception.sqlstate, self.failures), ("22023", []))

    def wait_until_blocked(self) -> None:
        with psycopg.connect(DSN, autocommit=True) as observer:
            for _ in range(1000):
                row = observer.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                       " AND wait_event_type = 'Lock'", (self.name,)).fetchone()
                if row and row[0]:
                    return
                time.sleep(0.01)
        self.fail("the service never waited for the holder's lock")


if __name__ == "__main__":
    unittest.main()
