//! SQL and row helpers of the PostgreSQL outbox: claim and finish statements, health notes, the log, and scope parking.

use super::*;

pub(super) const INSERT_LOG: &str = "INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The lease-expiry test for row alias `d`; `$L` is the caller's now (or NULL
/// for the database clock).
pub(super) fn expired(alias: &str, lnow: &str) -> String {
    format!("{alias}.lease_until <= coalesce({lnow}::timestamptz, now())")
}

/// Claims due heads in one statement: the due rows of `key_heads` (a queued
/// head when due at the caller's `now`, an in-flight one when its lease has
/// lapsed), in due order through its index, each locked with `SKIP LOCKED` so
/// keys another replica is claiming or writing right now are skipped; then
/// their deliveries, rechecked on their latest version and locked the same
/// way. Reads O(claimed) rows whatever the backlog. $1 now, $2 lease now,
/// $3 limit, $4 lease in microseconds.
pub(super) fn claim_sql() -> String {
    format!(
        "WITH h AS MATERIALIZED ( \
           SELECT key, delivery, due_at FROM key_heads \
           WHERE due_at <= greatest($1, coalesce($2::timestamptz, now())) \
             AND ((NOT in_flight AND due_at <= $1) \
                  OR (in_flight AND due_at <= coalesce($2::timestamptz, now()))) \
           ORDER BY due_at, delivery LIMIT $3 FOR UPDATE SKIP LOCKED), \
         locked AS ( \
           SELECT d.id, h.due_at AS at FROM deliveries d JOIN h ON d.id = h.delivery \
           WHERE (d.state = 'queued' AND d.due_at <= $1) OR (d.state = 'in_flight' AND {}) \
           FOR UPDATE OF d SKIP LOCKED) \
         UPDATE deliveries d SET state = 'in_flight', due_at = $1, \
           lease_until = coalesce($2::timestamptz, now()) + $4::int8 * interval '1 microsecond', \
           lease = d.lease + 1, attempts = d.attempts + 1 \
         FROM locked WHERE d.id = locked.id \
         RETURNING d.id, d.event, d.tenant, d.route, d.destination, d.target, d.scope, d.key, \
           d.attempts, d.lease, locked.at",
        expired("d", "$2")
    )
}

/// Locks the heads of the keys of deliveries $1 in key order, so a
/// multi-statement transaction takes all its key locks at once, in the same
/// order as every other writer (no deadlock between completions and
/// enqueues).
pub(super) const LOCK_HEADS: &str = "SELECT 1 FROM key_heads WHERE key IN ( \
       SELECT key FROM deliveries WHERE id = ANY($1)) ORDER BY key FOR UPDATE";

pub(super) struct Taken {
    pub(super) id: DeliveryId,
    pub(super) event: i64,
    pub(super) tenant: String,
    pub(super) route: String,
    pub(super) destination: String,
    pub(super) target: String,
    pub(super) scope: String,
    pub(super) key: String,
    pub(super) attempts: i32,
    pub(super) lease: i64,
}

/// What one (tenant, destination) saw in a batch of completions.
#[derive(Default)]
pub(super) struct Health {
    pub(super) scope: String,
    pub(super) sent: i64,
    pub(super) error: Option<String>,
}

pub(super) async fn note_health(
    tx: &Transaction<'_>,
    health: &BTreeMap<(String, String), Health>,
    now: DateTime<Utc>,
) -> Result<()> {
    if health.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO destination_health AS h \
               (tenant, destination, scope, last_success_at, last_error, last_error_at, sent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant, destination) DO UPDATE SET \
               scope = excluded.scope, sent = h.sent + excluded.sent, \
               last_success_at = coalesce(excluded.last_success_at, h.last_success_at), \
               last_error = CASE WHEN excluded.last_error_at IS NULL THEN h.last_error \
                                 ELSE excluded.last_error END, \
               last_error_at = coalesce(excluded.last_error_at, h.last_error_at)",
        )
        .await
        .map_err(db("note health"))?;
    for ((t, destination), h) in health {
        let success = (h.sent > 0).then_some(now);
        let error_at = h.error.as_ref().map(|_| now);
        tx.execute(
            &stmt,
            &[
                t,
                destination,
                &h.scope,
                &success,
                &h.error,
                &error_at,
                &h.sent,
            ],
        )
        .await
        .map_err(db("note health"))?;
    }
    Ok(())
}

