"""Migration 0002 carries each round's free-form timings into typed columns and metric rows."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import command

from resonfl_server.backend.core.db import create_db_engine
from resonfl_server.backend.core.migrate import alembic_config

NOW = "2026-11-29 03:00:00+00:00"
OLD_TIMINGS = {
    "min_results": 2,
    "redispatched": {"site-1": 1},
    "round_s": 1.5,
    "train_s_max": 0.5,
    "overhead_s": 1.0,
    "site_overhead_s": 0.25,
    "transport_s": 0.5,
    "aggregate_s": 0.125,
    "site_train_s": {"site-1": 0.5},
    "metrics": {"global_top1": 0.75, "train_loss": 0.5},
}


def _seed_0001(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, email, password_hash, is_admin, created_at) "
                "VALUES (1, 'a@b.c', 'x', false, :now)"
            ),
            {"now": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, owner_id, name, status, files, attachments, config, sites,"
                " num_rounds, min_clients, created_at) VALUES (1, 1, 'j', 'running', '[]', '{}',"
                " '{}', '[\"site-1\"]', 2, 1, :now)"
            ),
            {"now": NOW},
        )
        for number, timings in ((0, OLD_TIMINGS), (1, {"min_results": 1})):
            conn.execute(
                sa.text(
                    "INSERT INTO rounds (id, job_id, number, status, timings) "
                    "VALUES (:id, 1, :number, 'done', :timings)"
                ),
                {"id": number + 1, "number": number, "timings": json.dumps(timings)},
            )


def test_upgrade_carries_timings_into_columns_and_metrics_and_downgrade_restores(
    database_url: str,
) -> None:
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0001")
    engine = create_db_engine(database_url)
    try:
        _seed_0001(engine)
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT * FROM rounds WHERE id = 1")).mappings().one()
            second = conn.execute(sa.text("SELECT * FROM rounds WHERE id = 2")).mappings().one()
            metrics = conn.execute(
                sa.text("SELECT name, value FROM round_metrics WHERE round_id = 1 ORDER BY name")
            ).all()
        assert (first["min_results"], first["round_s"], first["aggregate_s"]) == (2, 1.5, 0.125)
        redispatched = first["redispatched"]
        assert (json.loads(redispatched) if isinstance(redispatched, str) else redispatched) == {
            "site-1": 1
        }
        assert (second["min_results"], second["round_s"]) == (1, None)
        assert [tuple(m) for m in metrics] == [("global_top1", 0.75), ("train_loss", 0.5)]

        command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            raw = conn.execute(sa.text("SELECT timings FROM rounds WHERE id = 1")).scalar_one()
        back = json.loads(raw) if isinstance(raw, str) else raw
        assert back["metrics"] == OLD_TIMINGS["metrics"] and back["round_s"] == 1.5
        assert back["redispatched"] == {"site-1": 1} and back["min_results"] == 2
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
