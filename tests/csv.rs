//! Streaming CSV import: real-export quirks, row errors, whole-file errors, discovery, duplicates and property tests.

use std::collections::BTreeMap;
use std::io::Read;

use proptest::prelude::*;
use switchboard::attributes::{
    AttributeRecord, CsvMapping, ImportCollector, RowError, RowErrorReason, discover_csv,
    import_rows, read_csv,
};
use switchboard::tenant::TenantId;
use switchboard::{AttributeStore, ErrorKind, MemoryStore};

/// The default tenant.
fn d() -> TenantId {
    TenantId::default()
}

fn rows(csv: &[u8], mapping: &CsvMapping) -> Vec<Result<AttributeRecord, RowError>> {
    read_csv(csv, mapping)
        .expect("header is valid")
        .map(|row| row.map(AttributeRecord::from))
        .collect()
}

fn record(user_id: &str, attrs: &[(&str, &str)]) -> AttributeRecord {
    AttributeRecord {
        user_id: user_id.to_owned(),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn plan_mapping() -> CsvMapping {
    CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Tickets", "support_tickets")
}

#[test]
fn bom_crlf_and_quoted_fields() {
    let csv = "\u{feff}Email,Plan,Tickets\r\n\
               ada@example.com,\"Premium, annual\",3\r\n\
               bob@example.com,\"The \"\"best\"\" plan\",0\r\n\
               cy@example.com,\"two\r\nlines\",7\r\n";
    let got = rows(csv.as_bytes(), &plan_mapping());
    assert_eq!(
        got,
        vec![
            Ok(record(
                "ada@example.com",
                &[("plan", "Premium, annual"), ("support_tickets", "3")]
            )),
            Ok(record(
                "bob@example.com",
                &[("plan", "The \"best\" plan"), ("support_tickets", "0")]
            )),
            Ok(record(
                "cy@example.com",
                &[("plan", "two\r\nlines"), ("support_tickets", "7")]
            )),
        ]
    );
}

#[test]
fn lf_trailing_empty_lines_and_blank_lines_are_ignored() {
    let csv = "Email,Plan,Tickets\nada@example.com,Basic,1\n\nbob@example.com,Pro,2\n\n\n\r\n";
    let got = rows(csv.as_bytes(), &plan_mapping());
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(Result::is_ok));
}

#[test]
fn trailing_empty_field_is_accepted() {
    // Rows with a trailing comma beyond the header, and a header with a trailing
    // unnamed column whose rows leave it out.
    let csv = "Email,Plan,Tickets\nada@example.com,Basic,1,\n";
    assert_eq!(
        rows(csv.as_bytes(), &plan_mapping()),
        vec![Ok(record(
            "ada@example.com",
            &[("plan", "Basic"), ("support_tickets", "1")]
        ))]
    );
    let csv = "Email,Plan,Tickets,\nada@example.com,Basic,1,\nbob@example.com,Pro,2\n";
    let got = rows(csv.as_bytes(), &plan_mapping());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(Result::is_ok), "{got:?}");
}

#[test]
fn empty_cells_are_empty_strings() {
    let csv = "Email,Plan,Tickets\nada@example.com,,\n";
    assert_eq!(
        rows(csv.as_bytes(), &plan_mapping()),
        vec![Ok(record(
            "ada@example.com",
            &[("plan", ""), ("support_tickets", "")]
        ))]
    );
}

#[test]
fn bad_rows_become_row_errors_with_line_numbers_and_do_not_abort() {
    let mut csv = b"Email,Plan,Tickets\n".to_vec(); // line 1
    csv.extend_from_slice(b"ada@example.com,Basic\n"); // 2: too few fields
    csv.extend_from_slice(b",Basic,1\n"); // 3: empty user id
    csv.extend_from_slice(b"   ,Basic,1\n"); // 4: blank user id
    csv.extend_from_slice(b"bob@example.com,\xff\xfe,1\n"); // 5: invalid UTF-8
    csv.extend_from_slice(b"\"a\nb\",Basic,1\n"); // 6-7: control character in the id
    csv.extend_from_slice(b"cy@example.com,Basic,1,2,3\n"); // 8: too many fields
    csv.extend_from_slice(b"dee@example.com,Pro,4\n"); // 9: fine
    let got = rows(&csv, &plan_mapping());
    let errors: Vec<(u64, RowErrorReason)> = got
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| (e.line, e.reason.clone()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (
                2,
                RowErrorReason::FieldCount {
                    expected: 3,
                    found: 2
                }
            ),
            (
                3,
                RowErrorReason::EmptyUserId {
                    column: "Email".into()
                }
            ),
            (
                4,
                RowErrorReason::EmptyUserId {
                    column: "Email".into()
                }
            ),
            (
                5,
                RowErrorReason::InvalidUtf8 {
                    column: "Plan".into()
                }
            ),
            (
                6,
                RowErrorReason::InvalidUserId {
                    column: "Email".into(),
                    detail: "contains control characters".into()
                }
            ),
            (
                8,
                RowErrorReason::FieldCount {
                    expected: 3,
                    found: 5
                }
            ),
        ]
    );
    assert_eq!(
        got.last(),
        Some(&Ok(record(
            "dee@example.com",
            &[("plan", "Pro"), ("support_tickets", "4")]
        )))
    );
    let first = got[0].as_ref().unwrap_err();
    assert_eq!(first.to_string(), "line 2: expected 3 fields, found 2");
    let json = serde_json::to_value(first).unwrap();
    assert_eq!(json["line"], 2);
    assert_eq!(json["reason"]["kind"], "field_count");
}

