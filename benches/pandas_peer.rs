//! Benchmark: switchboard's CSV import into `SqliteStore` beside pandas + sqlite3 (`read_csv(dtype=str)` + `to_sql`) on the same 1,000,000-row, 12-column file in the same run: time, ratio and each side's peak RSS, each measured in its own process.
//!
//! `cargo bench --all-features --bench pandas_peer`. Rows: `SWITCHBOARD_BENCH_ROWS`
//! (default 1,000,000); runs per side: `SWITCHBOARD_PEER_RUNS` (default 3, the best
//! is reported); Python: `SWITCHBOARD_PYTHON` (default `python3`). pandas is
//! installed with pip when it is missing (benchmarks only; the tests never need it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use switchboard::SqliteStore;
use switchboard::attributes::{AttributeStore, ImportCollector, import_rows, read_csv};

#[path = "support/export.rs"]
mod export;
use export::{Generator, mapping, vm_hwm_mb};

/// Set in the child process that runs switchboard's side.
const CHILD: &str = "SWITCHBOARD_PEER_CHILD";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One side's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rows: u64,
    seconds: f64,
    peak_rss_mb: f64,
    /// switchboard only: the first segmentation query and the second import.
    first_query_seconds: Option<f64>,
    reimport_seconds: Option<f64>,
    peak_rss_after_mb: Option<f64>,
}

fn parse(output: &str) -> Figures {
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {output:?}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON figures");
    Figures {
        rows: v["rows"].as_u64().expect("rows"),
        seconds: v["seconds"].as_f64().expect("seconds"),
        peak_rss_mb: v["peak_rss_mb"].as_f64().expect("peak_rss_mb"),
        first_query_seconds: v["first_query_seconds"].as_f64(),
        reimport_seconds: v["reimport_seconds"].as_f64(),
        peak_rss_after_mb: v["peak_rss_after_mb"].as_f64(),
    }
}

/// switchboard's side, in this (child) process: open the store, import the
/// file (timed against pandas). Then, reported beside it: a segmentation
/// query (which builds the indexes of its two attributes) and the same
/// import again, in which every user is unchanged.
fn child(csv: &Path, db: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tenant = switchboard::TenantId::default();
    let import = |store: &SqliteStore| {
        let file = std::fs::File::open(csv).expect("csv");
        runtime
            .block_on(import_rows(
                read_csv(file, &mapping()).expect("header"),
                store,
                &tenant,
                ImportCollector::new().batch_size(env_usize(
                    "SWITCHBOARD_PEER_BATCH",
                    ImportCollector::DEFAULT_BATCH_SIZE,
                )),
            ))
            .expect("import")
    };
    let start = Instant::now();
    let store = SqliteStore::open(db).expect("open");
    let summary = import(&store);
    let seconds = start.elapsed().as_secs_f64();
    let import_rss = vm_hwm_mb().unwrap_or(0.0);
    if std::env::var_os("SWITCHBOARD_PEER_IMPORT_ONLY").is_some() {
        println!(
            "{}",
            serde_json::json!({"rows": summary.rows_imported, "seconds": seconds, "peak_rss_mb": import_rss})
        );
        return;
    }
    let filter =
        switchboard::Filter::parse(r#"plan = "Premium" and support_tickets > 2"#).expect("filter");
    let started = Instant::now();
    let first = runtime
        .block_on(store.query_page(&tenant, &filter, None, 100))
        .expect("query");
    let first_query = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let again = import(&store);
    let reimport = started.elapsed().as_secs_f64();
    assert_eq!(again.rows_imported, summary.rows_imported);
    drop(store);
    println!(
        "{}",
        serde_json::json!({
            "rows": summary.rows_imported,
            "seconds": seconds,
            "peak_rss_mb": import_rss,
            "peak_rss_after_mb": vm_hwm_mb().unwrap_or(0.0),
            "first_query_seconds": first_query,
            "matches": first.total,
            "reimport_seconds": reimport,
        })
    );
}

fn run(command: &mut Command) -> Figures {
    let output = command.output().expect("spawn");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&stdout)
}