pub(super) fn note(
    health: &mut BTreeMap<(String, String), Health>,
    t: &str,
    destination: &str,
    scope: &str,
    sent: bool,
    error: Option<&str>,
) {
    let h = health
        .entry((t.to_owned(), destination.to_owned()))
        .or_default();
    scope.clone_into(&mut h.scope);
    if sent {
        h.sent += 1;
    }
    if let Some(e) = error {
        h.error = Some(e.to_owned());
    }
}

// Only an in-flight row still holding the lease matches; no row means the
// completion is stale and is ignored. $4 attempts given back (0 or 1), $6 log
// entries that follow (0 or 1).
pub(super) const FINISH: &str = "UPDATE deliveries SET state = $3, due_at = $5, lease_until = NULL, \
     attempts = greatest(attempts - $4, 0), log_steps = log_steps + $6 \
     WHERE id = $1 AND lease = $2 AND state = 'in_flight' \
     RETURNING attempts, tenant, destination, scope, log_steps";
pub(super) const FINISH_DEAD: &str = "UPDATE deliveries SET state = 'dead', due_at = $4, died_at = $4, \
     lease_until = NULL, attempts = greatest(attempts - $3, 0), error = $5, \
     log_steps = log_steps + 1 \
     WHERE id = $1 AND lease = $2 AND state = 'in_flight' \
     RETURNING attempts, tenant, destination, scope, log_steps";

/// Every `Sent` of a batch: $1 ids, $2 leases, $3 remote ids, $4 now.
pub(super) const FINISH_SENT: &str = "WITH c AS ( \
       SELECT DISTINCT ON (id, lease) id, lease, remote \
       FROM unnest($1::int8[], $2::int8[], $3::text[]) AS u(id, lease, remote)), \
     f AS ( \
       UPDATE deliveries d SET state = 'sent', due_at = $4, lease_until = NULL, \
         log_steps = d.log_steps + 1 \
       FROM c WHERE d.id = c.id AND d.lease = c.lease AND d.state = 'in_flight' \
       RETURNING d.id, d.attempts, d.tenant, d.destination, d.scope, d.log_steps, c.remote), \
     l AS ( \
       INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
       SELECT id, log_steps, attempts, $4, 'sent', remote FROM f) \
     SELECT tenant, destination, scope FROM f";

pub(super) struct Finished {
    pub(super) attempts: i32,
    pub(super) tenant: String,
    pub(super) destination: String,
    pub(super) scope: String,
    pub(super) step: i32,
}

pub(super) fn finished(r: &tokio_postgres::Row) -> Finished {
    Finished {
        attempts: r.get(0),
        tenant: r.get(1),
        destination: r.get(2),
        scope: r.get(3),
        step: r.get(4),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn finish(
    tx: &Transaction<'_>,
    id: DeliveryId,
    lease: i64,
    state: &str,
    due: DateTime<Utc>,
    give_back: bool,
    logged: bool,
) -> Result<Option<Finished>> {
    let stmt = tx.prepare_cached(FINISH).await.map_err(db("complete"))?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &id,
                &lease,
                &state,
                &i32::from(give_back),
                &due,
                &i32::from(logged),
            ],
        )
        .await
        .map_err(db("complete"))?;
    Ok(row.as_ref().map(finished))
}

pub(super) async fn log(
    tx: &Transaction<'_>,
    id: DeliveryId,
    step: i32,
    attempt: i32,
    at: DateTime<Utc>,
    status: &str,
    detail: Option<&str>,
) -> Result<()> {
    let stmt = tx.prepare_cached(INSERT_LOG).await.map_err(db("log"))?;
    tx.execute(&stmt, &[&id, &step, &attempt, &at, &status, &detail])
        .await
        .map_err(db("log"))?;
    Ok(())
}

