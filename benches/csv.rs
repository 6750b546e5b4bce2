//! Benchmark: `read_csv` against the `csv` crate's raw `ByteRecord` loop on the same 1,000,000-row, 12-column file, and the batched import of that file into `SqliteStore`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::SqliteStore;
use switchboard::attributes::{CsvMapping, ImportCollector, import_rows, read_csv};

const ROWS: usize = 1_000_000;

/// A 12-column export: a user id, 10 imported attributes and one column that is
/// not imported. Some fields are quoted (commas, quotes), line ends are CRLF.
fn generate(rows: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows * 130);
    out.push_str(
        "\u{feff}Email,Name,Plan,Seats,Country,Signup,Tickets,MRR,Active,Company,Notes,City\r\n",
    );
    let plans = ["Basic", "Pro", "Premium", "Enterprise"];
    let countries = ["DE", "AT", "US", "GB", "FR", "NL"];
    let cities = ["Berlin", "Vienna", "Austin", "Leeds", "Lyon", "Utrecht"];
    for i in 0..rows {
        let _ = write!(
            out,
            "user{i}@example.com,User {i},{plan},{seats},{country},2024-{month:02}-{day:02},{tickets},{mrr}.{cents:02},{active},\"Company {company}, Inc.\",{notes},{city}\r\n",
            plan = plans[i % 4],
            seats = i % 250 + 1,
            country = countries[i % 6],
            month = i % 12 + 1,
            day = i % 28 + 1,
            tickets = i % 17,
            mrr = i % 5000,
            cents = i % 100,
            active = i % 3 != 0,
            company = i % 1000,
            notes = if i % 10 == 0 {
                "\"said \"\"hi\"\"\""
            } else {
                ""
            },
            city = cities[i % 6],
        );
    }
    out.into_bytes()
}

fn mapping() -> CsvMapping {
    CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats")
        .attribute("Country", "country")
        .attribute("Signup", "signup")
        .attribute("Tickets", "support_tickets")
        .attribute("MRR", "mrr")
        .attribute("Active", "active")
        .attribute("Company", "company")
        .attribute("Notes", "notes")
        .attribute("City", "city")
}

/// One pass of the raw `csv` crate loop; returns the fields seen.
fn baseline_pass(data: &[u8]) -> usize {
    let mut reader = csv::ReaderBuilder::new().from_reader(data);
    let mut record = csv::ByteRecord::new();
    let mut n = 0usize;
    while reader.read_byte_record(&mut record).unwrap_or(false) {
        n += record.len();
    }
    n
}

/// One pass of the raw `csv` crate loop that also reads what `read_csv`'s
/// records hold: the user id and the mapped fields as trimmed UTF-8 text;
/// returns their bytes.
fn baseline_values_pass(data: &[u8]) -> usize {
    let mut reader = csv::ReaderBuilder::new().from_reader(data);
    let mut record = csv::ByteRecord::new();
    let mut bytes = 0usize;
    while reader.read_byte_record(&mut record).unwrap_or(false) {
        // Every column but `Name` (1) is the user id or mapped.
        for (i, field) in record.iter().enumerate() {
            if i != 1 {
                bytes += std::str::from_utf8(field).map_or(0, |f| f.trim().len());
            }
        }
    }
    bytes
}

/// One pass of `read_csv`'s iterator reading every record's user id and
/// values; returns their bytes.
fn read_csv_values_pass(data: &[u8], mapping: &CsvMapping) -> usize {
    let mut bytes = 0usize;
    for record in read_csv(data, mapping).expect("header").flatten() {
        bytes += record.user_id().len();
        bytes += record.attributes().map(|(_, v)| v.len()).sum::<usize>();
    }
    bytes
}

/// One pass of `read_csv`'s iterator (owned `CsvRecord`s); returns the attributes read.
fn read_csv_pass(data: &[u8], mapping: &CsvMapping) -> usize {
    let mut ok = 0usize;
    for record in read_csv(data, mapping).expect("header").flatten() {
        ok += record.len();
    }
    ok
}

/// One pass of `CsvRecords::read_record` into one reused owned
/// `AttributeRecord`; returns the attributes read.
fn read_record_pass(data: &[u8], mapping: &CsvMapping) -> usize {
    let mut ok = 0usize;
    let mut rows = read_csv(data, mapping).expect("header");
    let mut record = switchboard::attributes::AttributeRecord {
        user_id: String::new(),
        attributes: Default::default(),
    };
    while let Some(row) = rows.read_record(&mut record) {
        if row.is_ok() {
            ok += record.attributes.len();
        }
    }
    ok
}

/// One pass of `read_csv`'s borrowed rows (`CsvRecords::next_row`, no allocation);
/// returns the bytes of the user ids and values seen.
fn next_row_pass(data: &[u8], mapping: &CsvMapping) -> usize {
    let mut bytes = 0usize;
    let mut rows = read_csv(data, mapping).expect("header");
    while let Some(row) = rows.next_row() {
        if let Ok(row) = row {
            bytes += row.user_id().len();
            bytes += row.attributes().map(|(_, v)| v.len()).sum::<usize>();
        }
    }
    bytes
}

