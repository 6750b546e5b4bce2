//! The outbox's SQL on the writer thread: enqueue, head-of-key claims, completions, parking per (tenant, scope), prune.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Db, changed, from_json};
use crate::destination::{DeliveryError, DeliveryId};
use crate::event::Event;
use crate::message::Target;
use crate::store::{ClaimedDelivery, EnqueueOutcome, Outcome, PruneStats};

pub(super) const INSERT_LOG: &str = "INSERT INTO delivery_log \
     (delivery_id, step, attempt, at, status, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// A delivery to insert, encoded off the writer thread.
pub(super) struct NewRow {
    pub route: String,
    pub destination: String,
    pub target: String,
    pub scope: String,
    pub key: String,
}

/// An event to insert, encoded off the writer thread.
pub(super) struct NewEvent {
    pub tenant: String,
    pub id: String,
    pub kind: String,
    pub body: String,
}

/// Whether a (tenant, scope) is disconnected, and why.
fn scope_parked(conn: &Connection, tenant: &str, scope: &str) -> Db<Option<String>> {
    let row: Option<(bool, Option<String>)> = conn
        .prepare_cached("SELECT connected, reason FROM scopes WHERE tenant = ?1 AND scope = ?2")?
        .query_row(params![tenant, scope], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((false, reason)) => Some(reason.unwrap_or_else(|| "disconnected".to_owned())),
        _ => None,
    })
}

pub(super) fn enqueue_rows(
    conn: &Connection,
    event: &NewEvent,
    rows: &[NewRow],
    now: i64,
) -> Db<EnqueueOutcome> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(id) FROM deliveries")?
        .query_row([], |r| r.get(0))?;
    let first = last.unwrap_or(0).saturating_add(1);
    let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let seq: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO events (tenant, id, kind, body, enqueued_at, first_delivery, deliveries) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, id) DO NOTHING RETURNING seq",
        )?
        .query_row(
            params![
                event.tenant,
                event.id,
                event.kind,
                event.body,
                now,
                first,
                n
            ],
            |r| r.get(0),
        )
        .optional()?;
    let Some(seq) = seq else {
        return Ok(EnqueueOutcome::Duplicate);
    };
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, event, tenant, route, destination, target, scope, key, \
           state, due_at, log_steps) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1)",
    )?;
    let mut log = conn.prepare_cached(INSERT_LOG)?;
    let mut parked: HashMap<&str, Option<String>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let id = first.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
        let reason = match parked.get(row.scope.as_str()) {
            Some(r) => r.clone(),
            None => {
                let r = scope_parked(conn, &event.tenant, &row.scope)?;
                parked.insert(&row.scope, r.clone());
                r
            }
        };
        let (state, status) = if reason.is_some() {
            ("parked", "parked")
        } else {
            ("queued", "queued")
        };
        insert.execute(params![
            id,
            seq,
            event.tenant,
            row.route,
            row.destination,
            row.target,
            row.scope,
            row.key,
            state,
            now
        ])?;
        log.execute(params![id, 1, 0, now, status, reason])?;
    }
    Ok(EnqueueOutcome::Accepted {
        deliveries: rows.len(),
    })
}

// --- claims ---

struct Head {
    id: DeliveryId,
    event: i64,
    tenant: String,
    route: String,
    destination: String,
    target: String,
    scope: String,
    key: String,
    attempts: i64,
}

