"""Database layer: schema (models.py), engine and sessions, Alembic migrations."""
