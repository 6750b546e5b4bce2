//! Scheduled jobs (e.g. a CSV import) and the `Scheduler` that runs them on their interval or cron schedule, records each run and lists them for an admin page.

use chrono::{DateTime, Utc};

use crate::integration::Schedule;
use crate::{Error, Result};

mod context;
mod history;
mod job;
mod scheduler;

pub use context::RunContext;
pub use history::{HistoryEntry, IntegrationRow, compact_history};
pub use job::ScheduledJob;
pub use scheduler::Scheduler;

/// How many row errors a run record keeps (the first ones).
pub const MAX_ROW_ERRORS: usize = 20;

/// The next time `schedule` fires strictly after `after`.
///
/// `Ok(None)` if a cron expression never fires again. An invalid cron expression,
/// an unknown time zone or a zero interval is a
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error. Cron expressions have 5
/// fields (minute granularity) or 6 (with seconds first) and are evaluated in UTC,
/// or in the IANA time zone named by a `CRON_TZ=` (or `TZ=`) prefix, as cronie and
/// Kubernetes write it: `CRON_TZ=Europe/Berlin 0 6 * * *` fires at 06:00 Berlin
/// wall time, summer and winter (see [`cron_in_zone`]).
///
/// Across a daylight-saving change, a local time that does not exist that day
/// (the hour skipped in spring) fires at the first valid time after it, and a
/// local time that happens twice (the hour repeated in autumn) fires once, at
/// its first occurrence.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use switchboard::integration::Schedule;
/// use switchboard::schedule::next_fire;
/// let t = Utc.with_ymd_and_hms(2025, 3, 1, 10, 30, 0).unwrap();
/// let next = next_fire(&Schedule::Cron("0 6 * * *".into()), t).unwrap();
/// assert_eq!(next, Some(Utc.with_ymd_and_hms(2025, 3, 2, 6, 0, 0).unwrap()));
/// // 06:00 in Berlin is 05:00 UTC in winter.
/// let berlin = Schedule::Cron("CRON_TZ=Europe/Berlin 0 6 * * *".into());
/// let next = next_fire(&berlin, t).unwrap();
/// assert_eq!(next, Some(Utc.with_ymd_and_hms(2025, 3, 2, 5, 0, 0).unwrap()));
/// ```
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    match schedule {
        Schedule::Interval(every) => {
            if every.is_zero() {
                return Err(Error::config(
                    "a schedule interval must be longer than zero",
                ));
            }
            let every = chrono::Duration::from_std(*every)
                .map_err(|_| Error::config("the schedule interval is too long"))?;
            Ok(after.checked_add_signed(every))
        }
        Schedule::Cron(expr) => {
            let (zone, fields) = split_zone(expr)?;
            let cron = croner::Cron::new(fields)
                .with_seconds_optional()
                .parse()
                .map_err(|e| Error::config(format!("invalid cron expression {expr:?}: {e}")))?;
            match zone {
                None => Ok(cron.find_next_occurrence(&after, false).ok()),
                Some(zone) => Ok(cron
                    .find_next_occurrence(&after.with_timezone(&zone), false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))),
            }
        }
    }
}

/// A cron schedule evaluated in the IANA time zone `zone` (e.g.
/// `Europe/Berlin`, `America/New_York`): `Schedule::Cron("CRON_TZ=<zone> <expr>")`.
/// Fails ([`ErrorKind::Config`](crate::ErrorKind::Config)) for an unknown zone or
/// an invalid expression.
///
/// ```
/// use switchboard::schedule::cron_in_zone;
/// let daily = cron_in_zone("0 6 * * *", "Europe/Berlin").unwrap();
/// assert_eq!(daily, switchboard::integration::Schedule::Cron("CRON_TZ=Europe/Berlin 0 6 * * *".into()));
/// assert!(cron_in_zone("0 6 * * *", "Mars/Olympus").is_err());
/// ```
pub fn cron_in_zone(expr: &str, zone: &str) -> Result<Schedule> {
    let schedule = Schedule::Cron(format!("CRON_TZ={} {}", zone.trim(), expr.trim()));
    next_fire(&schedule, Utc::now())?;
    Ok(schedule)
}

/// Splits a `CRON_TZ=<zone>` / `TZ=<zone>` prefix from a cron expression.
fn split_zone(expr: &str) -> Result<(Option<chrono_tz::Tz>, &str)> {
    let expr = expr.trim();
    let Some(rest) = expr
        .strip_prefix("CRON_TZ=")
        .or_else(|| expr.strip_prefix("TZ="))
    else {
        return Ok((None, expr));
    };
    let (name, fields) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let zone: chrono_tz::Tz = name.parse().map_err(|_| {
        Error::config(format!(
            "unknown time zone {name:?} in the cron schedule {expr:?}: use an IANA name such as Europe/Berlin or America/New_York"
        ))
    })?;
    Ok((Some(zone), fields.trim()))
}
