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
/// `Ok(None)` if a cron expression never fires again. An invalid cron expression
/// or a zero interval is a [`ErrorKind::Config`](crate::ErrorKind::Config) error. Cron expressions have 5
/// fields (minute granularity) or 6 (with seconds first) and are evaluated in UTC.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use switchboard::integration::Schedule;
/// use switchboard::schedule::next_fire;
/// let t = Utc.with_ymd_and_hms(2025, 3, 1, 10, 30, 0).unwrap();
/// let next = next_fire(&Schedule::Cron("0 6 * * *".into()), t).unwrap();
/// assert_eq!(next, Some(Utc.with_ymd_and_hms(2025, 3, 2, 6, 0, 0).unwrap()));
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
            let cron = croner::Cron::new(expr.trim())
                .with_seconds_optional()
                .parse()
                .map_err(|e| Error::config(format!("invalid cron expression {expr:?}: {e}")))?;
            Ok(cron.find_next_occurrence(&after, false).ok())
        }
    }
}
