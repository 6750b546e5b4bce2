//! `RunStore`, `RuleStore` and `OnceStore` for `SqliteStore`: integrations and their runs per (tenant, name), route rules per tenant, single-use keys.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{
    Db, SqliteStore, corrupt, from_json, millis, opt_time, plus, sql_limit, tenant, time, to_json,
};
use crate::integration::{IntegrationConfig, RunOutcome, RunRecord};
use crate::store::{OnceStore, RouteRule, RuleStore, RunStore};
use crate::tenant::TenantId;
use crate::{Error, ErrorKind, Result};

const ABANDONED: &str = "abandoned: lease expired (process died?)";

fn new_run(tenant: &TenantId, integration: &str, started_at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id: 0,
        tenant: tenant.clone(),
        integration: integration.to_owned(),
        started_at,
        finished_at: None,
        outcome: RunOutcome::Running,
        rows_read: 0,
        rows_imported: 0,
        rows_rejected: 0,
        row_errors: Vec::new(),
        properties_imported: 0,
        error: None,
        details: serde_json::Value::Null,
    }
}

fn start_run_rows(
    conn: &Connection,
    tenant: &TenantId,
    integration: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Db<Option<RunRecord>> {
    let now_ms = millis(now);
    let found: Vec<(i64, Option<i64>, String)> = conn
        .prepare_cached(
            "SELECT id, lease_until, record FROM runs \
             WHERE tenant = ?1 AND integration = ?2 AND outcome = 'running'",
        )?
        .query_map(params![tenant.as_str(), integration], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if found
        .iter()
        .any(|(_, until, _)| until.is_some_and(|t| t > now_ms))
    {
        return Ok(None);
    }
    // Runs whose lease expired were abandoned by a process that died.
    let mut abandon = conn.prepare_cached(
        "UPDATE runs SET outcome = 'failed', finished_at = ?2, lease_until = NULL, \
         record = ?3 WHERE id = ?1",
    )?;
    for (id, _, record) in found {
        let mut run: RunRecord =
            from_json(&record).unwrap_or_else(|_| new_run(tenant, integration, now));
        run.id = id;
        run.tenant = tenant.clone();
        run.outcome = RunOutcome::Failed;
        run.finished_at = Some(now);
        run.error = Some(ABANDONED.to_owned());
        abandon.execute(params![id, now_ms, to_json(&run)?])?;
    }
    let mut run = new_run(tenant, integration, now);
    let until = plus(now_ms, lease);
    run.id = conn
        .prepare_cached(
            "INSERT INTO runs (tenant, integration, started_at, outcome, lease_until, record) \
             VALUES (?1, ?2, ?3, 'running', ?4, ?5) RETURNING id",
        )?
        .query_row(
            params![tenant.as_str(), integration, now_ms, until, to_json(&run)?],
            |r| r.get(0),
        )?;
    Ok(Some(run))
}

fn run_from_row(row: &rusqlite::Row<'_>) -> Db<RunRecord> {
    let record: String = row.get(6)?;
    let mut run: RunRecord = from_json(&record)?;
    run.id = row.get(0)?;
    run.tenant = tenant(row.get(1)?)?;
    run.integration = row.get(2)?;
    run.started_at = time(row.get(3)?)?;
    run.finished_at = opt_time(row.get(4)?)?;
    let outcome: String = row.get(5)?;
    run.outcome = RunOutcome::parse(&outcome)
        .ok_or_else(|| corrupt(format!("unknown stored run outcome {outcome:?}")))?;
    Ok(run)
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()> {
        let tenant = config.tenant.as_str().to_owned();
        let name = config.name.clone();
        let json = to_json(config)?;
        self.write("put_integration", move |conn| {
            conn.prepare_cached(
                "INSERT INTO integrations (tenant, name, config) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant, name) DO UPDATE SET config = excluded.config",
            )?
            .execute(params![tenant, name, json])?;
            Ok(())
        })
        .await
    }

    async fn integrations(&self, tenant: Option<&TenantId>) -> Result<Vec<IntegrationConfig>> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        self.read("integrations", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tenant, config FROM integrations WHERE (?1 IS NULL OR tenant = ?1) \
                 ORDER BY tenant, name",
            )?;
            let mut rows = stmt.query(params![tenant])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let mut config: IntegrationConfig = from_json(row.get_ref(1)?.as_str()?)?;
                config.tenant = super::tenant(row.get(0)?)?;
                out.push(config);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_integration(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        let tenant = tenant.as_str().to_owned();
        let name = name.to_owned();
        self.write("delete_integration", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM integrations WHERE tenant = ?1 AND name = ?2")?
                .execute(params![tenant, name])?;
            // Its attribute names are freed under the cap, their values deleted.
            super::attributes::delete_integration_attributes(conn, &tenant, &name)?;
            Ok(n > 0)
        })
        .await
    }

    async fn start_run(
        &self,
        tenant: &TenantId,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>> {
        let tenant = tenant.clone();
        let integration = integration.to_owned();
        self.write("start_run", move |conn| {
            start_run_rows(conn, &tenant, &integration, now, lease)
        })
        .await
    }

    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
        let until = plus(millis(now), lease);
        self.write("renew_run", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE runs SET lease_until = ?2 WHERE id = ?1 AND outcome = 'running'",
                )?
                .execute(params![run_id, until])?;
            Ok(n == 1)
        })
        .await
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<()> {
        let json = to_json(run)?;
        let id = run.id;
        let tenant = run.tenant.as_str().to_owned();
        let integration = run.integration.clone();
        let finished_at = run.finished_at.map(millis);
        let outcome = run.outcome.as_str();
        self.write("finish_run", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?4, outcome = ?5, lease_until = NULL, \
                     record = ?6 WHERE id = ?1 AND tenant = ?2 AND integration = ?3",
                )?
                .execute(params![id, tenant, integration, finished_at, outcome, json])?;
            if n == 0 {
                return Err(Error::new(ErrorKind::NotFound, format!("run {id} not found")).into());
            }
            Ok(())
        })
        .await
    }

    async fn runs(
        &self,
        tenant: &TenantId,
        integration: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let tenant = tenant.as_str().to_owned();
        let integration = integration.to_owned();
        let limit = sql_limit(limit);
        self.read("runs", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, tenant, integration, started_at, finished_at, outcome, record \
                 FROM runs WHERE tenant = ?1 AND integration = ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![tenant, integration, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(run_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl RuleStore for SqliteStore {
    async fn put_rule(&self, rule: &RouteRule) -> Result<()> {
        let tenant = rule.tenant.as_str().to_owned();
        let route = rule.route.clone();
        let enabled = rule.enabled;
        let target = rule.target.as_ref().map(to_json).transpose()?;
        let updated_at = millis(rule.updated_at);
        self.write("put_rule", move |conn| {
            if enabled.is_none() && target.is_none() {
                conn.prepare_cached("DELETE FROM route_rules WHERE tenant = ?1 AND route = ?2")?
                    .execute(params![tenant, route])?;
                return Ok(());
            }
            conn.prepare_cached(
                "INSERT INTO route_rules (tenant, route, enabled, target, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (tenant, route) DO UPDATE SET enabled = excluded.enabled, \
                   target = excluded.target, updated_at = excluded.updated_at",
            )?
            .execute(params![tenant, route, enabled, target, updated_at])?;
            Ok(())
        })
        .await
    }

    async fn rules(&self, tenant: &TenantId) -> Result<Vec<RouteRule>> {
        let t = tenant.clone();
        self.read("rules", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT route, enabled, target, updated_at FROM route_rules \
                 WHERE tenant = ?1 ORDER BY route",
            )?;
            let mut rows = stmt.query(params![t.as_str()])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let target: Option<String> = row.get(2)?;
                out.push(RouteRule {
                    tenant: t.clone(),
                    route: row.get(0)?,
                    enabled: row.get(1)?,
                    target: target.as_deref().map(from_json).transpose()?,
                    updated_at: time(row.get(3)?)?,
                });
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl OnceStore for SqliteStore {
    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let scope = scope.to_owned();
        let key = key.to_owned();
        let expires_at = millis(expires_at);
        let now = millis(now);
        self.write("remember_once", move |conn| {
            // Forget a few expired keys on the way (bounded work per call).
            conn.prepare_cached(
                "DELETE FROM remembered WHERE (scope, key) IN \
                 (SELECT scope, key FROM remembered WHERE expires_at <= ?1 LIMIT 64)",
            )?
            .execute(params![now])?;
            // Inserts, or takes over a key whose memory has expired.
            let fresh = conn
                .prepare_cached(
                    "INSERT INTO remembered (scope, key, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE remembered.expires_at <= ?4",
                )?
                .execute(params![scope, key, expires_at, now])?;
            Ok(fresh > 0)
        })
        .await
    }
}
