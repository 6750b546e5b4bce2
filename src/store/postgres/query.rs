//! `DeliveryQueryStore` for `PostgresStore`: newest-first pages always filtered by tenant; the subject is read from the event JSON in Rust.

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tokio_postgres::Row;

use super::{PostgresStore, db, sql_limit, tenant};
use crate::Result;
use crate::destination::{DeliveryError, DeliveryId};
use crate::message::Target;
use crate::store::query::{
    DeliveryQuery, DeliveryQueryStore, DeliveryRow, HourBucket, add_to_buckets, empty_buckets,
};
use crate::store::{DeliveryState, LogStatus};
use crate::tenant::TenantId;

const SELECT: &str = "SELECT d.id, d.tenant, e.id, e.kind, e.body, d.route, d.destination, \
       d.target, d.state, d.attempts, d.due_at, d.error, d.died_at \
     FROM deliveries d LEFT JOIN events e ON e.seq = d.event";

/// Rows fetched per round while filtering by person in Rust.
const PAGE: i64 = 200;

fn person_of(body: Option<&str>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body?).ok()?;
    value.get("subject")?.get("id")?.as_str().map(str::to_owned)
}

fn row(r: &Row) -> Result<DeliveryRow> {
    let target: String = r.get(7);
    let st: String = r.get(8);
    let error: Option<String> = r.get(11);
    let body: Option<String> = r.get(4);
    Ok(DeliveryRow {
        id: r.get(0),
        tenant: tenant(r.get(1))?,
        event_id: r.get::<_, Option<String>>(2).unwrap_or_default(),
        event_kind: r.get::<_, Option<String>>(3).unwrap_or_default(),
        person: person_of(body.as_deref()),
        route: r.get(5),
        destination: r.get(6),
        target: serde_json::from_str::<Target>(&target).unwrap_or(Target::ChannelId { id: target }),
        state: DeliveryState::parse(&st)
            .ok_or_else(|| super::corrupt(format!("unknown stored delivery state {st:?}")))?,
        attempts: u32::try_from(r.get::<_, i32>(9)).unwrap_or(0),
        updated_at: r.get(10),
        error: error.map(|text| {
            serde_json::from_str::<DeliveryError>(&text)
                .unwrap_or(DeliveryError::Permanent { reason: text })
        }),
        died_at: r.get(12),
    })
}

#[async_trait]
impl DeliveryQueryStore for PostgresStore {
    async fn query_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRow>> {
        let client = self.client().await?;
        let sql = format!(
            "{SELECT} WHERE d.tenant = $1 AND ($2::text IS NULL OR d.state = $2::text) \
               AND ($3::text IS NULL OR e.kind = $3::text) \
               AND ($4::text IS NULL OR strpos(e.body, $4::text) > 0) \
               AND ($5::int8 IS NULL OR d.id < $5::int8) \
             ORDER BY d.id DESC LIMIT $6"
        );
        let stmt = client.prepare(&sql).await.map_err(db("query_deliveries"))?;
        let limit = query.capped_limit();
        let tenant_id = query.tenant.as_str();
        let status = query.status.map(|s| s.as_str());
        let kind = query.kind.as_deref();
        let person = query.person.as_deref();
        let mut before = query.before_id;
        let mut out = Vec::new();
        // The person is matched exactly in Rust; the SQL filter only narrows.
        let page = if person.is_some() {
            PAGE
        } else {
            sql_limit(limit)
        };
        loop {
            let rows = client
                .query(
                    &stmt,
                    &[&tenant_id, &status, &kind, &person, &before, &page],
                )
                .await
                .map_err(db("query_deliveries"))?;
            let fetched = rows.len();
            for r in &rows {
                let d = row(r)?;
                before = Some(d.id);
                if person.is_none_or(|p| d.person.as_deref() == Some(p)) && out.len() < limit {
                    out.push(d);
                }
            }
            if out.len() >= limit || i64::try_from(fetched).unwrap_or(i64::MAX) < page {
                return Ok(out);
            }
        }
    }

    async fn tenant_delivery(
        &self,
        tenant_id: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRow>> {
        let client = self.client().await?;
        let sql = format!("{SELECT} WHERE d.id = $1 AND d.tenant = $2");
        let r = client
            .query_opt(&sql, &[&id, &tenant_id.as_str()])
            .await
            .map_err(db("tenant_delivery"))?;
        r.as_ref().map(row).transpose()
    }

    async fn delivery_histogram(
        &self,
        tenant_id: &TenantId,
        until: DateTime<Utc>,
        hours: u32,
    ) -> Result<Vec<HourBucket>> {
        let mut buckets = empty_buckets(until, hours);
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return Ok(buckets);
        };
        let from = first.hour;
        let to = last.hour + ChronoDuration::hours(1);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT floor(extract(epoch FROM l.at) / 3600)::int8 AS h, l.status, count(*)::int8 \
                 FROM delivery_log l JOIN deliveries d ON d.id = l.delivery_id \
                 WHERE d.tenant = $1 AND l.at >= $2 AND l.at < $3 \
                 GROUP BY h, l.status",
                &[&tenant_id.as_str(), &from, &to],
            )
            .await
            .map_err(db("delivery_histogram"))?;
        for r in rows {
            let h: i64 = r.get(0);
            let status: String = r.get(1);
            let n: i64 = r.get(2);
            let (Some(hour), Some(status)) = (
                DateTime::from_timestamp(h.saturating_mul(3600), 0),
                LogStatus::parse(&status),
            ) else {
                continue;
            };
            add_to_buckets(&mut buckets, hour, status, u64::try_from(n).unwrap_or(0));
        }
        Ok(buckets)
    }
}
