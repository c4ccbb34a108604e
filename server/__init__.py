"""The central server: it keeps the money.

A Flask application (``create_app``, one blueprint per resource under ``server.api``) over
one SQLite database (WAL). ``server.ledger`` is the double-entry ledger in integer fen;
``server.sales`` applies terminal sales at most once; ``server.ingest`` is the MQTT worker
that verifies, applies, commits and only then acknowledges; ``server.downstream`` keeps the
versioned delta stream and snapshots the terminals cache. ``server.cli`` is the
``canteen-server`` command for the clerks' batch jobs and for running the service.
"""

from server.app import create_app

__all__ = ["create_app"]
