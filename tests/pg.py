"""Re-export: the throwaway PostgreSQL lives in the library (crystallise/testing/pg.py), shared with bench/."""

from crystallise.testing.pg import PostgresServer, postgres_unavailable

__all__ = ["PostgresServer", "postgres_unavailable"]
