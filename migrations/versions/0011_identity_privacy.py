"""Identity and privacy: identifiers, merges, erasure, and the one change the consent ledger allows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

Written by hand and frozen, like the ones before.

- `contact_identifiers`: every way to recognise a contact beyond its external id (email, phone,
  anonymous web id, loyalty card, any declared kind), unique per kind.
- `contacts.merged_into` / `anonymous` / `erased_at`: a merged contact stays as a tombstone that
  points at the contact that absorbed it (its consent records, which may never move, stay with
  it); an anonymous contact was created by an event for an unknown anonymous id; an erased
  contact keeps only its id.
- `contact_merges`: who merged which contacts, when, and what moved.
- `installation_secrets`: the salt of the erased addresses' hashes (one per database, so every
  process and every machine on it computes the same hash).
- The consent ledger stays append-only, with exactly one exception that 0007 announced: an
  erasure may blank a record's personal evidence (`ip`, `evidence`) and nothing else. The
  triggers check it row by row, whatever code or console session sends the UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
PG_REFUSE = "parcours_refuse_change"  # created by 0007
PG_ERASURE_ONLY = "parcours_consent_erasure_only"

# What an UPDATE of a consent record may change: nothing but blanking its personal evidence.
_UNCHANGED = ("id", "contact_id", "channel", "topic", "state", "source", "at")
_SAME_OR_NULL = ("wording", "wording_version", "expires_at")


def _erasure_only(new: str, old: str, same: str) -> str:
    kept = [f"{new}.{c} = {old}.{c}" for c in _UNCHANGED]
    kept += [f"{new}.{c} {same} {old}.{c}" for c in _SAME_OR_NULL]
    return " AND ".join([*kept, f"{new}.ip IS NULL", f"{new}.evidence IS NULL"])


def upgrade() -> None:
    """Create the identity tables, the contact columns and the erasure-only ledger trigger."""
    op.create_table(
        "contact_identifiers",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_contact_identifiers_contact_id_contacts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_contact_identifiers"),
        sa.UniqueConstraint("kind", "value", name="uq_contact_identifiers_kind"),
    )
    op.create_index("ix_contact_identifiers_contact_id", "contact_identifiers", ["contact_id"])
    op.create_table(
        "contact_merges",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("survivor_id", BIG_ID, nullable=False),
        sa.Column("absorbed_id", BIG_ID, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("details", JSON, server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contact_merges"),
    )
    op.create_index("ix_contact_merges_survivor_id", "contact_merges", ["survivor_id"])
    op.create_index("ix_contact_merges_absorbed_id", "contact_merges", ["absorbed_id"])
    op.create_table(
        "installation_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_installation_secrets"),
    )
    op.add_column("contacts", sa.Column("merged_into", BIG_ID, nullable=True))
    op.add_column(
        "contacts",
        sa.Column("anonymous", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("contacts", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_contacts_email", "contacts", ["email"])
    op.create_index("ix_contacts_phone", "contacts", ["phone"])

    if op.get_bind().dialect.name == "postgresql":
        check = _erasure_only("NEW", "OLD", "IS NOT DISTINCT FROM")
        op.execute(
            f"CREATE FUNCTION {PG_ERASURE_ONLY}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF TG_OP = 'UPDATE' AND {check} THEN RETURN NEW; END IF; "
            "RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$"
        )
        op.execute("DROP TRIGGER consent_records_append_only ON consent_records")
        op.execute(
            "CREATE TRIGGER consent_records_append_only BEFORE UPDATE OR DELETE ON "
            f"consent_records FOR EACH ROW EXECUTE FUNCTION {PG_ERASURE_ONLY}()"
        )
        return
    op.execute("DROP TRIGGER consent_records_no_update")
    op.execute(
        "CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records "
        f"WHEN NOT ({_erasure_only('NEW', 'OLD', 'IS')}) "
        "BEGIN SELECT RAISE(ABORT, 'consent_records is append-only: UPDATE refused'); END"
    )


def downgrade() -> None:
    """Restore 0007's strict trigger; drop the identity tables and columns."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER consent_records_append_only ON consent_records")
        op.execute(
            "CREATE TRIGGER consent_records_append_only BEFORE UPDATE OR DELETE ON "
            f"consent_records FOR EACH ROW EXECUTE FUNCTION {PG_REFUSE}()"
        )
        op.execute(f"DROP FUNCTION {PG_ERASURE_ONLY}()")
    else:
        op.execute("DROP TRIGGER consent_records_no_update")
        op.execute(
            "CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records "
            "BEGIN SELECT RAISE(ABORT, 'consent_records is append-only: UPDATE refused'); END"
        )
    op.drop_index("ix_contacts_phone", table_name="contacts")
    op.drop_index("ix_contacts_email", table_name="contacts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("erased_at")
        batch.drop_column("anonymous")
        batch.drop_column("merged_into")
    op.drop_table("installation_secrets")
    op.drop_index("ix_contact_merges_absorbed_id", table_name="contact_merges")
    op.drop_index("ix_contact_merges_survivor_id", table_name="contact_merges")
    op.drop_table("contact_merges")
    op.drop_index("ix_contact_identifiers_contact_id", table_name="contact_identifiers")
    op.drop_table("contact_identifiers")
