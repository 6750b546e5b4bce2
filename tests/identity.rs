//! Identity: normalisation, the generic directory sync (report, links, manual overrides, ambiguity) and the resolution cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use switchboard::identity::{
    AccountStatus, AmbiguousMatch, CachedResolver, DirectoryEntry, DirectoryPager, IdentityLink,
    IdentityResolver, LinkOrigin, MatchBy, ResolutionCache, ResolveContext, SkippedCounts,
    StaticDirectory, SyncOptions, SyncReport, Unmatched, normalize_email, normalize_phone,
    parse_phone, sync_directory,
};
use switchboard::store::LinkStore;
use switchboard::tenant::{Connection, TenantId};
use switchboard::{MemoryStore, Person, Resolution};

/// The default tenant without a connection (single-tenant hosts).
fn cx() -> ResolveContext {
    ResolveContext::default_tenant()
}

fn d() -> TenantId {
    TenantId::default()
}

/// A tenant's context with a connection to `platform:account`.
fn connected(tenant: &str, platform: &str, account: &str) -> ResolveContext {
    let connection = Connection::builder(TenantId::new(tenant).unwrap(), platform, account)
        .build()
        .unwrap();
    ResolveContext {
        tenant: connection.tenant.clone(),
        connection: Some(Arc::new(connection)),
    }
}

#[test]
fn phone_numbers_in_the_formats_people_type() {
    let cases = [
        // national formats
        ("030 123456", "DE", Some("+4930123456")),
        ("030/123456", "DE", Some("+4930123456")),
        ("(415) 555-2671", "US", Some("+14155552671")),
        ("415.555.2671", "US", Some("+14155552671")),
        ("020 7946 0018", "GB", Some("+442079460018")),
        // the "(0)" trunk prefix inside an international number
        ("+49 (0)30 123456", "US", Some("+4930123456")),
        ("+44 (0)20 7946 0018", "DE", Some("+442079460018")),
        // international call prefixes of the default region
        ("0049 30 123456", "DE", Some("+4930123456")),
        ("011 49 30 123456", "US", Some("+4930123456")),
        ("00 1 415 555 2671", "FR", Some("+14155552671")),
        // already E.164
        ("+14155552671", "DE", Some("+14155552671")),
        // invalid: never a guess
        ("12", "DE", None),
        ("hello", "US", None),
        ("", "US", None),
        ("+49 30", "DE", None),
        ("030 123456", "", None),
        ("030 123456", "XX", None),
        ("555-2671", "US", None),
    ];
    for (raw, region, expected) in cases {
        assert_eq!(
            normalize_phone(raw, region).as_deref(),
            expected,
            "normalize_phone({raw:?}, {region:?})"
        );
    }
}

#[test]
fn extensions_are_dropped_but_kept_aside() {
    for raw in [
        "+1 415-555-2671 ext. 123",
        "(415) 555-2671 x123",
        "415-555-2671 extension 123",
    ] {
        let parsed = parse_phone(raw, "US").unwrap_or_else(|| panic!("{raw} should parse"));
        assert_eq!(parsed.e164, "+14155552671", "{raw}");
        assert_eq!(parsed.extension.as_deref(), Some("123"), "{raw}");
        assert_eq!(normalize_phone(raw, "US").as_deref(), Some("+14155552671"));
    }
    assert_eq!(parse_phone("+14155552671", "US").unwrap().extension, None);
}

#[test]
fn emails_are_trimmed_lowercased_and_validated() {
    assert_eq!(
        normalize_email("  Ada.Lovelace@Example.COM ").as_deref(),
        Some("ada.lovelace@example.com")
    );
    assert_eq!(
        normalize_email("mailto:bob@x.io").as_deref(),
        Some("bob@x.io")
    );
    for bad in [
        "",
        "ada",
        "ada@",
        "@x.io",
        "a b@x.io",
        "a@b@x.io",
        "a@localhost",
        "a..b@x.io",
    ] {
        assert_eq!(normalize_email(bad), None, "{bad:?}");
    }
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0).unwrap()
}