/// Claims the due heads of their keys with one UPDATE per batch (the triggers move
/// each head's due time to its lease); rows that cannot be decoded are
/// dead-lettered instead, in the same transaction.
pub(super) fn claim_rows(
    conn: &Connection,
    now: i64,
    until: i64,
    limit: i64,
) -> Db<Vec<ClaimedDelivery>> {
    // The order of the claim (due time, then id) — RETURNING has only the new
    // due times.
    let rank: HashMap<DeliveryId, usize> = conn
        .prepare_cached(
            "SELECT delivery FROM key_heads WHERE due_at <= ?1 ORDER BY due_at, delivery LIMIT ?2",
        )?
        .query_map(params![now, limit], |r| r.get::<_, DeliveryId>(0))?
        .enumerate()
        .map(|(i, id)| id.map(|id| (id, i)))
        .collect::<rusqlite::Result<_>>()?;
    if rank.is_empty() {
        return Ok(Vec::new());
    }
    let mut heads: Vec<(Head, i64)> = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'in_flight', due_at = ?2, lease = lease + 1, \
               attempts = attempts + 1 \
             WHERE id IN (SELECT delivery FROM key_heads WHERE due_at <= ?1 \
                          ORDER BY due_at, delivery LIMIT ?3) \
               AND state IN ('queued', 'in_flight') \
             RETURNING id, event, tenant, route, destination, target, scope, key, attempts, lease",
        )?
        .query_map(params![now, until, limit], |r| {
            let attempts: i64 = r.get(8)?;
            Ok((
                Head {
                    id: r.get(0)?,
                    event: r.get(1)?,
                    tenant: r.get(2)?,
                    route: r.get(3)?,
                    destination: r.get(4)?,
                    target: r.get(5)?,
                    scope: r.get(6)?,
                    key: r.get(7)?,
                    // Before this claim (what a dead letter reports).
                    attempts: attempts.saturating_sub(1),
                },
                r.get(9)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    heads.sort_unstable_by_key(|(h, _)| rank.get(&h.id).copied().unwrap_or(usize::MAX));
    let mut body = conn.prepare_cached("SELECT body FROM events WHERE seq = ?1")?;
    let mut epoch_of =
        conn.prepare_cached("SELECT epoch FROM scopes WHERE tenant = ?1 AND scope = ?2")?;
    // Deliveries of one event share one decoded copy (or one decoding error).
    let mut events: HashMap<i64, std::result::Result<Arc<Event>, String>> = HashMap::new();
    let mut epochs: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::with_capacity(heads.len());
    for (head, lease) in heads {
        let event = match events.get(&head.event) {
            Some(e) => e.clone(),
            None => {
                let text: Option<String> = body
                    .query_row(params![head.event], |r| r.get(0))
                    .optional()?;
                let decoded = match text {
                    None => Err("its event is missing".to_owned()),
                    Some(text) => serde_json::from_str::<Event>(&text)
                        .map(Arc::new)
                        .map_err(|e| format!("its event cannot be decoded: {e}")),
                };
                events.insert(head.event, decoded.clone());
                decoded
            }
        };
        let target = serde_json::from_str::<Target>(&head.target)
            .map_err(|e| format!("its target cannot be decoded: {e}"));
        let (event, target) = match (event, target) {
            (Ok(event), Ok(target)) => (event, target),
            (Err(why), _) | (_, Err(why)) => {
                let error = DeliveryError::Permanent {
                    reason: format!("delivery {} cannot be read from the store: {why}", head.id),
                };
                dead_letter(conn, &head, &error, now)?;
                continue;
            }
        };
        let scope_key = (head.tenant, head.scope);
        let scope_epoch = match epochs.get(&scope_key) {
            Some(e) => *e,
            None => {
                let e: Option<i64> = epoch_of
                    .query_row(params![scope_key.0, scope_key.1], |r| r.get(0))
                    .optional()?;
                let e = u64::try_from(e.unwrap_or(0)).unwrap_or(0);
                epochs.insert(scope_key.clone(), e);
                e
            }
        };
        out.push(ClaimedDelivery {
            id: head.id,
            lease,
            event,
            route: head.route,
            destination: head.destination,
            target,
            scope: scope_key.1,
            key: head.key,
            attempt: u32::try_from(head.attempts.saturating_add(1)).unwrap_or(u32::MAX),
            scope_epoch,
        });
    }
    Ok(out)
}

/// Dead-letters a row that cannot be decoded (not attempted).
fn dead_letter(conn: &Connection, head: &Head, error: &DeliveryError, now: i64) -> Db<()> {
    let json = serde_json::to_string(error)?;
    let text = error.to_string();
    let step: i64 = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'dead', error = ?2, died_at = ?3, due_at = ?3, \
             attempts = ?4, log_steps = log_steps + 1 WHERE id = ?1 RETURNING log_steps",
        )?
        .query_row(params![head.id, json, now, head.attempts], |r| r.get(0))?;
    conn.prepare_cached(INSERT_LOG)?.execute(params![
        head.id,
        step,
        head.attempts,
        now,
        "dead",
        text
    ])?;
    note_health(
        conn,
        &head.tenant,
        &head.destination,
        &head.scope,
        &Health {
            sent: 0,
            error: Some(text),
        },
        now,
    )?;
    tracing::error!(delivery = head.id, error = %error, "dead-lettered an undecodable delivery");
    Ok(())
}

// --- completions ---

/// A completion, encoded off the writer thread.
pub(super) struct Apply {
    pub id: DeliveryId,
    pub lease: i64,
    pub kind: ApplyKind,
}

pub(super) enum ApplyKind {
    Sent {
        remote_id: Option<String>,
    },
    Retry {
        at: i64,
        error: String,
    },
    Defer {
        until: i64,
    },
    Snooze {
        until: i64,
        error: String,
    },
    Dead {
        json: String,
        text: String,
        attempted: bool,
    },
    Parked {
        reason: String,
        epoch: u64,
    },
}

impl Apply {
    pub(super) fn new(id: DeliveryId, lease: i64, outcome: &Outcome) -> crate::Result<Apply> {
        let kind = match outcome {
            Outcome::Sent(receipt) => ApplyKind::Sent {
                remote_id: receipt.remote_id.clone(),
            },
            Outcome::Retry { at, error } => ApplyKind::Retry {
                at: super::millis(*at),
                error: error.to_string(),
            },
            Outcome::Defer { until } => ApplyKind::Defer {
                until: super::millis(*until),
            },
            Outcome::Snooze { until, error } => ApplyKind::Snooze {
                until: super::millis(*until),
                error: error.to_string(),
            },
            Outcome::Dead { error, attempted } => ApplyKind::Dead {
                json: super::to_json(error)?,
                text: error.to_string(),
                attempted: *attempted,
            },
            Outcome::Parked { reason, epoch } => ApplyKind::Parked {
                reason: reason.clone(),
                epoch: *epoch,
            },
        };
        Ok(Apply { id, lease, kind })
    }
}

/// What one (tenant, destination) saw in a batch of completions.
#[derive(Default)]
struct Health {
    sent: i64,
    error: Option<String>,
}

fn note_health(
    conn: &Connection,
    tenant: &str,
    destination: &str,
    scope: &str,
    h: &Health,
    now: i64,
) -> Db<()> {
    let success = (h.sent > 0).then_some(now);
    let error_at = h.error.as_ref().map(|_| now);
    conn.prepare_cached(
        "INSERT INTO destination_health \
           (tenant, destination, scope, last_success_at, last_error, last_error_at, sent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (tenant, destination) DO UPDATE SET \
           scope = excluded.scope, sent = sent + excluded.sent, \
           last_success_at = coalesce(excluded.last_success_at, last_success_at), \
           last_error = CASE WHEN excluded.last_error_at IS NULL THEN last_error \
                             ELSE excluded.last_error END, \
           last_error_at = coalesce(excluded.last_error_at, last_error_at)",
    )?
    .execute(params![
        tenant,
        destination,
        scope,
        success,
        h.error,
        error_at,
        h.sent
    ])?;
    Ok(())
}

// Each UPDATE only matches an in-flight row still holding this lease; no row
// means the completion is stale and is ignored. `?4` is how many attempts to
// give back (0 or 1).
const FINISH: &str = "UPDATE deliveries SET state = ?3, due_at = ?5, \
     attempts = max(attempts - ?4, 0), log_steps = log_steps + ?6 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, tenant, destination, scope, log_steps";
const FINISH_DEAD: &str = "UPDATE deliveries SET state = 'dead', due_at = ?4, died_at = ?4, \
     attempts = max(attempts - ?3, 0), error = ?5, log_steps = log_steps + 1 \
     WHERE id = ?1 AND lease = ?2 AND state = 'in_flight' \
     RETURNING attempts, tenant, destination, scope, log_steps";

/// What a completion's UPDATE returns.
struct Finished {
    attempts: i64,
    tenant: String,
    destination: String,
    scope: String,
    step: i64,
}

fn finished(r: &rusqlite::Row<'_>) -> rusqlite::Result<Finished> {
    Ok(Finished {
        attempts: r.get(0)?,
        tenant: r.get(1)?,
        destination: r.get(2)?,
        scope: r.get(3)?,
        step: r.get(4)?,
    })
}

/// Moves an in-flight row to `state`; `give_back` returns the claim's attempt;
/// `logged` says whether a log entry follows.
fn finish(
    conn: &Connection,
    a: &Apply,
    state: &str,
    due: i64,
    give_back: bool,
    logged: bool,
) -> Db<Option<Finished>> {
    Ok(conn
        .prepare_cached(FINISH)?
        .query_row(
            params![
                a.id,
                a.lease,
                state,
                i64::from(give_back),
                due,
                i64::from(logged)
            ],
            finished,
        )
        .optional()?)
}

/// Applies completions, each group at its time; one health update per
/// (tenant, destination) at the end.
pub(super) fn complete_rows(conn: &Connection, groups: &[(&[Apply], i64)]) -> Db<()> {
    let mut log = conn.prepare_cached(INSERT_LOG)?;
    let mut health: BTreeMap<(String, String), (String, Health, i64)> = BTreeMap::new();
    let mut note = |f: &Finished, sent: bool, error: Option<&str>, now: i64| {
        let entry = health
            .entry((f.tenant.clone(), f.destination.clone()))
            .or_insert_with(|| (f.scope.clone(), Health::default(), now));
        entry.2 = entry.2.max(now);
        if sent {
            entry.1.sent += 1;
        }
        if let Some(e) = error {
            entry.1.error = Some(e.to_owned());
        }
    };
    for (a, now) in groups
        .iter()
        .flat_map(|(applies, now)| applies.iter().map(move |a| (a, *now)))
    {
        match &a.kind {
            ApplyKind::Sent { remote_id } => {
                if let Some(f) = finish(conn, a, "sent", now, false, true)? {
                    log.execute(params![a.id, f.step, f.attempts, now, "sent", remote_id])?;
                    note(&f, true, None, now);
                }
            }
            ApplyKind::Retry { at, error } => {
                if let Some(f) = finish(conn, a, "queued", *at, false, true)? {
                    log.execute(params![a.id, f.step, f.attempts, now, "failed", error])?;
                    note(&f, false, Some(error), now);
                }
            }
            ApplyKind::Defer { until } => {
                finish(conn, a, "queued", *until, true, false)?;
            }
            ApplyKind::Snooze { until, error } => {
                if let Some(f) = finish(conn, a, "queued", *until, true, true)? {
                    // Logged under the claim's attempt number.
                    let attempt = f.attempts + 1;
                    log.execute(params![a.id, f.step, attempt, now, "failed", error])?;
                    note(&f, false, Some(error), now);
                }
            }
            ApplyKind::Dead {
                json,
                text,
                attempted,
            } => {
                let f = conn
                    .prepare_cached(FINISH_DEAD)?
                    .query_row(
                        params![a.id, a.lease, i64::from(!*attempted), now, json],
                        finished,
                    )
                    .optional()?;
                if let Some(f) = f {
                    log.execute(params![a.id, f.step, f.attempts, now, "dead", text])?;
                    note(&f, false, Some(text), now);
                }
            }
            ApplyKind::Parked { reason, epoch } => {
                complete_parked(conn, a, reason, *epoch, now)?;
            }
        }
    }
    for ((tenant, destination), (scope, h, now)) in &health {
        note_health(conn, tenant, destination, scope, h, *now)?;
    }
    Ok(())
}

/// The epoch and connectedness of a (tenant, scope), if recorded.
fn scope_row(conn: &Connection, tenant: &str, scope: &str) -> Db<Option<(u64, bool)>> {
    let row: Option<(i64, bool)> = conn
        .prepare_cached("SELECT epoch, connected FROM scopes WHERE tenant = ?1 AND scope = ?2")?
        .query_row(params![tenant, scope], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(e, c)| (u64::try_from(e).unwrap_or(0), c)))
}

/// `Parked`, fenced by the scope's epoch: a park from before a reconnect
/// re-queues the delivery; otherwise it parks it, marks the scope
/// disconnected (if it is not already) and parks the scope's queued
/// deliveries (those retried or released since it was disconnected too).
fn complete_parked(conn: &Connection, a: &Apply, reason: &str, epoch: u64, now: i64) -> Db<()> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT tenant, scope FROM deliveries \
             WHERE id = ?1 AND lease = ?2 AND state = 'in_flight'",
        )?
        .query_row(params![a.id, a.lease], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((tenant, scope)) = row else {
        return Ok(());
    };
    let current = scope_row(conn, &tenant, &scope)?;
    if current.is_some_and(|(e, _)| e > epoch) {
        // Reconnected since the worker looked: try again now.
        finish(conn, a, "queued", now, true, false)?;
        return Ok(());
    }
    if let Some(f) = finish(conn, a, "parked", now, true, true)? {
        conn.prepare_cached(INSERT_LOG)?
            .execute(params![a.id, f.step, 0, now, "parked", reason])?;
    }
    disconnect_scope(conn, &tenant, &scope, reason, now)?;
    Ok(())
}

