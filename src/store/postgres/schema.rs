//! The PostgreSQL schema: migrations versioned in code, applied once under an advisory lock, newer schemas refused.

use deadpool_postgres::Object;

use super::{corrupt, db};
use crate::Result;

/// The schema version this version of switchboard writes and understands.
pub(super) const SCHEMA_VERSION: i32 = 3;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

const V1: &str = "
    -- One row per (tenant, event id) ever enqueued, with the event's JSON once.
    CREATE TABLE events (
        seq         bigserial PRIMARY KEY,
        tenant      text NOT NULL,
        id          text NOT NULL,
        kind        text NOT NULL,
        body        text NOT NULL,
        enqueued_at timestamptz NOT NULL,
        UNIQUE (tenant, id)
    );
    CREATE TABLE deliveries (
        id          bigserial PRIMARY KEY,
        event       bigint NOT NULL,
        tenant      text NOT NULL,
        route       text NOT NULL,
        destination text NOT NULL,
        target      text NOT NULL,          -- the Target as JSON
        scope       text NOT NULL,
        key         text NOT NULL,
        state       text NOT NULL,          -- DeliveryState::as_str
        -- queued: when it is due; otherwise when it reached its state.
        due_at      timestamptz NOT NULL,
        -- in flight: when the lease expires (database clock by default).
        lease_until timestamptz,
        lease       bigint NOT NULL DEFAULT 0,
        attempts    integer NOT NULL DEFAULT 0,
        log_steps   integer NOT NULL DEFAULT 0,
        error       text,
        died_at     timestamptz
    );
    CREATE INDEX deliveries_pending ON deliveries (key, id)
        WHERE state IN ('queued', 'in_flight');
    CREATE INDEX deliveries_scope ON deliveries (tenant, scope, id)
        WHERE state IN ('queued', 'parked');
    CREATE INDEX deliveries_dead ON deliveries (died_at, id) WHERE state = 'dead';
    CREATE INDEX deliveries_sent ON deliveries (due_at) WHERE state = 'sent';
    CREATE INDEX deliveries_event ON deliveries (event);
    CREATE TABLE delivery_log (
        delivery_id bigint NOT NULL,
        step        integer NOT NULL,
        attempt     integer NOT NULL,
        at          timestamptz NOT NULL,
        status      text NOT NULL,
        detail      text,
        PRIMARY KEY (delivery_id, step)
    );
    CREATE TABLE scopes (
        tenant    text NOT NULL,
        scope     text NOT NULL,
        connected boolean NOT NULL,
        reason    text,
        since     timestamptz NOT NULL,
        epoch     bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, scope)
    );
    CREATE TABLE destination_health (
        tenant          text NOT NULL,
        destination     text NOT NULL,
        scope           text NOT NULL,
        last_success_at timestamptz,
        last_error      text,
        last_error_at   timestamptz,
        sent            bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, destination)
    );
    CREATE TABLE connections (
        platform            text NOT NULL,
        account             text NOT NULL,
        tenant              text NOT NULL,
        secrets             text NOT NULL,  -- sealed by the Keyring
        expires_at          timestamptz,
        data                text NOT NULL,  -- JSON
        connected           boolean NOT NULL,
        disconnected_reason text,
        disconnected_since  timestamptz,
        is_default          boolean NOT NULL,
        revision            bigint NOT NULL,
        created_at          timestamptz NOT NULL,
        updated_at          timestamptz NOT NULL,
        PRIMARY KEY (platform, account)
    );
    CREATE INDEX connections_tenant ON connections (tenant, platform, account);
    CREATE TABLE identity_links (
        tenant      text NOT NULL,
        platform    text NOT NULL,
        user_id     text NOT NULL,
        platform_id text NOT NULL,
        origin      text NOT NULL,
        linked_at   timestamptz NOT NULL,
        PRIMARY KEY (tenant, platform, user_id)
    );
    CREATE TABLE integrations (
        tenant text NOT NULL,
        name   text NOT NULL,
        config text NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE runs (
        id          bigserial PRIMARY KEY,
        tenant      text NOT NULL,
        integration text NOT NULL,
        started_at  timestamptz NOT NULL,
        finished_at timestamptz,
        outcome     text NOT NULL,
        lease_until timestamptz,
        record      text NOT NULL
    );
    CREATE INDEX runs_integration ON runs (tenant, integration, id);
    -- At most one running run per integration, whatever the replicas do.
    CREATE UNIQUE INDEX runs_one_running ON runs (tenant, integration)
        WHERE outcome = 'running';
    CREATE TABLE route_rules (
        tenant     text NOT NULL,
        route      text NOT NULL,
        enabled    boolean,
        target     text,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (tenant, route)
    );
    CREATE TABLE remembered (
        scope      text NOT NULL,
        key        text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX remembered_expiry ON remembered (expires_at);
    CREATE TABLE attributes (
        tenant  text NOT NULL,
        user_id text NOT NULL,
        attrs   jsonb NOT NULL,
        updates bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, user_id)
    );
    -- One row per tenant that has attributes: locked by every upsert, so the
    -- cap check and the write are one step across replicas.
    CREATE TABLE attribute_tenants (
        tenant text PRIMARY KEY
    );
    CREATE TABLE attribute_names (
        tenant text NOT NULL,
        name   text NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    -- Shared pacing: the GCRA theoretical arrival time per key.
    CREATE TABLE pacing (
        key text PRIMARY KEY,
        tat timestamptz NOT NULL
    );
";

/// 2: `key_heads`, the head of each ordering key, kept by statement triggers,
/// so a claim reads the due heads through an index instead of every pending
/// row; per-state indexes find a key's next head in one probe.
///
/// Consistency across concurrent transactions: every statement that changes
/// a pending delivery ends (in its trigger) by locking its keys' `key_heads`
/// rows in key order (an upsert, so a missing row is created and locked too)
/// and only then, in a fresh snapshot, recomputing them. The lock is held to
/// commit, so the last writer of a key recomputes after every earlier one has
/// committed and sees their rows: the table never misses a pending delivery.
/// A key with something in flight has that delivery as its head (due when its
/// lease lapses), so nothing else of the key is claimed meanwhile.
const V2: &str = "
    CREATE TABLE key_heads (
        key       text PRIMARY KEY,
        delivery  bigint NOT NULL,
        -- queued: when the head is due; in flight: when its lease lapses.
        due_at    timestamptz NOT NULL,
        in_flight boolean NOT NULL
    );
    CREATE INDEX key_heads_due ON key_heads (due_at, delivery);
    DROP INDEX deliveries_pending;
    CREATE INDEX deliveries_queued ON deliveries (key, id) WHERE state = 'queued';
    CREATE INDEX deliveries_in_flight ON deliveries (key, id) WHERE state = 'in_flight';

    -- Locks the heads of keys `ks` (in key order) and recomputes them.
    CREATE FUNCTION switchboard_refresh_heads(ks text[]) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
    BEGIN
        IF coalesce(cardinality(ks), 0) = 0 THEN RETURN; END IF;
        INSERT INTO key_heads AS h (key, delivery, due_at, in_flight)
            SELECT k, 0, 'infinity', false FROM (SELECT DISTINCT unnest(ks) AS k) s ORDER BY k
            ON CONFLICT (key) DO UPDATE SET in_flight = h.in_flight;
        WITH n AS (
            SELECT s.k, x.id, x.at, x.f FROM (SELECT DISTINCT unnest(ks) AS k) s
            LEFT JOIN LATERAL (
                (SELECT d.id, d.lease_until AS at, true AS f FROM deliveries d
                 WHERE d.key = s.k AND d.state = 'in_flight' ORDER BY d.id LIMIT 1)
                UNION ALL
                (SELECT d.id, d.due_at, false FROM deliveries d
                 WHERE d.key = s.k AND d.state = 'queued' ORDER BY d.id LIMIT 1)
                LIMIT 1) x ON true),
        gone AS (DELETE FROM key_heads h USING n WHERE h.key = n.k AND n.id IS NULL)
        UPDATE key_heads h SET delivery = n.id, due_at = coalesce(n.at, now()), in_flight = n.f
            FROM n WHERE h.key = n.k AND n.id IS NOT NULL
              AND (h.delivery, h.due_at, h.in_flight)
                  IS DISTINCT FROM (n.id, coalesce(n.at, now()), n.f);
    END $f$;

    CREATE FUNCTION switchboard_heads_insert() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
    BEGIN
        PERFORM switchboard_refresh_heads(ARRAY(
            SELECT DISTINCT key FROM new_rows WHERE state IN ('queued', 'in_flight')));
        RETURN NULL;
    END $f$;
    CREATE FUNCTION switchboard_heads_update() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
    BEGIN
        PERFORM switchboard_refresh_heads(ARRAY(
            SELECT DISTINCT v.k FROM new_rows n JOIN old_rows o ON o.id = n.id
            CROSS JOIN LATERAL (VALUES (n.key), (o.key)) v(k)
            WHERE (o.state IN ('queued', 'in_flight') OR n.state IN ('queued', 'in_flight'))
              AND (o.state, o.due_at, o.lease_until, o.key)
                  IS DISTINCT FROM (n.state, n.due_at, n.lease_until, n.key)));
        RETURN NULL;
    END $f$;
    CREATE FUNCTION switchboard_heads_delete() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
    BEGIN
        PERFORM switchboard_refresh_heads(ARRAY(
            SELECT DISTINCT key FROM old_rows WHERE state IN ('queued', 'in_flight')));
        RETURN NULL;
    END $f$;
    CREATE TRIGGER deliveries_heads_insert AFTER INSERT ON deliveries
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION switchboard_heads_insert();
    CREATE TRIGGER deliveries_heads_update AFTER UPDATE ON deliveries
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION switchboard_heads_update();
    CREATE TRIGGER deliveries_heads_delete AFTER DELETE ON deliveries
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION switchboard_heads_delete();

    SELECT switchboard_refresh_heads(ARRAY(
        SELECT DISTINCT key FROM deliveries WHERE state IN ('queued', 'in_flight')));
";

/// 3: attribute values one row per (tenant, user, attribute) for segmentation
/// in SQL (bytewise "C" collation, like Rust's string order), with `num`, the
/// `Decimal::sort_key` of plain decimal numbers (filled in Rust after this
/// SQL, see [`fill_numeric_keys`]); attribute names with their owner (the
/// empty string: the API; existing names start there and an integration
/// importing one adopts it); each integration's last import generation.
const V3: &str = "
    CREATE TABLE attribute_values (
        tenant     text COLLATE \"C\" NOT NULL,
        user_id    text COLLATE \"C\" NOT NULL,
        name       text COLLATE \"C\" NOT NULL,
        value      text COLLATE \"C\" NOT NULL,
        num        bytea,
        generation bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, user_id, name)
    );
    INSERT INTO attribute_values (tenant, user_id, name, value)
        SELECT a.tenant, a.user_id, kv.key, kv.value
        FROM attributes a, jsonb_each_text(a.attrs) kv;
    DROP TABLE attributes;
    ALTER TABLE attribute_names ADD COLUMN owner text NOT NULL DEFAULT '';
    CREATE TABLE attribute_generations (
        tenant      text NOT NULL,
        integration text NOT NULL,
        generation  bigint NOT NULL,
        PRIMARY KEY (tenant, integration)
    );
    CREATE INDEX attribute_values_text ON attribute_values (tenant, name, value);
    CREATE INDEX attribute_values_num ON attribute_values (tenant, name, num);
";

/// After [`V3`]: the numeric keys of migrated values (computed in Rust, the
/// one definition of a number).
async fn fill_numeric_keys(tx: &deadpool_postgres::Transaction<'_>) -> Result<()> {
    let rows = tx
        .query(
            "SELECT tenant, user_id, name, value FROM attribute_values \
             WHERE num IS NULL AND value ~ '[0-9]'",
            &[],
        )
        .await
        .map_err(db("reading migrated attribute values"))?;
    for row in rows {
        let value: String = row.get(3);
        if let Some(key) = crate::attributes::sql::num_key(&value) {
            let (t, u, n): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            tx.execute(
                "UPDATE attribute_values SET num = $4 WHERE tenant = $1 AND user_id = $2 AND name = $3",
                &[&t, &u, &n, &key],
            )
            .await
            .map_err(db("migrating attribute values"))?;
        }
    }
    Ok(())
}

/// Creates the schema if needed and brings it to [`SCHEMA_VERSION`], holding
/// a session advisory lock so concurrent replicas migrate one after the other
/// (the later ones find nothing to do). Refuses a newer schema.
pub(super) async fn migrate(client: &mut Object, schema: Option<&str>) -> Result<()> {
    let target = match schema {
        Some(s) => s.to_owned(),
        None => client
            .query_one("SELECT coalesce(current_schema(), 'public')", &[])
            .await
            .map_err(db("reading the current schema"))?
            .get(0),
    };
    let lock_key = format!("switchboard:migrate:{target}");
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
        .await
        .map_err(db("taking the migration lock"))?;
    let result = migrate_locked(client, &target).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await
        .map_err(db("releasing the migration lock"));
    result?;
    unlocked.map(|_| ())
}

async fn migrate_locked(client: &mut Object, schema: &str) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(db("starting the migration"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET LOCAL search_path = \"{schema}\"; \
         CREATE TABLE IF NOT EXISTS switchboard_schema (version integer NOT NULL); \
         LOCK TABLE switchboard_schema IN EXCLUSIVE MODE;"
    ))
    .await
    .map_err(db("preparing the schema"))?;
    let version: Option<i32> = tx
        .query_opt("SELECT max(version) FROM switchboard_schema", &[])
        .await
        .map_err(db("reading the schema version"))?
        .and_then(|r| r.get(0));
    let current = version.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(corrupt(format!(
            "the database's schema version is {current}, newer than this version of \
             switchboard understands ({SCHEMA_VERSION})"
        )));
    }
    let start = usize::try_from(current).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| db("applying a migration")(e).context(format!("version {}", i + 1)))?;
        if i + 1 == 3 {
            fill_numeric_keys(&tx).await?;
        }
    }
    tx.execute("DELETE FROM switchboard_schema", &[])
        .await
        .map_err(db("recording the schema version"))?;
    tx.execute(
        "INSERT INTO switchboard_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION.max(current)],
    )
    .await
    .map_err(db("recording the schema version"))?;
    tx.commit().await.map_err(db("committing the migration"))?;
    Ok(())
}
