//! Quickstart: an HR-perks backend notifies people in their DMs and a channel,
//! on the embedded defaults (a SQLite file in a temp dir, console output).
//!
//! Run: `cargo run --example quickstart`

use std::time::Duration;

use switchboard::{
    ConsoleDestination, Event, MessageFormat, Person, Route, SqliteStore, Switchboard, Target,
};

#[tokio::main]
async fn main() -> switchboard::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("switchboard.db"))?;

    // No credentials: a console destination prints exactly what Slack would get.
    let chat = ConsoleDestination::new("chat").with_format(MessageFormat::SlackMrkdwn);

    let sb = Switchboard::builder()
        .store(store)
        .destination(chat)
        .route(
            Route::on("wallet.funded")
                .to("chat", Target::SubjectDm)
                .template("Your wallet was funded with *{{ data.amount }} {{ data.currency }}*."),
        )
        .route(
            Route::on("perk.redeemed")
                .to("chat", Target::SubjectDm)
                .template("You redeemed *{{ data.perk }}*. Enjoy!"),
        )
        .route(
            Route::on("wallet.low_balance")
                .to("chat", Target::SubjectDm)
                .template("Heads up: your balance is {{ data.balance }} {{ data.currency }}."),
        )
        .route(
            Route::on("catalog.perk_added")
                .to("chat", Target::channel("#perks"))
                .template("New perk in the catalog: *{{ data.title }}*"),
        )
        .build()?;

    let people = [
        Person::new("u-ada").name("Ada").email("Ada@Example.com"),
        Person::new("u-grace")
            .name("Grace")
            .email("grace@example.com"),
        Person::new("u-linus")
            .name("Linus")
            .email(" linus@example.com "),
    ];

    let mut published = 0;
    for (i, p) in people.iter().enumerate() {
        let events = [
            Event::builder(format!("fund-{i}"), "wallet.funded")
                .subject(p.clone())
                .data(serde_json::json!({"amount": 50, "currency": "EUR"})),
            Event::builder(format!("redeem-{i}"), "perk.redeemed")
                .subject(p.clone())
                .data(serde_json::json!({"perk": "Yoga <class> & tea"})),
            Event::builder(format!("low-{i}"), "wallet.low_balance")
                .subject(p.clone())
                .data(serde_json::json!({"balance": 5, "currency": "EUR"})),
        ];
        for e in events {
            sb.publish(e.build()?).await?;
            published += 1;
        }
    }
    sb.publish(
        Event::builder("catalog-1", "catalog.perk_added")
            .data(serde_json::json!({"title": "Cinema tickets"}))
            .build()?,
    )
    .await?;
    published += 1;
    // Publishing the same event id again creates nothing new.
    let again = sb
        .publish(
            Event::builder("catalog-1", "catalog.perk_added")
                .data(serde_json::json!({"title": "Cinema tickets"}))
                .build()?,
        )
        .await?;
    assert!(again.duplicate);

    let summary = sb.drain(Duration::from_secs(30)).await?;
    let status = sb.status().await?;
    let dead: u64 = status.iter().map(|s| s.dead_letters).sum();
    let parked: u64 = status.iter().map(|s| s.parked).sum();
    println!(
        "{}",
        serde_json::json!({
            "published": published,
            "delivered": summary.delivered,
            "dead_letters": dead,
            "parked": parked,
        })
    );
    Ok(())
}
