//! Multi-replica tests for PostgresStore.
