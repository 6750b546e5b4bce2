//! PostgresStore benchmarks.
fn main() {}