fn directory() -> Vec<DirectoryEntry> {
    vec![
        DirectoryEntry::new("U_ADA").email("ADA@example.com"),
        DirectoryEntry::new("U_BOB")
            .email("bob@example.com")
            .phone("030 123456"),
        // two accounts share Cy's email: never guessed between
        DirectoryEntry::new("U_CY1").email("cy@example.com"),
        DirectoryEntry::new("U_CY2").email(" Cy@Example.com"),
        // skipped accounts, counted by reason (they would otherwise match Dee)
        DirectoryEntry::new("U_DEE_OLD")
            .email("dee@example.com")
            .status(AccountStatus::Deleted),
        DirectoryEntry::new("U_X")
            .email("x@example.com")
            .status(AccountStatus::Deactivated),
        DirectoryEntry::new("U_BOT").status(AccountStatus::Bot),
        DirectoryEntry::new("U_BOT2").status(AccountStatus::Bot),
        DirectoryEntry::new("U_GUEST")
            .email("guest@example.com")
            .status(AccountStatus::Guest),
    ]
}

fn people() -> Vec<Person> {
    vec![
        Person::new("ada").email("ada@example.com"),
        Person::new("bob").email("bob@example.com"),
        Person::new("cy").email("cy@example.com"),
        Person::new("dee").email("dee@example.com"),
        Person::new("eve"),
    ]
}

/// Counts list calls so tests can assert the sync pages instead of looking people up.
struct CountingPager {
    inner: StaticDirectory,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl DirectoryPager for CountingPager {
    async fn next_page(&mut self) -> switchboard::Result<Option<Vec<DirectoryEntry>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.next_page().await
    }
}

#[tokio::test]
async fn sync_reports_matched_unmatched_ambiguous_and_skipped() {
    let store = MemoryStore::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut pager = CountingPager {
        inner: StaticDirectory::paged(directory(), 4),
        calls: calls.clone(),
    };
    let options = SyncOptions::new(MatchBy::Email).at(t0());
    let report = sync_directory(&store, &cx(), "slack", &people(), &mut pager, &options)
        .await
        .unwrap();

    assert_eq!(
        report.matched,
        vec![
            ("ada".to_owned(), "U_ADA".to_owned()),
            ("bob".to_owned(), "U_BOB".to_owned())
        ]
    );
    assert_eq!(
        report.ambiguous,
        vec![AmbiguousMatch {
            user_id: "cy".into(),
            candidates: vec!["U_CY1".into(), "U_CY2".into()]
        }]
    );
    assert_eq!(
        report.unmatched,
        vec![
            Unmatched {
                user_id: "dee".into(),
                identifiers: vec!["dee@example.com".into()]
            },
            Unmatched {
                user_id: "eve".into(),
                identifiers: vec![]
            },
        ]
    );
    assert_eq!(
        report.skipped,
        SkippedCounts {
            deleted: 1,
            deactivated: 1,
            bots: 2,
            guests: 1
        }
    );
    assert_eq!(report.directory_size, 9);
    assert_eq!(report.api_calls, 3, "9 entries in pages of 4");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "three pages and the final empty answer"
    );

    let ada = store.link(&d(), "slack", "ada").await.unwrap().unwrap();
    assert_eq!(
        ada,
        IdentityLink {
            tenant: d(),
            platform: "slack".into(),
            user_id: "ada".into(),
            platform_id: "U_ADA".into(),
            origin: LinkOrigin::EmailMatch,
            linked_at: t0(),
        }
    );
    assert_eq!(
        store.link(&d(), "slack", "cy").await.unwrap(),
        None,
        "ambiguous people are not linked"
    );
    assert_eq!(store.links(&d(), "slack").await.unwrap().len(), 2);
}

