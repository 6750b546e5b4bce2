//! Benchmark: CSV attribute import from a local S3 server vs. the local filesystem (work in progress).

fn main() {}
