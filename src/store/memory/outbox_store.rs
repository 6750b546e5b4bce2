//! `OutboxStore` for `MemoryStore`: each method takes the outbox lock once and runs atomically.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::Result;
use crate::destination::DeliveryId;
use crate::event::Event;
use crate::store::{
    ClaimedDelivery, Completion, DeadLetter, DeliveryState, DestinationStats, EnqueueOutcome,
    LogEntry, NewDelivery, OutboxStore, PruneStats, ScopeChange, ScopeStatus,
};
use crate::tenant::TenantId;

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome> {
        Ok(self.outbox()?.enqueue(event, deliveries, now))
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        Ok(self.outbox()?.claim(now, lease, limit))
    }

    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()> {
        let mut o = self.outbox()?;
        for c in completions {
            o.complete(c, now);
        }
        Ok(())
    }

    async fn renew(
        &self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<u64> {
        Ok(self.outbox()?.renew(claims, now, lease))
    }

    async fn release(&self, claims: &[(DeliveryId, i64)], now: DateTime<Utc>) -> Result<()> {
        self.outbox()?.release(claims, now);
        Ok(())
    }

    async fn set_scope(
        &self,
        tenant: &TenantId,
        scope: &str,
        change: ScopeChange,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(self.outbox()?.set_scope(tenant, scope, change, now))
    }

    async fn scopes(&self) -> Result<Vec<ScopeStatus>> {
        Ok(self.outbox()?.scopes())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self.outbox()?.next_due())
    }

    async fn pending(&self) -> Result<u64> {
        Ok(self.outbox()?.pending())
    }

    async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        Ok(self.outbox()?.dead_letters(tenant, limit))
    }

    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()> {
        self.outbox()?.replay(id, now)
    }

    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>> {
        Ok(self.outbox()?.delivery_log(id))
    }

    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>> {
        Ok(self.outbox()?.delivery_state(id))
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>> {
        Ok(self.outbox()?.destination_stats())
    }

    async fn prune(&self, sent_before: DateTime<Utc>) -> Result<PruneStats> {
        Ok(self.outbox()?.prune(sent_before))
    }
}