/// Marks a (tenant, scope) disconnected (keeping the time it first was) and
/// parks its queued deliveries; returns how many were parked.
fn disconnect_scope(
    conn: &Connection,
    tenant: &str,
    scope: &str,
    reason: &str,
    now: i64,
) -> Db<u64> {
    conn.prepare_cached(
        "INSERT INTO scopes (tenant, scope, connected, reason, since, epoch) \
         VALUES (?1, ?2, 0, ?3, ?4, 0) \
         ON CONFLICT (tenant, scope) DO UPDATE SET reason = excluded.reason, \
           since = CASE WHEN connected THEN excluded.since ELSE since END, connected = 0",
    )?
    .execute(params![tenant, scope, reason, now])?;
    // The repeated state terms let SQLite use the partial index of pending rows.
    conn.prepare_cached(
        "INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
         SELECT id, log_steps + 1, 0, ?3, 'parked', ?4 FROM deliveries INDEXED BY deliveries_pending \
         WHERE state IN ('queued', 'in_flight') AND state = 'queued' \
           AND tenant = ?1 AND scope = ?2",
    )?
    .execute(params![tenant, scope, now, reason])?;
    let n = conn
        .prepare_cached(
            "UPDATE deliveries INDEXED BY deliveries_pending \
             SET state = 'parked', due_at = ?3, log_steps = log_steps + 1 \
             WHERE state IN ('queued', 'in_flight') AND state = 'queued' \
               AND tenant = ?1 AND scope = ?2",
        )?
        .execute(params![tenant, scope, now])?;
    Ok(changed(n))
}