/// The fixed cost of one small file (what a fuzzer's input or a discovery step
/// pays): `read_csv` to the end, `discover_csv`, and building the `csv` crate's
/// reader alone, in µs per input.
fn small_inputs() {
    const INPUTS: u32 = 20_000;
    let input = b"id,a,b,c\nu1,basic,3,x\nu2,pro,,y\n,missing,1,z\nu4,NULL,2\n";
    let mapping = CsvMapping::new("id")
        .attribute("a", "a")
        .attribute("b", "b")
        .null_values(["NULL"]);
    let time = |name: &str, f: &mut dyn FnMut() -> usize| {
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..INPUTS {
            n += black_box(f());
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(INPUTS);
        println!("{name}: {per:.2} µs per input ({n} items)");
    };
    time("read_csv, every item", &mut || {
        read_csv(&input[..], &mapping).map_or(0, |rows| rows.count())
    });
    time("discover_csv, 5 rows", &mut || {
        switchboard::attributes::discover_csv(&input[..], 5).map_or(0, |s| s.rows.len())
    });
    time("csv crate: ReaderBuilder::from_reader", &mut || {
        let reader = csv::ReaderBuilder::new()
            .buffer_capacity(64 * 1024)
            .from_reader(&input[..]);
        black_box(reader).has_headers() as usize
    });
}

fn bench(c: &mut Criterion) {
    if std::env::var("SWITCHBOARD_CSV_PASSES").is_ok_and(|p| p == "small") {
        small_inputs();
        return;
    }
    let data = generate(ROWS);
    let mapping = mapping();

    // `SWITCHBOARD_CSV_PASSES=baseline|read_csv|read_record|next_row|values`: one pass, for profilers;
    // `small`: the fixed cost per small input.
    // `SWITCHBOARD_CSV_PASSES=compare`: alternate the passes 7 times and print the
    // best of each, ratios that hold up better than criterion's on a busy machine.
    if let Ok(which) = std::env::var("SWITCHBOARD_CSV_PASSES") {
        match which.as_str() {
            "baseline" => println!("baseline: {}", baseline_pass(&data)),
            "read_csv" => println!("read_csv: {}", read_csv_pass(&data, &mapping)),
            "read_record" => println!("read_record: {}", read_record_pass(&data, &mapping)),
            "next_row" => println!("next_row: {}", next_row_pass(&data, &mapping)),
            "values" => println!("values: {}", read_csv_values_pass(&data, &mapping)),
            _ => {
                let mut best = [Duration::MAX; 6];
                for _ in 0..7 {
                    let t = std::time::Instant::now();
                    black_box(baseline_pass(&data));
                    best[0] = best[0].min(t.elapsed());
                    let t = std::time::Instant::now();
                    black_box(read_csv_pass(&data, &mapping));
                    best[1] = best[1].min(t.elapsed());
                    let t = std::time::Instant::now();
                    black_box(next_row_pass(&data, &mapping));
                    best[2] = best[2].min(t.elapsed());
                    let t = std::time::Instant::now();
                    black_box(read_record_pass(&data, &mapping));
                    best[3] = best[3].min(t.elapsed());
                    let t = std::time::Instant::now();
                    black_box(baseline_values_pass(&data));
                    best[4] = best[4].min(t.elapsed());
                    let t = std::time::Instant::now();
                    black_box(read_csv_values_pass(&data, &mapping));
                    best[5] = best[5].min(t.elapsed());
                }
                let mib = data.len() as f64 / (1024.0 * 1024.0);
                // Each pass against the csv crate doing the same: the
                // last one reads every value, as its peer does.
                for (name, time, peer) in [
                    ("csv crate, reused ByteRecord", best[0], best[0]),
                    ("read_csv iterator (owned CsvRecord)", best[1], best[0]),
                    ("read_csv rows (CsvRecords::next_row)", best[2], best[0]),
                    (
                        "read_csv into a reused AttributeRecord (read_record)",
                        best[3],
                        best[0],
                    ),
                    (
                        "csv crate, reused ByteRecord, every value as trimmed UTF-8",
                        best[4],
                        best[4],
                    ),
                    ("read_csv iterator, every value read", best[5], best[4]),
                ] {
                    println!(
                        "{name}: {:.0} ms, {:.0} MiB/s, {:.0} rows/s, {:.2}x the csv crate",
                        time.as_secs_f64() * 1e3,
                        mib / time.as_secs_f64(),
                        ROWS as f64 / time.as_secs_f64(),
                        peer.as_secs_f64() / time.as_secs_f64(),
                    );
                }
            }
        }
        return;
    }

    let mut group = c.benchmark_group("csv_read");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("csv_crate_byte_record", ROWS), |b| {
        b.iter(|| black_box(baseline_pass(&data)))
    });
    group.bench_function(BenchmarkId::new("read_csv", ROWS), |b| {
        b.iter(|| {
            let ok = read_csv_pass(&data, &mapping);
            assert_eq!(ok, ROWS * 10);
            black_box(ok)
        })
    });
    group.bench_function(BenchmarkId::new("read_csv_read_record", ROWS), |b| {
        b.iter(|| {
            let ok = read_record_pass(&data, &mapping);
            assert_eq!(ok, ROWS * 10);
            black_box(ok)
        })
    });
    group.bench_function(BenchmarkId::new("read_csv_next_row", ROWS), |b| {
        b.iter(|| black_box(next_row_pass(&data, &mapping)))
    });
    group.finish();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("csv_import_sqlite");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function(BenchmarkId::new("batches_of_5000", ROWS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(dir.path().join("bench.db")).expect("open");
                let start = std::time::Instant::now();
                let summary = runtime
                    .block_on(import_rows(
                        read_csv(&data[..], &mapping).expect("header"),
                        &store,
                        &switchboard::TenantId::default(),
                        ImportCollector::new().batch_size(5_000),
                    ))
                    .expect("import");
                total += start.elapsed();
                assert_eq!(summary.rows_imported, ROWS as u64);
                drop(store);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
