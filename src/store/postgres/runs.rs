//! `RunStore` for `PostgresStore`: integrations per tenant and their runs, never overlapping across replicas.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PostgresStore, corrupt, db, from_json, micros, sql_limit, tenant, to_json};
use crate::integration::{IntegrationConfig, RunOutcome, RunRecord};
use crate::store::RunStore;
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

fn run_from_row(r: &tokio_postgres::Row) -> Result<RunRecord> {
    let record: String = r.get(6);
    let mut run: RunRecord = from_json(&record)?;
    run.id = r.get(0);
    run.tenant = tenant(r.get(1))?;
    run.integration = r.get(2);
    run.started_at = r.get(3);
    run.finished_at = r.get(4);
    let outcome: String = r.get(5);
    run.outcome = RunOutcome::parse(&outcome)
        .ok_or_else(|| corrupt(format!("unknown stored run outcome {outcome:?}")))?;
    Ok(run)
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()> {
        let json = to_json(config)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO integrations (tenant, name, config) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, name) DO UPDATE SET config = excluded.config",
                &[&config.tenant.as_str(), &config.name, &json],
            )
            .await
            .map_err(db("put_integration"))?;
        Ok(())
    }

    async fn integrations(&self, tenant_id: Option<&TenantId>) -> Result<Vec<IntegrationConfig>> {
        let t = tenant_id.map(TenantId::as_str);
        let client = self.client().await?;
        client
            .query(
                "SELECT tenant, config FROM integrations WHERE ($1::text IS NULL OR tenant = $1) \
                 ORDER BY tenant, name",
                &[&t],
            )
            .await
            .map_err(db("integrations"))?
            .iter()
            .map(|r| {
                let config: String = r.get(1);
                let mut c: IntegrationConfig = from_json(&config)?;
                c.tenant = tenant(r.get(0))?;
                Ok(c)
            })
            .collect()
    }

    async fn delete_integration(&self, tenant_id: &TenantId, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("delete_integration"))?;
        let n = tx
            .execute(
                "DELETE FROM integrations WHERE tenant = $1 AND name = $2",
                &[&tenant_id.as_str(), &name],
            )
            .await
            .map_err(db("delete_integration"))?;
        // Its attribute names are freed under the cap, their values deleted.
        super::attributes::release_in(&tx, tenant_id.as_str(), name, &[]).await?;
        tx.commit().await.map_err(db("delete_integration"))?;
        Ok(n > 0)
    }

    async fn start_run(
        &self,
        tenant_id: &TenantId,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>> {
        let t = tenant_id.as_str();
        let lnow = self.lease_now(now);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("start_run"))?;
        // One starter per integration at a time, across replicas; the partial
        // unique index on running runs backs it up.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('switchboard:run:' || $1 || '/' || $2))",
            &[&t, &integration],
        )
        .await
        .map_err(db("start_run"))?;
        let running = tx
            .query(
                "SELECT id, lease_until > coalesce($3::timestamptz, now()), record FROM runs \
                 WHERE tenant = $1 AND integration = $2 AND outcome = 'running'",
                &[&t, &integration, &lnow],
            )
            .await
            .map_err(db("start_run"))?;
        if running
            .iter()
            .any(|r| r.get::<_, Option<bool>>(1).unwrap_or(false))
        {
            return Ok(None);
        }
        // Runs whose lease expired were abandoned by a process that died.
        for r in &running {
            let id: i64 = r.get(0);
            let record: String = r.get(2);
            let mut run: RunRecord =
                from_json(&record).unwrap_or_else(|_| new_run(tenant_id, integration, now));
            run.id = id;
            run.tenant = tenant_id.clone();
            run.outcome = RunOutcome::Failed;
            run.finished_at = Some(now);
            run.error = Some(ABANDONED.to_owned());
            tx.execute(
                "UPDATE runs SET outcome = 'failed', finished_at = $2, lease_until = NULL, \
                 record = $3 WHERE id = $1",
                &[&id, &now, &to_json(&run)?],
            )
            .await
            .map_err(db("start_run"))?;
        }
        let mut run = new_run(tenant_id, integration, now);
        let row = tx
            .query_one(
                "INSERT INTO runs (tenant, integration, started_at, outcome, lease_until, record) \
                 VALUES ($1, $2, $3, 'running', \
                   coalesce($4::timestamptz, now()) + $5::int8 * interval '1 microsecond', $6) \
                 RETURNING id",
                &[
                    &t,
                    &integration,
                    &now,
                    &lnow,
                    &micros(lease),
                    &to_json(&run)?,
                ],
            )
            .await
            .map_err(db("start_run"))?;
        run.id = row.get(0);
        tx.commit().await.map_err(db("start_run"))?;
        Ok(Some(run))
    }

    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE runs SET \
                   lease_until = coalesce($2::timestamptz, now()) + $3::int8 * interval '1 microsecond' \
                 WHERE id = $1 AND outcome = 'running'",
                &[&run_id, &self.lease_now(now), &micros(lease)],
            )
            .await
            .map_err(db("renew_run"))?;
        Ok(n > 0)
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<()> {
        let json = to_json(run)?;
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE runs SET finished_at = $4, outcome = $5, lease_until = NULL, \
                 record = $6 WHERE id = $1 AND tenant = $2 AND integration = $3",
                &[
                    &run.id,
                    &run.tenant.as_str(),
                    &run.integration,
                    &run.finished_at,
                    &run.outcome.as_str(),
                    &json,
                ],
            )
            .await
            .map_err(db("finish_run"))?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("run {} not found", run.id),
            ));
        }
        Ok(())
    }

    async fn runs(
        &self,
        tenant_id: &TenantId,
        integration: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, tenant, integration, started_at, finished_at, outcome, record \
                 FROM runs WHERE tenant = $1 AND integration = $2 ORDER BY id DESC LIMIT $3",
                &[&tenant_id.as_str(), &integration, &sql_limit(limit)],
            )
            .await
            .map_err(db("runs"))?
            .iter()
            .map(run_from_row)
            .collect()
    }
}