/// `ScopeChange::Disconnect`, fenced by `epoch` when given.
pub(super) fn set_disconnected(
    conn: &Connection,
    tenant: &str,
    scope: &str,
    reason: &str,
    epoch: Option<u64>,
    now: i64,
) -> Db<u64> {
    if let Some(seen) = epoch {
        let current = scope_row(conn, tenant, scope)?.map_or(0, |(e, _)| e);
        if current != seen {
            return Ok(0);
        }
    }
    disconnect_scope(conn, tenant, scope, reason, now)
}

/// `ScopeChange::Connect`: connected, epoch bumped, parked deliveries
/// re-queued due now (their ids keep their order).
pub(super) fn set_connected(conn: &Connection, tenant: &str, scope: &str, now: i64) -> Db<u64> {
    conn.prepare_cached(
        "INSERT INTO scopes (tenant, scope, connected, reason, since, epoch) \
         VALUES (?1, ?2, 1, NULL, ?3, 1) \
         ON CONFLICT (tenant, scope) DO UPDATE SET reason = NULL, \
           since = CASE WHEN connected THEN since ELSE excluded.since END, \
           connected = 1, epoch = epoch + 1",
    )?
    .execute(params![tenant, scope, now])?;
    conn.prepare_cached(
        "INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
         SELECT id, log_steps + 1, 0, ?3, 'queued', 'reconnected' FROM deliveries \
         WHERE state = 'parked' AND tenant = ?1 AND scope = ?2",
    )?
    .execute(params![tenant, scope, now])?;
    let n = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'queued', due_at = ?3, log_steps = log_steps + 1 \
             WHERE state = 'parked' AND tenant = ?1 AND scope = ?2",
        )?
        .execute(params![tenant, scope, now])?;
    Ok(changed(n))
}

