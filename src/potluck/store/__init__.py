"""Persistence. The only package that imports SQLAlchemy; it returns frozen dataclasses."""
