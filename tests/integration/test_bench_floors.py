"""The pgbench scripts of bench/deduction.py run the domain's own statements (rendered from
warehouse.stock.statements, parameters filled by pgbench) and the plain order floor: each must
still run against the current schema and statements, take stock and keep the invariants. A
statement that gains a parameter, or a column the floor writes that the ledger loses, fails here
rather than in the next benchmark run."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bench import deduction, pgbench
from warehouse import invariants

pytestmark = pytest.mark.integration

SPREAD = 60  # enough SKUs for a 50-line order; draws repeat, which the statements must take too


def _stock(db, world) -> tuple[int, int, int]:
    """(units on hand, movements, outbox messages) of the bench world's warehouse."""
    with db.session() as s:
        return tuple(
            s.execute(
                text(
                    """SELECT (SELECT sum(on_hand) FROM stock_balance WHERE warehouse_id = :w),
                              (SELECT count(*) FROM stock_movement WHERE warehouse_id = :w),
                              (SELECT count(*) FROM outbox_message WHERE message_key = :code)"""
                ),
                {"w": world.rows[0][1], "code": world.warehouse},
            ).one()
        )


def test_the_domain_statements_and_the_order_floor_run_under_pgbench(admin_db):
    world = deduction.build_world(admin_db, SPREAD)
    url = admin_db.url.render_as_string(hide_password=False)
    on_hand, movements, messages = _stock(admin_db, world)

    pgbench.latencies_ms(
        url,
        deduction.PICK_SPREAD + deduction.domain_single_row_script(),
        transactions=5,
        variables=deduction.pgbench_variables(world),
    )
    after_single = _stock(admin_db, world)
    # Five deductions of one unit, each its ledger line and its outbox message.
    assert after_single == (on_hand - 5, movements + 5, messages + 5)

    variables = deduction.pgbench_variables(world)
    # Two orders of 50 drawn SKUs of one unit each, one message per order. The domain statement
    # takes all 100 units (a repeated draw is one line of two units); the floor takes one unit
    # per distinct row (a repeated draw is one line fewer).
    before = _stock(admin_db, world)
    pgbench.latencies_ms(url, deduction.domain_order_script(), transactions=2, variables=variables)
    after = _stock(admin_db, world)
    assert before[0] - after[0] == 100 and after[2] - before[2] == 2
    assert 2 <= after[1] - before[1] <= 100

    before = _stock(admin_db, world)
    floor = deduction.order_draws() + deduction.ORDER_FLOOR
    pgbench.latencies_ms(url, floor, transactions=2, variables=variables)
    after = _stock(admin_db, world)
    taken, lines = before[0] - after[0], after[1] - before[1]
    assert taken == lines and 2 <= lines <= 100 and after[2] - before[2] == 2

    with admin_db.session() as s:
        assert invariants.check(s) == []


def test_the_python_floor_runs_the_direct_statement_and_keeps_the_invariants(admin_db):
    """The python_domain_spread floor sends the direct path's own statement: each call takes one
    unit of a spread SKU and writes its ledger line and outbox message, never the hot SKU's."""
    import random

    world = deduction.build_world(admin_db, SPREAD)
    on_hand, movements, messages = _stock(admin_db, world)
    with deduction.python_floor_connection(world) as conn:
        step = deduction.python_floor_step(world, random.Random(7), conn)
        for _ in range(5):
            step()
    assert _stock(admin_db, world) == (on_hand - 5, movements + 5, messages + 5)
    with admin_db.session() as s:
        hot = s.execute(
            text("SELECT on_hand FROM stock_balance WHERE id = :id"), {"id": world.rows[0][0]}
        ).scalar_one()
        assert hot == deduction.STOCK_PER_ROW
        assert invariants.check(s) == []
