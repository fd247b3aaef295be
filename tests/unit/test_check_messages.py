"""A failed snapshot check says which side holds which number."""

from warehouse.snapshots.verify import CHAIN_SIDES, LATEST_SIDES, Mismatch


def test_mismatch_messages_name_which_side_is_the_snapshot_and_which_the_live_balance():
    chain = Mismatch(
        "W",
        "B",
        "SKU",
        None,
        7,
        expected_on_hand=5,
        actual_on_hand=6,
        expected_reserved=0,
        actual_reserved=0,
        sides=CHAIN_SIDES,
    )
    assert str(chain) == (
        "W/B/SKU (balance 7): stored snapshot on_hand 6, reserved 0; "
        "recomputed from its base and the ledger on_hand 5, reserved 0"
    )
    latest = Mismatch("W", "B", "SKU", "L1", 7, 5, 6, 1, 0, LATEST_SIDES)
    assert str(latest) == (
        "W/B/SKU lot L1 (balance 7): live balance on_hand 6, reserved 0; "
        "snapshot plus later movements on_hand 5, reserved 1"
    )
