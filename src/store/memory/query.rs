//! `DeliveryQueryStore` for `MemoryStore`: a newest-first scan of the outbox under its lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use super::outbox::RowView;
use crate::Result;
use crate::destination::DeliveryId;
use crate::store::query::{
    DeliveryQuery, DeliveryQueryStore, DeliveryRow, HourBucket, add_to_buckets, empty_buckets,
    hour_of,
};
use crate::tenant::TenantId;

fn to_row(v: &RowView<'_>) -> DeliveryRow {
    DeliveryRow {
        id: v.id,
        tenant: v.event.tenant.clone(),
        event_id: v.event.id.clone(),
        event_kind: v.event.kind.clone(),
        person: v.event.subject.as_ref().map(|p| p.id.clone()),
        route: v.route.to_owned(),
        destination: v.destination.to_owned(),
        target: v.target.clone(),
        state: v.state,
        attempts: v.attempts,
        updated_at: v.changed_at,
        error: v.error.cloned(),
        died_at: v.died_at,
    }
}

#[async_trait]
impl DeliveryQueryStore for MemoryStore {
    async fn query_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRow>> {
        let outbox = self.outbox()?;
        Ok(outbox
            .rows_newest_first(query.before_id)
            .filter(|v| {
                query.matches(
                    &v.event.tenant,
                    v.state,
                    &v.event.kind,
                    v.event.subject.as_ref().map(|p| p.id.as_str()),
                )
            })
            .take(query.capped_limit())
            .map(|v| to_row(&v))
            .collect())
    }

    async fn tenant_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRow>> {
        let outbox = self.outbox()?;
        Ok(outbox
            .rows_newest_first(id.checked_add(1))
            .next()
            .filter(|v| v.id == id && &v.event.tenant == tenant)
            .map(|v| to_row(&v)))
    }

    async fn delivery_histogram(
        &self,
        tenant: &TenantId,
        until: DateTime<Utc>,
        hours: u32,
    ) -> Result<Vec<HourBucket>> {
        let mut buckets = empty_buckets(until, hours);
        let Some(first) = buckets.first().map(|b| b.hour) else {
            return Ok(buckets);
        };
        let outbox = self.outbox()?;
        for v in outbox.rows_newest_first(None) {
            if &v.event.tenant != tenant {
                continue;
            }
            for entry in v.log.iter().filter(|e| e.at >= first) {
                add_to_buckets(&mut buckets, hour_of(entry.at), entry.status, 1);
            }
        }
        Ok(buckets)
    }
}
