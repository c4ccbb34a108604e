"""`canteen-server backup` copies the SQLite file; on PostgreSQL it refuses, saying what to
use instead (the engine's own base backups and WAL archiving), and writes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from click.testing import CliRunner

from server.cli.root import main
from server.infra import pg


def test_backup_on_postgresql_is_refused_with_the_way_to_do_it(tmp_path: Path, pg_admin_url: str) -> None:
    name = f"canteen_backup_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    home, dest = tmp_path / "home", tmp_path / "backups"
    env = {"CANTEEN_DATABASE_URL": url}
    try:
        assert CliRunner().invoke(main, ["--home", str(home), "init"], env=env).exit_code == 0
        got = CliRunner().invoke(main, ["--home", str(home), "backup", str(dest)], env=env)
        assert got.exit_code != 0 and "backup_sqlite_only" in got.output and "pg_basebackup" in got.output
        assert "Traceback" not in got.output and not dest.exists()
    finally:
        pg.close_pools(url)
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
