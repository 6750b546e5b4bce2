//! The SQLite schema: connection settings and migrations (`PRAGMA user_version`), including the move of schema-1 data to tenants.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::{BUSY_TIMEOUT, Db, Durability, STATEMENT_CACHE, corrupt, sql_limit};
use crate::event::Event;
use crate::message::Target;

/// One schema migration.
enum Migration {
    /// Plain SQL.
    Sql(&'static str),
    /// SQL, then a step in Rust, then more SQL.
    Steps(&'static str, fn(&Transaction<'_>) -> Db<()>, &'static str),
}

/// Migrations, applied in order; entry `i` takes the schema from version `i` to
/// `i + 1`. Append only; never edit a released entry.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(V1),
    Migration::Steps(V2_TABLES, v2_keys, V2_INDEXES),
    Migration::Sql(V3),
    Migration::Steps(V4_TABLES, v4_values, V4_INDEXES),
    Migration::Steps(V5_TABLES, v5_rows, V5_DROP),
];

/// The newest schema version this code knows.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// 1: the initial, single-tenant schema (kept verbatim: files at version 1 exist).
const V1: &str = "
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        enqueued_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE deliveries (
        id          INTEGER PRIMARY KEY,
        event_id    TEXT NOT NULL,
        event_kind  TEXT NOT NULL,
        event       TEXT NOT NULL,
        route       TEXT NOT NULL,
        destination TEXT NOT NULL,
        target      TEXT NOT NULL,
        state       TEXT NOT NULL,
        due_at      INTEGER NOT NULL,
        lease       INTEGER NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        log_steps   INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        died_at     INTEGER
    );
    CREATE INDEX deliveries_pending ON deliveries (due_at, id, destination, state)
        WHERE state IN ('queued', 'in_flight');
    CREATE INDEX deliveries_parked ON deliveries (destination) WHERE state = 'parked';
    CREATE INDEX deliveries_dead ON deliveries (died_at, id, destination) WHERE state = 'dead';
    CREATE TABLE delivery_log (
        delivery_id INTEGER NOT NULL,
        step        INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        status      TEXT NOT NULL,
        detail      TEXT,
        PRIMARY KEY (delivery_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE destinations (
        name                TEXT PRIMARY KEY,
        connected           INTEGER NOT NULL DEFAULT 1,
        disconnected_reason TEXT,
        last_success_at     INTEGER,
        last_error          TEXT,
        last_error_at       INTEGER,
        sent                INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE identity_links (
        platform    TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        origin      TEXT NOT NULL,
        linked_at   INTEGER NOT NULL,
        PRIMARY KEY (platform, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE integrations (
        name        TEXT PRIMARY KEY,
        config      TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        integration TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        outcome     TEXT NOT NULL,
        lease_until INTEGER,
        record      TEXT NOT NULL
    );
    CREATE INDEX runs_integration ON runs (integration, id);
    CREATE TABLE installations (
        platform      TEXT NOT NULL,
        key           TEXT NOT NULL,
        token         TEXT NOT NULL,
        refresh_token TEXT,
        expires_at    INTEGER,
        data          TEXT NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (platform, key)
    ) WITHOUT ROWID;
    CREATE TABLE remembered (
        scope       TEXT NOT NULL,
        key         TEXT NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    CREATE INDEX remembered_expiry ON remembered (expires_at);
    CREATE TABLE attributes (
        user_id     TEXT PRIMARY KEY,
        attrs       TEXT NOT NULL,
        updates     INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE attribute_names (
        name        TEXT PRIMARY KEY
    ) WITHOUT ROWID;
";

/// 2, first part: tenants, scopes, connections, rules; events stored once.
/// Schema-1 rows move to the default tenant; a destination's deliveries to the
/// scope `destination:<name>`.
const V2_TABLES: &str = "
    ALTER TABLE events RENAME TO v1_events;
    ALTER TABLE deliveries RENAME TO v1_deliveries;
    ALTER TABLE destinations RENAME TO v1_destinations;
    ALTER TABLE identity_links RENAME TO v1_identity_links;
    ALTER TABLE integrations RENAME TO v1_integrations;
    ALTER TABLE runs RENAME TO v1_runs;
    ALTER TABLE attributes RENAME TO v1_attributes;
    ALTER TABLE attribute_names RENAME TO v1_attribute_names;
    -- Plain-text tokens: sealed into `connections` (and deleted) once the store
    -- is given a keyring.
    ALTER TABLE installations RENAME TO legacy_installations;
    DROP INDEX deliveries_pending;
    DROP INDEX deliveries_parked;
    DROP INDEX deliveries_dead;
    DROP INDEX runs_integration;
    CREATE INDEX v1_deliveries_event ON v1_deliveries (event_id, id);

    -- One row per (tenant, event id) ever enqueued, with the event's JSON once.
    -- Its deliveries have the consecutive ids first_delivery ..
    -- first_delivery + deliveries - 1 (inserted together).
    CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        tenant         TEXT NOT NULL,
        id             TEXT NOT NULL,
        kind           TEXT NOT NULL,
        body           TEXT NOT NULL,        -- the Event as JSON
        enqueued_at    INTEGER NOT NULL,
        first_delivery INTEGER NOT NULL DEFAULT 0,
        deliveries     INTEGER NOT NULL DEFAULT 0,
        UNIQUE (tenant, id)
    );
    CREATE TABLE deliveries (
        id          INTEGER PRIMARY KEY,
        event       INTEGER NOT NULL,        -- events.seq
        tenant      TEXT NOT NULL,
        route       TEXT NOT NULL,
        destination TEXT NOT NULL,
        target      TEXT NOT NULL,           -- the Target as JSON
        scope       TEXT NOT NULL,           -- the parking scope within the tenant
        key         TEXT NOT NULL,           -- the ordering and pacing key
        state       TEXT NOT NULL,           -- DeliveryState::as_str
        -- queued: when it is due; in_flight: when its lease expires;
        -- otherwise: when it reached its state.
        due_at      INTEGER NOT NULL,
        lease       INTEGER NOT NULL DEFAULT 0,  -- the current claim's token
        attempts    INTEGER NOT NULL DEFAULT 0,  -- counted at claim
        log_steps   INTEGER NOT NULL DEFAULT 0,  -- entries in delivery_log
        error       TEXT,                    -- dead: the DeliveryError as JSON
        died_at     INTEGER
    );
    -- The oldest pending (queued or in flight) delivery of each key and its due
    -- time, kept by the triggers below: claims and next_due read this small
    -- table, never the backlog behind a key.
    CREATE TABLE key_heads (
        key      TEXT PRIMARY KEY,
        delivery INTEGER NOT NULL,
        due_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE scopes (
        tenant    TEXT NOT NULL,
        scope     TEXT NOT NULL,
        connected INTEGER NOT NULL,
        reason    TEXT,
        since     INTEGER NOT NULL,
        epoch     INTEGER NOT NULL DEFAULT 0,  -- bumped on every reconnect
        PRIMARY KEY (tenant, scope)
    ) WITHOUT ROWID;
    CREATE TABLE destination_health (
        tenant          TEXT NOT NULL,
        destination     TEXT NOT NULL,
        scope           TEXT NOT NULL,
        last_success_at INTEGER,
        last_error      TEXT,
        last_error_at   INTEGER,
        sent            INTEGER NOT NULL DEFAULT 0,  -- deliveries sent, ever
        PRIMARY KEY (tenant, destination)
    ) WITHOUT ROWID;
    CREATE TABLE connections (
        platform           TEXT NOT NULL,
        account            TEXT NOT NULL,
        tenant             TEXT NOT NULL,
        secrets            TEXT NOT NULL,    -- sealed by the Keyring: name -> sealed value
        expires_at         INTEGER,
        data               TEXT NOT NULL,    -- JSON
        connected          INTEGER NOT NULL,
        disconnected_reason TEXT,
        disconnected_since INTEGER,
        is_default         INTEGER NOT NULL,
        revision           INTEGER NOT NULL,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        PRIMARY KEY (platform, account)
    ) WITHOUT ROWID;
    CREATE INDEX connections_tenant ON connections (tenant, platform, account);
    CREATE TABLE identity_links (
        tenant      TEXT NOT NULL,
        platform    TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        origin      TEXT NOT NULL,           -- LinkOrigin::as_str
        linked_at   INTEGER NOT NULL,
        PRIMARY KEY (tenant, platform, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE integrations (
        tenant      TEXT NOT NULL,
        name        TEXT NOT NULL,
        config      TEXT NOT NULL,           -- the IntegrationConfig as JSON
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant      TEXT NOT NULL,
        integration TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        outcome     TEXT NOT NULL,           -- RunOutcome::as_str
        lease_until INTEGER,                 -- running runs only
        record      TEXT NOT NULL            -- the RunRecord as JSON (columns win)
    );
    CREATE TABLE route_rules (
        tenant     TEXT NOT NULL,
        route      TEXT NOT NULL,
        enabled    INTEGER,
        target     TEXT,                     -- the Target as JSON
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, route)
    ) WITHOUT ROWID;
    CREATE TABLE attributes (
        tenant      TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        attrs       TEXT NOT NULL,           -- JSON object of strings
        updates     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE attribute_names (
        tenant      TEXT NOT NULL,
        name        TEXT NOT NULL,
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;

    -- Schema-1 data, all of it the default tenant's.
    INSERT INTO events (tenant, id, kind, body, enqueued_at, first_delivery, deliveries)
        SELECT 'default', e.id,
               coalesce((SELECT d.event_kind FROM v1_deliveries d WHERE d.event_id = e.id
                         ORDER BY d.id LIMIT 1), ''),
               coalesce((SELECT d.event FROM v1_deliveries d WHERE d.event_id = e.id
                         ORDER BY d.id LIMIT 1), 'null'),
               e.enqueued_at,
               coalesce((SELECT min(d.id) FROM v1_deliveries d WHERE d.event_id = e.id), 0),
               (SELECT count(*) FROM v1_deliveries d WHERE d.event_id = e.id)
        FROM v1_events e ORDER BY e.enqueued_at, e.id;
    INSERT INTO deliveries (id, event, tenant, route, destination, target, scope, key, state,
                            due_at, lease, attempts, log_steps, error, died_at)
        SELECT d.id,
               coalesce((SELECT seq FROM events WHERE tenant = 'default' AND id = d.event_id), 0),
               'default', d.route, d.destination, d.target, 'destination:' || d.destination,
               'default|' || d.destination || '|#' || d.id, d.state, d.due_at, d.lease,
               -- schema 1 counted attempts at completion: an in-flight row's
               -- current claim is one more.
               d.attempts + (d.state = 'in_flight'), d.log_steps, d.error, d.died_at
        FROM v1_deliveries d ORDER BY d.id;
    INSERT INTO scopes (tenant, scope, connected, reason, since, epoch)
        SELECT 'default', 'destination:' || name, 0, disconnected_reason,
               CAST(unixepoch('subsec') * 1000 AS INTEGER), 0
        FROM v1_destinations WHERE connected = 0;
    INSERT INTO destination_health (tenant, destination, scope, last_success_at, last_error,
                                    last_error_at, sent)
        SELECT 'default', name, 'destination:' || name, last_success_at, last_error,
               last_error_at, sent
        FROM v1_destinations;
    INSERT INTO identity_links (tenant, platform, user_id, platform_id, origin, linked_at)
        SELECT 'default', platform, user_id, platform_id, origin, linked_at
        FROM v1_identity_links;
    INSERT INTO integrations (tenant, name, config)
        SELECT 'default', name, config FROM v1_integrations;
    INSERT INTO runs (id, tenant, integration, started_at, finished_at, outcome, lease_until,
                      record)
        SELECT id, 'default', integration, started_at, finished_at, outcome, lease_until, record
        FROM v1_runs ORDER BY id;
    INSERT INTO attributes (tenant, user_id, attrs, updates)
        SELECT 'default', user_id, attrs, updates FROM v1_attributes;
    INSERT INTO attribute_names (tenant, name)
        SELECT 'default', name FROM v1_attribute_names;
";

/// 2, second part: indexes and the triggers keeping `key_heads`; then the
/// schema-1 tables go.
const V2_INDEXES: &str = "
    DROP TABLE v1_events;
    DROP TABLE v1_deliveries;
    DROP TABLE v1_destinations;
    DROP TABLE v1_identity_links;
    DROP TABLE v1_integrations;
    DROP TABLE v1_runs;
    DROP TABLE v1_attributes;
    DROP TABLE v1_attribute_names;

    -- Partial indexes hold only the rows in their states, so sent deliveries
    -- (the bulk of the table over time) are only in the one prune walks.
    CREATE INDEX deliveries_pending ON deliveries (key, id)
        WHERE state IN ('queued', 'in_flight');
    CREATE INDEX deliveries_parked ON deliveries (tenant, scope, id) WHERE state = 'parked';
    CREATE INDEX deliveries_dead ON deliveries (died_at, id) WHERE state = 'dead';
    CREATE INDEX deliveries_sent ON deliveries (due_at) WHERE state = 'sent';
    CREATE INDEX events_empty ON events (enqueued_at) WHERE deliveries = 0;
    CREATE INDEX key_heads_due ON key_heads (due_at, delivery);
    CREATE INDEX runs_integration ON runs (tenant, integration, id);

    INSERT INTO key_heads (key, delivery, due_at)
        SELECT d.key, d.id, d.due_at FROM deliveries d
        WHERE d.state IN ('queued', 'in_flight')
          AND d.id = (SELECT min(p.id) FROM deliveries p
                      WHERE p.key = d.key AND p.state IN ('queued', 'in_flight'));

    -- A new pending delivery is its key's head unless the key has one (which
    -- is older: ids only grow).
    CREATE TRIGGER deliveries_head_insert AFTER INSERT ON deliveries
        WHEN NEW.state IN ('queued', 'in_flight')
    BEGIN
        INSERT INTO key_heads (key, delivery, due_at) VALUES (NEW.key, NEW.id, NEW.due_at)
            ON CONFLICT (key) DO NOTHING;
    END;
    -- The head itself changed (claimed, renewed, completed, parked…): the
    -- key's oldest pending delivery is the head now.
    CREATE TRIGGER deliveries_head_update AFTER UPDATE OF state, due_at ON deliveries
        WHEN OLD.state IN ('queued', 'in_flight') OR NEW.state IN ('queued', 'in_flight')
    BEGIN
        DELETE FROM key_heads WHERE key = NEW.key;
        INSERT INTO key_heads (key, delivery, due_at)
            SELECT key, id, due_at FROM deliveries
            WHERE key = NEW.key AND state IN ('queued', 'in_flight')
            ORDER BY id LIMIT 1;
    END;
    CREATE TRIGGER deliveries_head_delete AFTER DELETE ON deliveries
        WHEN OLD.state IN ('queued', 'in_flight')
    BEGIN
        DELETE FROM key_heads WHERE key = OLD.key;
        INSERT INTO key_heads (key, delivery, due_at)
            SELECT key, id, due_at FROM deliveries
            WHERE key = OLD.key AND state IN ('queued', 'in_flight')
            ORDER BY id LIMIT 1;
    END;
";

/// 3: the key heads kept by one trigger per kind of change instead of one
/// that deleted and re-derived the head on every update (a claim and a
/// completion each paid for that): a delivery that stays pending only moves
/// its head's due time, one that leaves hands the head to the key's next
/// pending delivery, one that comes back takes it if it is older.
const V3: &str = "
    DROP TRIGGER deliveries_head_update;
    CREATE TRIGGER deliveries_head_stay AFTER UPDATE OF state, due_at ON deliveries
        WHEN OLD.state IN ('queued', 'in_flight') AND NEW.state IN ('queued', 'in_flight')
    BEGIN
        UPDATE key_heads SET due_at = NEW.due_at WHERE key = NEW.key AND delivery = NEW.id;
    END;
    CREATE TRIGGER deliveries_head_leave AFTER UPDATE OF state ON deliveries
        WHEN OLD.state IN ('queued', 'in_flight') AND NEW.state NOT IN ('queued', 'in_flight')
    BEGIN
        UPDATE key_heads SET (delivery, due_at) = (
                SELECT id, due_at FROM deliveries
                WHERE key = NEW.key AND state IN ('queued', 'in_flight') ORDER BY id LIMIT 1)
            WHERE key = NEW.key AND delivery = OLD.id
              AND EXISTS (SELECT 1 FROM deliveries
                          WHERE key = NEW.key AND state IN ('queued', 'in_flight'));
        DELETE FROM key_heads WHERE key = NEW.key AND delivery = OLD.id;
    END;
    CREATE TRIGGER deliveries_head_enter AFTER UPDATE OF state ON deliveries
        WHEN OLD.state NOT IN ('queued', 'in_flight') AND NEW.state IN ('queued', 'in_flight')
    BEGIN
        INSERT INTO key_heads (key, delivery, due_at) VALUES (NEW.key, NEW.id, NEW.due_at)
            ON CONFLICT (key) DO UPDATE SET delivery = excluded.delivery, due_at = excluded.due_at
            WHERE excluded.delivery < key_heads.delivery;
    END;
";

/// 4, first part: attribute values one row per (tenant, user, attribute) for
/// segmentation in SQL, and attribute names with their owner (the empty
/// string: written through the API; existing names start there, and an
/// integration importing one adopts it).
const V4_TABLES: &str = "
    CREATE TABLE attribute_values (
        tenant     TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        name       TEXT NOT NULL,
        value      TEXT NOT NULL,
        num        BLOB,                    -- Decimal::sort_key of a plain decimal number, else NULL
        generation INTEGER NOT NULL DEFAULT 0,  -- the import run that wrote it (0: the API)
        PRIMARY KEY (tenant, user_id, name)
    ) WITHOUT ROWID;
    ALTER TABLE attribute_names ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    -- The last generation of each integration's imports.
    CREATE TABLE attribute_generations (
        tenant      TEXT NOT NULL,
        integration TEXT NOT NULL,
        generation  INTEGER NOT NULL,
        PRIMARY KEY (tenant, integration)
    ) WITHOUT ROWID;
";

/// 4, second part: the indexes segmentation reads, and the schema-3 table goes.
const V4_INDEXES: &str = "
    DROP TABLE attributes;
    CREATE INDEX attribute_values_text ON attribute_values (tenant, name, value);
    CREATE INDEX attribute_values_num ON attribute_values (tenant, name, num);
";

/// 5, first part: attribute values one row per (tenant, user, owner), the
/// values packed in one blob by slot (see `packed`); `attribute_names.slot`
/// gives each name's slot within its owner's rows. The indexes segmentation
/// reads are expression indexes built on first use.
const V5_TABLES: &str = "
    CREATE TABLE attribute_rows (
        id         INTEGER PRIMARY KEY,
        tenant     TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        owner      TEXT NOT NULL,            -- the integration, '' for the API
        generation INTEGER NOT NULL DEFAULT 0,  -- the import run that last wrote the row (0: the API)
        created    INTEGER NOT NULL DEFAULT 1,  -- 1 when the last write inserted the row (read by RETURNING)
        vals       BLOB NOT NULL,            -- slot -> text, packed
        UNIQUE (tenant, user_id, owner)
    );
    ALTER TABLE attribute_names ADD COLUMN slot INTEGER NOT NULL DEFAULT -1;
";

/// 5, last part: the schema-4 table goes.
const V5_DROP: &str = "
    DROP TABLE attribute_values;
";

/// 5, the step in Rust: slots for every registered name (per tenant and
/// owner, in name order), then every schema-4 value into its owner's row.
fn v5_rows(tx: &Transaction<'_>) -> Db<()> {
    let names: Vec<(String, String, String)> = tx
        .prepare("SELECT tenant, owner, name FROM attribute_names ORDER BY tenant, owner, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut slots: HashMap<(String, String), (String, usize)> = HashMap::new();
    let mut next: HashMap<(String, String), usize> = HashMap::new();
    let mut set_slot =
        tx.prepare("UPDATE attribute_names SET slot = ?3 WHERE tenant = ?1 AND name = ?2")?;
    for (tenant, owner, name) in names {
        let n = next.entry((tenant.clone(), owner.clone())).or_insert(0);
        set_slot.execute(params![tenant, name, sql_limit(*n)])?;
        slots.insert((tenant, name), (owner, *n));
        *n += 1;
    }
    let mut read = tx.prepare(
        "SELECT tenant, user_id, name, value, generation FROM attribute_values \
         ORDER BY tenant, user_id",
    )?;
    let mut insert = tx.prepare(
        "INSERT INTO attribute_rows (tenant, user_id, owner, generation, vals) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, user_id, owner) DO UPDATE SET \
         generation = max(generation, excluded.generation), vals = sb_merge(vals, excluded.vals)",
    )?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let tenant: String = row.get(0)?;
        let user: String = row.get(1)?;
        let name: String = row.get(2)?;
        let value: String = row.get(3)?;
        let generation: i64 = row.get(4)?;
        // A value without a registered name belongs to the API (schema 4 never wrote one).
        let (owner, slot) = match slots.get(&(tenant.clone(), name.clone())) {
            Some(s) => s.clone(),
            None => {
                let n = next.entry((tenant.clone(), String::new())).or_insert(0);
                tx.execute(
                    "INSERT INTO attribute_names (tenant, name, owner, slot) VALUES (?1, ?2, '', ?3)",
                    params![tenant, name, sql_limit(*n)],
                )?;
                let s = (String::new(), *n);
                slots.insert((tenant.clone(), name.clone()), s.clone());
                *n += 1;
                s
            }
        };
        let mut vals = Vec::new();
        super::packed::push(&mut vals, slot, &value);
        insert.execute(params![tenant, user, owner, generation, vals])?;
    }
    Ok(())
}

/// 4, the step in Rust: every schema-3 JSON object of attributes becomes one
/// row per attribute, with its numeric key.
fn v4_values(tx: &Transaction<'_>) -> Db<()> {
    let mut read = tx.prepare("SELECT tenant, user_id, attrs FROM attributes")?;
    let mut insert = tx.prepare(
        "INSERT OR REPLACE INTO attribute_values (tenant, user_id, name, value, num, generation) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0)",
    )?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let tenant: String = row.get(0)?;
        let user: String = row.get(1)?;
        let json: String = row.get(2)?;
        let Ok(attrs) = serde_json::from_str::<crate::attributes::Attributes>(&json) else {
            return Err(corrupt(format!(
                "the attributes of user {user:?} (tenant {tenant:?}) are not a JSON object of strings"
            )));
        };
        for (name, value) in &attrs {
            let num = crate::attributes::sql::num_key(value);
            insert.execute(params![tenant, user, name, value, num])?;
        }
    }
    Ok(())
}

/// 2, the step in Rust: the ordering key of each schema-1 delivery that may
/// still be sent (tenant, destination and the target's rate key, as the engine
/// builds them); a row that cannot be decoded keeps its unique key and is
/// dead-lettered by its first claim.
fn v2_keys(tx: &Transaction<'_>) -> Db<()> {
    let rows: Vec<(i64, String, String, String)> = tx
        .prepare(
            "SELECT d.id, d.destination, d.target, e.body FROM deliveries d \
             JOIN events e ON e.seq = d.event \
             WHERE d.state IN ('queued', 'in_flight', 'parked', 'dead') ORDER BY d.id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut subjects: HashMap<String, Option<String>> = HashMap::new();
    let mut update = tx.prepare("UPDATE deliveries SET key = ?2 WHERE id = ?1")?;
    for (id, destination, target, body) in rows {
        let Ok(target) = serde_json::from_str::<Target>(&target) else {
            continue;
        };
        let subject = subjects
            .entry(body)
            .or_insert_with_key(|body| {
                serde_json::from_str::<Event>(body)
                    .ok()
                    .and_then(|e| e.subject.map(|s| s.id))
            })
            .clone();
        let key = format!(
            "default|{destination}|{}",
            target.rate_key(subject.as_deref())
        );
        update.execute(params![id, key])?;
    }
    Ok(())
}

/// Connection settings (every open).
pub(super) fn configure(conn: &Connection, writer: bool) -> Db<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    super::packed::register(conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if writer {
        // Returns the resulting mode ("memory" for in-memory databases).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", Durability::Normal.pragma())?;
    }
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB of page cache per connection.
    conn.pragma_update(None, "cache_size", -16_000)?;
    Ok(())
}

/// Brings the schema to [`VERSION`] in one transaction; refuses a newer one.
pub(super) fn migrate(conn: &mut Connection) -> Db<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(version).unwrap_or(usize::MAX);
    if current > VERSION {
        return Err(corrupt(format!(
            "the database's schema version is {version}, newer than this version of \
             switchboard understands ({VERSION})"
        )));
    }
    apply(&tx, current, VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Applies the migrations from version `from` to version `to` in `tx`.
fn apply(tx: &Transaction<'_>, from: usize, to: usize) -> Db<()> {
    for (i, migration) in MIGRATIONS.iter().enumerate().take(to).skip(from) {
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Steps(before, step, after) => {
                tx.execute_batch(before)?;
                step(tx)?;
                tx.execute_batch(after)?;
            }
        }
        tx.pragma_update(None, "user_version", sql_limit(i + 1))?;
    }
    Ok(())
}

/// The schema up to version `version`, for migration tests.
#[cfg(test)]
pub(super) fn create_up_to(conn: &mut Connection, version: usize) -> Db<()> {
    let tx = conn.transaction()?;
    apply(&tx, 0, version)?;
    tx.commit()?;
    Ok(())
}

/// The v1 schema, for migration tests.
#[cfg(test)]
pub(super) fn create_v1(conn: &Connection) -> Db<()> {
    conn.execute_batch(V1)?;
    conn.pragma_update(None, "user_version", 1)?;
    Ok(())
}
