"""Alembic migrations of the state store (run automatically when a store is opened)."""
