//! The segmentation filter's text syntax (precedence, operators, values, errors, round trips and fuzzing) and queries within a tenant.

use std::collections::BTreeMap;

use proptest::prelude::*;
use switchboard::attributes::{AttributeRecord, Comparison};
use switchboard::tenant::TenantId;
use switchboard::{AttributeStore, ErrorKind, Filter, MemoryStore};

fn eq(a: &str, v: &str) -> Filter {
    Filter::eq(a, v)
}

fn cmp(a: &str, c: Comparison, v: &str) -> Filter {
    Filter::Cmp {
        attr: a.into(),
        cmp: c,
        value: v.into(),
    }
}

fn parse(s: &str) -> Filter {
    Filter::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

#[test]
fn the_issue_examples() {
    assert_eq!(
        parse(r#"plan = "Premium" and support_tickets > 2"#),
        Filter::And(vec![
            eq("plan", "Premium"),
            cmp("support_tickets", Comparison::Gt, "2")
        ])
    );
    assert_eq!(
        parse(r#"not (country in ("DE", "AT")) or name contains "smith""#),
        Filter::Or(vec![
            Filter::Not(Box::new(Filter::In {
                attr: "country".into(),
                values: vec!["DE".into(), "AT".into()]
            })),
            Filter::Contains {
                attr: "name".into(),
                value: "smith".into()
            },
        ])
    );
    assert_eq!(
        parse("exists plan"),
        Filter::Exists {
            attr: "plan".into()
        }
    );
}

#[test]
fn every_operator() {
    assert_eq!(
        parse("a != x"),
        Filter::Ne {
            attr: "a".into(),
            value: "x".into()
        }
    );
    assert_eq!(
        parse("a <> x"),
        Filter::Ne {
            attr: "a".into(),
            value: "x".into()
        }
    );
    assert_eq!(parse("a == x"), eq("a", "x"));
    assert_eq!(parse("a>=1"), cmp("a", Comparison::Gte, "1"));
    assert_eq!(parse("a<=-1.5"), cmp("a", Comparison::Lte, "-1.5"));
    assert_eq!(parse("a < 1e3"), cmp("a", Comparison::Lt, "1e3"));
    assert_eq!(parse("a > 0"), cmp("a", Comparison::Gt, "0"));
    assert_eq!(
        parse("country NOT IN (DE, 'AT')"),
        Filter::Not(Box::new(Filter::In {
            attr: "country".into(),
            values: vec!["DE".into(), "AT".into()]
        }))
    );
    assert_eq!(
        parse("tags in ()"),
        Filter::In {
            attr: "tags".into(),
            values: vec![]
        }
    );
    assert_eq!(
        parse("name not contains smith"),
        Filter::Not(Box::new(Filter::Contains {
            attr: "name".into(),
            value: "smith".into()
        }))
    );
}

#[test]
fn bare_words_quoted_names_and_escapes() {
    assert_eq!(
        parse("email = ada@example.com"),
        eq("email", "ada@example.com")
    );
    assert_eq!(
        parse(r#""support tickets" > 2"#),
        cmp("support tickets", Comparison::Gt, "2")
    );
    assert_eq!(parse(r#""and" = x"#), eq("and", "x"));
    assert_eq!(
        parse(r#"a = "say \"hi\" \\ bye""#),
        eq("a", r#"say "hi" \ bye"#)
    );
    assert_eq!(parse(r#"a = 'it\'s'"#), eq("a", "it's"));
    assert_eq!(parse("a = \"\""), eq("a", ""));
}

#[test]
fn and_binds_tighter_than_or_and_parentheses_override() {
    let (a, b, c) = (eq("a", "1"), eq("b", "2"), eq("c", "3"));
    assert_eq!(
        parse("a = 1 or b = 2 and c = 3"),
        Filter::Or(vec![a.clone(), Filter::And(vec![b.clone(), c.clone()])])
    );
    assert_eq!(
        parse("(a = 1 or b = 2) and c = 3"),
        Filter::And(vec![Filter::Or(vec![a.clone(), b.clone()]), c.clone()])
    );
    assert_eq!(
        parse("not a = 1 and b = 2"),
        Filter::And(vec![Filter::Not(Box::new(a.clone())), b.clone()])
    );
    assert_eq!(
        parse("a = 1 AND b = 2 Or c = 3"),
        parse("a = 1 and b = 2 or c = 3")
    );
}

#[test]
fn parsed_filters_select_the_right_users() {
    let user = |plan: &str, tickets: &str| -> BTreeMap<String, String> {
        [("plan", plan), ("support_tickets", tickets)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let f = parse(r#"plan = "Premium" and support_tickets > 2"#);
    assert!(f.matches(&user("Premium", "10")), "10 > 2 numerically");
    assert!(!f.matches(&user("Premium", "2")));
    assert!(!f.matches(&user("Basic", "10")));
}

fn error(s: &str) -> String {
    let err = Filter::parse(s).expect_err(s);
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    err.to_string()
}

#[test]
fn errors_name_the_position_and_what_was_expected() {
    let e = error("plan = ");
    assert!(
        e.contains("character 8") && e.contains("expected a value"),
        "{e}"
    );
    let e = error("plan Premium");
    assert!(
        e.contains("character 6") && e.contains("expected an operator"),
        "{e}"
    );
    let e = error("(a = 1 or b = 2");
    assert!(e.contains("character 16") && e.contains("`)`"), "{e}");
    let e = error("a = 1)");
    assert!(e.contains("character 6") && e.contains("unbalanced"), "{e}");
    let e = error(r#"a = "open"#);
    assert!(
        e.contains("character 5") && e.contains("unterminated"),
        "{e}"
    );
    let e = error("a ! b");
    assert!(e.contains("character 3") && e.contains("!="), "{e}");
    let e = error("");
    assert!(e.contains("expected a condition"), "{e}");
    let e = error("a = 1 and");
    assert!(
        e.contains("character 10") && e.contains("attribute name"),
        "{e}"
    );
    let e = error("a in (1 2)");
    assert!(e.contains("character 9") && e.contains("`,` or `)`"), "{e}");
    let e = error("and = 1");
    assert!(e.contains("quote names that are keywords"), "{e}");
    let e = error("ü = ");
    assert!(
        e.contains("character 5"),
        "positions count characters, not bytes: {e}"
    );
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(error(&deep).contains("nests more than"));
    assert!(error(&"not ".repeat(100)).contains("nests more than"));
}

#[test]
fn from_str_and_display() {
    let f: Filter = "a = 1 and (b = 2 or not exists c)".parse().unwrap();
    assert_eq!(f.to_string(), r#"a = "1" and (b = "2" or not exists c)"#);
    assert_eq!(parse(&f.to_string()), f);
    let g = parse(r#""support tickets" in (1, "x y") or name contains "\"q\"""#);
    assert_eq!(
        g.to_string(),
        r#""support tickets" in ("1", "x y") or name contains "\"q\"""#
    );
}

fn leaf() -> impl Strategy<Value = Filter> {
    let name = any::<String>();
    let value = any::<String>();
    prop_oneof![
        (name, value).prop_map(|(a, v)| Filter::Eq { attr: a, value: v }),
        (name, value).prop_map(|(a, v)| Filter::Ne { attr: a, value: v }),
        (name, value).prop_map(|(a, v)| Filter::Contains { attr: a, value: v }),
        (name, proptest::collection::vec(value, 0..4))
            .prop_map(|(a, values)| Filter::In { attr: a, values }),
        (
            name,
            prop_oneof![
                Just(Comparison::Gt),
                Just(Comparison::Gte),
                Just(Comparison::Lt),
                Just(Comparison::Lte)
            ],
            value
        )
            .prop_map(|(a, c, v)| Filter::Cmp {
                attr: a,
                cmp: c,
                value: v
            }),
        name.prop_map(|a| Filter::Exists { attr: a }),
    ]
}

/// Filters as the parser produces them: `and` / `or` with at least two operands.
fn filter() -> impl Strategy<Value = Filter> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = Filter::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_filter_like_text(s in r#"[a-z0-9 ()=!<>,"'\\-]{0,40}|((and|or|not|in|contains|exists|a|1|\(|\)|=|"|,) ?){0,20}"#) {
        if let Err(e) = Filter::parse(&s) {
            prop_assert!(e.to_string().contains("character"), "{}", e);
        }
    }

    #[test]
    fn display_round_trips(f in filter()) {
        let text = f.to_string();
        let back = Filter::parse(&text);
        prop_assert!(back.is_ok(), "{:?} -> {:?}: {:?}", f, text, back);
        prop_assert_eq!(back.ok(), Some(f));
    }
}

fn user(id: &str, attrs: &[(&str, &str)]) -> AttributeRecord {
    AttributeRecord {
        user_id: id.to_owned(),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// Users of two tenants share user ids, names and values; each tenant's query
/// sees only its own users, whatever the filter.
async fn queries_stay_within_a_tenant(store: &dyn AttributeStore) {
    let (a, b) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    store
        .upsert(
            &a,
            &[
                user("shared", &[("plan", "premium"), ("seats", "5")]),
                user("only-a", &[("plan", "premium"), ("seats", "50")]),
                user("a-basic", &[("plan", "basic")]),
            ],
        )
        .await
        .unwrap();
    store
        .upsert(
            &b,
            &[
                user("shared", &[("plan", "basic"), ("seats", "500")]),
                user("only-b", &[("plan", "premium")]),
            ],
        )
        .await
        .unwrap();
    let q = |t: &TenantId, f: &str| {
        let t = t.clone();
        let f = parse(f);
        async move { store.query(&t, &f).await.unwrap() }
    };
    assert_eq!(q(&a, r#"plan = "premium""#).await, ["only-a", "shared"]);
    assert_eq!(q(&b, r#"plan = "premium""#).await, ["only-b"]);
    assert_eq!(q(&a, "exists plan").await, ["a-basic", "only-a", "shared"]);
    assert_eq!(q(&b, "exists plan").await, ["only-b", "shared"]);
    assert_eq!(q(&a, "seats > 10").await, ["only-a"]);
    assert_eq!(q(&b, "seats > 10").await, ["shared"]);
    assert_eq!(q(&b, r#"not plan = "basic""#).await, ["only-b"]);
    assert!(q(&TenantId::default(), "exists plan").await.is_empty());
    // The same user id holds each tenant's own attributes.
    assert_eq!(
        store.get(&a, "shared").await.unwrap().unwrap()["plan"],
        "premium"
    );
    assert_eq!(
        store.get(&b, "shared").await.unwrap().unwrap()["plan"],
        "basic"
    );
    assert_eq!(store.get(&b, "only-a").await.unwrap(), None);
}

#[tokio::test]
async fn a_tenants_query_never_returns_another_tenants_users_in_memory() {
    queries_stay_within_a_tenant(&MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_tenants_query_never_returns_another_tenants_users_in_sqlite() {
    queries_stay_within_a_tenant(&switchboard::SqliteStore::open_in_memory().unwrap()).await;
}

// ---------------------------------------------------------------------------
// Numbers versus text (issue 15, defect 7).

fn attrs_of(pairs: &[(&str, &str)]) -> switchboard::attributes::Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_numeric_comparison_matches_only_plain_decimal_numbers() {
    let fewer = parse("tickets < 5");
    for not_a_number in ["", " ", "n/a", "1,234", "nan", "NaN", "inf", "-inf", "1e2"] {
        assert!(
            !fewer.matches(&attrs_of(&[("tickets", not_a_number)])),
            "{not_a_number:?} is not a number below 5"
        );
    }
    assert!(fewer.matches(&attrs_of(&[("tickets", "4.99")])));
    assert!(fewer.matches(&attrs_of(&[("tickets", " -3 ")])));
    let more = parse("tickets > 1000");
    assert!(!more.matches(&attrs_of(&[("tickets", "1,234")])));
    assert!(!parse("score = nan").matches(&attrs_of(&[("score", "NaN")])));
    assert!(
        parse("score = nan").matches(&attrs_of(&[("score", "nan")])),
        "text equality"
    );
    assert!(parse("tickets = 3").matches(&attrs_of(&[("tickets", "3.0")])));
    assert!(!parse("tickets in (3, 4)").matches(&attrs_of(&[("tickets", "")])));
}

#[test]
fn integers_above_two_to_the_53_compare_exactly() {
    let big = attrs_of(&[("id", "9007199254740993")]);
    assert!(!parse("id = 9007199254740992").matches(&big));
    assert!(parse("id = 9007199254740993").matches(&big));
    assert!(parse("id > 9007199254740992").matches(&big));
    assert!(!parse("id < 9007199254740993").matches(&big));
    let huge = attrs_of(&[("n", "123456789012345678901234567890")]);
    assert!(parse("n > 123456789012345678901234567889").matches(&huge));
}

proptest! {
    #[test]
    fn decimal_order_agrees_with_integers(a in any::<i64>(), b in any::<i64>()) {
        use switchboard::attributes::Decimal;
        let (x, y) = (Decimal::parse(&a.to_string()).unwrap(), Decimal::parse(&b.to_string()).unwrap());
        prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        let f = parse(&format!("n > {b}"));
        prop_assert_eq!(f.matches(&attrs_of(&[("n", &a.to_string())])), a > b);
    }

    #[test]
    fn decimal_parse_never_panics(s in any::<String>()) {
        let _ = switchboard::attributes::Decimal::parse(&s);
    }
}

proptest! {
    /// The stored numeric key orders numbers exactly as `Decimal` does (the SQL
    /// stores' range filters rely on it), and equal numbers share one key.
    #[test]
    fn numeric_sort_keys_order_like_decimals(
        a in r"[+-]?[0-9]{0,25}(\.[0-9]{0,12})?",
        b in r"[+-]?[0-9]{0,25}(\.[0-9]{0,12})?",
    ) {
        use switchboard::attributes::Decimal;
        if let (Some(x), Some(y)) = (Decimal::parse(&a), Decimal::parse(&b)) {
            prop_assert_eq!(x.sort_key().cmp(&y.sort_key()), x.cmp(&y), "{} vs {}", a, b);
            prop_assert_eq!(x.sort_key() == y.sort_key(), x == y);
        }
    }
}
