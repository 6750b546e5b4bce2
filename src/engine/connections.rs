//! Tenants' connections inside the engine: looking up a delivery's connection (cached, fenced by the scope epoch), connecting, disconnecting and parking per (tenant, scope).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Inner, Switchboard};
use crate::Result;
use crate::store::{ClaimedDelivery, ScopeChange};
use crate::tenant::{Connection, ConnectionKey, ConnectionState, TenantId};

/// A connection is re-read from the store at least this often, and whenever a
/// claim shows its scope's epoch moved (a reconnect on any instance).
const CONNECTION_TTL: Duration = Duration::from_secs(5);

struct Cached {
    at: tokio::time::Instant,
    epoch: u64,
    connection: Option<Arc<Connection>>,
}

/// (tenant, platform) → the tenant's default connection, as last read.
#[derive(Default)]
pub(crate) struct ConnectionCache {
    map: Mutex<HashMap<(TenantId, String), Cached>>,
}

impl ConnectionCache {
    fn get(
        &self,
        tenant: &TenantId,
        platform: &str,
        epoch: u64,
    ) -> Option<Option<Arc<Connection>>> {
        let map = self.map.lock().ok()?;
        let c = map.get(&(tenant.clone(), platform.to_owned()))?;
        let fresh = c.epoch == epoch
            && tokio::time::Instant::now().saturating_duration_since(c.at) < CONNECTION_TTL;
        fresh.then(|| c.connection.clone())
    }

    fn put(&self, tenant: &TenantId, platform: &str, epoch: u64, c: Option<Arc<Connection>>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() > 50_000 {
                map.clear();
            }
            map.insert(
                (tenant.clone(), platform.to_owned()),
                Cached {
                    at: tokio::time::Instant::now(),
                    epoch,
                    connection: c,
                },
            );
        }
    }

    fn forget(&self, tenant: &TenantId, platform: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&(tenant.clone(), platform.to_owned()));
        }
    }
}

/// What the engine found for a claimed delivery's connection.
pub(crate) enum Lookup {
    /// Go ahead with this connection (`None`: the destination needs none, or
    /// uses its fixed credentials).
    Use(Option<Arc<Connection>>),
    /// Park: no usable connection.
    Park(String),
}

impl Inner {
    /// The connection a claimed delivery goes out with.
    pub(crate) async fn lookup_connection(&self, c: &ClaimedDelivery) -> Result<Lookup> {
        let Some(entry) = self.destinations.get(&c.destination) else {
            return Ok(Lookup::Use(None));
        };
        let Some(platform) = &entry.platform else {
            return Ok(Lookup::Use(None));
        };
        let tenant = &c.event.tenant;
        let found = match self.connections.get(tenant, platform, c.scope_epoch) {
            Some(found) => found,
            None => {
                let found = self
                    .store
                    .default_connection(tenant, platform)
                    .await?
                    .map(Arc::new);
                self.connections
                    .put(tenant, platform, c.scope_epoch, found.clone());
                found
            }
        };
        Ok(match found {
            Some(conn) => match &conn.state {
                ConnectionState::Connected => Lookup::Use(Some(conn)),
                ConnectionState::Disconnected { reason, .. } => Lookup::Park(format!(
                    "{} connection {} is disconnected: {reason}",
                    platform, conn.key
                )),
            },
            None if entry.fixed_credentials && tenant.is_default() => Lookup::Use(None),
            None => Lookup::Park(format!(
                "not connected: tenant {tenant} has no {platform} connection"
            )),
        })
    }

    /// Records that a connection answered `Disconnected` (revoked token,
    /// uninstalled app): marks the connection disconnected, unless it changed
    /// since the delivery read it (a reconnect). Parking itself happens in the
    /// `Parked` completion, fenced by the scope epoch.
    pub(crate) async fn connection_failed(&self, connection: &Connection, reason: &str) {
        let now = self.clock.now();
        let current = match self.store.connection(&connection.key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the connection to disconnect it");
                return;
            }
        };
        if let Some(current) = current {
            if current.revision == connection.revision && current.is_connected() {
                let state = ConnectionState::Disconnected {
                    reason: reason.to_owned(),
                    since: now,
                };
                if let Err(e) = self
                    .store
                    .set_connection_state(&connection.key, &state, now)
                    .await
                {
                    tracing::warn!(error = %e, "could not record the disconnection");
                }
            }
        }
        self.connections
            .forget(&connection.tenant, connection.platform());
    }

    fn scope_of(&self, destination: &str) -> Result<String> {
        Ok(self.entry(destination)?.scope.clone())
    }
}

