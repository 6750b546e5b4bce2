//! Peak memory and throughput of a streaming CSV import into `SqliteStore`: the file is generated on the fly (never held in memory) and the process's peak RSS (VmHWM) is printed. Rows: `SWITCHBOARD_BENCH_ROWS` (default 1,000,000); batch size: `SWITCHBOARD_BENCH_BATCH` (default 5,000).

use std::io::Read;
use std::time::Instant;

use switchboard::SqliteStore;
use switchboard::attributes::{CsvMapping, ImportCollector, import_rows, read_csv};

/// Produces a 12-column CSV export row by row.
struct Generator {
    rows: usize,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Generator {
    fn new(rows: usize) -> Self {
        let header =
            b"Email,Name,Plan,Seats,Country,Signup,Tickets,MRR,Active,Company,Notes,City\r\n";
        Generator {
            rows,
            next: 0,
            buf: header.to_vec(),
            pos: 0,
        }
    }

    fn fill(&mut self) {
        use std::io::Write as _;
        self.buf.clear();
        self.pos = 0;
        let plans = ["Basic", "Pro", "Premium", "Enterprise"];
        let countries = ["DE", "AT", "US", "GB", "FR", "NL"];
        while self.next < self.rows && self.buf.len() < 64 * 1024 {
            let i = self.next;
            let _ = write!(
                self.buf,
                "user{i}@example.com,User {i},{},{},{},2024-{:02}-{:02},{},{}.{:02},{},\"Company {}, Inc.\",{},City {}\r\n",
                plans[i % 4],
                i % 250 + 1,
                countries[i % 6],
                i % 12 + 1,
                i % 28 + 1,
                i % 17,
                i % 5000,
                i % 100,
                i % 3 != 0,
                i % 1000,
                if i % 10 == 0 {
                    "\"said \"\"hi\"\"\""
                } else {
                    ""
                },
                i % 50,
            );
            self.next += 1;
        }
    }
}

impl Read for Generator {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.next == self.rows {
                return Ok(0);
            }
            self.fill();
        }
        let n = (self.buf.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn vm_hwm_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let rows: usize = std::env::var("SWITCHBOARD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batch: usize = std::env::var("SWITCHBOARD_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let mapping = CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats")
        .attribute("Country", "country")
        .attribute("Signup", "signup")
        .attribute("Tickets", "support_tickets")
        .attribute("MRR", "mrr")
        .attribute("Active", "active")
        .attribute("Company", "company")
        .attribute("Notes", "notes")
        .attribute("City", "city");
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
