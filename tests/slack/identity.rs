//! SlackIdentity: one users.list sweep matched by email, lookups only for the missing, per tenant connection.

use super::common::*;

// ---------------------------------------------------------------- identity

fn member(id: &str, email: Option<&str>) -> Value {
    json!({
        "id": id,
        "team_id": "T012AB3C4",
        "name": id.to_lowercase(),
        "deleted": false,
        "color": "9f69e7",
        "real_name": "spengler",
        "tz": "America/Los_Angeles",
        "profile": {
            "avatar_hash": "ge3b51ca72de",
            "real_name": "Egon Spengler",
            "display_name": "spengler",
            "email": email,
            "image_24": "https://.../avatar/e3b51ca72dee4ef87916ae2b9240df50.jpg",
            "team": "T012AB3C4"
        },
        "is_admin": false,
        "is_owner": false,
        "is_primary_owner": false,
        "is_restricted": false,
        "is_ultra_restricted": false,
        "is_bot": false,
        "updated": 1502138686,
        "is_app_user": false,
        "has_2fa": false
    })
}

fn with(mut m: Value, flag: &str) -> Value {
    m[flag] = json!(true);
    m
}

fn users_page(members: Vec<Value>, next_cursor: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "members": members,
        "cache_ts": 1498777272,
        "response_metadata": { "next_cursor": next_cursor }
    }))
}

fn users_list() -> MockBuilder {
    Mock::given(method("GET"))
        .and(path("/users.list"))
        .and(bearer_token(TOKEN))
        .and(query_param("limit", "200"))
}

#[tokio::test]
async fn sync_sweeps_short_pages_matches_by_email_and_skips_what_it_must() {
    let server = MockServer::start().await;
    let pages: Vec<(Vec<Value>, &str)> = vec![
        (
            vec![
                member("W0ADA", Some("Ada@Example.com ")),
                with(member("W0OLD", Some("old@example.com")), "deleted"),
                with(member("B0BOT", Some("bot@example.com")), "is_bot"),
            ],
            "c1",
        ),
        (vec![], "c2"),
        (
            vec![
                member("USLACKBOT", Some("slackbot@example.com")),
                with(
                    member("W0GUEST", Some("guest@example.com")),
                    "is_restricted",
                ),
            ],
            "c3",
        ),
        (
            vec![with(
                member("W0SINGLE", Some("single@example.com")),
                "is_ultra_restricted",
            )],
            "c4",
        ),
        (
            vec![
                member("W0TWIN1", Some("twin@example.com")),
                member("W0TWIN2", Some("TWIN@example.com")),
            ],
            "",
        ),
    ];
    let mut cursor: Option<&str> = None;
    for (members, next) in pages {
        let m = users_list();
        let m = match cursor {
            None => m.and(query_param_is_missing("cursor")),
            Some(c) => m.and(query_param("cursor", c)),
        };
        m.respond_with(users_page(members, next))
            .expect(1)
            .mount(&server)
            .await;
        cursor = Some(next);
    }
    Mock::given(path("/users.lookupByEmail"))
        .respond_with(slack_error("users_not_found"))
        .expect(0)
        .named("no lookups during a sync")
        .mount(&server)
        .await;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let people = vec![
        Person::new("u-ada").email("ada@example.com"),
        Person::new("u-old").email("old@example.com"),
        Person::new("u-guest").email("guest@example.com"),
        Person::new("u-twin").email("twin@example.com"),
        Person::new("u-new").email("new@example.com"),
    ];
    let report = identity
        .sync(&ResolveContext::default_tenant(), &people)
        .await
        .unwrap();
    assert_eq!(
        report.matched,
        vec![("u-ada".to_owned(), "W0ADA".to_owned())]
    );
    let unmatched: Vec<_> = report
        .unmatched
        .iter()
        .map(|u| u.user_id.as_str())
        .collect();
    assert_eq!(unmatched, vec!["u-old", "u-guest", "u-new"]);
    assert_eq!(report.ambiguous.len(), 1);
    assert_eq!(report.ambiguous[0].user_id, "u-twin");
    assert_eq!(report.ambiguous[0].candidates, vec!["W0TWIN1", "W0TWIN2"]);
    assert_eq!(
        (
            report.skipped.deleted,
            report.skipped.bots,
            report.skipped.guests
        ),
        (1, 2, 2)
    );
    assert_eq!(report.directory_size, 8);
    assert_eq!(report.api_calls, 5);
    assert_eq!(
        store
            .link(&TenantId::default(), "slack", "u-ada")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "W0ADA"
    );
    server.verify().await;

    // Resolution: the link answers; ambiguity is never guessed; no lookups.
    assert_eq!(
        identity
            .resolve(&ResolveContext::default_tenant(), &people[0])
            .await
            .unwrap(),
        Resolution::Matched("W0ADA".into())
    );
    assert!(matches!(
        identity
            .resolve(&ResolveContext::default_tenant(), &people[3])
            .await
            .unwrap(),
        Resolution::Ambiguous(_)
    ));
    assert!(requests(&server, "/users.lookupByEmail").await.is_empty());
}

