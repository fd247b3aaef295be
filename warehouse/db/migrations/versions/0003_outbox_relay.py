"""The outbox relay's backoff, and the ids consumers have handled (so a redelivery is ignored).

Revision ID: 0003_outbox_relay
Revises: 0002_snapshots_history
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003_outbox_relay"
down_revision = "0002_snapshots_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE outbox_message ADD COLUMN next_attempt_at timestamptz;

        CREATE TABLE consumed_message (
            consumer varchar(100) NOT NULL,
            message_id bigint NOT NULL,
            consumed_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_consumed_message PRIMARY KEY (consumer, message_id)
        );
        CREATE INDEX ix_consumed_message_consumed_at ON consumed_message (consumed_at);
        CREATE INDEX ix_outbox_message_published_at ON outbox_message (published_at) WHERE published_at IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE consumed_message;
        DROP INDEX ix_outbox_message_published_at;
        ALTER TABLE outbox_message DROP COLUMN next_attempt_at;
        """
    )