#[test]
fn invalid_utf8_in_an_unmapped_column_is_not_an_error() {
    let csv = b"Email,Plan,Tickets,Notes\nada@example.com,Basic,1,\xff\n";
    assert_eq!(
        rows(csv, &plan_mapping()),
        vec![Ok(record(
            "ada@example.com",
            &[("plan", "Basic"), ("support_tickets", "1")]
        ))]
    );
}

#[test]
fn line_numbers_count_lines_inside_quoted_fields() {
    let csv = "Email,Plan,Tickets\na@x.io,\"multi\nline\nvalue\",1\nb@x.io,Basic\n";
    let got = rows(csv.as_bytes(), &plan_mapping());
    assert!(got[0].is_ok());
    assert_eq!(got[1].as_ref().unwrap_err().line, 5);
}

#[test]
fn user_ids_and_values_are_trimmed() {
    let csv = "Email,Plan,Tickets\n  ada@example.com , Premium ,1\n";
    assert_eq!(
        rows(csv.as_bytes(), &plan_mapping()),
        vec![Ok(record(
            "ada@example.com",
            &[("plan", "Premium"), ("support_tickets", "1")]
        ))]
    );
}

#[test]
fn missing_mapped_column_fails_the_whole_file() {
    let mapping = CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats");
    let err = read_csv("Email,Plan\na@x.io,Basic\n".as_bytes(), &mapping).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("\"Seats\""), "{err}");
    assert!(
        !err.to_string().contains("\"Plan\","),
        "only missing columns are named: {err}"
    );

    let err = read_csv("id,Plan\n".as_bytes(), &mapping).unwrap_err();
    assert!(err.to_string().contains("\"Email\""), "{err}");

    let err = read_csv("".as_bytes(), &mapping).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("empty"), "{err}");
}

/// A reader that hands out the header, then fails if read again.
struct HeaderThenPanic {
    header: Vec<u8>,
    done: bool,
}

impl Read for HeaderThenPanic {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Err(std::io::Error::other("read past the header"));
        }
        self.done = true;
        let n = self.header.len().min(buf.len());
        buf[..n].copy_from_slice(&self.header[..n]);
        Ok(n)
    }
}

#[test]
fn missing_column_is_reported_before_any_row_is_read() {
    // The input errors on any read after the header: the error must be the
    // missing column, not an I/O error from reading rows.
    let input = HeaderThenPanic {
        header: b"Email,Other\n".to_vec(),
        done: false,
    };
    let err = read_csv(input, &plan_mapping()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("\"Plan\""), "{err}");
}

#[test]
fn invalid_mappings_are_rejected() {
    let dup = CsvMapping::new("Email")
        .attribute("A", "x")
        .attribute("B", "x");
    assert_eq!(
        read_csv("Email,A,B\n".as_bytes(), &dup).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let empty = CsvMapping::new(" ");
    assert_eq!(
        read_csv("Email\n".as_bytes(), &empty).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn header_names_match_ignoring_case_and_spaces_when_not_exact() {
    let csv = " email ,PLAN,Tickets\na@x.io,Basic,1\n";
    let got = rows(csv.as_bytes(), &plan_mapping());
    assert_eq!(
        got,
        vec![Ok(record(
            "a@x.io",
            &[("plan", "Basic"), ("support_tickets", "1")]
        ))]
    );
}

#[test]
fn semicolon_delimiter() {
    let mapping = plan_mapping().delimiter(b';');
    let got = rows(b"Email;Plan;Tickets\na@x.io;Basic, yearly;1\n", &mapping);
    assert_eq!(
        got,
        vec![Ok(record(
            "a@x.io",
            &[("plan", "Basic, yearly"), ("support_tickets", "1")]
        ))]
    );
}

#[test]
fn an_oversized_record_stops_reading_with_a_fatal_error() {
    let mapping = plan_mapping().max_record_bytes(1024);
    let mut csv = b"Email,Plan,Tickets\na@x.io,Basic,1\nb@x.io,\"never closed".to_vec();
    csv.extend(std::iter::repeat_n(b'x', 500_000));
    csv.extend_from_slice(b"\nc@x.io,Basic,1\n");
    let got = rows(&csv, &mapping);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].is_ok());
    let err = got[1].as_ref().unwrap_err();
    assert!(err.is_fatal());
    assert_eq!(err.line, 3);
    assert!(matches!(
        err.reason,
        RowErrorReason::TooLong { limit: 1024 }
    ));
}

#[test]
fn io_errors_end_the_stream_with_a_fatal_row_error() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let data = b"Email,Plan,Tickets\na@x.io,Basic,1\n";
            if self.0 >= data.len() {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = (data.len() - self.0).min(buf.len());
            buf[..n].copy_from_slice(&data[self.0..self.0 + n]);
            self.0 += n;
            Ok(n)
        }
    }
    let got: Vec<_> = read_csv(Failing(0), &plan_mapping()).unwrap().collect();
    assert_eq!(got.len(), 2);
    assert!(got[0].is_ok());
    let err = got[1].as_ref().unwrap_err();
    assert!(err.is_fatal());
    assert!(err.to_string().contains("connection reset"), "{err}");
}