#[tokio::test]
async fn manual_links_win_and_survive_resyncs() {
    let store = MemoryStore::new();
    // The admin maps Cy (ambiguous) and Eve (no email) by hand, and overrides Ada.
    for (user, id) in [
        ("cy", "U_CY2"),
        ("eve", "U_EVE_ALIAS"),
        ("ada", "U_ADA_ALT"),
    ] {
        store
            .put_link(&IdentityLink {
                tenant: d(),
                platform: "slack".into(),
                user_id: user.into(),
                platform_id: id.into(),
                origin: LinkOrigin::Manual,
                linked_at: t0(),
            })
            .await
            .unwrap();
    }
    for round in 0..2 {
        let mut pager = StaticDirectory::paged(directory(), 100);
        let options = SyncOptions::new(MatchBy::Email).at(t0() + chrono::Duration::days(round + 1));
        let report = sync_directory(&store, &cx(), "slack", &people(), &mut pager, &options)
            .await
            .unwrap();
        let mut matched = report.matched.clone();
        matched.sort();
        assert_eq!(
            matched,
            vec![
                ("ada".to_owned(), "U_ADA_ALT".to_owned()),
                ("bob".to_owned(), "U_BOB".to_owned()),
                ("cy".to_owned(), "U_CY2".to_owned()),
                ("eve".to_owned(), "U_EVE_ALIAS".to_owned()),
            ],
            "round {round}"
        );
        assert!(report.ambiguous.is_empty());
        assert_eq!(report.unmatched.len(), 1);
        for (user, id) in [
            ("cy", "U_CY2"),
            ("eve", "U_EVE_ALIAS"),
            ("ada", "U_ADA_ALT"),
        ] {
            let link = store.link(&d(), "slack", user).await.unwrap().unwrap();
            assert_eq!(
                (link.platform_id.as_str(), link.origin),
                (id, LinkOrigin::Manual)
            );
            assert_eq!(link.linked_at, t0(), "manual links are not rewritten");
        }
    }
}

