//! The in-memory records beside the outbox: connections (secrets kept sealed), identity links, integrations and runs, route rules, single-use keys and attributes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, expires};
use crate::attributes::{
    AttributeName, AttributeOwner, AttributePage, AttributeRecord, AttributeStore, Attributes,
    Filter, ImportMode, ImportRun, RemovedAttributes, UpsertStats, check_attribute_cap,
    check_import_cap, check_owners,
};
use crate::identity::{IdentityLink, LinkOrigin};
use crate::integration::{IntegrationConfig, RunOutcome, RunRecord};
use crate::secret::{open_or_refuse, seal_or_refuse};
use crate::store::{ConnectionStore, LinkStore, OnceStore, RouteRule, RuleStore, RunStore};
use crate::tenant::{Connection, ConnectionKey, ConnectionState, Secrets, TenantId};
use crate::{Error, ErrorKind, Result};

/// A connection as stored: its secrets sealed.
#[derive(Clone)]
struct StoredConnection {
    tenant: TenantId,
    key: ConnectionKey,
    sealed: String,
    expires_at: Option<DateTime<Utc>>,
    data: serde_json::Value,
    state: ConnectionState,
    is_default: bool,
    revision: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// One tenant's attributes (value and the generation that wrote it), its
/// registered attribute names with their owners, and each integration's last
/// import generation.
#[derive(Default)]
struct TenantAttributes {
    users: BTreeMap<String, BTreeMap<String, (String, i64)>>,
    names: BTreeMap<String, AttributeOwner>,
    generations: HashMap<String, i64>,
}

/// A run with its lease (None once finished).
struct StoredRun {
    run: RunRecord,
    lease_until: Option<DateTime<Utc>>,
}

/// Everything beside the outbox.
#[derive(Default)]
pub(super) struct Records {
    connections: BTreeMap<ConnectionKey, StoredConnection>,
    links: BTreeMap<(TenantId, String, String), IdentityLink>,
    integrations: BTreeMap<(TenantId, String), IntegrationConfig>,
    runs: Vec<StoredRun>,
    rules: BTreeMap<(TenantId, String), RouteRule>,
    once: HashMap<(String, String), DateTime<Utc>>,
    attributes: HashMap<TenantId, TenantAttributes>,
}

const ABANDONED: &str = "abandoned: lease expired (process died?)";

impl MemoryStore {
    fn seal(&self, key: &ConnectionKey, secrets: &Secrets) -> Result<String> {
        seal_or_refuse(self.keyring.as_deref(), &key.to_string(), secrets)
    }

