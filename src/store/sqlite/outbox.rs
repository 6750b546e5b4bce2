//! `OutboxStore` for `SqliteStore`: writes go to the writer thread (see `outbox_rows`), reads to the reader connection.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::outbox_rows::{self, Apply, INSERT_LOG, NewEvent, NewRow, PRUNE_CHUNK, stored_error};
use super::writer::CompleteJob;
use super::{
    Db, SqliteStore, corrupt, count, count64, millis, opt_time, plus, sql_limit, state, tenant,
    time, to_json, with_context,
};
use crate::destination::DeliveryId;
use crate::event::Event;
use crate::message::Target;
use crate::store::{
    ClaimedDelivery, Completion, DeadLetter, DeliveryState, DestinationStats, EnqueueOutcome,
    LogEntry, LogStatus, NewDelivery, OutboxStore, PruneStats, ScopeChange, ScopeStatus,
};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome> {
        // JSON is encoded here, so only SQL runs on the writer thread.
        let new = NewEvent {
            tenant: event.tenant.as_str().to_owned(),
            id: event.id.clone(),
            kind: event.kind.clone(),
            body: to_json(event)?,
        };
        let rows: Vec<NewRow> = deliveries
            .iter()
            .map(|d| {
                Ok(NewRow {
                    route: d.route.clone(),
                    destination: d.destination.clone(),
                    target: to_json(&d.target)?,
                    scope: d.scope.clone(),
                    key: d.key.clone(),
                })
            })
            .collect::<Result<_>>()?;
        let now = millis(now);
        self.write("enqueue", move |conn| {
            outbox_rows::enqueue_rows(conn, &new, &rows, now)
        })
        .await
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = millis(now);
        let until = plus(now, lease);
        let limit = sql_limit(limit);
        self.write("claim", move |conn| {
            outbox_rows::claim_rows(conn, now, until, limit)
        })
        .await
    }

    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()> {
        if completions.is_empty() {
            return Ok(());
        }
        let applies: Vec<Apply> = completions
            .iter()
            .map(|c| Apply::new(c.id, c.lease, &c.outcome))
            .collect::<Result<_>>()?;
        // Sent as its own kind of request, so the writer applies concurrent
        // completions (the engine records each delivery's on its own) together.
        self.send_job("complete", |reply| {
            Box::new(CompleteJob::new(applies, millis(now), reply))
        })
        .await
    }

    async fn renew(
        &self,
        claims: &[(DeliveryId, i64)],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<u64> {
        if claims.is_empty() {
            return Ok(0);
        }
        let claims = claims.to_vec();
        let until = plus(millis(now), lease);
        self.write("renew", move |conn| {
            outbox_rows::renew_rows(conn, &claims, until)
        })
        .await
    }

    async fn release(&self, claims: &[(DeliveryId, i64)], now: DateTime<Utc>) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let claims = claims.to_vec();
        let now = millis(now);
        self.write("release", move |conn| {
            outbox_rows::release_rows(conn, &claims, now)
        })
        .await
    }

    async fn set_scope(
        &self,
        tenant: &TenantId,
        scope: &str,
        change: ScopeChange,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let tenant = tenant.as_str().to_owned();
        let scope = scope.to_owned();
        let now = millis(now);
        self.write_long("set_scope", move |conn| match change {
            ScopeChange::Disconnect { reason, epoch } => {
                outbox_rows::set_disconnected(conn, &tenant, &scope, &reason, epoch, now)
            }
            ScopeChange::Connect => outbox_rows::set_connected(conn, &tenant, &scope, now),
        })
        .await
    }

    async fn scopes(&self) -> Result<Vec<ScopeStatus>> {
        self.read("scopes", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tenant, scope, connected, reason, since, epoch FROM scopes \
                 ORDER BY tenant, scope",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(ScopeStatus {
                    tenant: tenant(row.get(0)?)?,
                    scope: row.get(1)?,
                    connected: row.get(2)?,
                    reason: row.get(3)?,
                    since: time(row.get(4)?)?,
                    epoch: count64(row.get(5)?)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        self.read("next_due", |conn| {
            let due: Option<i64> = conn
                .prepare_cached("SELECT min(due_at) FROM key_heads")?
                .query_row([], |r| r.get(0))?;
            opt_time(due)
        })
        .await
    }

    async fn pending(&self) -> Result<u64> {
        self.read("pending", |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM deliveries INDEXED BY deliveries_pending \
                     WHERE state IN ('queued', 'in_flight')",
                )?
                .query_row([], |r| r.get(0))?;
            count64(n)
        })
        .await
    }

    async fn dead_letters(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        let limit = sql_limit(limit);
        self.read("dead_letters", move |conn| {
            dead_letter_rows(conn, tenant.as_deref(), limit)
        })
        .await
    }

    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()> {
        let now = millis(now);
        self.write("replay", move |conn| {
            let step: Option<i64> = conn
                .prepare_cached(
                    "UPDATE deliveries SET state = 'queued', attempts = 0, due_at = ?2, \
                     error = NULL, died_at = NULL, log_steps = log_steps + 1 \
                     WHERE id = ?1 AND state = 'dead' RETURNING log_steps",
                )?
                .query_row(params![id, now], |r| r.get(0))
                .optional()?;
            let Some(step) = step else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("delivery {id} is not a dead letter"),
                )
                .into());
            };
            conn.prepare_cached(INSERT_LOG)?
                .execute(params![id, step, 0, now, "queued", "replayed"])?;
            Ok(())
        })
        .await
    }

    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>> {
        self.read("delivery_log", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT attempt, at, status, detail FROM delivery_log \
                 WHERE delivery_id = ?1 ORDER BY step",
            )?;
            let mut rows = stmt.query(params![id])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let status: String = row.get(2)?;
                out.push(LogEntry {
                    delivery_id: id,
                    attempt: count(row.get(0)?)?,
                    at: time(row.get(1)?)?,
                    status: LogStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("unknown stored log status {status:?}")))?,
                    detail: row.get(3)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>> {
        self.read("delivery_state", move |conn| {
            let s: Option<String> = conn
                .prepare_cached("SELECT state FROM deliveries WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            s.as_deref().map(state).transpose()
        })
        .await
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>> {
        self.read("destination_stats", destination_stats_rows).await
    }

    async fn prune(&self, sent_before: DateTime<Utc>) -> Result<PruneStats> {
        let before = millis(sent_before);
        let mut total = PruneStats::default();
        // In chunks, each its own transaction, so other writers are not held up.
        loop {
            let s = self
                .write_long("prune", move |conn| outbox_rows::prune_rows(conn, before))
                .await
                .map_err(|e| with_context(e, "prune"))?;
            total.deliveries += s.deliveries;
            total.events += s.events;
            let chunk = u64::try_from(PRUNE_CHUNK).unwrap_or(u64::MAX);
            if s.deliveries < chunk && s.events < chunk {
                return Ok(total);
            }
        }
    }
}

fn dead_letter_rows(conn: &Connection, tenant_id: Option<&str>, limit: i64) -> Db<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.tenant, e.id, e.kind, d.route, d.destination, d.target, d.attempts, \
           d.error, d.died_at \
         FROM deliveries d LEFT JOIN events e ON e.seq = d.event \
         WHERE d.state = 'dead' AND (?1 IS NULL OR d.tenant = ?1) \
         ORDER BY d.died_at, d.id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![tenant_id, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: DeliveryId = row.get(0)?;
        let target: String = row.get(6)?;
        let died_at: Option<i64> = row.get(9)?;
        out.push(DeadLetter {
            id,
            tenant: tenant(row.get(1)?)?,
            event_id: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            event_kind: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
            route: row.get(4)?,
            destination: row.get(5)?,
            // A target this version cannot read (the likely reason it died) is
            // listed by its stored text, so the dead letter stays visible.
            target: serde_json::from_str::<Target>(&target)
                .unwrap_or(Target::ChannelId { id: target }),
            attempts: count(row.get(7)?)?,
            error: stored_error(row.get(8)?),
            died_at: time(died_at.unwrap_or(0))?,
        });
    }
    Ok(out)
}

fn destination_stats_rows(conn: &Connection) -> Db<Vec<DestinationStats>> {
    let mut map: BTreeMap<(String, String), DestinationStats> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT tenant, destination, scope, last_success_at, last_error, last_error_at, sent \
         FROM destination_health",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let t: String = row.get(0)?;
        let destination: String = row.get(1)?;
        map.insert(
            (t.clone(), destination.clone()),
            DestinationStats {
                tenant: tenant(t)?,
                destination,
                scope: row.get(2)?,
                last_success_at: opt_time(row.get(3)?)?,
                last_error: row.get(4)?,
                last_error_at: opt_time(row.get(5)?)?,
                sent: count64(row.get(6)?)?,
                ..DestinationStats::default()
            },
        );
    }
    // Counted from the partial indexes: proportional to what is pending, parked
    // or dead, not to the history of sent deliveries.
    let mut stmt = conn.prepare_cached(
        "SELECT tenant, destination, scope, 'queued', count(*) \
           FROM deliveries INDEXED BY deliveries_pending \
           WHERE state IN ('queued', 'in_flight') GROUP BY tenant, destination, scope \
         UNION ALL SELECT tenant, destination, scope, 'parked', count(*) FROM deliveries \
           WHERE state = 'parked' GROUP BY tenant, destination, scope \
         UNION ALL SELECT tenant, destination, scope, 'dead', count(*) FROM deliveries \
           WHERE state = 'dead' GROUP BY tenant, destination, scope",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let t: String = row.get(0)?;
        let destination: String = row.get(1)?;
        let scope: String = row.get(2)?;
        let s: String = row.get(3)?;
        let n = count64(row.get(4)?)?;
        let entry = match map.entry((t.clone(), destination.clone())) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(DestinationStats {
                tenant: tenant(t)?,
                destination,
                scope,
                ..DestinationStats::default()
            }),
        };
        match state(&s)? {
            DeliveryState::Queued | DeliveryState::InFlight => entry.queued += n,
            DeliveryState::Parked => entry.parked += n,
            DeliveryState::Dead => entry.dead += n,
            DeliveryState::Sent => entry.sent += n,
        }
    }
    Ok(map.into_values().collect())
}
