//! Cron schedules in IANA time zones: local wall time across daylight-saving changes (fixed instants), unknown zones, and one run per fire across replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use switchboard::integration::{IntegrationConfig, Schedule};
use switchboard::schedule::{RunContext, ScheduledJob, Scheduler, cron_in_zone, next_fire};
use switchboard::store::RunStore;
use switchboard::tenant::TenantId;
use switchboard::{ErrorKind, MemoryStore};

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn berlin(expr: &str) -> Schedule {
    cron_in_zone(expr, "Europe/Berlin").unwrap()
}

/// The fire times of `schedule` after `from`, `n` of them.
fn fires(schedule: &Schedule, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    for _ in 0..n {
        t = next_fire(schedule, t).unwrap().unwrap();
        out.push(t);
    }
    out
}

#[test]
fn a_daily_cron_keeps_its_local_wall_time_across_both_dst_changes() {
    let daily = berlin("0 6 * * *");
    // Spring: Berlin moves from CET (UTC+1) to CEST (UTC+2) on 30 March 2025.
    assert_eq!(
        fires(&daily, utc(2025, 3, 28, 12, 0), 3),
        [
            utc(2025, 3, 29, 5, 0),
            utc(2025, 3, 30, 4, 0),
            utc(2025, 3, 31, 4, 0)
        ]
    );
    // Autumn: back to CET on 26 October 2025.
    assert_eq!(
        fires(&daily, utc(2025, 10, 24, 12, 0), 3),
        [
            utc(2025, 10, 25, 4, 0),
            utc(2025, 10, 26, 5, 0),
            utc(2025, 10, 27, 5, 0)
        ]
    );
    // The same expression without a zone is UTC.
    assert_eq!(
        fires(
            &Schedule::Cron("0 6 * * *".into()),
            utc(2025, 3, 29, 12, 0),
            1
        ),
        [utc(2025, 3, 30, 6, 0)]
    );
    // `TZ=` is accepted too, and other zones.
    let new_york = Schedule::Cron("TZ=America/New_York 0 9 * * 1-5".into());
    // Monday 10 March 2025 (after the US change on the 9th): 09:00 EDT = 13:00 UTC.
    assert_eq!(
        fires(&new_york, utc(2025, 3, 7, 15, 0), 1),
        [utc(2025, 3, 10, 13, 0)]
    );
}

#[test]
fn a_skipped_local_time_fires_once_after_the_gap_and_a_repeated_one_fires_once() {
    let at_half_past_two = berlin("30 2 * * *");
    // 02:30 does not exist on 30 March 2025 in Berlin (02:00 jumps to 03:00).
    let spring = fires(&at_half_past_two, utc(2025, 3, 29, 12, 0), 2);
    assert_eq!(spring[1], utc(2025, 3, 31, 0, 30), "{spring:?}");
    // That day it fires once, after the gap: at or after 03:00 CEST (01:00 UTC)
    // and before the same wall time the next day.
    assert!(
        spring[0] >= utc(2025, 3, 30, 1, 0) && spring[0] < utc(2025, 3, 30, 2, 0),
        "{spring:?}"
    );
    // 02:30 happens twice on 26 October 2025 (CEST, then CET): one run, at the first.
    assert_eq!(
        fires(&at_half_past_two, utc(2025, 10, 25, 12, 0), 2),
        [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)]
    );
}

#[test]
fn an_unknown_zone_is_a_configuration_error() {
    let e = cron_in_zone("0 6 * * *", "Europe/Atlantis").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("unknown time zone"), "{e}");
    let e = next_fire(
        &Schedule::Cron("CRON_TZ=Nowhere 0 6 * * *".into()),
        utc(2025, 1, 1, 0, 0),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = cron_in_zone("not cron", "Europe/Berlin").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

struct Counting {
    runs: AtomicUsize,
}

#[async_trait]
impl ScheduledJob for Counting {
    fn name(&self) -> &str {
        "daily"
    }

    async fn run(&self, _ctx: &mut RunContext) -> switchboard::Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn two_replicas_run_a_zoned_cron_once_per_local_day_across_the_dst_change() {
    let store = Arc::new(MemoryStore::new());
    let config = IntegrationConfig {
        tenant: TenantId::default(),
        name: "daily".into(),
        source: "s3://bucket/daily/*.csv".into(),
        schedule: berlin("0 6 * * *"),
        enabled: true,
        settings: serde_json::json!({}),
    };
    store.put_integration(&config).await.unwrap();
    let job = Arc::new(Counting {
        runs: AtomicUsize::new(0),
    });
    let replicas = [
        Scheduler::new(store.clone()).job(job.clone()),
        Scheduler::new(store.clone()).job(job.clone()),
    ];
    // Fixed instants, both replicas asked at each: 06:00 Berlin on 29, 30 and
    // 31 March 2025 is 05:00, 04:00 and 04:00 UTC.
    let mut fired = Vec::new();
    for t in [
        utc(2025, 3, 29, 4, 59),
        utc(2025, 3, 29, 5, 0),
        utc(2025, 3, 30, 3, 59),
        utc(2025, 3, 30, 4, 0),
        utc(2025, 3, 30, 5, 0),
        utc(2025, 3, 31, 4, 0),
    ] {
        for replica in &replicas {
            for run in replica.run_due(t).await.unwrap() {
                fired.push(run.started_at);
            }
        }
    }
    assert_eq!(
        fired,
        [
            utc(2025, 3, 29, 5, 0),
            utc(2025, 3, 30, 4, 0),
            utc(2025, 3, 31, 4, 0)
        ]
    );
    assert_eq!(job.runs.load(Ordering::SeqCst), 3);
}
