"""Acting as another cangflow role in a test (warehouse.db.roles); no pytest state, so the
lifecycle bench may import what uses it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def owner_session(db) -> Iterator:
    """A session of `db`'s database acting as the owner role: the DDL a test needs (partitions
    of old months, closing history), which the app role may not run."""
    import warehouse

    owner = warehouse.connect(
        db.url.render_as_string(hide_password=False), role="owner", pool_size=1
    )
    try:
        with owner.session() as session:
            yield session
    finally:
        owner.dispose()
