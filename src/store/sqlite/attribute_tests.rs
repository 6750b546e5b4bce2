//! Tests of the SQLite attribute layout: migrations into it, slots, and the indexes built on first use.

use super::*;
use crate::attributes::{AttributeRecord, AttributeStore, Filter, ImportMode};
use crate::tenant::TenantId;

fn record(user: &str, attrs: &[(&str, &str)]) -> AttributeRecord {
    AttributeRecord {
        user_id: user.to_owned(),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// `n` users `u000`… (ids padded to `width` digits): every `premium`-th on
/// plan Premium, the others Basic, and `tickets` from 0 to 6.
fn plans_and_tickets(n: usize, premium: usize, width: usize) -> Vec<AttributeRecord> {
    (0..n)
        .map(|i| {
            let plan = if i % premium == 0 { "Premium" } else { "Basic" };
            record(
                &format!("u{i:0width$}"),
                &[("plan", plan), ("tickets", &(i % 7).to_string())],
            )
        })
        .collect()
}

fn q(f: &str) -> Filter {
    Filter::parse(f).unwrap()
}

#[tokio::test]
async fn migrates_schema_3_attributes_to_one_row_per_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        assert!(schema::create_up_to(&mut conn, 3).is_ok());
        conn.execute(
            "INSERT INTO attributes (tenant, user_id, attrs, updates) VALUES \
             ('default', 'u1', '{\"plan\":\"Premium\",\"tickets\":\"9007199254740993\"}', 2), \
             ('default', 'u2', '{\"plan\":\"Basic\",\"tickets\":\"3.0\"}', 0), \
             ('acme', 'u1', '{\"plan\":\"Premium\",\"tickets\":\"n/a\"}', 0)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO attribute_names (tenant, name) VALUES \
             ('default', 'plan'), ('default', 'tickets'), ('acme', 'plan'), ('acme', 'tickets')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let d = TenantId::default();
    let acme = TenantId::new("acme").unwrap();
    let u1 = store.get(&d, "u1").await.unwrap().unwrap();
    assert_eq!(
        u1.get("tickets").map(String::as_str),
        Some("9007199254740993")
    );
    assert_eq!(
        store
            .query(&d, &q("tickets > 9007199254740992"))
            .await
            .unwrap(),
        ["u1"]
    );
    assert_eq!(store.query(&d, &q("tickets = 3")).await.unwrap(), ["u2"]);
    assert_eq!(
        store.query(&acme, &q("plan = Premium")).await.unwrap(),
        ["u1"]
    );
    assert!(
        store
            .query(&acme, &q("tickets >= 0"))
            .await
            .unwrap()
            .is_empty()
    );
    let names = store.names(&d).await.unwrap();
    assert_eq!(names.len(), 2);
    assert!(
        names
            .iter()
            .all(|n| n.owner == crate::attributes::AttributeOwner::Api)
    );
    // An integration adopts a migrated name.
    store
        .begin_import(
            &d,
            "crm",
            crate::attributes::ImportMode::Snapshot,
            &["plan".to_owned()],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn migrates_schema_4_values_into_owner_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        assert!(schema::create_up_to(&mut conn, 4).is_ok());
        conn.execute_batch(
            "INSERT INTO attribute_names (tenant, name, owner) VALUES \
                 ('default', 'plan', 'crm'), ('default', 'seats', 'crm'), ('default', 'note', ''); \
             INSERT INTO attribute_values (tenant, user_id, name, value, num, generation) VALUES \
                 ('default', 'u1', 'plan', 'Premium', NULL, 3), \
                 ('default', 'u1', 'seats', '12', NULL, 3), \
                 ('default', 'u1', 'note', 'vip', NULL, 0), \
                 ('default', 'u2', 'plan', 'Basic', NULL, 2); \
             INSERT INTO attribute_generations (tenant, integration, generation) VALUES ('default', 'crm', 3);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let d = TenantId::default();
    let u1 = store.get(&d, "u1").await.unwrap().unwrap();
    assert_eq!(u1.len(), 3);
    assert_eq!(u1.get("seats").map(String::as_str), Some("12"));
    // The numeric keys were recomputed from the text.
    assert_eq!(store.query(&d, &q("seats > 11")).await.unwrap(), ["u1"]);
    assert_eq!(
        store
            .query(&d, &q("plan in (Premium, Basic)"))
            .await
            .unwrap(),
        ["u1", "u2"]
    );
    // A snapshot of crm that writes only u1 removes u2's (generation 2) row.
    let run = store
        .begin_import(
            &d,
            "crm",
            ImportMode::Snapshot,
            &["plan".to_owned(), "seats".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(run.generation, 4);
    store
        .write_import(&d, &run, &[record("u1", &[("plan", "Pro")])])
        .await
        .unwrap();
    let removed = store.finish_import(&d, &run).await.unwrap();
    assert_eq!(removed.values, 1, "u2's plan");
    assert!(store.get(&d, "u2").await.unwrap().is_none());
    let u1 = store.get(&d, "u1").await.unwrap().unwrap();
    assert_eq!(u1.get("plan").map(String::as_str), Some("Pro"));
    assert_eq!(
        u1.get("seats"),
        None,
        "the snapshot row replaced the old one"
    );
    assert_eq!(
        u1.get("note").map(String::as_str),
        Some("vip"),
        "another owner's row"
    );
}

#[tokio::test]
async fn the_first_filter_on_an_attribute_builds_its_index_and_the_plan_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let d = TenantId::default();
    let batch = plans_and_tickets(200, 4, 3);
    store.upsert(&d, &batch).await.unwrap();
    let indexes = |store: &SqliteStore| -> Vec<String> {
        let conn = store.inner.read();
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'attribute_rows' AND name LIKE 'attribute_rows_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert!(
        indexes(&store).is_empty(),
        "no index before a filter needs one"
    );
    let page = store
        .query_page(&d, &q(r#"plan = "Premium" and tickets > 2"#), None, 10)
        .await
        .unwrap();
    let expected = (0..200).filter(|i| i % 4 == 0 && i % 7 > 2).count();
    assert_eq!(page.total as usize, expected);
    // `plan` has slot 0: its text drives the query, with the number in slot 1
    // in the same index.
    assert_eq!(indexes(&store), ["attribute_rows_t0_n1"]);
    store.query(&d, &q("tickets >= 5")).await.unwrap();
    assert_eq!(
        indexes(&store),
        ["attribute_rows_n1", "attribute_rows_t0_n1"]
    );
    // The planner uses it.
    let conn = store.inner.read();
    let columns = attribute_rows::columns(
        &attribute_rows::registered(&conn, "default")
            .ok()
            .expect("registered"),
    );
    let plan = crate::attributes::sql::plan(
        crate::attributes::sql::Dialect::Sqlite,
        crate::attributes::sql::Layout::Rows(&columns),
        "default",
        &q("tickets >= 5"),
    );
    let explain: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN SELECT count(*) {}",
            plan.from_where
        ))
        .unwrap()
        .query_map(
            rusqlite::params_from_iter(plan.builder.params.iter().map(|p| match p {
                crate::attributes::sql::Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
                crate::attributes::sql::Param::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
                crate::attributes::sql::Param::Int(i) => rusqlite::types::Value::Integer(*i),
            })),
            |r| r.get(3),
        )
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    eprintln!("plan: {explain:?} {}", rusqlite::version());
    assert!(
        explain.iter().any(|l| l.contains("attribute_rows_n1")),
        "{explain:?}"
    );
}

#[tokio::test]
async fn an_owner_with_more_names_than_the_initial_columns_gets_more_slots() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let d = TenantId::default();
    let names: Vec<String> = (0..40).map(|i| format!("a{i:02}")).collect();
    let attrs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "7")).collect();
    store.upsert(&d, &[record("u1", &attrs)]).await.unwrap();
    let got = store.get(&d, "u1").await.unwrap().unwrap();
    assert_eq!(got.len(), 40);
    assert_eq!(store.query(&d, &q("a39 = 7")).await.unwrap(), ["u1"]);
    // Freeing a name frees its slot, and the next name takes it.
    store.delete_name(&d, "a05").await.unwrap();
    store
        .upsert(&d, &[record("u2", &[("zz", "x")])])
        .await
        .unwrap();
    let regs = {
        let conn = store.inner.read();
        attribute_rows::registered(&conn, "default")
            .ok()
            .expect("registered")
    };
    assert_eq!(
        regs.iter().find(|r| r.name == "zz").map(|r| r.slot),
        Some(5)
    );
    assert_eq!(store.get(&d, "u2").await.unwrap().unwrap().len(), 1);
    assert_eq!(store.get(&d, "u1").await.unwrap().unwrap().len(), 39);
}

/// Every statement of a write finds each written row through its unique key,
/// also once `ANALYZE` has run (a plan that scans the tenant's rows makes a
/// re-import quadratic).
#[tokio::test]
async fn writes_find_each_row_by_its_key_once_the_table_has_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let d = TenantId::default();
    let batch = plans_and_tickets(3000, 3, 0);
    store.upsert(&d, &batch).await.unwrap();
    // Builds the index of the filter and gathers statistics.
    store
        .query_page(&d, &q(r#"plan = "Premium" and tickets > 2"#), None, 10)
        .await
        .unwrap();
    let conn = store.inner.read();
    let statements = [
        attribute_rows::insert_sql(100, false),
        attribute_rows::insert_sql(100, true),
        attribute_rows::touch_sql(100),
        attribute_rows::upsert_sql(100, attribute_rows::Merge::Keep),
        attribute_rows::upsert_sql(100, attribute_rows::Merge::Replace),
    ];
    for sql in statements {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for line in &plan {
            let reads_rows = line.contains("attribute_rows") || line.starts_with("SEARCH a ");
            assert!(
                !reads_rows
                    || line.contains("(tenant=? AND user_id=? AND owner=?)")
                    || line.contains("INTEGER PRIMARY KEY"),
                "{sql}: {plan:?}"
            );
        }
    }
}