#[tokio::test]
async fn lookup_by_email_only_for_someone_the_sync_did_not_find_and_cached() {
    let server = MockServer::start().await;
    users_list()
        .respond_with(users_page(
            vec![member("W0ADA", Some("ada@example.com"))],
            "",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/users.lookupByEmail"))
        .and(bearer_token(TOKEN))
        .and(query_param("email", "new@example.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "user": member("W0NEW", Some("new@example.com"))
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/users.lookupByEmail"))
        .and(query_param("email", "nobody@example.com"))
        .respond_with(slack_error("users_not_found"))
        .expect(1)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let ada = Person::new("u-ada").email("ada@example.com");
    let newbie = Person::new("u-new").email("New@Example.com");
    let nobody = Person::new("u-nobody").email("nobody@example.com");
    identity
        .sync(
            &ResolveContext::default_tenant(),
            &[ada.clone(), newbie.clone(), nobody.clone()],
        )
        .await
        .unwrap();

    for _ in 0..2 {
        assert_eq!(
            identity
                .resolve(&ResolveContext::default_tenant(), &ada)
                .await
                .unwrap(),
            Resolution::Matched("W0ADA".into())
        );
        assert_eq!(
            identity
                .resolve(&ResolveContext::default_tenant(), &newbie)
                .await
                .unwrap(),
            Resolution::Matched("W0NEW".into())
        );
        assert_eq!(
            identity
                .resolve(&ResolveContext::default_tenant(), &nobody)
                .await
                .unwrap(),
            Resolution::NotFound
        );
    }
    // The single lookup's match became a link.
    assert_eq!(
        store
            .link(&TenantId::default(), "slack", "u-new")
            .await
            .unwrap()
            .unwrap()
            .platform_id,
        "W0NEW"
    );
}

#[tokio::test]
async fn ten_thousand_users_take_at_most_51_calls_and_no_lookups() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    for page in 0..50 {
        let members: Vec<Value> = (0..200)
            .map(|i| {
                let n = page * 200 + i;
                member(&format!("W{n:07}"), Some(&format!("person{n}@example.com")))
            })
            .collect();
        let next = if page == 49 {
            String::new()
        } else {
            format!("cursor-{}", page + 1)
        };
        let m = users_list();
        let m = if page == 0 {
            m.and(query_param_is_missing("cursor"))
        } else {
            m.and(query_param("cursor", format!("cursor-{page}")))
        };
        let calls = calls.clone();
        let body =
            json!({"ok": true, "members": members, "response_metadata": {"next_cursor": next}});
        m.respond_with(move |_: &Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(body.clone())
        })
        .mount(&server)
        .await;
    }
    Mock::given(path("/users.lookupByEmail"))
        .respond_with(slack_error("users_not_found"))
        .expect(0)
        .mount(&server)
        .await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let identity = SlackIdentity::new(
        &config(&server),
        BotToken::new(secret(TOKEN)),
        store.clone(),
    )
    .unwrap();
    let people: Vec<Person> = (0..10_000)
        .map(|n| Person::new(format!("u{n}")).email(&format!("Person{n}@Example.com")))
        .collect();
    let report = identity
        .sync(&ResolveContext::default_tenant(), &people)
        .await
        .unwrap();
    assert_eq!(report.matched.len(), 10_000);
    assert!(report.unmatched.is_empty());
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 51, "{n} calls");
    assert_eq!(n, 50);
    assert_eq!(report.api_calls, 50);
    assert_eq!(
        identity
            .resolve(&ResolveContext::default_tenant(), &people[9_999])
            .await
            .unwrap(),
        Resolution::Matched("W0009999".into())
    );
}

// ---------------------------------------------------------------- inbound