fn ensure_pandas(python: &str) {
    let has = |python: &str| {
        Command::new(python)
            .args(["-c", "import pandas"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(python) {
        return;
    }
    println!("pandas_peer: pandas is missing; installing it with pip (benchmarks only)");
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "pandas"])
        .status()
        .expect("pip");
    assert!(
        status.success() && has(python),
        "pandas could not be installed"
    );
}

fn main() {
    let dir_var = std::env::var_os(CHILD);
    if let Some(dir) = dir_var {
        let dir = PathBuf::from(dir);
        child(&dir.join("export.csv"), &dir.join("switchboard.db"));
        return;
    }
    let rows = env_usize("SWITCHBOARD_BENCH_ROWS", 1_000_000);
    let runs = env_usize("SWITCHBOARD_PEER_RUNS", 3).max(1);
    let python = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    ensure_pandas(&python);

    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("export.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&csv).expect("create"));
    std::io::copy(&mut Generator::new(rows), &mut file).expect("write the CSV");
    drop(file);
    let size_mb = std::fs::metadata(&csv).expect("size").len() as f64 / 1e6;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pandas_peer.py");
    let exe = std::env::current_exe().expect("current exe");

    let mut best: [Option<Figures>; 2] = [None, None];
    for _ in 0..runs {
        // Alternate the sides so both see the same machine load.
        for (side, db) in [(0, "switchboard.db"), (1, "pandas.db")] {
            let _ = std::fs::remove_file(dir.path().join(db));
            let figures = if side == 0 {
                run(Command::new(&exe).env(CHILD, dir.path()))
            } else {
                run(Command::new(&python)
                    .arg(&script)
                    .arg(&csv)
                    .arg(dir.path().join(db)))
            };
            assert_eq!(figures.rows, rows as u64, "side {side} imported every row");
            let slot = &mut best[side];
            if slot.is_none_or(|b| figures.seconds < b.seconds) {
                // Peak RSS: the highest seen over the runs.
                let peak = slot.map_or(0.0, |b| b.peak_rss_mb).max(figures.peak_rss_mb);
                *slot = Some(Figures {
                    peak_rss_mb: peak,
                    ..figures
                });
            } else if let Some(b) = slot {
                b.peak_rss_mb = b.peak_rss_mb.max(figures.peak_rss_mb);
            }
        }
    }
    let (Some(sb), Some(pd)) = (best[0], best[1]) else {
        unreachable!("runs >= 1");
    };
    println!(
        "pandas_peer: {rows} rows x 12 columns ({size_mb:.0} MB CSV), user id + 10 attributes into SQLite, best of {runs} runs each"
    );
    for (name, f) in [
        ("switchboard import_rows -> SqliteStore", sb),
        ("pandas.read_csv(dtype=str) + to_sql", pd),
    ] {
        println!(
            "  {name}: {:.2} s, {:.0} rows/s, peak RSS {:.1} MB",
            f.seconds,
            f.rows as f64 / f.seconds,
            f.peak_rss_mb
        );
    }
    if let (Some(q), Some(r)) = (sb.first_query_seconds, sb.reimport_seconds) {
        println!(
            "  switchboard, then: first `plan = \"Premium\" and support_tickets > 2` page (builds 2 indexes) {q:.2} s; \
             the same file again (every user unchanged: its row is stamped, its values and the indexes are left alone) {r:.2} s ({:.0} rows/s); \
             peak RSS of it all {:.1} MB",
            sb.rows as f64 / r,
            sb.peak_rss_after_mb.unwrap_or(0.0)
        );
    }
    println!(
        "  switchboard time / pandas time = {:.2} (below 1: switchboard is faster); peak RSS switchboard / pandas = {:.2}",
        sb.seconds / pd.seconds,
        sb.peak_rss_mb / pd.peak_rss_mb
    );
}
