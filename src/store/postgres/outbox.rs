//! `OutboxStore` for `PostgresStore`: idempotent enqueue, head-of-key claims serialized per key across replicas, completions, parking, prune.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::{PostgresStore, corrupt, count64, db, micros, sql_limit, tenant, to_json};
use crate::destination::{DeliveryError, DeliveryId};
use crate::event::Event;
use crate::message::Target;
use crate::store::{
    ClaimedDelivery, Completion, DeadLetter, DeliveryState, DestinationStats, EnqueueOutcome,
    LogEntry, LogStatus, NewDelivery, OutboxStore, Outcome, PruneStats, ScopeChange, ScopeStatus,
};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

mod sql;

use sql::*;

impl PostgresStore {
    async fn decode_claims(
        &self,
        tx: &Transaction<'_>,
        taken: Vec<Taken>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut seqs: Vec<i64> = taken.iter().map(|t| t.event).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut events: HashMap<i64, std::result::Result<Arc<Event>, String>> = HashMap::new();
        for r in tx
            .query("SELECT seq, body FROM events WHERE seq = ANY($1)", &[&seqs])
            .await
            .map_err(db("claim"))?
        {
            let body: String = r.get(1);
            let decoded = serde_json::from_str::<Event>(&body)
                .map(Arc::new)
                .map_err(|e| format!("its event cannot be decoded: {e}"));
            events.insert(r.get(0), decoded);
        }
        let tenants: Vec<&str> = taken.iter().map(|t| t.tenant.as_str()).collect();
        let scopes: Vec<&str> = taken.iter().map(|t| t.scope.as_str()).collect();
        let mut epochs: HashMap<(String, String), i64> = HashMap::new();
        for r in tx
            .query(
                "SELECT s.tenant, s.scope, s.epoch FROM scopes s \
                 JOIN unnest($1::text[], $2::text[]) AS u(t, sc) ON s.tenant = u.t AND s.scope = u.sc",
                &[&tenants, &scopes],
            )
            .await
            .map_err(db("claim"))?
        {
            epochs.insert((r.get(0), r.get(1)), r.get(2));
        }
        let mut out = Vec::with_capacity(taken.len());
        let mut health = BTreeMap::new();
        for t in taken {
            let event = events
                .get(&t.event)
                .cloned()
                .unwrap_or_else(|| Err("its event is missing".to_owned()));
            let target = serde_json::from_str::<Target>(&t.target)
                .map_err(|e| format!("its target cannot be decoded: {e}"));
            let (event, target) = match (event, target) {
                (Ok(e), Ok(g)) => (e, g),
                (Err(why), _) | (_, Err(why)) => {
                    let error = DeliveryError::Permanent {
                        reason: format!("delivery {} cannot be read from the store: {why}", t.id),
                    };
                    let text = error.to_string();
                    let json = to_json(&error)?;
                    let row = tx
                        .query_one(
                            "UPDATE deliveries SET state = 'dead', error = $2, died_at = $3, \
                             due_at = $3, lease_until = NULL, attempts = greatest(attempts - 1, 0), \
                             log_steps = log_steps + 1 WHERE id = $1 RETURNING log_steps, attempts",
                            &[&t.id, &json, &now],
                        )
                        .await
                        .map_err(db("dead-lettering an undecodable delivery"))?;
                    log(tx, t.id, row.get(0), row.get(1), now, "dead", Some(&text)).await?;
                    note(
                        &mut health,
                        &t.tenant,
                        &t.destination,
                        &t.scope,
                        false,
                        Some(&text),
                    );
                    tracing::error!(delivery = t.id, error = %error, "dead-lettered an undecodable delivery");
                    continue;
                }
            };
            let epoch = epochs
                .get(&(t.tenant.clone(), t.scope.clone()))
                .copied()
                .unwrap_or(0);
            out.push(ClaimedDelivery {
                id: t.id,
                lease: t.lease,
                event,
                route: t.route,
                destination: t.destination,
                target,
                scope: t.scope,
                key: t.key,
                attempt: u32::try_from(t.attempts).unwrap_or(0),
                scope_epoch: count64(epoch),
            });
        }
        note_health(tx, &health, now).await?;
        Ok(out)
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue(
        &self,
        event: &Event,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<EnqueueOutcome> {
        let body = to_json(event)?;
        let targets: Vec<String> = deliveries
            .iter()
            .map(|d| to_json(&d.target))
            .collect::<Result<_>>()?;
        let t = event.tenant.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("enqueue"))?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO events (tenant, id, kind, body, enqueued_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant, id) DO NOTHING RETURNING seq",
            )
            .await
            .map_err(db("enqueue"))?;
        let Some(row) = tx
            .query_opt(&stmt, &[&t, &event.id, &event.kind, &body, &now])
            .await
            .map_err(db("enqueue"))?
        else {
            return Ok(EnqueueOutcome::Duplicate);
        };
        let seq: i64 = row.get(0);
        if !deliveries.is_empty() {
            let mut scopes: Vec<&str> = deliveries.iter().map(|d| d.scope.as_str()).collect();
            scopes.sort_unstable();
            scopes.dedup();
            // Shared row locks: a concurrent disconnect of these scopes waits
            // for this enqueue, then parks what it created.
            let stmt = tx
                .prepare_cached(
                    "SELECT scope FROM scopes WHERE tenant = $1 AND scope = ANY($2) AND NOT connected \
                     ORDER BY scope FOR SHARE",
                )
                .await
                .map_err(db("enqueue"))?;
            let parked: Vec<String> = tx
                .query(&stmt, &[&t, &scopes])
                .await
                .map_err(db("enqueue"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let routes: Vec<&str> = deliveries.iter().map(|d| d.route.as_str()).collect();
            let dests: Vec<&str> = deliveries.iter().map(|d| d.destination.as_str()).collect();
            let scopes: Vec<&str> = deliveries.iter().map(|d| d.scope.as_str()).collect();
            let keys: Vec<&str> = deliveries.iter().map(|d| d.key.as_str()).collect();
            let states: Vec<&str> = deliveries
                .iter()
                .map(|d| {
                    if parked.contains(&d.scope) {
                        "parked"
                    } else {
                        "queued"
                    }
                })
                .collect();
            let stmt = tx
                .prepare_cached(
                    "WITH ins AS ( \
                       INSERT INTO deliveries (event, tenant, route, destination, target, scope, key, \
                         state, due_at, log_steps) \
                       SELECT $1, $2, u.r, u.d, u.t, u.s, u.k, u.st, $3, 1 \
                       FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                                   $9::text[]) WITH ORDINALITY AS u(r, d, t, s, k, st, n) \
                       ORDER BY u.n RETURNING id, state, scope) \
                     INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
                     SELECT ins.id, 1, 0, $3, ins.state, CASE WHEN ins.state = 'parked' THEN \
                       coalesce((SELECT reason FROM scopes WHERE tenant = $2 AND scope = ins.scope), \
                                'disconnected') END FROM ins",
                )
                .await
                .map_err(db("enqueue"))?;
            tx.execute(
                &stmt,
                &[
                    &seq, &t, &now, &routes, &dests, &targets, &scopes, &keys, &states,
                ],
            )
            .await
            .map_err(db("enqueue"))?;
        }
        tx.commit().await.map_err(db("enqueue"))?;
        Ok(EnqueueOutcome::Accepted {
            deliveries: deliveries.len(),
        })
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
        let lnow = self.lease_now(now);
        let lease_us = micros(lease);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("claim"))?;
        let stmt = tx.prepare_cached(&claim_sql()).await.map_err(db("claim"))?;
        let rows = tx
            .query(&stmt, &[&now, &lnow, &sql_limit(limit), &lease_us])
            .await
            .map_err(db("claim"))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut taken: Vec<(DateTime<Utc>, Taken)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(10),
                    Taken {
                        id: r.get(0),
                        event: r.get(1),
                        tenant: r.get(2),
                        route: r.get(3),
                        destination: r.get(4),
                        target: r.get(5),
                        scope: r.get(6),
                        key: r.get(7),
                        attempts: r.get(8),
                        lease: r.get(9),
                    },
                )
            })
            .collect();
        taken.sort_by_key(|(at, t)| (*at, t.id));
        let taken = taken.into_iter().map(|(_, t)| t).collect();
        let out = self.decode_claims(&tx, taken, now).await?;
        tx.commit().await.map_err(db("claim"))?;
        Ok(out)
    }

    async fn complete(&self, completions: &[Completion], now: DateTime<Utc>) -> Result<()> {
        if completions.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("complete"))?;
        let all: Vec<DeliveryId> = completions.iter().map(|c| c.id).collect();
        let stmt = tx
            .prepare_cached(LOCK_HEADS)
            .await
            .map_err(db("complete"))?;
        tx.execute(&stmt, &[&all]).await.map_err(db("complete"))?;
        let mut health = BTreeMap::new();
        // Deliveries sent (the common case) are finished and logged by one
        // statement for the whole batch.
        let mut ids = Vec::new();
        let mut leases = Vec::new();
        let mut remotes: Vec<Option<&str>> = Vec::new();
        for c in completions {
            if let Outcome::Sent(receipt) = &c.outcome {
                ids.push(c.id);
                leases.push(c.lease);
                remotes.push(receipt.remote_id.as_deref());
            }
        }
        if !ids.is_empty() {
            let stmt = tx
                .prepare_cached(FINISH_SENT)
                .await
                .map_err(db("complete"))?;
            for r in tx
                .query(&stmt, &[&ids, &leases, &remotes, &now])
                .await
                .map_err(db("complete"))?
            {
                let (t, d, sc): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                note(&mut health, &t, &d, &sc, true, None);
            }
        }
        for c in completions {
            let (id, lease) = (c.id, c.lease);
            match &c.outcome {
                Outcome::Sent(_) => {}
                Outcome::Retry { at, error } => {
                    if let Some(f) = finish(&tx, id, lease, "queued", *at, false, true).await? {
                        let text = error.to_string();
                        log(&tx, id, f.step, f.attempts, now, "failed", Some(&text)).await?;
                        note(
                            &mut health,
                            &f.tenant,
                            &f.destination,
                            &f.scope,
                            false,
                            Some(&text),
                        );
                    }
                }
                Outcome::Defer { until } => {
                    finish(&tx, id, lease, "queued", *until, true, false).await?;
                }
                Outcome::Snooze { until, error } => {
                    if let Some(f) = finish(&tx, id, lease, "queued", *until, true, true).await? {
                        let text = error.to_string();
                        let attempt = f.attempts.saturating_add(1);
                        log(&tx, id, f.step, attempt, now, "failed", Some(&text)).await?;
                        note(
                            &mut health,
                            &f.tenant,
                            &f.destination,
                            &f.scope,
                            false,
                            Some(&text),
                        );
                    }
                }
                Outcome::Dead { error, attempted } => {
                    let json = to_json(error)?;
                    let text = error.to_string();
                    let stmt = tx
                        .prepare_cached(FINISH_DEAD)
                        .await
                        .map_err(db("complete"))?;
                    let row = tx
                        .query_opt(&stmt, &[&id, &lease, &i32::from(!*attempted), &now, &json])
                        .await
                        .map_err(db("complete"))?;
                    if let Some(f) = row.as_ref().map(finished) {
                        log(&tx, id, f.step, f.attempts, now, "dead", Some(&text)).await?;
                        note(
                            &mut health,
                            &f.tenant,
                            &f.destination,
                            &f.scope,
                            false,
                            Some(&text),
                        );
                    }
                }
                Outcome::Parked { reason, epoch } => {
                    complete_parked(&tx, id, lease, reason, *epoch, now).await?;
                }
            }
        }
        note_health(&tx, &health, now).await?;
        tx.commit().await.map_err(db("complete"))?;
        Ok(())
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
        let (ids, leases): (Vec<i64>, Vec<i64>) = claims.iter().copied().unzip();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE deliveries d SET \
                   lease_until = coalesce($3::timestamptz, now()) + $4::int8 * interval '1 microsecond' \
                 FROM (SELECT DISTINCT id, lease FROM unnest($1::int8[], $2::int8[]) AS u(id, lease)) c \
                 WHERE d.id = c.id AND d.lease = c.lease AND d.state = 'in_flight'",
            )
            .await
            .map_err(db("renew"))?;
        client
            .execute(
                &stmt,
                &[&ids, &leases, &self.lease_now(now), &micros(lease)],
            )
            .await
            .map_err(db("renew"))
    }

    async fn release(&self, claims: &[(DeliveryId, i64)], now: DateTime<Utc>) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let (ids, leases): (Vec<i64>, Vec<i64>) = claims.iter().copied().unzip();
        let client = self.client().await?;
        client
            .execute(
                "UPDATE deliveries d SET state = 'queued', due_at = $3, lease_until = NULL, \
                   attempts = greatest(d.attempts - 1, 0) \
                 FROM (SELECT DISTINCT id, lease FROM unnest($1::int8[], $2::int8[]) AS u(id, lease)) c \
                 WHERE d.id = c.id AND d.lease = c.lease AND d.state = 'in_flight'",
                &[&ids, &leases, &now],
            )
            .await
            .map_err(db("release"))?;
        Ok(())
    }

    async fn set_scope(
        &self,
        tenant_id: &TenantId,
        scope: &str,
        change: ScopeChange,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let t = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("set_scope"))?;
        let n = match change {
            ScopeChange::Disconnect { reason, epoch } => {
                let current = scope_row(&tx, t, scope)
                    .await?
                    .map_or(0, |(e, _)| count64(e));
                if epoch.is_some_and(|seen| seen != current) {
                    0
                } else {
                    disconnect_scope(&tx, t, scope, &reason, now).await?
                }
            }
            ScopeChange::Connect => connect_scope(&tx, t, scope, now).await?,
        };
        tx.commit().await.map_err(db("set_scope"))?;
        Ok(n)
    }

    async fn scopes(&self) -> Result<Vec<ScopeStatus>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT tenant, scope, connected, reason, since, epoch FROM scopes \
                 ORDER BY tenant, scope",
                &[],
            )
            .await
            .map_err(db("scopes"))?
            .into_iter()
            .map(|r| {
                Ok(ScopeStatus {
                    tenant: tenant(r.get(0))?,
                    scope: r.get(1),
                    connected: r.get(2),
                    reason: r.get(3),
                    since: r.get(4),
                    epoch: count64(r.get(5)),
                })
            })
            .collect()
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT min(due_at) FROM key_heads")
            .await
            .map_err(db("next_due"))?;
        let row = client.query_one(&stmt, &[]).await.map_err(db("next_due"))?;
        Ok(row.get(0))
    }

    async fn pending(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM deliveries WHERE state IN ('queued', 'in_flight')",
                &[],
            )
            .await
            .map_err(db("pending"))?;
        Ok(count64(row.get(0)))
    }

    async fn dead_letters(
        &self,
        tenant_id: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let t = tenant_id.map(TenantId::as_str);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT d.id, d.tenant, e.id, e.kind, d.route, d.destination, d.target, \
                   d.attempts, d.error, d.died_at \
                 FROM deliveries d LEFT JOIN events e ON e.seq = d.event \
                 WHERE d.state = 'dead' AND ($1::text IS NULL OR d.tenant = $1) \
                 ORDER BY d.died_at, d.id LIMIT $2",
                &[&t, &sql_limit(limit)],
            )
            .await
            .map_err(db("dead_letters"))?;
        rows.into_iter()
            .map(|r| {
                let target: String = r.get(6);
                let error: Option<String> = r.get(8);
                let died_at: Option<DateTime<Utc>> = r.get(9);
                Ok(DeadLetter {
                    id: r.get(0),
                    tenant: tenant(r.get(1))?,
                    event_id: r.get::<_, Option<String>>(2).unwrap_or_default(),
                    event_kind: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    route: r.get(4),
                    destination: r.get(5),
                    target: serde_json::from_str::<Target>(&target)
                        .unwrap_or(Target::ChannelId { id: target }),
                    attempts: u32::try_from(r.get::<_, i32>(7)).unwrap_or(0),
                    error: stored_error(error),
                    died_at: died_at.unwrap_or(DateTime::UNIX_EPOCH),
                })
            })
            .collect()
    }

    async fn replay(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("replay"))?;
        let row = tx
            .query_opt(
                "UPDATE deliveries SET state = 'queued', attempts = 0, due_at = $2, \
                 error = NULL, died_at = NULL, log_steps = log_steps + 1 \
                 WHERE id = $1 AND state = 'dead' RETURNING log_steps",
                &[&id, &now],
            )
            .await
            .map_err(db("replay"))?;
        let Some(row) = row else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("delivery {id} is not a dead letter"),
            ));
        };
        log(&tx, id, row.get(0), 0, now, "queued", Some("replayed")).await?;
        tx.commit().await.map_err(db("replay"))?;
        Ok(())
    }

    async fn delivery_log(&self, id: DeliveryId) -> Result<Vec<LogEntry>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT attempt, at, status, detail FROM delivery_log \
                 WHERE delivery_id = $1 ORDER BY step",
                &[&id],
            )
            .await
            .map_err(db("delivery_log"))?
            .into_iter()
            .map(|r| {
                let status: String = r.get(2);
                Ok(LogEntry {
                    delivery_id: id,
                    attempt: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                    at: r.get(1),
                    status: LogStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("unknown stored log status {status:?}")))?,
                    detail: r.get(3),
                })
            })
            .collect()
    }

    async fn delivery_state(&self, id: DeliveryId) -> Result<Option<DeliveryState>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT state FROM deliveries WHERE id = $1", &[&id])
            .await
            .map_err(db("delivery_state"))?;
        row.map(|r| {
            let s: String = r.get(0);
            DeliveryState::parse(&s).ok_or_else(|| corrupt(format!("unknown stored state {s:?}")))
        })
        .transpose()
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>> {
        let client = self.client().await?;
        let mut map: BTreeMap<(String, String), DestinationStats> = BTreeMap::new();
        for r in client
            .query(
                "SELECT tenant, destination, scope, last_success_at, last_error, last_error_at, sent \
                 FROM destination_health",
                &[],
            )
            .await
            .map_err(db("destination_stats"))?
        {
            let t: String = r.get(0);
            let destination: String = r.get(1);
            map.insert(
                (t.clone(), destination.clone()),
                DestinationStats {
                    tenant: tenant(t)?,
                    destination,
                    scope: r.get(2),
                    last_success_at: r.get(3),
                    last_error: r.get(4),
                    last_error_at: r.get(5),
                    sent: count64(r.get(6)),
                    ..DestinationStats::default()
                },
            );
        }
        for r in client
            .query(
                "SELECT tenant, destination, min(scope), state, count(*) FROM deliveries \
                 WHERE state IN ('queued', 'in_flight', 'parked', 'dead') \
                 GROUP BY tenant, destination, state",
                &[],
            )
            .await
            .map_err(db("destination_stats"))?
        {
            let t: String = r.get(0);
            let destination: String = r.get(1);
            let scope: String = r.get(2);
            let state: String = r.get(3);
            let n = count64(r.get(4));
            let entry = match map.entry((t.clone(), destination.clone())) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(DestinationStats {
                    tenant: tenant(t)?,
                    destination,
                    scope,
                    ..DestinationStats::default()
                }),
            };
            match state.as_str() {
                "parked" => entry.parked += n,
                "dead" => entry.dead += n,
                _ => entry.queued += n,
            }
        }
        Ok(map.into_values().collect())
    }

    async fn prune(&self, sent_before: DateTime<Utc>) -> Result<PruneStats> {
        let mut total = PruneStats::default();
        let client = self.client().await?;
        loop {
            let deliveries = client
                .execute(
                    "WITH doomed AS (SELECT id FROM deliveries \
                       WHERE state = 'sent' AND due_at < $1 LIMIT $2), \
                     gone_log AS (DELETE FROM delivery_log l USING doomed \
                       WHERE l.delivery_id = doomed.id) \
                     DELETE FROM deliveries d USING doomed WHERE d.id = doomed.id",
                    &[&sent_before, &PRUNE_CHUNK],
                )
                .await
                .map_err(db("prune"))?;
            let events = client
                .execute(
                    "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e \
                       WHERE e.enqueued_at < $1 AND NOT EXISTS \
                         (SELECT 1 FROM deliveries d WHERE d.event = e.seq) LIMIT $2)",
                    &[&sent_before, &PRUNE_CHUNK],
                )
                .await
                .map_err(db("prune"))?;
            total.deliveries += deliveries;
            total.events += events;
            let chunk = count64(PRUNE_CHUNK);
            if deliveries < chunk && events < chunk {
                return Ok(total);
            }
        }
    }
}

/// Deliveries (and events) removed per prune statement.
const PRUNE_CHUNK: i64 = 2000;

/// Decodes a dead letter's stored error.
fn stored_error(json: Option<String>) -> DeliveryError {
    match json {
        Some(text) => serde_json::from_str::<DeliveryError>(&text)
            .unwrap_or(DeliveryError::Permanent { reason: text }),
        None => DeliveryError::Permanent {
            reason: "no error was recorded".to_owned(),
        },
    }
}
