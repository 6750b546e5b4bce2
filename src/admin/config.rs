//! `AdminConfig`: how the host scopes the console (the session → tenants function), where its data comes from, and optional hooks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::event::Person;
use crate::integration::IntegrationConfig;
use crate::schedule::Scheduler;
use crate::store::DeliveryQueryStore;
use crate::tenant::TenantId;

/// Who is looking at the console, as the host's authentication says.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// A stable id of the host's session (CSRF tokens are bound to it): a
    /// session id, or a user id plus a per-login nonce. Never shown.
    pub id: String,
    /// The tenants this admin may see and change; nothing else is reachable.
    pub tenants: Vec<TenantId>,
    /// Who the admin is, for display ("signed in as …").
    pub display_name: Option<String>,
}

impl fmt::Debug for AdminSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSession")
            .field("id", &"[redacted]")
            .field("tenants", &self.tenants)
            .field("display_name", &self.display_name)
            .finish()
    }
}

impl AdminSession {
    /// A session `id` that may administer `tenants`.
    pub fn new(id: impl Into<String>, tenants: impl IntoIterator<Item = TenantId>) -> Self {
        AdminSession {
            id: id.into(),
            tenants: tenants.into_iter().collect(),
            display_name: None,
        }
    }

    /// Sets the name shown in the header.
    #[must_use]
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Whether this admin may see `tenant`.
    pub fn may_see(&self, tenant: &TenantId) -> bool {
        self.tenants.iter().any(|t| t == tenant)
    }
}

/// A platform user offered when mapping a person by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformUser {
    /// The platform's user id (stored in the link).
    pub id: String,
    /// What the admin sees (name, email).
    pub label: String,
}

/// The host's people, for "Sync users" and manual mapping.
#[async_trait]
pub trait PeopleDirectory: Send + Sync {
    /// The tenant's people to match against a platform's directory.
    async fn people(&self, tenant: &TenantId) -> Result<Vec<Person>>;

    /// Platform users of the tenant's connection matching `query` (name or
    /// email), for the searchable manual mapping. Default: none (the admin
    /// types a platform id).
    async fn search_platform_users(
        &self,
        tenant: &TenantId,
        destination: &str,
        query: &str,
    ) -> Result<Vec<PlatformUser>> {
        let _ = (tenant, destination, query);
        Ok(Vec::new())
    }
}

/// What "discover" found in an integration's source: its header and first rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredSource {
    /// Column names.
    pub header: Vec<String>,
    /// The first rows.
    pub rows: Vec<Vec<String>>,
    /// Where it was read (e.g. the object key).
    pub location: Option<String>,
}

/// Reads the header and sample rows of an integration's source (e.g. the S3
/// connector's discovery).
#[async_trait]
pub trait SourceDiscovery: Send + Sync {
    /// Discovers the source of `config` (already scoped to its tenant).
    async fn discover(&self, config: &IntegrationConfig) -> Result<DiscoveredSource>;
}

/// The host's function from a request to the admin's session: `None` means
/// not signed in (401). Typically it reads claims that the host's own
/// authentication middleware put into the request's extensions.
pub type SessionFn = Arc<dyn Fn(&Parts) -> Option<AdminSession> + Send + Sync>;

/// A destination whose people can be synced and mapped by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingTarget {
    /// The destination's name (its identity resolver is used for "Sync users").
    pub destination: String,
    /// The platform whose tenant connection links are stored under (`slack`),
    /// or `None` for a destination without connections.
    pub platform: Option<String>,
}

/// How [`crate::admin::router`] is scoped and where its data comes from.
#[derive(Clone)]
pub struct AdminConfig {
    pub(crate) session: SessionFn,
    pub(crate) queries: Arc<dyn DeliveryQueryStore>,
    pub(crate) csrf_key: [u8; 32],
    pub(crate) people: Option<Arc<dyn PeopleDirectory>>,
    pub(crate) discovery: Option<Arc<dyn SourceDiscovery>>,
    pub(crate) mapping: Vec<MappingTarget>,
    pub(crate) install_links: BTreeMap<String, String>,
    pub(crate) scheduler: Option<Scheduler>,
    pub(crate) title: String,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("mapping", &self.mapping)
            .field("install_links", &self.install_links)
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

impl AdminConfig {
    /// A console scoped by `session` (request → the admin's session and
    /// tenants), reading deliveries through `queries` (usually the same store
    /// the switchboard uses). The CSRF key is random per process; set a shared
    /// one with [`AdminConfig::csrf_key`] when several instances serve the
    /// console.
    pub fn new(
        session: impl Fn(&Parts) -> Option<AdminSession> + Send + Sync + 'static,
        queries: Arc<dyn DeliveryQueryStore>,
    ) -> Self {
        AdminConfig {
            session: Arc::new(session),
            queries,
            csrf_key: rand::random(),
            people: None,
            discovery: None,
            mapping: Vec::new(),
            install_links: BTreeMap::new(),
            scheduler: None,
            title: "Integrations".to_owned(),
        }
    }

    /// The key CSRF tokens are derived from (the same on every instance).
    #[must_use]
    pub fn csrf_key(mut self, key: [u8; 32]) -> Self {
        self.csrf_key = key;
        self
    }

    /// The host's people, for "Sync users" and manual mapping.
    #[must_use]
    pub fn people(mut self, people: impl PeopleDirectory + 'static) -> Self {
        self.people = Some(Arc::new(people));
        self
    }

    /// Offers "Sync users" and manual mapping for `destination`, whose links
    /// live under the tenant's `platform` connection (`None`: the destination
    /// has no connections).
    #[must_use]
    pub fn mapping(mut self, destination: impl Into<String>, platform: Option<&str>) -> Self {
        self.mapping.push(MappingTarget {
            destination: destination.into(),
            platform: platform.map(str::to_owned),
        });
        self
    }

    /// A link to (re)install `platform` for a tenant; `{tenant}` in `url` is
    /// replaced by the (URL-encoded) tenant id.
    #[must_use]
    pub fn install_link(mut self, platform: impl Into<String>, url: impl Into<String>) -> Self {
        self.install_links.insert(platform.into(), url.into());
        self
    }

    /// Reads integrations' sources for the "discover" view.
    #[must_use]
    pub fn discovery(mut self, discovery: impl SourceDiscovery + 'static) -> Self {
        self.discovery = Some(Arc::new(discovery));
        self
    }

    /// The scheduler for "run now" and the integrations table (default: the
    /// switchboard's own, if it has one).
    #[must_use]
    pub fn scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// The page title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
}
