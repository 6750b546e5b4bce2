//! Attributes per tenant: merge and counts, queries and pages agreeing with `Filter::matches`, the per-tenant cap, ownership, snapshot and upsert-only runs, deletes.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchboard::ErrorKind;
use switchboard::attributes::{
    AttributeBatch, AttributeOwner, AttributeRecord, Attributes, Comparison, Filter, ImportMode,
    RemovedAttributes,
};
use switchboard::tenant::TenantId;

use crate::harness::*;

pub async fn attributes_upsert_merges_and_counts(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    assert_eq!(s.get(&d, "u1").await.unwrap(), None);
    let stats = s
        .upsert(
            &d,
            &[
                record("u1", &[("plan", "Basic"), ("tickets", "3")]),
                record("u2", &[("plan", "Premium")]),
                record("u1", &[("plan", "Premium")]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(stats.users_created, 2);
    assert_eq!(stats.users_updated, 0);
    assert_eq!(stats.new_attribute_names, 2);
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("plan", "Premium"), ("tickets", "3")])),
        "later records for the same user win, per attribute"
    );

    let stats = s
        .upsert(
            &d,
            &[
                record("u1", &[("seats", "10")]),
                record("u1", &[("tickets", "4")]),
                record("u3", &[("plan", "Basic")]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(stats.users_created, 1);
    assert_eq!(stats.users_updated, 1);
    assert_eq!(stats.new_attribute_names, 1);
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[
            ("plan", "Premium"),
            ("seats", "10"),
            ("tickets", "4")
        ])),
        "merged into what the user had"
    );
    assert_eq!(
        s.get(&d, "u2").await.unwrap(),
        Some(attrs(&[("plan", "Premium")]))
    );
    assert_eq!(s.upsert(&d, &[]).await.unwrap().users_created, 0);

    // Odd names and values survive.
    let odd = attrs(&[("a.b", "x\"y"), ("we\"ird\\", "ü ✓"), ("", "empty name")]);
    s.upsert(
        &d,
        &[AttributeRecord {
            user_id: "u'4".to_owned(),
            attributes: odd.clone(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(s.get(&d, "u'4").await.unwrap(), Some(odd));
    for (name, value) in [("a.b", "x\"y"), ("we\"ird\\", "ü ✓"), ("", "empty name")] {
        assert_eq!(
            s.query(&d, &Filter::eq(name, value)).await.unwrap(),
            ["u'4"],
            "query by the odd name {name:?}"
        );
    }
    assert_eq!(
        s.query(
            &d,
            &Filter::Contains {
                attr: "we\"ird\\".to_owned(),
                value: "Ü".to_owned()
            }
        )
        .await
        .unwrap(),
        ["u'4"]
    );
}

pub async fn attributes_query_numeric_and_text(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    s.upsert(
        &d,
        &[
            record(
                "u1",
                &[("plan", "Premium"), ("tickets", "3"), ("city", "Berlin")],
            ),
            record("u2", &[("plan", "Basic"), ("tickets", "10")]),
            record("u3", &[("plan", "premium"), ("tickets", "2.5")]),
            record("u4", &[("plan", "Premium"), ("tickets", "many")]),
            record("u5", &[("city", "Bern")]),
            record(
                "u6",
                &[("tickets", "10.0"), ("a.b", "dot"), ("we\"ird", "q")],
            ),
        ],
    )
    .await
    .unwrap();
    let q = |f: Filter| {
        let store = Arc::clone(&s.store);
        async move { store.query(&TenantId::default_tenant(), &f).await.unwrap() }
    };
    let cmp = |attr: &str, cmp, value: &str| Filter::Cmp {
        attr: attr.to_owned(),
        cmp,
        value: value.to_owned(),
    };

    assert_eq!(
        q(Filter::eq("plan", "Premium")).await,
        ["u1", "u4"],
        "text equality is exact"
    );
    // "10" and "10.0" are equal as numbers.
    assert_eq!(q(Filter::eq("tickets", "10")).await, ["u2", "u6"]);
    // Numeric comparison: 10 > 9 although "10" < "9" as text; a numeric
    // comparison matches only plain decimal numbers, so "many" never matches.
    assert_eq!(q(Filter::gt("tickets", "9")).await, ["u2", "u6"]);
    assert_eq!(
        q(Filter::gt("tickets", "2")).await,
        ["u1", "u2", "u3", "u6"]
    );
    assert_eq!(q(cmp("tickets", Comparison::Lte, "3")).await, ["u1", "u3"]);
    assert_eq!(
        q(cmp("tickets", Comparison::Lt, "2.5")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        q(cmp("tickets", Comparison::Gte, "2.5")).await,
        ["u1", "u2", "u3", "u6"]
    );
    assert_eq!(
        q(cmp("city", Comparison::Gt, "Berlin")).await,
        ["u5"],
        "text order"
    );
    assert_eq!(
        q(Filter::Ne {
            attr: "plan".to_owned(),
            value: "Premium".to_owned()
        })
        .await,
        ["u2", "u3"],
        "ne requires the attribute"
    );
    assert_eq!(
        q(Filter::In {
            attr: "plan".to_owned(),
            values: vec!["Basic".to_owned(), "premium".to_owned()]
        })
        .await,
        ["u2", "u3"]
    );
    assert_eq!(
        q(Filter::In {
            attr: "tickets".to_owned(),
            values: vec!["3.0".to_owned(), "many".to_owned()]
        })
        .await,
        ["u1", "u4"]
    );
    assert!(
        q(Filter::In {
            attr: "plan".to_owned(),
            values: vec![]
        })
        .await
        .is_empty()
    );
    assert_eq!(
        q(Filter::Contains {
            attr: "plan".to_owned(),
            value: "PREM".to_owned()
        })
        .await,
        ["u1", "u3", "u4"],
        "contains is case-insensitive"
    );
    assert_eq!(
        q(Filter::Exists {
            attr: "city".to_owned()
        })
        .await,
        ["u1", "u5"]
    );
    assert_eq!(
        q(Filter::And(vec![
            Filter::eq("plan", "Premium"),
            Filter::gt("tickets", "2")
        ]))
        .await,
        ["u1"],
        "u4's tickets are not a number"
    );
    assert_eq!(
        q(Filter::Or(vec![
            Filter::eq("plan", "Basic"),
            Filter::Exists {
                attr: "city".to_owned()
            }
        ]))
        .await,
        ["u1", "u2", "u5"]
    );
    assert_eq!(
        q(Filter::Not(Box::new(Filter::Exists {
            attr: "plan".to_owned()
        })))
        .await,
        ["u5", "u6"],
        "not matches users without the attribute"
    );
    assert!(q(Filter::Or(vec![])).await.is_empty());
    assert_eq!(
        q(Filter::And(vec![])).await.len(),
        6,
        "empty and matches everyone"
    );
    assert_eq!(q(Filter::eq("a.b", "dot")).await, ["u6"]);
    assert_eq!(q(Filter::eq("we\"ird", "q")).await, ["u6"]);
    assert!(q(Filter::eq("missing", "x")).await.is_empty());
}

/// A tiny deterministic generator (no external randomness in the suite).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len())]
    }
}

const NAMES: &[&str] = &["plan", "tickets", "city", "a.b", "q\"uote", "Ünï"];
const VALUES: &[&str] = &[
    "10",
    "10.0",
    " 10",
    "+10",
    "1e1",
    "9",
    "-3",
    "0.5",
    ".5",
    "abc",
    "ABC",
    "Premium",
    "premium",
    "",
    "nan",
    "inf",
    "x\"y",
    "Ünï ✓",
];

fn random_filter(rng: &mut Lcg, depth: u32) -> Filter {
    let attr = rng.pick(NAMES).to_owned();
    let value = rng.pick(VALUES).to_owned();
    let choice = if depth == 0 { rng.next(6) } else { rng.next(9) };
    match choice {
        0 => Filter::Eq { attr, value },
        1 => Filter::Ne { attr, value },
        2 => Filter::In {
            attr,
            values: (0..rng.next(4))
                .map(|_| rng.pick(VALUES).to_owned())
                .collect(),
        },
        3 => Filter::Contains { attr, value },
        4 => Filter::Cmp {
            attr,
            cmp: [
                Comparison::Gt,
                Comparison::Gte,
                Comparison::Lt,
                Comparison::Lte,
            ][rng.next(4)],
            value,
        },
        5 => Filter::Exists { attr },
        6 => Filter::And(
            (0..rng.next(4))
                .map(|_| random_filter(rng, depth - 1))
                .collect(),
        ),
        7 => Filter::Or(
            (0..rng.next(4))
                .map(|_| random_filter(rng, depth - 1))
                .collect(),
        ),
        _ => Filter::Not(Box::new(random_filter(rng, depth - 1))),
    }
}

/// The store's answer equals `Filter::matches` over the same data, for many
/// random filters over awkward values (numbers written several ways, case,
/// quotes, non-ASCII): no store-side translation of filters may change results.
pub async fn attributes_query_agrees_with_filter_matches(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let mut rng = Lcg(42);
    let mut expected_data: BTreeMap<String, Attributes> = BTreeMap::new();
    let mut batch = Vec::new();
    for u in 0..150 {
        let mut a = Attributes::new();
        for _ in 0..rng.next(5) {
            a.insert(rng.pick(NAMES).to_owned(), rng.pick(VALUES).to_owned());
        }
        let user = format!("user-{u:03}");
        // A user without any attribute is not stored (nothing to match on).
        if !a.is_empty() {
            expected_data.insert(user.clone(), a.clone());
        }
        batch.push(AttributeRecord {
            user_id: user,
            attributes: a,
        });
    }
    s.upsert(&d, &batch).await.unwrap();
    for _ in 0..300 {
        let filter = random_filter(&mut rng, 2);
        let expected: Vec<String> = expected_data
            .iter()
            .filter(|(_, a)| filter.matches(a))
            .map(|(u, _)| u.clone())
            .collect();
        assert_eq!(s.query(&d, &filter).await.unwrap(), expected, "{filter:?}");
        assert_eq!(all_pages(&s, &d, &filter, 7).await, expected, "{filter:?}");
    }
}

/// Every page of `filter` in turn; checks each page's total and cursor.
async fn all_pages(s: &Harness, d: &TenantId, filter: &Filter, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let mut total = None;
    loop {
        let page = s
            .query_page(d, filter, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.users.len() <= limit);
        assert_eq!(*total.get_or_insert(page.total), page.total, "{filter:?}");
        out.extend(page.users.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(page.users.len(), limit);
                assert_eq!(page.users.last(), Some(&next));
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(total.unwrap_or(0), out.len() as u64, "{filter:?}");
    out
}

/// Segmentation in SQL equals the Rust evaluator over a generated corpus of
/// 2,000 users (numbers written many ways, integers past 2^53, text that
/// looks numeric, empty cells, mixed case) and 400 generated filters, with
/// pages of 100 and their total counts.
pub async fn segmentation_matches_the_rust_evaluator_on_a_generated_corpus(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let other = tenant("other");
    let mut rng = Lcg(7);
    const PLANS: &[&str] = &["Premium", "premium", "Basic", "Free", "", " Premium"];
    const NUMS: &[&str] = &[
        "0",
        "-0",
        "1",
        "2",
        "2.0",
        "02",
        "3",
        "5",
        "5.5",
        "6",
        "-1",
        "1,234",
        "nan",
        "inf",
        "",
        "9007199254740993",
        "9007199254740992",
        "1e3",
        "0.1",
        ".5",
        "7.",
        "+4",
        " 8 ",
        "99999999999999999999999",
        "-99999999999999999999.5",
        "n/a",
    ];
    let mut expected_data: BTreeMap<String, Attributes> = BTreeMap::new();
    let mut batch = Vec::new();
    for u in 0..2000 {
        let mut a = Attributes::new();
        if rng.next(10) < 9 {
            a.insert("plan".to_owned(), rng.pick(PLANS).to_owned());
        }
        if rng.next(10) < 8 {
            a.insert("tickets".to_owned(), rng.pick(NUMS).to_owned());
        }
        if rng.next(2) == 0 {
            a.insert("seats".to_owned(), rng.pick(NUMS).to_owned());
        }
        if rng.next(3) == 0 {
            a.insert("city".to_owned(), rng.pick(VALUES).to_owned());
        }
        let user = format!("u{:05}", (u * 7919) % 2000);
        if !a.is_empty() {
            expected_data.insert(user.clone(), a.clone());
        }
        batch.push(AttributeRecord {
            user_id: user,
            attributes: a,
        });
    }
    for chunk in batch.chunks(700) {
        s.upsert(&d, chunk).await.unwrap();
    }
    // Another tenant's users never appear.
    s.upsert(
        &other,
        &[record("u00001", &[("plan", "Premium"), ("tickets", "9")])],
    )
    .await
    .unwrap();
    let leaf = |rng: &mut Lcg| {
        let attr = ["plan", "tickets", "seats", "city"][rng.next(4)].to_owned();
        let value = if rng.next(2) == 0 {
            rng.pick(NUMS).to_owned()
        } else {
            rng.pick(PLANS).to_owned()
        };
        match rng.next(6) {
            0 => Filter::Eq { attr, value },
            1 => Filter::Ne { attr, value },
            2 => Filter::In {
                attr,
                values: (0..rng.next(4))
                    .map(|_| rng.pick(NUMS).to_owned())
                    .collect(),
            },
            3 => Filter::Exists { attr },
            4 => Filter::Contains { attr, value },
            _ => Filter::Cmp {
                attr,
                cmp: [
                    Comparison::Gt,
                    Comparison::Gte,
                    Comparison::Lt,
                    Comparison::Lte,
                ][rng.next(4)],
                value,
            },
        }
    };
    let mut filters = vec![
        Filter::parse(r#"plan = "Premium" and tickets > 2"#).unwrap(),
        Filter::parse("tickets > 5").unwrap(),
        Filter::parse("tickets <= 9007199254740992").unwrap(),
        Filter::parse("tickets = 2 or seats in (5, \"n/a\")").unwrap(),
        Filter::parse("not exists plan").unwrap(),
    ];
    for _ in 0..400 {
        let f = match rng.next(4) {
            0 => leaf(&mut rng),
            1 => Filter::And((0..1 + rng.next(3)).map(|_| leaf(&mut rng)).collect()),
            2 => Filter::Or((0..1 + rng.next(3)).map(|_| leaf(&mut rng)).collect()),
            _ => Filter::Not(Box::new(Filter::And(vec![leaf(&mut rng), leaf(&mut rng)]))),
        };
        filters.push(f);
    }
    for filter in &filters {
        let expected: Vec<String> = expected_data
            .iter()
            .filter(|(_, a)| filter.matches(a))
            .map(|(u, _)| u.clone())
            .collect();
        assert_eq!(s.query(&d, filter).await.unwrap(), expected, "{filter}");
        let first = s.query_page(&d, filter, None, 100).await.unwrap();
        assert_eq!(first.total, expected.len() as u64, "{filter}");
        assert_eq!(first.users, expected[..expected.len().min(100)], "{filter}");
        if expected.len() > 100 {
            let second = s
                .query_page(&d, filter, first.next.as_deref(), 100)
                .await
                .unwrap();
            assert_eq!(
                second.users,
                expected[100..expected.len().min(200)],
                "{filter}"
            );
        } else {
            assert_eq!(first.next, None);
        }
    }
}

pub async fn attribute_cap_names_the_overflow_and_writes_nothing(b: Backend) {
    let s = b.open_with_cap(3);
    let d = default_tenant();
    s.upsert(&d, &[record("u1", &[("a", "1"), ("b", "2")])])
        .await
        .unwrap();
    let err = s
        .upsert(
            &d,
            &[
                record("u1", &[("a", "changed")]),
                record("u2", &[("c", "3"), ("d", "4")]),
                record("u3", &[("e", "5")]),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    let message = err.to_string();
    assert!(
        message.contains('d') && message.contains('e'),
        "names the overflow: {message}"
    );
    assert!(
        message.contains("d, e"),
        "lists the attributes over the cap: {message}"
    );
    // Nothing was written: not the values, not the users, not the names.
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("a", "1"), ("b", "2")]))
    );
    assert_eq!(s.get(&d, "u2").await.unwrap(), None);
    assert_eq!(s.get(&d, "u3").await.unwrap(), None);
    let stats = s.upsert(&d, &[record("u2", &[("c", "3")])]).await.unwrap();
    assert_eq!(
        stats.new_attribute_names, 1,
        "c was not registered by the failed batch"
    );
    assert_eq!(stats.users_created, 1);
    // Exactly at the cap: known names are always fine, a fourth is not.
    s.upsert(&d, &[record("u9", &[("a", "x"), ("b", "y"), ("c", "z")])])
        .await
        .unwrap();
    let err = s
        .upsert(&d, &[record("u9", &[("z", "1")])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    assert!(err.to_string().contains('z'));
}

// --- SQLite only ---

pub async fn large_batches_count_and_merge_every_user(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    // 200 new users (more than one multi-row statement, plus a remainder).
    let first: Vec<_> = (0..200)
        .map(|i| {
            record(
                &format!("u{i}"),
                &[("plan", "Basic"), ("n", &i.to_string())],
            )
        })
        .collect();
    let stats = s.upsert(&d, &first).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (200, 0));
    // 150 of them again (merged), 70 new ones, one user twice.
    let mut second: Vec<_> = (50..270)
        .map(|i| record(&format!("u{i}"), &[("plan", "Premium")]))
        .collect();
    second.push(record("u60", &[("seats", "3")]));
    let stats = s.upsert(&d, &second).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (70, 150));
    assert_eq!(
        s.get(&d, "u60").await.unwrap(),
        Some(attrs(&[("n", "60"), ("plan", "Premium"), ("seats", "3")]))
    );
    assert_eq!(
        s.get(&d, "u10").await.unwrap(),
        Some(attrs(&[("n", "10"), ("plan", "Basic")]))
    );
    assert_eq!(
        s.get(&d, "u269").await.unwrap(),
        Some(attrs(&[("plan", "Premium")]))
    );
    let premium = s.query(&d, &Filter::eq("plan", "Premium")).await.unwrap();
    assert_eq!(premium.len(), 220);
}

/// Batches ([`AttributeBatch`]) write what their records write, in either
/// call: counts (new and existing users, a user twice, users another owner
/// has rows for), merged values, a snapshot run over several statements, and
/// a name the run does not map refused.
pub async fn batches_write_what_their_records_write(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let mut batch = AttributeBatch::new();
    for i in 0..150 {
        batch
            .push(
                &format!("u{i}"),
                [("plan", "Basic"), ("n", &*i.to_string())],
            )
            .unwrap();
    }
    batch.push("u7", [("plan", "Pro")]).unwrap();
    let stats = s.upsert_batch(&d, &batch).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (150, 0));
    assert_eq!(
        s.get(&d, "u7").await.unwrap(),
        Some(attrs(&[("n", "7"), ("plan", "Pro")]))
    );

    // An integration's snapshot: 100 users the API wrote (rows of another
    // owner: they count as updated) and 130 new ones, in one batch.
    let run = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["tickets"]))
        .await
        .unwrap();
    let mut batch = AttributeBatch::new();
    for i in 50..280 {
        batch
            .push(&format!("u{i}"), [("tickets", &*(i % 7).to_string())])
            .unwrap();
    }
    let stats = s.write_import_batch(&d, &run, &batch).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (130, 100));
    // The same users again in the same run (existing rows of this owner).
    let stats = s.write_import_batch(&d, &run, &batch).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (0, 230));
    s.finish_import(&d, &run).await.unwrap();
    // The next run writes fewer users: the others lose `tickets`.
    let run2 = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["tickets"]))
        .await
        .unwrap();
    let mut batch = AttributeBatch::new();
    batch.push("u60", [("tickets", "9")]).unwrap();
    batch.push("u900", [("tickets", "1")]).unwrap();
    // Unchanged since the last run: kept by this one.
    batch.push("u62", [("tickets", "6")]).unwrap();
    let stats = s.write_import_batch(&d, &run2, &batch).await.unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (1, 2));
    s.finish_import(&d, &run2).await.unwrap();
    assert_eq!(
        s.get(&d, "u60").await.unwrap(),
        Some(attrs(&[("n", "60"), ("plan", "Basic"), ("tickets", "9")]))
    );
    assert_eq!(
        s.get(&d, "u61").await.unwrap(),
        Some(attrs(&[("n", "61"), ("plan", "Basic")]))
    );
    assert_eq!(s.get(&d, "u200").await.unwrap(), None);
    assert_eq!(
        s.get(&d, "u62").await.unwrap(),
        Some(attrs(&[("n", "62"), ("plan", "Basic"), ("tickets", "6")]))
    );
    assert_eq!(
        s.query(&d, &Filter::gt("tickets", "0")).await.unwrap(),
        ["u60", "u62", "u900"]
    );

    let mut stray = AttributeBatch::new();
    stray.push("u1", [("plan", "Gold")]).unwrap();
    let run3 = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["tickets"]))
        .await
        .unwrap();
    let err = s.write_import_batch(&d, &run3, &stray).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::Conflict),
        "{err}"
    );
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("n", "1"), ("plan", "Basic")]))
    );
}