    fn open(&self, c: &StoredConnection) -> Result<Connection> {
        let secrets = open_or_refuse(self.keyring.as_deref(), &c.key.to_string(), &c.sealed)?;
        Ok(Connection {
            tenant: c.tenant.clone(),
            key: c.key.clone(),
            secrets,
            expires_at: c.expires_at,
            data: c.data.clone(),
            state: c.state.clone(),
            is_default: c.is_default,
            revision: c.revision,
            created_at: c.created_at,
            updated_at: c.updated_at,
        })
    }
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn put_connection(
        &self,
        connection: &Connection,
        now: DateTime<Utc>,
    ) -> Result<Connection> {
        let sealed = self.seal(&connection.key, &connection.secrets)?;
        let mut r = self.records()?;
        let existing = r.connections.get(&connection.key);
        if let Some(e) = existing {
            if e.tenant != connection.tenant {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("connection {} belongs to another tenant", connection.key),
                ));
            }
        }
        let stored = StoredConnection {
            tenant: connection.tenant.clone(),
            key: connection.key.clone(),
            sealed,
            expires_at: connection.expires_at,
            data: connection.data.clone(),
            state: connection.state.clone(),
            is_default: connection.is_default,
            revision: existing.map_or(1, |e| e.revision + 1),
            created_at: existing.map_or(now, |e| e.created_at),
            updated_at: now,
        };
        if stored.is_default {
            for c in r.connections.values_mut() {
                if c.tenant == stored.tenant
                    && c.key.platform == stored.key.platform
                    && c.key != stored.key
                {
                    c.is_default = false;
                }
            }
        }
        r.connections.insert(stored.key.clone(), stored.clone());
        drop(r);
        let mut out = connection.clone();
        out.revision = stored.revision;
        out.created_at = stored.created_at;
        out.updated_at = stored.updated_at;
        Ok(out)
    }

    async fn connection(&self, key: &ConnectionKey) -> Result<Option<Connection>> {
        let stored = self.records()?.connections.get(key).cloned();
        stored.map(|c| self.open(&c)).transpose()
    }

    async fn default_connection(
        &self,
        tenant: &TenantId,
        platform: &str,
    ) -> Result<Option<Connection>> {
        let chosen = {
            let r = self.records()?;
            let mine: Vec<&StoredConnection> = r
                .connections
                .values()
                .filter(|c| &c.tenant == tenant && c.key.platform == platform)
                .collect();
            match mine.iter().find(|c| c.is_default) {
                Some(c) => Some((*c).clone()),
                None if mine.len() == 1 => mine.first().map(|c| (*c).clone()),
                None => None,
            }
        };
        chosen.map(|c| self.open(&c)).transpose()
    }

    async fn connections(&self, tenant: Option<&TenantId>) -> Result<Vec<Connection>> {
        let stored: Vec<StoredConnection> = self
            .records()?
            .connections
            .values()
            .filter(|c| tenant.is_none_or(|t| &c.tenant == t))
            .cloned()
            .collect();
        stored.iter().map(|c| self.open(c)).collect()
    }

    async fn delete_connection(&self, key: &ConnectionKey) -> Result<bool> {
        Ok(self.records()?.connections.remove(key).is_some())
    }

    async fn set_connection_state(
        &self,
        key: &ConnectionKey,
        state: &ConnectionState,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut r = self.records()?;
        match r.connections.get_mut(key) {
            Some(c) => {
                c.state = state.clone();
                c.updated_at = now;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn swap_secrets(
        &self,
        key: &ConnectionKey,
        expected_revision: u64,
        secrets: &Secrets,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Connection>> {
        let sealed = self.seal(key, secrets)?;
        let updated = {
            let mut r = self.records()?;
            let Some(c) = r.connections.get_mut(key) else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no connection {key}"),
                ));
            };
            if c.revision != expected_revision {
                return Ok(None);
            }
            c.sealed = sealed;
            c.expires_at = expires_at;
            c.revision += 1;
            c.updated_at = now;
            c.clone()
        };
        self.open(&updated).map(Some)
    }
}

#[async_trait]
impl LinkStore for MemoryStore {
    async fn put_link(&self, link: &IdentityLink) -> Result<()> {
        let mut r = self.records()?;
        let key = (
            link.tenant.clone(),
            link.platform.clone(),
            link.user_id.clone(),
        );
        if let Some(existing) = r.links.get(&key) {
            if existing.origin == LinkOrigin::Manual && link.origin != LinkOrigin::Manual {
                return Ok(());
            }
        }
        r.links.insert(key, link.clone());
        Ok(())
    }

    async fn link(
        &self,
        tenant: &TenantId,
        platform: &str,
        user_id: &str,
    ) -> Result<Option<IdentityLink>> {
        Ok(self
            .records()?
            .links
            .get(&(tenant.clone(), platform.to_owned(), user_id.to_owned()))
            .cloned())
    }

    async fn links(&self, tenant: &TenantId, platform: &str) -> Result<Vec<IdentityLink>> {
        Ok(self
            .records()?
            .links
            .values()
            .filter(|l| &l.tenant == tenant && l.platform == platform)
            .cloned()
            .collect())
    }