#[tokio::test]
async fn a_resync_updates_and_prunes_automatic_links() {
    let store = MemoryStore::new();
    let people = vec![
        Person::new("ada").email("ada@example.com"),
        Person::new("bob").email("bob@example.com"),
    ];
    let first = vec![
        DirectoryEntry::new("U_ADA").email("ada@example.com"),
        DirectoryEntry::new("U_BOB").email("bob@example.com"),
    ];
    let options = SyncOptions::new(MatchBy::Email).at(t0());
    sync_directory(
        &store,
        &cx(),
        "slack",
        &people,
        &mut StaticDirectory::new(vec![first]),
        &options,
    )
    .await
    .unwrap();
    // Ada's account was recreated with a new id; Bob's was deleted.
    let second = vec![
        DirectoryEntry::new("U_ADA_NEW").email("ada@example.com"),
        DirectoryEntry::new("U_BOB")
            .email("bob@example.com")
            .status(AccountStatus::Deleted),
    ];
    let report = sync_directory(
        &store,
        &cx(),
        "slack",
        &people,
        &mut StaticDirectory::new(vec![second]),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(
        report.matched,
        vec![("ada".to_owned(), "U_ADA_NEW".to_owned())]
    );
    assert_eq!(report.skipped.deleted, 1);
    assert_eq!(
        store
            .link(&d(), "slack", "ada")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "U_ADA_NEW"
    );
    assert_eq!(store.link(&d(), "slack", "bob").await.unwrap(), None);
}

#[tokio::test]
async fn duplicate_emails_in_the_directory_are_ambiguous_even_across_pages() {
    let store = MemoryStore::new();
    let pages = vec![
        vec![DirectoryEntry::new("U1").email("shared@example.com")],
        vec![DirectoryEntry::new("U2").email("SHARED@example.com")],
    ];
    let people = vec![Person::new("p").email("shared@example.com")];
    let report = sync_directory(
        &store,
        &cx(),
        "teams",
        &people,
        &mut StaticDirectory::new(pages),
        &SyncOptions::new(MatchBy::Email),
    )
    .await
    .unwrap();
    assert!(report.matched.is_empty());
    assert_eq!(report.ambiguous[0].candidates, ["U1", "U2"]);
    assert_eq!(report.api_calls, 2);
}

#[tokio::test]
async fn matching_by_phone_normalises_directory_numbers() {
    let store = MemoryStore::new();
    let people = vec![
        Person::new("bob").phone("+49 30 123456", "DE"),
        Person::new("zed")
            .phone("+49 30 999999", "DE")
            .email("zed@example.com"),
        Person::new("amb").phone("+1 415 555 2671", "US"),
    ];
    let entries = vec![
        DirectoryEntry::new("Z_BOB").phone("030 123456"),
        DirectoryEntry::new("Z_ZED").email("zed@example.com"),
        DirectoryEntry::new("Z_A1").phone("+14155552671"),
        DirectoryEntry::new("Z_A2").phone("001 415 555 2671"),
        DirectoryEntry::new("Z_JUNK").phone("not a number"),
    ];
    let options = SyncOptions::new(MatchBy::Phone)
        .default_region("DE")
        .at(t0());
    let report = sync_directory(
        &store,
        &cx(),
        "zendesk",
        &people,
        &mut StaticDirectory::paged(entries.clone(), 2),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(report.matched, vec![("bob".to_owned(), "Z_BOB".to_owned())]);
    assert_eq!(report.ambiguous[0].candidates, ["Z_A1", "Z_A2"]);
    assert_eq!(
        report.unmatched[0].user_id, "zed",
        "emails are not consulted when matching by phone"
    );
    assert_eq!(
        store
            .link(&d(), "zendesk", "bob")
            .await
            .unwrap()
            .unwrap()
            .origin,
        LinkOrigin::PhoneMatch
    );

    let options = SyncOptions::new(MatchBy::EmailThenPhone)
        .default_region("DE")
        .at(t0());
    let report = sync_directory(
        &store,
        &cx(),
        "zendesk",
        &people,
        &mut StaticDirectory::paged(entries, 2),
        &options,
    )
    .await
    .unwrap();
    let mut matched = report.matched;
    matched.sort();
    assert_eq!(
        matched,
        vec![
            ("bob".to_owned(), "Z_BOB".to_owned()),
            ("zed".to_owned(), "Z_ZED".to_owned())
        ]
    );
    assert_eq!(
        store
            .link(&d(), "zendesk", "zed")
            .await
            .unwrap()
            .unwrap()
            .origin,
        LinkOrigin::EmailMatch
    );
}

#[tokio::test]
async fn a_failing_page_fails_the_sync_without_touching_links() {
    struct Broken(usize);
    #[async_trait]
    impl DirectoryPager for Broken {
        async fn next_page(&mut self) -> switchboard::Result<Option<Vec<DirectoryEntry>>> {
            self.0 += 1;
            if self.0 == 1 {
                Ok(Some(vec![
                    DirectoryEntry::new("U_ADA").email("ada@example.com"),
                ]))
            } else {
                Err(
                    switchboard::Error::new(switchboard::ErrorKind::Platform, "ratelimited")
                        .temporary(),
                )
            }
        }
    }
    let store = MemoryStore::new();
    let err = sync_directory(
        &store,
        &cx(),
        "slack",
        &people(),
        &mut Broken(0),
        &SyncOptions::new(MatchBy::Email),
    )
    .await
    .unwrap_err();
    assert!(err.is_temporary());
    assert!(store.links(&d(), "slack").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_cache_answers_until_entries_expire() {
    let cache =
        ResolutionCache::new(100, Duration::from_secs(60)).negative_ttl(Duration::from_secs(5));
    let calls = AtomicUsize::new(0);
    let resolve = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(Resolution::Matched("Z1".into()))
    };
    for _ in 0..3 {
        assert_eq!(
            cache
                .get_or_resolve(&cx(), "+4930123456", resolve)
                .await
                .unwrap(),
            Resolution::Matched("Z1".into())
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(cache.get(&cx(), "+4930123456").is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        cache.get(&cx(), "+4930123456"),
        None,
        "expired after the ttl"
    );
    cache
        .get_or_resolve(&cx(), "+4930123456", resolve)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    cache.insert(&cx(), "+15550000000", Resolution::NotFound);
    cache.insert(
        &cx(),
        "amb",
        Resolution::Ambiguous(vec!["a".into(), "b".into()]),
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        cache.get(&cx(), "+15550000000"),
        None,
        "not-found answers use the negative ttl"
    );
    assert_eq!(
        cache.get(&cx(), "amb"),
        Some(Resolution::Ambiguous(vec!["a".into(), "b".into()]))
    );

    cache.invalidate(&cx(), "amb");
    assert_eq!(cache.get(&cx(), "amb"), None);

    let failing = cache
        .get_or_resolve(&cx(), "err", || async {
            Err(switchboard::Error::new(
                switchboard::ErrorKind::Network,
                "down",
            ))
        })
        .await;
    assert!(failing.is_err());
    assert_eq!(cache.get(&cx(), "err"), None, "errors are not cached");
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded_and_evicts_the_oldest() {
    let cache = ResolutionCache::new(3, Duration::from_secs(60));
    for key in ["a", "b", "c"] {
        cache.insert(&cx(), key, Resolution::Matched(key.to_uppercase()));
    }
    cache.insert(&cx(), "b", Resolution::Matched("B2".into())); // refresh b: now the newest
    cache.insert(&cx(), "d", Resolution::Matched("D".into()));
    assert_eq!(cache.get(&cx(), "a"), None, "the oldest entry went first");
    assert_eq!(
        cache.get(&cx(), "b"),
        Some(Resolution::Matched("B2".into()))
    );
    assert!(cache.get(&cx(), "c").is_some());
    assert!(cache.get(&cx(), "d").is_some());
    assert_eq!(cache.stats().entries, 3);

    for i in 0..10_000 {
        cache.insert(&cx(), "hot", Resolution::Matched(i.to_string()));
    }
    assert!(cache.stats().entries <= 3);
    assert_eq!(
        cache.get(&cx(), "hot"),
        Some(Resolution::Matched("9999".into()))
    );
    let stats = cache.stats();
    assert!(stats.hits >= 4 && stats.misses >= 1, "{stats:?}");
}

#[tokio::test]
async fn the_cache_is_shared_across_tasks() {
    let cache = Arc::new(ResolutionCache::new(1000, Duration::from_secs(60)));
    let mut handles = Vec::new();
    for t in 0..4 {
        let cache = cache.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..500 {
                let key = format!("+1555{:07}", (t * 500 + i) % 700);
                cache.insert(&cx(), key.clone(), Resolution::Matched(key.clone()));
                assert_eq!(cache.get(&cx(), &key), Some(Resolution::Matched(key)));
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(cache.stats().entries, 700);
}

#[tokio::test]
async fn syncs_of_two_tenants_keep_their_links_apart() {
    let store = MemoryStore::new();
    let acme = connected("acme", "slack", "T_ACME");
    let globex = connected("globex", "slack", "T_GLOBEX");
    // Both tenants have a host user "ada", in different workspaces.
    let people = vec![Person::new("ada").email("ada@example.com")];
    let options = SyncOptions::new(MatchBy::Email).at(t0());
    let report = sync_directory(
        &store,
        &acme,
        "slack",
        &people,
        &mut StaticDirectory::new(vec![vec![
            DirectoryEntry::new("U_ACME_ADA").email("ada@example.com"),
        ]]),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(
        report.matched,
        [("ada".to_owned(), "U_ACME_ADA".to_owned())]
    );
    let report = sync_directory(
        &store,
        &globex,
        "slack",
        &people,
        &mut StaticDirectory::new(vec![vec![
            DirectoryEntry::new("U_GLOBEX_ADA").email("ada@example.com"),
        ]]),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(
        report.matched,
        [("ada".to_owned(), "U_GLOBEX_ADA".to_owned())]
    );

    let acme_link = store
        .link(&acme.tenant, "slack:T_ACME", "ada")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (acme_link.tenant.as_str(), acme_link.platform.as_str()),
        ("acme", "slack:T_ACME")
    );
    assert_eq!(acme_link.platform_id, "U_ACME_ADA");
    assert_eq!(
        store
            .link(&globex.tenant, "slack:T_GLOBEX", "ada")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "U_GLOBEX_ADA"
    );
    // Nothing under the bare platform name or the default tenant.
    assert!(store.links(&d(), "slack").await.unwrap().is_empty());
    assert!(
        store
            .link(&globex.tenant, "slack:T_ACME", "ada")
            .await
            .unwrap()
            .is_none()
    );

    // Globex's Ada left its workspace: pruning globex's link leaves acme's.
    sync_directory(
        &store,
        &globex,
        "slack",
        &people,
        &mut StaticDirectory::new(vec![vec![]]),
        &options,
    )
    .await
    .unwrap();
    assert!(
        store
            .links(&globex.tenant, "slack:T_GLOBEX")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.links(&acme.tenant, "slack:T_ACME").await.unwrap(),
        [acme_link]
    );
}

#[tokio::test]
async fn a_manual_link_in_one_tenant_does_not_reach_another() {
    let store = MemoryStore::new();
    let acme = connected("acme", "slack", "T_ACME");
    let globex = connected("globex", "slack", "T_GLOBEX");
    store
        .put_link(&IdentityLink {
            tenant: acme.tenant.clone(),
            platform: "slack:T_ACME".into(),
            user_id: "ada".into(),
            platform_id: "U_MANUAL".into(),
            origin: LinkOrigin::Manual,
            linked_at: t0(),
        })
        .await
        .unwrap();
    let people = vec![Person::new("ada").email("ada@example.com")];
    let report = sync_directory(
        &store,
        &globex,
        "slack",
        &people,
        &mut StaticDirectory::new(vec![vec![
            DirectoryEntry::new("U_GLOBEX_ADA").email("ada@example.com"),
        ]]),
        &SyncOptions::new(MatchBy::Email).at(t0()),
    )
    .await
    .unwrap();
    assert_eq!(
        report.matched,
        [("ada".to_owned(), "U_GLOBEX_ADA".to_owned())],
        "globex's Ada is matched by email, not by acme's manual link"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cache_keeps_tenants_and_connections_apart() {
    let cache = ResolutionCache::new(100, Duration::from_secs(60));
    let acme_a = connected("acme", "slack", "T_A");
    let acme_b = connected("acme", "slack", "T_B");
    let globex = connected("globex", "slack", "T_G");
    cache.insert(
        &acme_a,
        "ada@example.com",
        Resolution::Matched("U_A".into()),
    );
    cache.insert(
        &acme_b,
        "ada@example.com",
        Resolution::Matched("U_B".into()),
    );
    cache.insert(&globex, "ada@example.com", Resolution::NotFound);
    assert_eq!(
        cache.get(&acme_a, "ada@example.com"),
        Some(Resolution::Matched("U_A".into()))
    );
    assert_eq!(
        cache.get(&acme_b, "ada@example.com"),
        Some(Resolution::Matched("U_B".into()))
    );
    assert_eq!(
        cache.get(&globex, "ada@example.com"),
        Some(Resolution::NotFound)
    );
    assert_eq!(cache.get(&cx(), "ada@example.com"), None);
    assert_eq!(
        cache.get(
            &ResolveContext::tenant(TenantId::new("acme").unwrap()),
            "ada@example.com"
        ),
        None,
        "a tenant without a connection is its own partition"
    );
    assert_eq!(cache.stats().entries, 3);

    cache.invalidate(&acme_b, "ada@example.com");
    assert_eq!(cache.get(&acme_b, "ada@example.com"), None);
    assert!(cache.get(&acme_a, "ada@example.com").is_some());

    cache.insert(
        &acme_a,
        "bob@example.com",
        Resolution::Matched("U_BOB".into()),
    );
    cache.invalidate_context(&acme_a);
    assert_eq!(cache.get(&acme_a, "ada@example.com"), None);
    assert_eq!(cache.get(&acme_a, "bob@example.com"), None);
    assert!(cache.get(&globex, "ada@example.com").is_some());
    assert_eq!(cache.stats().entries, 1);
}

#[tokio::test(start_paused = true)]
async fn eviction_counts_every_tenant_against_one_capacity() {
    let cache = ResolutionCache::new(2, Duration::from_secs(60));
    let acme = connected("acme", "slack", "T_A");
    let globex = connected("globex", "slack", "T_G");
    cache.insert(&acme, "k", Resolution::Matched("A".into()));
    cache.insert(&globex, "k", Resolution::Matched("G".into()));
    cache.insert(&acme, "k2", Resolution::Matched("A2".into()));
    assert_eq!(cache.get(&acme, "k"), None, "the oldest went first");
    assert!(cache.get(&globex, "k").is_some());
    assert!(cache.get(&acme, "k2").is_some());
    assert_eq!(cache.stats().entries, 2);
    // Expired entries are purged before the capacity is checked.
    tokio::time::advance(Duration::from_secs(61)).await;
    cache.insert(&cx(), "fresh", Resolution::NotFound);
    assert_eq!(cache.stats().entries, 1);
}

/// A resolver that answers per tenant and counts its calls.
struct PerTenant {
    resolves: AtomicUsize,
    syncs: AtomicUsize,
}

#[async_trait]
impl IdentityResolver for PerTenant {
    async fn resolve(
        &self,
        cx: &ResolveContext,
        person: &Person,
    ) -> switchboard::Result<Resolution> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        Ok(Resolution::Matched(format!(
            "{}/{}/{}",
            cx.link_platform("slack"),
            person.id,
            person.emails.join(",")
        )))
    }
    async fn sync(
        &self,
        _cx: &ResolveContext,
        _people: &[Person],
    ) -> switchboard::Result<SyncReport> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(SyncReport::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_resolver_caches_per_tenant_connection_and_person() {
    let inner = Arc::new(PerTenant {
        resolves: AtomicUsize::new(0),
        syncs: AtomicUsize::new(0),
    });
    let resolver = CachedResolver::new(
        inner.clone(),
        ResolutionCache::new(100, Duration::from_secs(60)),
    );
    let acme = connected("acme", "slack", "T_A");
    let globex = connected("globex", "slack", "T_G");
    let ada = Person::new("ada").email("ada@example.com");

    for _ in 0..3 {
        assert_eq!(
            resolver.resolve(&acme, &ada).await.unwrap(),
            Resolution::Matched("slack:T_A/ada/ada@example.com".into())
        );
    }
    assert_eq!(inner.resolves.load(Ordering::SeqCst), 1);
    assert_eq!(
        resolver.resolve(&globex, &ada).await.unwrap(),
        Resolution::Matched("slack:T_G/ada/ada@example.com".into()),
        "another tenant's answer is never served"
    );
    assert_eq!(inner.resolves.load(Ordering::SeqCst), 2);

    // A changed email is a different lookup.
    let moved = Person::new("ada").email("ada@new.example.com");
    assert_eq!(
        resolver.resolve(&acme, &moved).await.unwrap(),
        Resolution::Matched("slack:T_A/ada/ada@new.example.com".into())
    );
    assert_eq!(inner.resolves.load(Ordering::SeqCst), 3);

    // A sync forgets that tenant connection's answers only.
    resolver
        .sync(&acme, std::slice::from_ref(&ada))
        .await
        .unwrap();
    assert_eq!(inner.syncs.load(Ordering::SeqCst), 1);
    resolver.resolve(&acme, &ada).await.unwrap();
    resolver.resolve(&globex, &ada).await.unwrap();
    assert_eq!(inner.resolves.load(Ordering::SeqCst), 4);
    assert_eq!(resolver.cache().stats().entries, 2);
}

// ---------------------------------------------------------------------------
// Issue 15, defect 10: reverse ambiguity and stricter emails.

#[tokio::test]
async fn two_people_sharing_an_email_are_ambiguous_not_both_linked() {
    let store = MemoryStore::new();
    let pages = vec![vec![
        DirectoryEntry::new("U_SHARED").email("team@example.com"),
        DirectoryEntry::new("U_ADA").email("ada@example.com"),
    ]];
    let people = vec![
        Person::new("p1").email("team@example.com"),
        Person::new("p2").email("Team@Example.com"),
        Person::new("ada").email("ada@example.com"),
    ];
    let report = sync_directory(
        &store,
        &cx(),
        "slack",
        &people,
        &mut StaticDirectory::new(pages),
        &SyncOptions::new(MatchBy::Email),
    )
    .await
    .unwrap();
    assert_eq!(report.matched, [("ada".to_owned(), "U_ADA".to_owned())]);
    let ambiguous: Vec<&str> = report
        .ambiguous
        .iter()
        .map(|a| a.user_id.as_str())
        .collect();
    assert_eq!(ambiguous, ["p1", "p2"]);
    assert_eq!(report.ambiguous[0].candidates, ["U_SHARED"]);
    assert!(store.link(&d(), "slack", "p1").await.unwrap().is_none());
    assert!(store.link(&d(), "slack", "p2").await.unwrap().is_none());
}

#[tokio::test]
async fn two_people_sharing_a_phone_are_ambiguous_too() {
    let store = MemoryStore::new();
    let pages = vec![vec![DirectoryEntry::new("U_DESK").phone("+49 30 123456")]];
    let people = vec![
        Person::new("a").phone("030 123456", "DE"),
        Person::new("b").phone("+4930123456", "DE"),
    ];
    let report = sync_directory(
        &store,
        &cx(),
        "zendesk",
        &people,
        &mut StaticDirectory::new(pages),
        &SyncOptions::new(MatchBy::Phone).default_region("DE"),
    )
    .await
    .unwrap();
    assert!(report.matched.is_empty(), "{report:?}");
    assert_eq!(report.ambiguous.len(), 2);
}

#[test]
fn emails_with_underscored_domains_or_invisible_characters_are_refused() {
    for bad in [
        "a@exa_mple.com",
        "a\u{200b}b@example.com",
        "ab@exam\u{200d}ple.com",
        "\u{feff}ab@example.com\u{feff}x",
        "a@ex ample.com",
    ] {
        assert_eq!(normalize_email(bad), None, "{bad:?}");
    }
    assert_eq!(
        normalize_email("ada_b@example.com").as_deref(),
        Some("ada_b@example.com")
    );
}
