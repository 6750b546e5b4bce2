//! Fuzzes the CSV reader (every encoding, gzip detection, CR-only files): never panics, row errors carry lines ≥ 1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::attributes::{CsvMapping, TextEncoding, UserIdFormat, discover_csv, read_csv};

fuzz_target!(|data: &[u8]| {
    let encoding = match data.first().map(|b| b % 4) {
        Some(0) => TextEncoding::Utf8,
        Some(1) => TextEncoding::Windows1252,
        Some(2) => TextEncoding::Utf16,
        _ => TextEncoding::Auto,
    };
    let format = if data.get(1).is_some_and(|b| b % 2 == 0) {
        UserIdFormat::AsIs
    } else {
        UserIdFormat::Email
    };
    let body = data.get(2..).unwrap_or_default();
    let mapping = CsvMapping::new("id")
        .attribute("a", "a")
        .attribute("b", "b")
        .encoding(encoding)
        .null_values(["NULL"])
        .user_id_format(format)
        .max_record_bytes(4096);
    if let Ok(rows) = read_csv(body, &mapping) {
        for row in rows.take(10_000) {
            if let Err(e) = row {
                assert!(e.line >= 1);
            }
        }
    }
    let _ = discover_csv(body, 5);
});