/// The cap is per tenant: one tenant at its cap does not block another.
pub async fn attribute_cap_is_per_tenant(b: Backend) {
    let s = b.open_with_cap(100);
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let names: Vec<String> = (0..100).map(|i| format!("a{i:03}")).collect();
    let full: Attributes = names.iter().map(|n| (n.clone(), "1".to_owned())).collect();
    let stats = s
        .upsert(
            &acme,
            &[AttributeRecord {
                user_id: "u1".to_owned(),
                attributes: full,
            }],
        )
        .await
        .unwrap();
    assert_eq!(stats.new_attribute_names, 100);
    let err = s
        .upsert(&acme, &[record("u2", &[("one_more", "x")])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    assert!(err.to_string().contains("one_more"), "{err}");
    // globex starts from zero: fresh names, including one acme could not add.
    let stats = s
        .upsert(
            &globex,
            &[record("u1", &[("one_more", "x"), ("plan", "Basic")])],
        )
        .await
        .unwrap();
    assert_eq!(stats.new_attribute_names, 2);
    assert_eq!(stats.users_created, 1, "u1 of globex is not acme's u1");
    // Users and queries are per tenant too.
    assert_eq!(
        s.get(&globex, "u1").await.unwrap(),
        Some(attrs(&[("one_more", "x"), ("plan", "Basic")]))
    );
    assert_eq!(
        s.get(&acme, "u1").await.unwrap().map(|a| a.len()),
        Some(100)
    );
    assert!(s.get(&acme, "u2").await.unwrap().is_none());
    assert_eq!(
        s.query(&globex, &Filter::eq("plan", "Basic"))
            .await
            .unwrap(),
        ["u1"]
    );
    assert!(
        s.query(&acme, &Filter::eq("plan", "Basic"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.query(&acme, &Filter::eq("a000", "1")).await.unwrap(),
        ["u1"]
    );
    assert!(s.get(&tenant("initech"), "u1").await.unwrap().is_none());
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn owners_of(s: &Harness, t: &TenantId) -> Vec<(String, AttributeOwner)> {
    s.names(t)
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.name, n.owner))
        .collect()
}

fn crm() -> AttributeOwner {
    AttributeOwner::Integration("crm".to_owned())
}

/// A snapshot run replaces the integration's values: a user missing from the
/// new file loses them, an unmapped column's values go and its name is freed;
/// API values and other tenants are untouched.
pub async fn snapshot_runs_replace_the_integrations_values(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let other = tenant("other");
    s.upsert(&d, &[record("u1", &[("note", "vip")])])
        .await
        .unwrap();
    s.upsert(&other, &[record("u1", &[("plan", "Gold")])])
        .await
        .unwrap();
    let run = s
        .begin_import(
            &d,
            "crm",
            ImportMode::Snapshot,
            &names(&["plan", "tickets"]),
        )
        .await
        .unwrap();
    let stats = s
        .write_import(
            &d,
            &run,
            &[
                record("u1", &[("plan", "Premium"), ("tickets", "3")]),
                record("u2", &[("plan", "Basic"), ("tickets", "1")]),
            ],
        )
        .await
        .unwrap();
    assert_eq!((stats.users_created, stats.users_updated), (1, 1));
    assert_eq!(
        s.finish_import(&d, &run).await.unwrap(),
        RemovedAttributes::default()
    );
    assert_eq!(
        owners_of(&s, &d).await,
        [
            ("note".to_owned(), AttributeOwner::Api),
            ("plan".to_owned(), crm()),
            ("tickets".to_owned(), crm())
        ]
    );

    // The next file: u2 is gone, `tickets` is no longer mapped.
    let run2 = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan"]))
        .await
        .unwrap();
    assert!(run2.generation > run.generation);
    s.write_import(&d, &run2, &[record("u1", &[("plan", "Premium")])])
        .await
        .unwrap();
    // Until the run finishes, the previous import is whole.
    assert_eq!(
        s.get(&d, "u2").await.unwrap(),
        Some(attrs(&[("plan", "Basic"), ("tickets", "1")]))
    );
    let removed = s.finish_import(&d, &run2).await.unwrap();
    assert_eq!(
        removed,
        RemovedAttributes {
            values: 3,
            names: 1
        }
    );
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("note", "vip"), ("plan", "Premium")])),
        "the API's value stays; the unmapped column's value is gone"
    );
    assert_eq!(
        s.get(&d, "u2").await.unwrap(),
        None,
        "missing from the file"
    );
    assert_eq!(
        s.query(&d, &Filter::gt("tickets", "0")).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        owners_of(&s, &d).await,
        [
            ("note".to_owned(), AttributeOwner::Api),
            ("plan".to_owned(), crm())
        ]
    );
    assert_eq!(
        s.get(&other, "u1").await.unwrap(),
        Some(attrs(&[("plan", "Gold")])),
        "another tenant's attributes are untouched"
    );
}