impl Switchboard {
    /// Stores a tenant's connection (a new install, new credentials) as
    /// connected and resumes that tenant's parked deliveries to the platform,
    /// in their original order. Returns the connection as stored.
    pub async fn connect(&self, connection: Connection) -> Result<Connection> {
        let now = self.inner.clock.now();
        let mut connection = connection;
        connection.state = ConnectionState::Connected;
        let stored = self.inner.store.put_connection(&connection, now).await?;
        self.inner
            .connections
            .forget(&stored.tenant, stored.platform());
        self.inner
            .store
            .set_scope(&stored.tenant, stored.platform(), ScopeChange::Connect, now)
            .await?;
        self.inner.wake.notify_one();
        Ok(stored)
    }

    /// Marks a connection disconnected (the app was uninstalled, the token
    /// revoked) and parks its tenant's deliveries to the platform; nothing is
    /// dropped. Returns how many deliveries were parked.
    pub async fn disconnect_connection(&self, key: &ConnectionKey, reason: &str) -> Result<u64> {
        let now = self.inner.clock.now();
        let Some(c) = self.inner.store.connection(key).await? else {
            return Err(crate::Error::new(
                crate::ErrorKind::NotFound,
                format!("no connection {key}"),
            ));
        };
        let state = ConnectionState::Disconnected {
            reason: reason.to_owned(),
            since: now,
        };
        self.inner
            .store
            .set_connection_state(key, &state, now)
            .await?;
        self.inner.connections.forget(&c.tenant, c.platform());
        let in_use = self
            .inner
            .store
            .default_connection(&c.tenant, c.platform())
            .await?
            .is_some_and(|d| d.key == c.key);
        if !in_use {
            return Ok(0);
        }
        self.inner
            .store
            .set_scope(
                &c.tenant,
                c.platform(),
                ScopeChange::Disconnect {
                    reason: reason.to_owned(),
                    epoch: None,
                },
                now,
            )
            .await
    }

    /// The default tenant's [`Switchboard::reconnect_tenant`].
    pub async fn reconnect(&self, destination: &str) -> Result<u64> {
        self.reconnect_tenant(&TenantId::default_tenant(), destination)
            .await
    }

    /// The default tenant's [`Switchboard::disconnect_tenant`].
    pub async fn disconnect(&self, destination: &str, reason: &str) -> Result<u64> {
        self.disconnect_tenant(&TenantId::default_tenant(), destination, reason)
            .await
    }

    /// Resumes a tenant's parked deliveries of `destination`'s scope (its
    /// platform, or the destination itself) in their original order; for a
    /// platform, also marks the tenant's default connection connected. Returns
    /// how many resumed.
    pub async fn reconnect_tenant(&self, tenant: &TenantId, destination: &str) -> Result<u64> {
        let scope = self.inner.scope_of(destination)?;
        let now = self.inner.clock.now();
        if let Some(platform) = &self.inner.entry(destination)?.platform {
            if let Some(c) = self
                .inner
                .store
                .default_connection(tenant, platform)
                .await?
            {
                self.inner
                    .store
                    .set_connection_state(&c.key, &ConnectionState::Connected, now)
                    .await?;
            }
            self.inner.connections.forget(tenant, platform);
        }
        let n = self
            .inner
            .store
            .set_scope(tenant, &scope, ScopeChange::Connect, now)
            .await?;
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Parks a tenant's deliveries of `destination`'s scope until
    /// [`Switchboard::reconnect_tenant`] (or [`Switchboard::connect`]).
    pub async fn disconnect_tenant(
        &self,
        tenant: &TenantId,
        destination: &str,
        reason: &str,
    ) -> Result<u64> {
        let scope = self.inner.scope_of(destination)?;
        self.inner
            .store
            .set_scope(
                tenant,
                &scope,
                ScopeChange::Disconnect {
                    reason: reason.to_owned(),
                    epoch: None,
                },
                self.inner.clock.now(),
            )
            .await
    }
}