// --- leases ---

pub(super) fn renew_rows(conn: &Connection, claims: &[(DeliveryId, i64)], until: i64) -> Db<u64> {
    let mut renew = conn.prepare_cached(
        "UPDATE deliveries SET due_at = ?3 WHERE id = ?1 AND lease = ?2 AND state = 'in_flight'",
    )?;
    let mut held = 0;
    for (id, lease) in claims {
        held += changed(renew.execute(params![id, lease, until])?);
    }
    Ok(held)
}

pub(super) fn release_rows(conn: &Connection, claims: &[(DeliveryId, i64)], now: i64) -> Db<()> {
    let mut release = conn.prepare_cached(
        "UPDATE deliveries SET state = 'queued', due_at = ?3, attempts = max(attempts - 1, 0) \
         WHERE id = ?1 AND lease = ?2 AND state = 'in_flight'",
    )?;
    for (id, lease) in claims {
        release.execute(params![id, lease, now])?;
    }
    Ok(())
}

// --- prune ---

/// Deliveries removed per prune transaction, so other writers get turns.
pub(super) const PRUNE_CHUNK: i64 = 2000;

/// Removes up to [`PRUNE_CHUNK`] delivered rows changed before `before`, their
/// log, and the events left without deliveries. The newest delivery is kept so
/// delivery ids are never reused.
pub(super) fn prune_rows(conn: &Connection, before: i64) -> Db<PruneStats> {
    let doomed: Vec<(DeliveryId, i64)> = conn
        .prepare_cached(
            "SELECT id, event FROM deliveries WHERE state = 'sent' AND due_at < ?1 \
             AND id < (SELECT max(id) FROM deliveries) LIMIT ?2",
        )?
        .query_map(params![before, PRUNE_CHUNK], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stats = PruneStats::default();
    let mut log = conn.prepare_cached("DELETE FROM delivery_log WHERE delivery_id = ?1")?;
    let mut delete = conn.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?;
    let mut events: Vec<i64> = Vec::new();
    for (id, event) in doomed {
        log.execute(params![id])?;
        stats.deliveries += changed(delete.execute(params![id])?);
        if events.last() != Some(&event) {
            events.push(event);
        }
    }
    events.sort_unstable();
    events.dedup();
    let mut range =
        conn.prepare_cached("SELECT first_delivery, deliveries FROM events WHERE seq = ?1")?;
    let mut left =
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM deliveries WHERE id BETWEEN ?1 AND ?2)")?;
    let mut drop_event = conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
    for seq in events {
        let Some((first, n)) = range
            .query_row(params![seq], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?
        else {
            continue;
        };
        let last = first.saturating_add(n.saturating_sub(1));
        let any: bool = left.query_row(params![first, last], |r| r.get(0))?;
        if !any {
            stats.events += changed(drop_event.execute(params![seq])?);
        }
    }
    stats.events += changed(
        conn.prepare_cached(
            "DELETE FROM events WHERE seq IN \
             (SELECT seq FROM events WHERE deliveries = 0 AND enqueued_at < ?1 LIMIT ?2)",
        )?
        .execute(params![before, PRUNE_CHUNK])?,
    );
    Ok(stats)
}

/// Decodes a dead letter's stored error; text that does not decode becomes a
/// permanent error carrying it.
pub(super) fn stored_error(json: Option<String>) -> DeliveryError {
    match json {
        Some(text) => {
            from_json::<DeliveryError>(&text).unwrap_or(DeliveryError::Permanent { reason: text })
        }
        None => DeliveryError::Permanent {
            reason: "no error was recorded".to_owned(),
        },
    }
}
