//! Peak memory and throughput of a streaming CSV import into `SqliteStore`: the file is generated on the fly (never held in memory) and the process's peak RSS (VmHWM) is printed. Rows: `SWITCHBOARD_BENCH_ROWS` (default 1,000,000); batch size: `SWITCHBOARD_BENCH_BATCH` (default 5,000).

use std::time::Instant;

use switchboard::SqliteStore;
use switchboard::attributes::{ImportCollector, import_rows, read_csv};

#[path = "support/export.rs"]
mod export;
use export::{Generator, mapping, vm_hwm_mb};

fn main() {
    let rows: usize = std::env::var("SWITCHBOARD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batch: usize = std::env::var("SWITCHBOARD_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let mapping = mapping();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("memory.db")).expect("open");
    let before = vm_hwm_mb().unwrap_or(0.0);
    let start = Instant::now();
    let summary = runtime
        .block_on(import_rows(
            read_csv(Generator::new(rows), &mapping).expect("header"),
            &store,
            &switchboard::TenantId::default(),
            ImportCollector::new().batch_size(batch),
        ))
        .expect("import");
    let elapsed = start.elapsed();
    assert_eq!(summary.rows_imported, rows as u64);
    println!(
        "csv_memory: {rows} rows imported into SqliteStore (batches of {batch}) in {:.2} s = {:.0} rows/s; peak RSS (VmHWM) {:.1} MB (before import {:.1} MB)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        vm_hwm_mb().unwrap_or(0.0),
        before,
    );

    // Reading alone (parse + records + collector), for comparison; after the
    // import so it does not count in the import's peak.
    let start = Instant::now();
    let mut collector = ImportCollector::new().batch_size(5_000);
    for row in read_csv(Generator::new(rows), &mapping).expect("header") {
        std::hint::black_box(collector.push(row));
    }
    let (_, read_summary) = collector.finish();
    let read_elapsed = start.elapsed();
    assert_eq!(read_summary.rows_imported, rows as u64);
    println!(
        "csv_memory: read_csv + collector alone: {:.2} s = {:.0} rows/s",
        read_elapsed.as_secs_f64(),
        rows as f64 / read_elapsed.as_secs_f64()
    );
}
