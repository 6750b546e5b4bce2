//! `DeliveryQueryStore` for `SqliteStore`: reads on the reader connection, newest first, always filtered by tenant.

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rusqlite::{Connection, Row, params};

use super::{Db, SqliteStore, count, millis, sql_limit, state, tenant, time};
use crate::Result;
use crate::destination::{DeliveryError, DeliveryId};
use crate::message::Target;
use crate::store::LogStatus;
use crate::store::query::{
    DeliveryQuery, DeliveryQueryStore, DeliveryRow, HourBucket, add_to_buckets, empty_buckets,
};
use crate::tenant::TenantId;

/// The subject's id from an event body (NULL when the body is not JSON).
const PERSON: &str = "CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.subject.id') END";

fn select() -> String {
    format!(
        "SELECT d.id, d.tenant, e.id, e.kind, {PERSON}, d.route, d.destination, d.target, \
           d.state, d.attempts, d.due_at, d.error, d.died_at \
         FROM deliveries d LEFT JOIN events e ON e.seq = d.event"
    )
}

fn row(r: &Row<'_>) -> Db<DeliveryRow> {
    let target: String = r.get(7)?;
    let st: String = r.get(8)?;
    let error: Option<String> = r.get(11)?;
    let died_at: Option<i64> = r.get(12)?;
    Ok(DeliveryRow {
        id: r.get(0)?,
        tenant: tenant(r.get(1)?)?,
        event_id: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        event_kind: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        person: r.get(4)?,
        route: r.get(5)?,
        destination: r.get(6)?,
        // A target this version cannot read stays visible by its stored text.
        target: serde_json::from_str::<Target>(&target).unwrap_or(Target::ChannelId { id: target }),
        state: state(&st)?,
        attempts: count(r.get(9)?)?,
        updated_at: time(r.get(10)?)?,
        error: error.map(|text| {
            serde_json::from_str::<DeliveryError>(&text)
                .unwrap_or(DeliveryError::Permanent { reason: text })
        }),
        died_at: died_at.map(time).transpose()?,
    })
}

fn query_rows(conn: &Connection, q: &DeliveryQuery) -> Db<Vec<DeliveryRow>> {
    let sql = format!(
        "{} WHERE d.tenant = ?1 AND (?2 IS NULL OR d.state = ?2) AND (?3 IS NULL OR e.kind = ?3) \
           AND (?4 IS NULL OR {PERSON} = ?4) AND (?5 IS NULL OR d.id < ?5) \
         ORDER BY d.id DESC LIMIT ?6",
        select()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        q.tenant.as_str(),
        q.status.map(|s| s.as_str()),
        q.kind.as_deref(),
        q.person.as_deref(),
        q.before_id,
        sql_limit(q.capped_limit()),
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(r)?);
    }
    Ok(out)
}

#[async_trait]
impl DeliveryQueryStore for SqliteStore {
    async fn query_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRow>> {
        let q = query.clone();
        self.read("query_deliveries", move |conn| query_rows(conn, &q))
            .await
    }

    async fn tenant_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRow>> {
        let tenant = tenant.as_str().to_owned();
        self.read("tenant_delivery", move |conn| {
            let sql = format!("{} WHERE d.id = ?1 AND d.tenant = ?2", select());
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![id, tenant])?;
            match rows.next()? {
                Some(r) => Ok(Some(row(r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delivery_histogram(
        &self,
        tenant: &TenantId,
        until: DateTime<Utc>,
        hours: u32,
    ) -> Result<Vec<HourBucket>> {
        let mut buckets = empty_buckets(until, hours);
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return Ok(buckets);
        };
        let from = millis(first.hour);
        let to = millis(last.hour + ChronoDuration::hours(1));
        let tenant = tenant.as_str().to_owned();
        let counts = self
            .read("delivery_histogram", move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT (l.at / 3600000) * 3600000 AS h, l.status, COUNT(*) \
                     FROM delivery_log l JOIN deliveries d ON d.id = l.delivery_id \
                     WHERE d.tenant = ?1 AND l.at >= ?2 AND l.at < ?3 \
                     GROUP BY h, l.status",
                )?;
                let mut rows = stmt.query(params![tenant, from, to])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let status: String = r.get(1)?;
                    let n: i64 = r.get(2)?;
                    out.push((time(r.get(0)?)?, status, u64::try_from(n).unwrap_or(0)));
                }
                Ok(out)
            })
            .await?;
        for (hour, status, n) in counts {
            if let Some(status) = LogStatus::parse(&status) {
                add_to_buckets(&mut buckets, hour, status, n);
            }
        }
        Ok(buckets)
    }
}
