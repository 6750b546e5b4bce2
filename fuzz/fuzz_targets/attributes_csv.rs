//! Fuzzes the CSV reader (every encoding, gzip detection, CR-only files): never panics, row errors carry lines ≥ 1, owned records agree with their maps and with the batch they are collected into, error reports write every error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::attributes::{
    AttributeBatch, AttributeRecord, CsvMapping, ErrorReport, TextEncoding, UserIdFormat, discover_csv, read_csv,
};

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
        let mut report = ErrorReport::new(Vec::new()).unwrap();
        let mut last_line = 0;
        let mut batch = AttributeBatch::new();
        let mut maps = Vec::new();
        for row in rows.take(10_000) {
            match row {
                Err(e) => {
                    assert!(e.line >= 1);
                    report.push(&e).unwrap();
                }
                Ok(record) => {
                    assert!(record.line() >= 1 && record.line() >= last_line);
                    last_line = record.line();
                    assert!(!record.user_id().is_empty());
                    let map = AttributeRecord::from(&record);
                    assert!(record == map);
                    assert_eq!(record.len(), map.attributes.len());
                    for (name, value) in record.attributes() {
                        assert_eq!(record.get(name), Some(value));
                    }
                    batch.push_csv(&record).unwrap();
                    maps.push(map);
                }
            }
        }
        assert_eq!(batch.len(), maps.len());
        assert_eq!(batch.to_records(), maps);
        let rows = report.rows();
        let text = report.finish().unwrap();
        assert!(rows == 0 || !text.is_empty());
    }
    let _ = discover_csv(body, 5);
});