/// A run that fails midway (it never finishes) leaves the previous snapshot
/// intact beside what it wrote; the next successful run replaces both.
pub async fn a_failed_run_leaves_the_previous_snapshot(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    let run = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan"]))
        .await
        .unwrap();
    s.write_import(
        &d,
        &run,
        &[
            record("u1", &[("plan", "A")]),
            record("u2", &[("plan", "B")]),
        ],
    )
    .await
    .unwrap();
    s.finish_import(&d, &run).await.unwrap();
    // A run writes one batch, then fails: no finish_import.
    let failed = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan"]))
        .await
        .unwrap();
    s.write_import(&d, &failed, &[record("u3", &[("plan", "C")])])
        .await
        .unwrap();
    assert_eq!(
        s.query(
            &d,
            &Filter::Exists {
                attr: "plan".to_owned()
            }
        )
        .await
        .unwrap(),
        ["u1", "u2", "u3"]
    );
    let next = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan"]))
        .await
        .unwrap();
    s.write_import(&d, &next, &[record("u2", &[("plan", "B2")])])
        .await
        .unwrap();
    s.finish_import(&d, &next).await.unwrap();
    assert_eq!(
        s.query(
            &d,
            &Filter::Exists {
                attr: "plan".to_owned()
            }
        )
        .await
        .unwrap(),
        ["u2"]
    );
    assert_eq!(
        s.get(&d, "u2").await.unwrap(),
        Some(attrs(&[("plan", "B2")]))
    );
}

