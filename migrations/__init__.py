"""Alembic environment and versions; ``core.migrate`` runs them."""
