//! Benchmark: per-call cost of `normalize_phone` and of a cached resolution (`ResolutionCache` hit within a tenant's connection).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::Resolution;
use switchboard::identity::{ResolutionCache, ResolveContext, normalize_email, normalize_phone};
use switchboard::tenant::{Connection, TenantId};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (label, raw, region) in [
        ("national_de", "030 123456", "DE"),
        ("formatted_us", "(415) 555-2671", "US"),
        ("intl_prefix_us", "011 49 30 123456", "US"),
        ("e164", "+14155552671", "US"),
        ("invalid", "hello", "US"),
    ] {
        group.bench_function(format!("normalize_phone/{label}"), |b| {
            b.iter(|| normalize_phone(black_box(raw), black_box(region)))
        });
    }
    group.bench_function("normalize_email", |b| {
        b.iter(|| normalize_email(black_box("  Ada.Lovelace@Example.COM ")))
    });
    group.finish();

    let cache = ResolutionCache::new(100_000, Duration::from_secs(3600));
    // A tenant's Slack connection, as the engine passes it.
    let connection = Connection::builder(TenantId::new("acme").expect("tenant"), "slack", "T0123")
        .build()
        .expect("connection");
    let cx = ResolveContext {
        tenant: connection.tenant.clone(),
        connection: Some(std::sync::Arc::new(connection)),
    };
    let cx = &cx;
    let keys: Vec<String> = (0..10_000).map(|i| format!("+1415555{i:04}")).collect();
    for (i, key) in keys.iter().enumerate() {
        cache.insert(cx, key.clone(), Resolution::Matched(format!("Z{i}")));
    }
    let mut group = c.benchmark_group("resolution_cache");
    group.bench_function("get_hit", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(cache.get(cx, &keys[i]))
        })
    });
    group.bench_function("get_miss", |b| {
        b.iter(|| black_box(cache.get(cx, "+4930000000")))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    group.bench_function("get_or_resolve_hit", |b| {
        let mut i = 0usize;
        b.to_async(&runtime).iter(|| {
            i = (i + 1) % keys.len();
            let key = &keys[i];
            let cache = &cache;
            async move {
                cache
                    .get_or_resolve(cx, key, || async { Ok(Resolution::NotFound) })
                    .await
            }
        })
    });
    group.bench_function("normalize_then_get_hit", |b| {
        b.iter(|| {
            let key = normalize_phone(black_box("(415) 555-0042"), "US");
            black_box(key.and_then(|k| cache.get(cx, &k)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