/// Upsert-only runs merge: users missing from the file keep their values.
pub async fn upsert_only_runs_merge(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    for file in [&[("u1", "A"), ("u2", "B")][..], &[("u2", "B2")][..]] {
        let run = s
            .begin_import(&d, "crm", ImportMode::UpsertOnly, &names(&["plan"]))
            .await
            .unwrap();
        let batch: Vec<AttributeRecord> = file
            .iter()
            .map(|(u, p)| record(u, &[("plan", p)]))
            .collect();
        s.write_import(&d, &run, &batch).await.unwrap();
        assert_eq!(s.finish_import(&d, &run).await.unwrap().values, 0);
    }
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("plan", "A")]))
    );
    assert_eq!(
        s.get(&d, "u2").await.unwrap(),
        Some(attrs(&[("plan", "B2")]))
    );
}

/// Each name has one owner: another integration, or the API, writing it is
/// refused naming the attribute and the owner; an integration may adopt an
/// API name; a run may only write the names it mapped.
pub async fn attribute_names_have_one_owner(b: Backend) {
    let s = b.open();
    let d = default_tenant();
    s.upsert(&d, &[record("u1", &[("plan", "Free")])])
        .await
        .unwrap();
    let run = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan"]))
        .await
        .unwrap();
    assert_eq!(
        owners_of(&s, &d).await,
        [("plan".to_owned(), crm())],
        "adopted"
    );
    let err = s
        .begin_import(
            &d,
            "billing",
            ImportMode::Snapshot,
            &names(&["seats", "plan"]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains("\"plan\"") && err.message().contains("\"crm\""),
        "{err}"
    );
    let err = s
        .upsert(&d, &[record("u1", &[("plan", "Gold")])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("\"crm\""), "{err}");
    let err = s
        .write_import(&d, &run, &[record("u1", &[("seats", "3")])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(owners_of(&s, &d).await, [("plan".to_owned(), crm())]);
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("plan", "Free")]))
    );
    // The same name in another tenant is another attribute.
    s.begin_import(
        &tenant("other"),
        "billing",
        ImportMode::Snapshot,
        &names(&["plan"]),
    )
    .await
    .unwrap();
}

