//! Imports user attributes from a CSV in S3 (or a local folder) into a store (work in progress).

fn main() {}