/// The epoch and connectedness of a (tenant, scope), if recorded, locking it.
pub(super) async fn scope_row(
    tx: &Transaction<'_>,
    t: &str,
    scope: &str,
) -> Result<Option<(i64, bool)>> {
    let row = tx
        .query_opt(
            "SELECT epoch, connected FROM scopes WHERE tenant = $1 AND scope = $2 FOR UPDATE",
            &[&t, &scope],
        )
        .await
        .map_err(db("reading a scope"))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Marks a (tenant, scope) disconnected (keeping when it first was) and parks
/// its queued deliveries; returns how many.
pub(super) async fn disconnect_scope(
    tx: &Transaction<'_>,
    t: &str,
    scope: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    tx.execute(
        "INSERT INTO scopes AS s (tenant, scope, connected, reason, since, epoch) \
         VALUES ($1, $2, false, $3, $4, 0) \
         ON CONFLICT (tenant, scope) DO UPDATE SET reason = excluded.reason, \
           since = CASE WHEN s.connected THEN excluded.since ELSE s.since END, connected = false",
        &[&t, &scope, &reason, &now],
    )
    .await
    .map_err(db("disconnecting a scope"))?;
    tx.execute(
        "WITH p AS (UPDATE deliveries SET state = 'parked', due_at = $3, \
           log_steps = log_steps + 1 \
           WHERE tenant = $1 AND scope = $2 AND state = 'queued' RETURNING id, log_steps) \
         INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
         SELECT id, log_steps, 0, $3, 'parked', $4 FROM p",
        &[&t, &scope, &now, &reason],
    )
    .await
    .map_err(db("parking a scope"))
}

pub(super) async fn connect_scope(
    tx: &Transaction<'_>,
    t: &str,
    scope: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    tx.execute(
        "INSERT INTO scopes AS s (tenant, scope, connected, reason, since, epoch) \
         VALUES ($1, $2, true, NULL, $3, 1) \
         ON CONFLICT (tenant, scope) DO UPDATE SET reason = NULL, \
           since = CASE WHEN s.connected THEN s.since ELSE excluded.since END, \
           connected = true, epoch = s.epoch + 1",
        &[&t, &scope, &now],
    )
    .await
    .map_err(db("connecting a scope"))?;
    tx.execute(
        "WITH p AS (UPDATE deliveries SET state = 'queued', due_at = $3, \
           log_steps = log_steps + 1 \
           WHERE tenant = $1 AND scope = $2 AND state = 'parked' RETURNING id, log_steps) \
         INSERT INTO delivery_log (delivery_id, step, attempt, at, status, detail) \
         SELECT id, log_steps, 0, $3, 'queued', 'reconnected' FROM p",
        &[&t, &scope, &now],
    )
    .await
    .map_err(db("re-queueing a scope"))
}

/// `Parked`, fenced by the scope's epoch.
pub(super) async fn complete_parked(
    tx: &Transaction<'_>,
    id: DeliveryId,
    lease: i64,
    reason: &str,
    epoch: u64,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = tx
        .query_opt(
            "SELECT tenant, scope FROM deliveries WHERE id = $1 AND lease = $2 AND state = 'in_flight'",
            &[&id, &lease],
        )
        .await
        .map_err(db("complete"))?;
    let Some(row) = row else { return Ok(()) };
    let (t, scope): (String, String) = (row.get(0), row.get(1));
    let current = scope_row(tx, &t, &scope).await?;
    if current.is_some_and(|(e, _)| count64(e) > epoch) {
        finish(tx, id, lease, "queued", now, true, false).await?;
        return Ok(());
    }
    if let Some(f) = finish(tx, id, lease, "parked", now, true, true).await? {
        log(tx, id, f.step, 0, now, "parked", Some(reason)).await?;
    }
    if current.is_none_or(|(_, connected)| connected) {
        disconnect_scope(tx, &t, &scope, reason, now).await?;
    }
    Ok(())
}