/// Deleting an integration or a mapping frees its names under the cap and
/// deletes their values; renaming a mapped column under a full cap works; the
/// delete APIs remove one user's attributes, one value, or one name.
pub async fn deletes_free_names_under_the_cap(b: Backend) {
    let s = b.open_with_cap(3);
    let d = default_tenant();
    let other = tenant("other");
    s.upsert(&d, &[record("u1", &[("note", "x")])])
        .await
        .unwrap();
    s.upsert(
        &other,
        &[record("u1", &[("a", "1"), ("b", "2"), ("c", "3")])],
    )
    .await
    .unwrap();
    let run = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan", "tier"]))
        .await
        .unwrap();
    s.write_import(
        &d,
        &run,
        &[
            record("u1", &[("plan", "A"), ("tier", "1")]),
            record("u2", &[("plan", "B")]),
        ],
    )
    .await
    .unwrap();
    s.finish_import(&d, &run).await.unwrap();
    // The cap is full: a new name fails.
    let err = s
        .upsert(&d, &[record("u1", &[("extra", "1")])])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AttributeCap);
    // Renaming the mapped column `tier` to `level` under the full cap works.
    let run = s
        .begin_import(&d, "crm", ImportMode::Snapshot, &names(&["plan", "level"]))
        .await
        .unwrap();
    s.write_import(&d, &run, &[record("u1", &[("plan", "A"), ("level", "1")])])
        .await
        .unwrap();
    let removed = s.finish_import(&d, &run).await.unwrap();
    assert_eq!(
        removed,
        RemovedAttributes {
            values: 2,
            names: 1
        }
    );
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("level", "1"), ("note", "x"), ("plan", "A")]))
    );
    // Removing a mapping (the integration saved without `level`).
    let removed = s.release_names(&d, "crm", &names(&["plan"])).await.unwrap();
    assert_eq!(
        removed,
        RemovedAttributes {
            values: 1,
            names: 1
        }
    );
    s.upsert(&d, &[record("u1", &[("extra", "1")])])
        .await
        .unwrap();
    // Deleting the integration frees the rest.
    s.put_integration(&crate::records::integration(d.as_str(), "crm"))
        .await
        .unwrap();
    assert!(s.delete_integration(&d, "crm").await.unwrap());
    assert_eq!(
        owners_of(&s, &d).await,
        [
            ("extra".to_owned(), AttributeOwner::Api),
            ("note".to_owned(), AttributeOwner::Api)
        ]
    );
    assert_eq!(
        s.get(&d, "u1").await.unwrap(),
        Some(attrs(&[("extra", "1"), ("note", "x")]))
    );
    // One value, one user, one name.
    assert!(s.delete_value(&d, "u1", "extra").await.unwrap());
    assert!(!s.delete_value(&d, "u1", "extra").await.unwrap());
    assert_eq!(
        s.names(&d).await.unwrap().len(),
        2,
        "the name stays registered"
    );
    assert_eq!(
        s.delete_name(&d, "extra").await.unwrap(),
        RemovedAttributes {
            values: 0,
            names: 1
        }
    );
    s.upsert(&d, &[record("u3", &[("x", "1"), ("y", "2")])])
        .await
        .unwrap();
    assert_eq!(s.delete_user(&d, "u1").await.unwrap(), 1);
    assert_eq!(s.get(&d, "u1").await.unwrap(), None);
    assert_eq!(s.delete_user(&d, "u1").await.unwrap(), 0);
    assert_eq!(
        s.get(&other, "u1").await.unwrap(),
        Some(attrs(&[("a", "1"), ("b", "2"), ("c", "3")])),
        "other tenants untouched"
    );
}