    async fn delete_link(&self, tenant: &TenantId, platform: &str, user_id: &str) -> Result<bool> {
        Ok(self
            .records()?
            .links
            .remove(&(tenant.clone(), platform.to_owned(), user_id.to_owned()))
            .is_some())
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn put_integration(&self, config: &IntegrationConfig) -> Result<()> {
        self.records()?
            .integrations
            .insert((config.tenant.clone(), config.name.clone()), config.clone());
        Ok(())
    }

    async fn integrations(&self, tenant: Option<&TenantId>) -> Result<Vec<IntegrationConfig>> {
        Ok(self
            .records()?
            .integrations
            .values()
            .filter(|c| tenant.is_none_or(|t| &c.tenant == t))
            .cloned()
            .collect())
    }

    async fn delete_integration(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        let removed = self
            .records()?
            .integrations
            .remove(&(tenant.clone(), name.to_owned()))
            .is_some();
        // Its attribute names are freed under the cap, their values deleted.
        self.release_integration(tenant, name)?;
        Ok(removed)
    }

    async fn start_run(
        &self,
        tenant: &TenantId,
        integration: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<RunRecord>> {
        let mut r = self.records()?;
        for s in r.runs.iter_mut() {
            if &s.run.tenant == tenant
                && s.run.integration == integration
                && s.run.outcome == RunOutcome::Running
            {
                if s.lease_until.is_some_and(|t| t > now) {
                    return Ok(None);
                }
                s.run.outcome = RunOutcome::Failed;
                s.run.finished_at = Some(now);
                s.run.error = Some(ABANDONED.to_owned());
                s.lease_until = None;
            }
        }
        let run = RunRecord {
            id: r.runs.len() as i64 + 1,
            tenant: tenant.clone(),
            integration: integration.to_owned(),
            started_at: now,
            finished_at: None,
            outcome: RunOutcome::Running,
            rows_read: 0,
            rows_imported: 0,
            rows_rejected: 0,
            row_errors: Vec::new(),
            properties_imported: 0,
            error: None,
            details: serde_json::Value::Null,
        };
        r.runs.push(StoredRun {
            run: run.clone(),
            lease_until: Some(expires(now, lease)),
        });
        Ok(Some(run))
    }

    async fn renew_run(&self, run_id: i64, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
        let mut r = self.records()?;
        match r
            .runs
            .iter_mut()
            .find(|s| s.run.id == run_id && s.run.outcome == RunOutcome::Running)
        {
            Some(s) => {
                s.lease_until = Some(expires(now, lease));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<()> {
        let mut r = self.records()?;
        match r.runs.iter_mut().find(|s| s.run.id == run.id) {
            Some(slot) => {
                let tenant = slot.run.tenant.clone();
                let integration = slot.run.integration.clone();
                slot.run = run.clone();
                // The run's identity is the store's, whatever the caller sent.
                slot.run.tenant = tenant;
                slot.run.integration = integration;
                slot.lease_until = None;
                Ok(())
            }
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("run {} not found", run.id),
            )),
        }
    }

    async fn runs(
        &self,
        tenant: &TenantId,
        integration: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        Ok(self
            .records()?
            .runs
            .iter()
            .rev()
            .filter(|s| &s.run.tenant == tenant && s.run.integration == integration)
            .take(limit)
            .map(|s| s.run.clone())
            .collect())
    }
}

#[async_trait]
impl RuleStore for MemoryStore {
    async fn put_rule(&self, rule: &RouteRule) -> Result<()> {
        let mut r = self.records()?;
        let key = (rule.tenant.clone(), rule.route.clone());
        if rule.enabled.is_none() && rule.target.is_none() {
            r.rules.remove(&key);
        } else {
            r.rules.insert(key, rule.clone());
        }
        Ok(())
    }

    async fn rules(&self, tenant: &TenantId) -> Result<Vec<RouteRule>> {
        Ok(self
            .records()?
            .rules
            .values()
            .filter(|r| &r.tenant == tenant)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl OnceStore for MemoryStore {
    async fn remember_once(
        &self,
        scope: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut r = self.records()?;
        let k = (scope.to_owned(), key.to_owned());
        if r.once.get(&k).is_some_and(|&exp| exp > now) {
            return Ok(false);
        }
        if r.once.len() >= 4096 {
            r.once.retain(|_, exp| *exp > now);
        }
        r.once.insert(k, expires_at);
        Ok(true)
    }
}

impl TenantAttributes {
    /// Writes `batch` as `writer` stamped `generation`, after the ownership
    /// and cap checks (nothing is written if they fail).
    fn write(
        &mut self,
        writer: &AttributeOwner,
        generation: i64,
        batch: &[AttributeRecord],
        cap: usize,
    ) -> Result<UpsertStats> {
        let names: BTreeSet<&str> = batch
            .iter()
            .flat_map(|r| r.attributes.keys().map(String::as_str))
            .collect();
        check_owners(&self.names, writer, names.iter().copied())?;
        let registered: BTreeSet<String> = self.names.keys().cloned().collect();
        let new_names = check_attribute_cap(&registered, batch, cap)?;
        let mut stats = UpsertStats {
            new_attribute_names: new_names.len(),
            ..UpsertStats::default()
        };
        for name in new_names {
            self.names.insert(name, writer.clone());
        }
        let mut seen = BTreeSet::new();
        // A user exists while it has an attribute.
        for record in batch.iter().filter(|r| !r.attributes.is_empty()) {
            let first_in_batch = seen.insert(record.user_id.as_str());
            let user = match self.users.get_mut(&record.user_id) {
                Some(user) => {
                    if first_in_batch {
                        stats.users_updated += 1;
                    }
                    user
                }
                None => {
                    stats.users_created += 1;
                    self.users.entry(record.user_id.clone()).or_default()
                }
            };
            for (k, v) in &record.attributes {
                user.insert(k.clone(), (v.clone(), generation));
            }
        }
        Ok(stats)
    }

    /// Removes values matching `remove` (name, generation); drops users left
    /// without attributes.
    fn remove_values(&mut self, remove: impl Fn(&str, i64) -> bool) -> u64 {
        let mut removed = 0;
        self.users.retain(|_, values| {
            values.retain(|name, (_, generation)| {
                let gone = remove(name, *generation);
                removed += u64::from(gone);
                !gone
            });
            !values.is_empty()
        });
        removed
    }

    fn release(&mut self, integration: &str, keep: &[String]) -> RemovedAttributes {
        let freed: BTreeSet<String> = self
            .names
            .iter()
            .filter(|(n, o)| o.integration() == Some(integration) && !keep.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &freed {
            self.names.remove(name);
        }
        RemovedAttributes {
            values: self.remove_values(|name, _| freed.contains(name)),
            names: freed.len() as u64,
        }
    }

    fn attributes_of(values: &BTreeMap<String, (String, i64)>) -> Attributes {
        values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn matching(&self, filter: &Filter) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, values)| filter.matches(&Self::attributes_of(values)))
            .map(|(u, _)| u.clone())
            .collect()
    }
}

impl MemoryStore {
    /// Deletes everything `integration` owns (its integration is deleted).
    pub(super) fn release_integration(&self, tenant: &TenantId, integration: &str) -> Result<()> {
        if let Some(t) = self.records()?.attributes.get_mut(tenant) {
            t.release(integration, &[]);
        }
        Ok(())
    }
}

#[async_trait]
impl AttributeStore for MemoryStore {
    async fn upsert(&self, tenant: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats> {
        let mut r = self.records()?;
        let t = r.attributes.entry(tenant.clone()).or_default();
        t.write(&AttributeOwner::Api, 0, batch, self.attribute_cap)
    }

    async fn begin_import(
        &self,
        tenant: &TenantId,
        integration: &str,
        mode: ImportMode,
        names: &[String],
    ) -> Result<ImportRun> {
        let mut r = self.records()?;
        let t = r.attributes.entry(tenant.clone()).or_default();
        let writer = AttributeOwner::Integration(integration.to_owned());
        check_owners(&t.names, &writer, names.iter().map(String::as_str))?;
        check_import_cap(&t.names, integration, names, self.attribute_cap)?;
        for name in names {
            t.names.insert(name.clone(), writer.clone());
        }
        let generation = t.generations.entry(integration.to_owned()).or_insert(0);
        *generation += 1;
        Ok(ImportRun {
            integration: integration.to_owned(),
            generation: *generation,
            mode,
            names: names.to_vec(),
        })
    }

    async fn write_import(
        &self,
        tenant: &TenantId,
        run: &ImportRun,
        batch: &[AttributeRecord],
    ) -> Result<UpsertStats> {
        if let Some(extra) = batch
            .iter()
            .flat_map(|r| r.attributes.keys())
            .find(|n| !run.names.contains(n))
        {
            return Err(Error::invalid_input(format!(
                "the attribute {extra:?} is not among the names the import run of {:?} maps",
                run.integration
            )));
        }
        let mut r = self.records()?;
        let t = r.attributes.entry(tenant.clone()).or_default();
        let writer = AttributeOwner::Integration(run.integration.clone());
        t.write(&writer, run.generation, batch, self.attribute_cap)
    }

    async fn finish_import(&self, tenant: &TenantId, run: &ImportRun) -> Result<RemovedAttributes> {
        let mut r = self.records()?;
        let Some(t) = r.attributes.get_mut(tenant) else {
            return Ok(RemovedAttributes::default());
        };
        let mut removed = t.release(&run.integration, &run.names);
        if run.mode == ImportMode::Snapshot {
            let owned: BTreeSet<String> = t
                .names
                .iter()
                .filter(|(_, o)| o.integration() == Some(run.integration.as_str()))
                .map(|(n, _)| n.clone())
                .collect();
            removed.values += t.remove_values(|name, generation| {
                owned.contains(name) && generation < run.generation
            });
        }
        Ok(removed)
    }

    async fn release_names(
        &self,
        tenant: &TenantId,
        integration: &str,
        keep: &[String],
    ) -> Result<RemovedAttributes> {
        Ok(self
            .records()?
            .attributes
            .get_mut(tenant)
            .map(|t| t.release(integration, keep))
            .unwrap_or_default())
    }

    async fn get(&self, tenant: &TenantId, user_id: &str) -> Result<Option<Attributes>> {
        Ok(self
            .records()?
            .attributes
            .get(tenant)
            .and_then(|t| t.users.get(user_id))
            .map(TenantAttributes::attributes_of))
    }

    async fn delete_user(&self, tenant: &TenantId, user_id: &str) -> Result<u64> {
        Ok(self
            .records()?
            .attributes
            .get_mut(tenant)
            .and_then(|t| t.users.remove(user_id))
            .map_or(0, |values| values.len() as u64))
    }

    async fn delete_value(&self, tenant: &TenantId, user_id: &str, name: &str) -> Result<bool> {
        let mut r = self.records()?;
        let Some(t) = r.attributes.get_mut(tenant) else {
            return Ok(false);
        };
        let Some(values) = t.users.get_mut(user_id) else {
            return Ok(false);
        };
        let removed = values.remove(name).is_some();
        if values.is_empty() {
            t.users.remove(user_id);
        }
        Ok(removed)
    }

    async fn delete_name(&self, tenant: &TenantId, name: &str) -> Result<RemovedAttributes> {
        let mut r = self.records()?;
        let Some(t) = r.attributes.get_mut(tenant) else {
            return Ok(RemovedAttributes::default());
        };
        let names = u64::from(t.names.remove(name).is_some());
        Ok(RemovedAttributes {
            values: t.remove_values(|n, _| n == name),
            names,
        })
    }

    async fn names(&self, tenant: &TenantId) -> Result<Vec<AttributeName>> {
        Ok(self
            .records()?
            .attributes
            .get(tenant)
            .map(|t| {
                t.names
                    .iter()
                    .map(|(name, owner)| AttributeName {
                        name: name.clone(),
                        owner: owner.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn query(&self, tenant: &TenantId, filter: &Filter) -> Result<Vec<String>> {
        let r = self.records()?;
        Ok(r.attributes
            .get(tenant)
            .map(|t| t.matching(filter))
            .unwrap_or_default())
    }

    async fn query_page(
        &self,
        tenant: &TenantId,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<AttributePage> {
        let matches = self.query(tenant, filter).await?;
        Ok(crate::attributes::sql::page_of(matches, after, limit))
    }
}