#[test]
fn discover_returns_header_and_first_rows() {
    let csv = "\u{feff}Email,Plan\r\na@x.io,Basic\r\n\r\nb@x.io,\"Pro\nplus\"\r\nc@x.io,Free\r\n";
    let sample = discover_csv(csv.as_bytes(), 2).unwrap();
    assert_eq!(sample.headers, ["Email", "Plan"]);
    assert_eq!(sample.rows, [["a@x.io", "Basic"], ["b@x.io", "Pro\nplus"]]);
    assert!(sample.more);
    let all = discover_csv(csv.as_bytes(), 10).unwrap();
    assert_eq!(all.rows.len(), 3);
    assert!(!all.more);
    assert_eq!(
        discover_csv("".as_bytes(), 5).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn collector_counts_duplicates_keeps_first_errors_and_batches() {
    let mut csv = String::from("id,plan\n");
    for i in 0..25 {
        csv.push_str(&format!(",bad{i}\n")); // 25 rejected rows
    }
    for i in 0..10 {
        csv.push_str(&format!("u{},p{i}\n", i % 4)); // 10 rows, 4 distinct ids
    }
    let mapping = CsvMapping::new("id").attribute("plan", "plan");
    let mut collector = ImportCollector::new().batch_size(3).max_row_errors(5);
    let mut batches = Vec::new();
    for row in read_csv(csv.as_bytes(), &mapping).unwrap() {
        if let Some(batch) = collector.push(row) {
            batches.push(batch);
        }
    }
    let (rest, summary) = collector.finish();
    assert_eq!(batches.len(), 3);
    assert!(batches.iter().all(|b| b.len() == 3));
    assert_eq!(rest.len(), 1);
    assert_eq!(summary.rows_read, 35);
    assert_eq!(summary.rows_imported, 10);
    assert_eq!(summary.rows_rejected, 25);
    assert_eq!(summary.duplicate_user_ids, 6);
    assert!(summary.duplicates_exact);
    assert_eq!(summary.users_imported(), 4);
    assert_eq!(summary.row_errors.len(), 5);
    assert_eq!(summary.row_errors[0].line, 2);
    assert_eq!(summary.properties, ["plan"]);
}

#[test]
fn duplicate_tracking_beyond_its_cap_is_reported_as_inexact() {
    let csv = "id\na\nb\na\nc\na\n";
    let mut collector = ImportCollector::new().max_tracked_ids(3);
    for row in read_csv(csv.as_bytes(), &CsvMapping::new("id")).unwrap() {
        collector.push(row);
    }
    let (_, summary) = collector.finish();
    assert_eq!(summary.duplicate_user_ids, 1); // a, b, a tracked
    assert!(!summary.duplicates_exact);
}

#[tokio::test]
async fn import_into_a_store_last_row_wins() {
    let store = MemoryStore::new();
    let csv = "Email,Plan,Tickets\na@x.io,Basic,1\nb@x.io,Pro,2\na@x.io,Premium,5\n";
    let records = read_csv(csv.as_bytes(), &plan_mapping()).unwrap();
    let summary = import_rows(records, &store, &d(), ImportCollector::new().batch_size(2))
        .await
        .unwrap();
    assert_eq!(summary.duplicate_user_ids, 1);
    assert_eq!(summary.rows_imported, 3);
    let a = store.get(&d(), "a@x.io").await.unwrap().unwrap();
    assert_eq!(a.get("plan").map(String::as_str), Some("Premium"));
    assert_eq!(a.get("support_tickets").map(String::as_str), Some("5"));
}

#[tokio::test]
async fn an_import_over_the_attribute_cap_writes_nothing() {
    let store = MemoryStore::new().with_attribute_cap(2);
    let mapping = CsvMapping::new("id")
        .attribute("a", "a")
        .attribute("b", "b")
        .attribute("c", "c");
    let mut csv = String::from("id,a,b,c\n");
    for i in 0..20 {
        csv.push_str(&format!("u{i},1,2,3\n"));
    }
    let records = read_csv(csv.as_bytes(), &mapping).unwrap();
    let err = import_rows(records, &store, &d(), ImportCollector::new().batch_size(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    assert_eq!(store.get(&d(), "u0").await.unwrap(), None);
}

#[tokio::test]
async fn a_fatal_row_error_fails_the_import_after_writing_the_full_batches() {
    let store = MemoryStore::new();
    let mapping = CsvMapping::new("id")
        .attribute("a", "a")
        .max_record_bytes(1024);
    let mut csv = b"id,a\nu1,1\nu2,2\nu3,3\nu4,\"".to_vec();
    csv.extend(std::iter::repeat_n(b'y', 300_000));
    let records = read_csv(&csv[..], &mapping).unwrap();
    let err = import_rows(records, &store, &d(), ImportCollector::new().batch_size(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("line 5"), "{err}");
    assert!(
        err.to_string().contains("2 rows were imported before"),
        "{err}"
    );
    assert!(store.get(&d(), "u2").await.unwrap().is_some());
    assert_eq!(
        store.get(&d(), "u3").await.unwrap(),
        None,
        "a partial batch is not written"
    );
}

#[tokio::test]
async fn pipelined_batches_are_written_in_file_order() {
    let store = MemoryStore::new();
    let mut csv = String::from("id,n\n");
    for i in 0..1000 {
        csv.push_str(&format!("u{},{i}\n", i % 7));
    }
    let mapping = CsvMapping::new("id").attribute("n", "n");
    let records = read_csv(csv.as_bytes(), &mapping).unwrap();
    let summary = import_rows(records, &store, &d(), ImportCollector::new().batch_size(3))
        .await
        .unwrap();
    assert_eq!(summary.rows_imported, 1000);
    assert_eq!(summary.duplicate_user_ids, 993);
    for u in 0..7 {
        // The last row for user u is the largest i with i % 7 == u.
        let last = (0..1000).filter(|i| i % 7 == u).max().unwrap();
        let attrs = store.get(&d(), &format!("u{u}")).await.unwrap().unwrap();
        assert_eq!(attrs["n"], last.to_string());
    }
}

/// A CSV with `n` attribute columns named `{prefix}0..`, for `users` users.
fn wide_csv(prefix: &str, n: usize, users: usize) -> (String, CsvMapping) {
    let mut mapping = CsvMapping::new("id");
    let mut csv = String::from("id");
    for i in 0..n {
        csv.push_str(&format!(",{prefix}{i}"));
        mapping = mapping.attribute(format!("{prefix}{i}"), format!("{prefix}{i}"));
    }
    csv.push('\n');
    for u in 0..users {
        csv.push_str(&format!("{prefix}-user{u}"));
        for i in 0..n {
            csv.push_str(&format!(",{}", u + i));
        }
        csv.push('\n');
    }
    (csv, mapping)
}

/// Tenant A fills its cap of 100 names; B still imports 100 names of its own,
/// and A's 101st name is refused without writing anything.
async fn caps_are_per_tenant(store: &dyn AttributeStore) {
    let (a, b) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    let (csv, mapping) = wide_csv("a", 100, 3);
    let summary = import_rows(
        read_csv(csv.as_bytes(), &mapping).unwrap(),
        store,
        &a,
        ImportCollector::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.properties.len(), 100);

    // B has its own 100, with different names.
    let (csv, mapping) = wide_csv("b", 100, 2);
    import_rows(
        read_csv(csv.as_bytes(), &mapping).unwrap(),
        store,
        &b,
        ImportCollector::new(),
    )
    .await
    .expect("acme at 100 names does not block globex");
    assert_eq!(
        store.get(&b, "b-user1").await.unwrap().unwrap()["b99"],
        "100"
    );

    // A is full: one more name is refused and nothing is written.
    let csv = "id,extra\nnew-user,1\n";
    let mapping = CsvMapping::new("id").attribute("extra", "extra");
    let err = import_rows(
        read_csv(csv.as_bytes(), &mapping).unwrap(),
        store,
        &a,
        ImportCollector::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    assert!(err.to_string().contains("extra"), "{err}");
    assert_eq!(store.get(&a, "new-user").await.unwrap(), None);
    // …while B may still reuse its registered names, and A its own.
    let csv = "id,b5\nlate,7\n";
    let mapping = CsvMapping::new("id").attribute("b5", "b5");
    import_rows(
        read_csv(csv.as_bytes(), &mapping).unwrap(),
        store,
        &b,
        ImportCollector::new(),
    )
    .await
    .unwrap();
    // The same user id in two tenants is two users.
    assert_eq!(store.get(&a, "late").await.unwrap(), None);
    assert_eq!(store.get(&b, "a-user0").await.unwrap(), None);
    assert!(store.get(&a, "a-user0").await.unwrap().is_some());
}

#[tokio::test]
async fn the_attribute_cap_is_per_tenant_in_memory() {
    caps_are_per_tenant(&MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_attribute_cap_is_per_tenant_in_sqlite() {
    caps_are_per_tenant(&switchboard::SqliteStore::open_in_memory().unwrap()).await;
}

fn header_name() -> impl Strategy<Value = String> {
    // Any text that is not blank (blank names cannot be mapped) and does not start
    // with a BOM character (a BOM at the very start of the file is stripped).
    any::<String>().prop_filter("mappable name", |s| {
        !s.trim().is_empty() && !s.starts_with('\u{feff}')
    })
}

fn user_id() -> impl Strategy<Value = String> {
    // Valid ids: no surrounding spaces, no control characters.
    "[A-Za-z0-9@._+,\" -]{0,20}[A-Za-z0-9@._+,\"-]"
        .prop_map(|s| s.trim().to_owned())
        .prop_filter("non-empty", |s| !s.is_empty())
}

fn table() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    (1usize..5)
        .prop_flat_map(|attrs| {
            (
                proptest::collection::btree_set(header_name(), attrs + 1),
                proptest::collection::vec(
                    (user_id(), proptest::collection::vec(any::<String>(), attrs)),
                    0..20,
                ),
            )
        })
        .prop_map(|(names, rows)| {
            let names: Vec<String> = names.into_iter().collect();
            let rows = rows
                .into_iter()
                .map(|(id, mut values)| {
                    values.insert(0, id);
                    values
                })
                .collect();
            (names, rows)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_table_written_with_the_csv_writer_reads_back_identical((headers, table) in table(), crlf in any::<bool>()) {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        writer.write_record(&headers).unwrap();
        for row in &table {
            writer.write_record(row).unwrap();
        }
        let bytes = writer.into_inner().unwrap();

        let mut mapping = CsvMapping::new(headers[0].clone());
        for (i, h) in headers.iter().enumerate().skip(1) {
            mapping = mapping.attribute(h.clone(), format!("attr{i}"));
        }
        let got: Vec<AttributeRecord> = read_csv(&bytes[..], &mapping)
            .unwrap()
            .map(|row| row.map(AttributeRecord::from))
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<AttributeRecord> = table
            .iter()
            .map(|row| AttributeRecord {
                user_id: row[0].clone(),
                attributes: row[1..]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("attr{}", i + 1), v.trim().to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn row_errors_name_the_line_the_row_starts_on(
        rows in proptest::collection::vec(
            (any::<bool>(), any::<String>(), 0usize..3),
            1..20,
        ),
        crlf in any::<bool>(),
    ) {
        // Rows with an empty id are rejected; values may hold line breaks; blank
        // lines are sprinkled in. Each error must name the row's first line.
        let newline: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut bytes = Vec::new();
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(&mut bytes);
        writer.write_record(["id", "v"]).unwrap();
        writer.flush().unwrap();
        drop(writer);
        let mut expected = Vec::new();
        for (i, (valid, value, blanks)) in rows.iter().enumerate() {
            for _ in 0..*blanks {
                bytes.extend_from_slice(newline);
            }
            let line = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let id = if *valid { format!("u{i}") } else { String::new() };
            if !valid {
                expected.push(line);
            }
            let mut writer = csv::WriterBuilder::new()
                .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
                .from_writer(&mut bytes);
            // Rows whose fields are all blank are skipped by design: keep a value.
            let value = format!("x{value}");
            writer.write_record([id.as_str(), value.as_str()]).unwrap();
            writer.flush().unwrap();
        }
        let mapping = CsvMapping::new("id").attribute("v", "v");
        let lines: Vec<u64> = read_csv(&bytes[..], &mapping)
            .unwrap()
            .filter_map(Result::err)
            .map(|e| e.line)
            .collect();
        prop_assert_eq!(lines, expected);
    }

    #[test]
    fn read_csv_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mapping = CsvMapping::new("id").attribute("a", "a");
        let mut input = b"id,a\n".to_vec();
        input.extend_from_slice(&bytes);
        let rows = read_csv(&input[..], &mapping).unwrap();
        let mut count = 0;
        for row in rows {
            if let Err(e) = row {
                prop_assert!(e.line >= 2);
                let _ = e.to_string();
            }
            count += 1;
            prop_assert!(count <= bytes.len() + 1);
        }
        let _ = read_csv(&bytes[..], &mapping).map(Iterator::count);
        let _ = discover_csv(&bytes[..], 3);
    }
}

#[test]
fn a_mapping_deserializes_with_defaults() {
    let mapping: CsvMapping =
        serde_json::from_str(r#"{"user_id_column": "Email", "attributes": [["Plan", "plan"]]}"#)
            .unwrap();
    assert_eq!(mapping, CsvMapping::new("Email").attribute("Plan", "plan"));
    let back: CsvMapping = serde_json::from_value(serde_json::to_value(&mapping).unwrap()).unwrap();
    assert_eq!(back, mapping);
}

#[test]
fn line_numbers_skip_over_blank_lines() {
    let csv = "Email,Plan,Tickets\r\n\r\n\r\nbad row\r\n\n,x,1\n";
    let got = rows(csv.as_bytes(), &plan_mapping());
    let lines: Vec<u64> = got.iter().map(|r| r.as_ref().unwrap_err().line).collect();
    assert_eq!(lines, [4, 6]);
}

/// Hands out its data a few bytes at a time, as slow network readers do.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn small_reads_give_the_same_rows_and_lines() {
    let csv = "\u{feff}Email,Plan,Tickets\r\na@x.io,\"multi\r\nline\",1\r\n\r\n,Basic,1\r\nb@x.io,Pro\r\n";
    let expected = rows(csv.as_bytes(), &plan_mapping());
    let lines: Vec<u64> = expected
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.line))
        .collect();
    assert_eq!(lines, [5, 6]);
    for chunk in [1, 2, 3, 7] {
        let got: Vec<_> = read_csv(Trickle(csv.as_bytes(), chunk), &plan_mapping())
            .unwrap()
            .map(|row| row.map(AttributeRecord::from))
            .collect();
        assert_eq!(got, expected, "chunks of {chunk}");
    }
}

// ---------------------------------------------------------------------------
// Issue 15: defect 10 (values trimmed, CR-only line numbers, user-id
// normalisation) and real-world files (encodings, gzip, null values).

#[test]
fn values_are_trimmed_like_headers() {
    let mapping = CsvMapping::new("Email").attribute("Plan", "plan");
    let got = rows(b" Email , Plan \nada@x.io,  Premium \t\n", &mapping);
    assert_eq!(
        got[0].as_ref().unwrap(),
        &record("ada@x.io", &[("plan", "Premium")])
    );
}

#[test]
fn cr_only_files_number_their_lines() {
    let mapping = CsvMapping::new("Email").attribute("Plan", "plan");
    let got = rows(
        b"Email,Plan\rada@x.io,Basic\r,Pro\rbob@x.io,Free\r",
        &mapping,
    );
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].as_ref().unwrap_err().line, 3);
    assert_eq!(got[2].as_ref().unwrap().user_id, "bob@x.io");
}

#[test]
fn mixed_line_ends_number_lines_in_order() {
    // LF, a lone CR, a quoted lone CR (a line break inside the value), CRLF.
    let mapping = CsvMapping::new("id").attribute("a", "a");
    let got = rows(b"id,a\nu1,x\ru2,y\nu3,\"q\rq\"\ru4,z\r\nu5,w", &mapping);
    let lines: Vec<u64> = read_csv(
        &b"id,a\nu1,x\ru2,y\nu3,\"q\rq\"\ru4,z\r\nu5,w"[..],
        &mapping,
    )
    .unwrap()
    .map(|r| r.unwrap().line())
    .collect();
    assert_eq!(lines, [2, 3, 4, 6, 7]);
    assert_eq!(got[2].as_ref().unwrap().attributes["a"], "q\nq");
    // Found by the `attributes_csv` fuzz target: rows after lone CRs in an LF
    // file, then an unterminated quote over many lines, went back in lines.
    let fuzzed = b"id,a,b\n\x01i\x01d,,b\nda$$,,b\n\x01\x01id,,c\r\x01\x01id,a,\nA\x7f\0\0\0\0\0\0\x02%1\",\0\x04,\n@%2\",,\rA%2\",,b\rt0%2,\0$,\"\n\n\n\n\n";
    let mapping = CsvMapping::new("id")
        .attribute("a", "a")
        .attribute("b", "b");
    let lines: Vec<u64> = read_csv(&fuzzed[..], &mapping)
        .unwrap()
        .map(|r| match r {
            Ok(r) => r.line(),
            Err(e) => e.line,
        })
        .collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn user_ids_can_be_normalised_as_emails_or_phones() {
    use switchboard::attributes::UserIdFormat;
    let mapping = CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .user_id_format(UserIdFormat::Email);
    let got = rows(
        b"Email,Plan\nAda@X.com,Basic\n ada@x.com ,Pro\nnot-an-email,Free\n",
        &mapping,
    );
    assert_eq!(got[0].as_ref().unwrap().user_id, "ada@x.com");
    assert_eq!(got[1].as_ref().unwrap().user_id, "ada@x.com");
    let err = got[2].as_ref().unwrap_err();
    assert_eq!(err.line, 4);
    assert!(
        matches!(err.reason, RowErrorReason::InvalidUserId { .. }),
        "{err}"
    );

    let phones = CsvMapping::new("Phone")
        .attribute("Plan", "plan")
        .user_id_format(UserIdFormat::Phone {
            region: "DE".into(),
        });
    let got = rows(
        b"Phone,Plan\n030 123456,Basic\n+49 30 123456,Pro\n",
        &phones,
    );
    assert_eq!(got[0].as_ref().unwrap().user_id, "+4930123456");
    assert_eq!(got[1].as_ref().unwrap().user_id, "+4930123456");
}

#[test]
fn windows_1252_utf16_and_gzip_files_are_read() {
    use std::io::Write;
    use switchboard::attributes::TextEncoding;
    let mapping = CsvMapping::new("Email").attribute("City", "city");
    let latin = b"Email,City\nada@x.io,M\xfcnchen\n";
    let got = rows(latin, &mapping.clone().encoding(TextEncoding::Windows1252));
    assert_eq!(got[0].as_ref().unwrap().attributes["city"], "München");
    let got = rows(latin, &mapping.clone().encoding(TextEncoding::Auto));
    assert_eq!(got[0].as_ref().unwrap().attributes["city"], "München");
    let got = rows(latin, &mapping);
    assert!(
        got[0].is_err(),
        "UTF-8 by default: the row is rejected, not garbled"
    );

    let mut utf16 = vec![0xff, 0xfe];
    for unit in "Email,City\r\nada@x.io,Zürich\r\n".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let got = rows(&utf16, &mapping);
    assert_eq!(got[0].as_ref().unwrap().attributes["city"], "Zürich");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all("Email,City\nada@x.io,Köln\n".as_bytes())
        .unwrap();
    let got = rows(&gz.finish().unwrap(), &mapping);
    assert_eq!(got[0].as_ref().unwrap().attributes["city"], "Köln");
}

#[test]
fn null_values_set_no_attribute() {
    let mapping = CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats")
        .null_values(["NULL", "n/a"]);
    let got = rows(
        b"Email,Plan,Seats\nada@x.io,null,3\nbob@x.io,Pro, N/A \n",
        &mapping,
    );
    assert_eq!(
        got[0].as_ref().unwrap(),
        &record("ada@x.io", &[("seats", "3")])
    );
    assert_eq!(
        got[1].as_ref().unwrap(),
        &record("bob@x.io", &[("plan", "Pro")])
    );
}

/// Reads `csv` with `CsvRecords::read_record` into one reused record.
fn rows_reusing(csv: &[u8], mapping: &CsvMapping) -> Vec<Result<AttributeRecord, RowError>> {
    let mut rows = read_csv(csv, mapping).expect("header is valid");
    let mut reused = record("", &[]);
    let mut out = Vec::new();
    while let Some(row) = rows.read_record(&mut reused) {
        out.push(row.map(|()| reused.clone()));
    }
    out
}

#[test]
fn read_record_reuses_one_record_and_matches_the_iterator() {
    let mapping = CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats")
        .null_values(["NULL"]);
    let csv = b"Email,Plan,Seats\nada@x.io,Pro,3\nbob@x.io,NULL,4\n,Pro,1\ncy@x.io,Basic,NULL\ndi@x.io,Premium,12\n";
    let reused = rows_reusing(csv, &mapping);
    assert_eq!(reused, rows(csv, &mapping));
    // A null cell after a full row drops the attribute the record still held.
    assert_eq!(
        reused[1].as_ref().unwrap(),
        &record("bob@x.io", &[("seats", "4")])
    );
    assert!(reused[2].is_err());
    assert_eq!(
        reused[4].as_ref().unwrap(),
        &record("di@x.io", &[("plan", "Premium"), ("seats", "12")])
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn read_record_yields_what_the_iterator_yields(
        cells in proptest::collection::vec(proptest::collection::vec(prop_oneof!["[a-z]{0,4}", Just("NULL".to_owned())], 3), 0..12),
    ) {
        let mut csv = String::from("Email,Plan,Seats\n");
        for (i, row) in cells.iter().enumerate() {
            csv.push_str(&format!("u{i}@x.io,{},{}\n", row[1], row[2]));
        }
        let mapping = CsvMapping::new("Email")
            .attribute("Plan", "plan")
            .attribute("Seats", "seats")
            .null_values(["NULL"]);
        prop_assert_eq!(rows_reusing(csv.as_bytes(), &mapping), rows(csv.as_bytes(), &mapping));
    }
}

/// The rows of `csv` as `CsvRecords::next_row` borrows them, copied to maps
/// one by one (no read-ahead block).
fn rows_borrowed(csv: &[u8], mapping: &CsvMapping) -> Vec<Result<AttributeRecord, RowError>> {
    let mut rows = read_csv(csv, mapping).expect("header is valid");
    let mut out = Vec::new();
    while let Some(row) = rows.next_row() {
        out.push(row.map(|row| {
            let owned = row.to_csv_record().expect("small row");
            assert_eq!(owned.line(), row.line());
            AttributeRecord::from(owned)
        }));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// However many columns are mapped (whole rows are copied when most
    /// are, values one by one otherwise), with padded, non-ASCII and null
    /// cells, invalid UTF-8 in a column that is not imported and user ids
    /// kept or normalised, the iterator's records, the borrowed rows' own
    /// copies and `read_record` agree.
    #[test]
    fn owned_records_agree_however_rows_are_copied(
        cells in proptest::collection::vec(
            proptest::collection::vec(prop_oneof!["[ a-zé\t]{0,5}", Just(" NULL".to_owned())], 6),
            0..40,
        ),
        mapped in 1u8..64,
        normalise in any::<bool>(),
        invalid in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut csv = b"Email,C0,C1,C2,C3,C4,C5\n".to_vec();
        for (i, row) in cells.iter().enumerate() {
            csv.extend_from_slice(format!(" U{i}@X.io ").as_bytes());
            for (c, cell) in row.iter().enumerate() {
                csv.push(b',');
                // Column 5 is never mapped; some of its cells are not UTF-8.
                if c == 5 && invalid[i] {
                    csv.extend_from_slice(b"\xff\xfe");
                } else {
                    csv.extend_from_slice(cell.as_bytes());
                }
            }
            csv.push(b'\n');
        }
        let mut mapping = CsvMapping::new("Email").null_values(["NULL"]);
        for c in (0..5).filter(|c| mapped & (1 << c) != 0) {
            mapping = mapping.attribute(format!("C{c}"), format!("a{c}"));
        }
        if normalise {
            mapping = mapping.user_id_format(switchboard::attributes::UserIdFormat::Email);
        }
        let owned = rows(&csv, &mapping);
        prop_assert_eq!(owned.len(), cells.len());
        for (i, row) in owned.iter().enumerate() {
            let row = row.as_ref().expect("every row is valid");
            let id = if normalise { format!("u{i}@x.io") } else { format!("U{i}@X.io") };
            prop_assert_eq!(&row.user_id, &id);
            for c in (0..5).filter(|c| mapped & (1 << c) != 0) {
                let cell = cells[i][c].trim();
                prop_assert_eq!(
                    row.attributes.get(&format!("a{c}")).map(String::as_str),
                    (cell != "NULL").then_some(cell)
                );
            }
        }
        prop_assert_eq!(&rows_borrowed(&csv, &mapping), &owned);
        prop_assert_eq!(&rows_reusing(&csv, &mapping), &owned);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The owned `CsvRecord` (one buffer, shared names) answers every accessor as
    /// the map it converts to does, null cells included.
    #[test]
    fn csv_record_accessors_agree_with_its_map(
        cells in proptest::collection::vec(
            proptest::collection::vec(prop_oneof!["[a-zé ]{0,6}", Just("NULL".to_owned())], 3),
            1..12,
        ),
        probe in "[a-z]{0,3}",
    ) {
        let mut csv = String::from("id,C,A,B\n");
        for (i, row) in cells.iter().enumerate() {
            csv.push_str(&format!("u{i},{},{},{}\n", row[0], row[1], row[2]));
        }
        // Mapped out of name order, to check the record sorts its names.
        let mapping = CsvMapping::new("id")
            .attribute("C", "c")
            .attribute("A", "a")
            .attribute("B", "b")
            .null_values(["NULL"]);
        for (i, record) in read_csv(csv.as_bytes(), &mapping).unwrap().enumerate() {
            let record = record.unwrap();
            let map = AttributeRecord::from(record.clone());
            prop_assert_eq!(&record, &map);
            prop_assert_eq!(record.user_id(), format!("u{i}"));
            prop_assert_eq!(record.line(), i as u64 + 2);
            prop_assert_eq!(record.names().collect::<Vec<_>>(), ["a", "b", "c"]);
            prop_assert_eq!(record.len(), map.attributes.len());
            prop_assert_eq!(record.is_empty(), map.attributes.is_empty());
            prop_assert_eq!(record.to_attributes(), map.attributes.clone());
            for (j, name) in ["a", "b", "c"].into_iter().enumerate() {
                let expected = map.attributes.get(name).map(String::as_str);
                prop_assert_eq!(record.get(name), expected);
                prop_assert_eq!(record.value(j), expected);
                // The cells are a, b, c = columns A (1), B (2), C (0).
                let cell = cells[i][[1, 2, 0][j]].trim();
                prop_assert_eq!(expected, (cell != "NULL").then_some(cell));
            }
            prop_assert_eq!(record.value(3), None);
            prop_assert_eq!(record.get(&probe), map.attributes.get(&probe).map(String::as_str));
            prop_assert_eq!(AttributeRecord::from(&record), map);
        }
    }
}

#[test]
fn records_kept_alive_keep_their_values_while_the_iterator_reuses_buffers() {
    // Enough rows for several read-ahead blocks, with errors between them.
    let mut csv = String::from("Email,Plan,Seats\n");
    for i in 0..2_000 {
        if i % 97 == 0 {
            csv.push_str(",no user,1\n");
        } else {
            csv.push_str(&format!("u{i}@x.io, plan {i} ,{}\n", i % 7));
        }
    }
    let mapping = CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats");
    // The borrowed rows, copied one by one, do not go through the blocks.
    let mut borrowed = read_csv(csv.as_bytes(), &mapping).expect("header is valid");
    let mut expected = Vec::new();
    while let Some(row) = borrowed.next_row() {
        expected.push(row.map(|row| row.to_record()));
    }
    // Stream, dropping most records at once (their block is reused) and keeping every 300th.
    let mut kept = Vec::new();
    let mut streamed = Vec::new();
    for (i, row) in read_csv(csv.as_bytes(), &mapping)
        .expect("header is valid")
        .enumerate()
    {
        streamed.push(row.clone().map(AttributeRecord::from));
        if i % 300 == 0 {
            kept.push((i, row));
        }
    }
    assert_eq!(streamed, expected);
    assert_eq!(expected.len(), 2_000);
    for (i, row) in kept {
        match (row, &expected[i]) {
            (Ok(record), Ok(want)) => {
                assert_eq!(&AttributeRecord::from(&record), want);
                assert_eq!(record.line(), i as u64 + 2);
            }
            (Err(e), Err(want)) => assert_eq!(&e, want),
            (got, want) => panic!("row {i}: {got:?} vs {want:?}"),
        }
    }
}
