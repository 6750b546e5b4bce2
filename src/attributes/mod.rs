//! User attributes: records, the `AttributeStore` trait, segmentation filters and CSV import.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::tenant::TenantId;

mod batch;
mod csv;
mod filter;
mod input;
mod number;

pub use batch::{AttributeBatch, BatchRecord, ImportRow};
pub use csv::{
    CsvMapping, CsvRecord, CsvRecords, CsvRow, CsvSample, DEFAULT_MAX_RECORD_BYTES, ErrorReport,
    ImportCollector, ImportSummary, MAX_USER_ID_BYTES, RowError, RowErrorReason, UserIdFormat,
    discover_csv, discover_csv_encoded, discover_csv_with, import_rows, read_csv,
};
pub use filter::{Comparison, Filter};
pub use input::TextEncoding;
pub(crate) mod sql;
pub use number::Decimal;

/// A user's attributes: name → value. Values are strings (CSV has no types);
/// comparisons decide at query time whether to compare as numbers.
pub type Attributes = BTreeMap<String, String>;

/// Attributes for one user, as imported from one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeRecord {
    /// The host's user id.
    pub user_id: String,
    /// The attributes to set (merged into what the user already has).
    pub attributes: Attributes,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertStats {
    /// Users seen for the first time.
    pub users_created: usize,
    /// Users that existed and were updated.
    pub users_updated: usize,
    /// Attribute names registered by this upsert (new to the tenant, across all its integrations).
    pub new_attribute_names: usize,
}

/// The default cap on distinct attribute names per tenant, across all its integrations.
pub const DEFAULT_ATTRIBUTE_CAP: usize = 100;

/// How an integration's run writes its attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// A successful run replaces the integration's values: a user missing
    /// from the new file loses the integration's attributes, and a column no
    /// longer mapped loses its values (the default). A failed run leaves the
    /// previous import in place.
    #[default]
    Snapshot,
    /// A run merges its rows into what the users have; nothing is removed
    /// (values of users missing from the file stay).
    UpsertOnly,
}

impl ImportMode {
    /// The key in [`crate::integration::IntegrationConfig::settings`] that holds the mode.
    pub const SETTING: &'static str = "import_mode";
}

/// Who owns an attribute name (and so every value of it) within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum AttributeOwner {
    /// Written by hand or through the API ([`AttributeStore::upsert`]), not by
    /// an integration. An integration may adopt such a name: its runs then
    /// own it (and a snapshot removes the values it did not write).
    Api,
    /// The integration of this name (within the tenant) imports it.
    Integration(String),
}

impl AttributeOwner {
    /// The integration's name, `None` for [`AttributeOwner::Api`].
    pub fn integration(&self) -> Option<&str> {
        match self {
            AttributeOwner::Api => None,
            AttributeOwner::Integration(name) => Some(name),
        }
    }

    /// The owner as stored: the integration's name, or the empty string for
    /// the API (no integration can be named with the empty string).
    pub fn as_stored(&self) -> &str {
        self.integration().unwrap_or("")
    }

    /// Reads [`AttributeOwner::as_stored`].
    pub fn from_stored(stored: &str) -> AttributeOwner {
        if stored.is_empty() {
            AttributeOwner::Api
        } else {
            AttributeOwner::Integration(stored.to_owned())
        }
    }
}

impl std::fmt::Display for AttributeOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeOwner::Api => f.write_str("the API"),
            AttributeOwner::Integration(name) => write!(f, "integration {name:?}"),
        }
    }
}

/// One registered attribute name of a tenant and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeName {
    /// The attribute's name.
    pub name: String,
    /// Who writes it.
    pub owner: AttributeOwner,
}

/// One run's writes on behalf of an integration, from
/// [`AttributeStore::begin_import`].
///
/// Every value the run writes is stamped with its generation; a successful
/// [`ImportMode::Snapshot`] run ends with [`AttributeStore::finish_import`],
/// which removes the integration's values of older generations in one step. A
/// run that fails never calls it, so the previous import stays whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRun {
    /// The integration writing.
    pub integration: String,
    /// The run's generation: higher than any earlier run's of this integration.
    pub generation: i64,
    /// Snapshot or upsert-only.
    pub mode: ImportMode,
    /// Every attribute name the run maps (the integration's names after it).
    pub names: Vec<String>,
}

/// What removing attributes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedAttributes {
    /// Values removed (one per user and attribute).
    pub values: u64,
    /// Attribute names freed under the cap.
    pub names: u64,
}

/// One page of a segmentation query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributePage {
    /// Matching user ids after the cursor, sorted, at most the page size.
    pub users: Vec<String>,
    /// How many users match in all (every page).
    pub total: u64,
    /// The cursor for the next page (the last user id of this one), or `None`
    /// when this is the last page.
    pub next: Option<String>,
}

/// The largest page [`AttributeStore::query_page`] returns.
pub const MAX_PAGE: usize = 10_000;

/// Stores user attributes per tenant and answers segmentation queries within a tenant.
///
/// **Ownership.** Each attribute name of a tenant belongs to one owner
/// ([`AttributeOwner`]): the integration whose runs import it, or the API for
/// names written with [`upsert`](AttributeStore::upsert). A value's owner is
/// its name's owner. A write by another integration, or an API write of an
/// integration's name, fails ([`crate::ErrorKind::Conflict`], naming the
/// attribute and its owner) before anything is written; an integration may
/// adopt an API name. Names count against the tenant's cap until freed:
/// [`finish_import`](AttributeStore::finish_import) frees the names the
/// integration no longer maps, [`release_names`](AttributeStore::release_names)
/// those of a changed or removed integration, and
/// [`delete_name`](AttributeStore::delete_name) one name. Everything is per tenant.
#[async_trait]
pub trait AttributeStore: Send + Sync {
    /// Merges the records into `tenant`'s users (later records for the same user
    /// win) as API writes ([`AttributeOwner::Api`]). Fails before writing anything
    /// if the batch would push the tenant's number of distinct attribute names
    /// over its cap (the error names the attributes over the cap), or writes a
    /// name an integration owns. Other tenants' caps are independent.
    async fn upsert(&self, tenant: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats>;
    /// [`upsert`](AttributeStore::upsert) of an [`AttributeBatch`] (what
    /// [`import_rows`] writes). The default converts the batch to records;
    /// a store that can write it as it is overrides this.
    async fn upsert_batch(&self, tenant: &TenantId, batch: &AttributeBatch) -> Result<UpsertStats> {
        self.upsert(tenant, &batch.to_records()).await
    }
    /// Starts an import run of `integration` mapping `names`: checks that no
    /// other integration owns one of them ([`crate::ErrorKind::Conflict`]) and
    /// that the tenant's names owned by others plus `names` fit under the cap
    /// (the integration's names it no longer maps do not count: a snapshot
    /// frees them), and returns the run with a new generation.
    async fn begin_import(
        &self,
        tenant: &TenantId,
        integration: &str,
        mode: ImportMode,
        names: &[String],
    ) -> Result<ImportRun>;
    /// Writes one batch of `run` (merged into what the users have, later
    /// records win; every value stamped with the run's generation). Only
    /// names in [`ImportRun::names`] may appear.
    async fn write_import(
        &self,
        tenant: &TenantId,
        run: &ImportRun,
        batch: &[AttributeRecord],
    ) -> Result<UpsertStats>;
    /// [`write_import`](AttributeStore::write_import) of an [`AttributeBatch`]
    /// (what the S3 import writes). The default converts the batch to
    /// records; a store that can write it as it is overrides this.
    async fn write_import_batch(
        &self,
        tenant: &TenantId,
        run: &ImportRun,
        batch: &AttributeBatch,
    ) -> Result<UpsertStats> {
        self.write_import(tenant, run, &batch.to_records()).await
    }
    /// Ends a successful run. A [`ImportMode::Snapshot`] run removes the
    /// integration's values not written by it (older generations) and, in
    /// either mode, the names it owns but no longer maps are freed with their
    /// values; all in one transaction.
    async fn finish_import(&self, tenant: &TenantId, run: &ImportRun) -> Result<RemovedAttributes>;
    /// Frees the names `integration` owns except `keep`, deleting their values
    /// (a mapping removed when the integration is saved; an empty `keep` when
    /// it is deleted).
    async fn release_names(
        &self,
        tenant: &TenantId,
        integration: &str,
        keep: &[String],
    ) -> Result<RemovedAttributes>;
    /// One user's attributes within `tenant`.
    async fn get(&self, tenant: &TenantId, user_id: &str) -> Result<Option<Attributes>>;
    /// Deletes one user's attributes (every owner's); the number removed.
    async fn delete_user(&self, tenant: &TenantId, user_id: &str) -> Result<u64>;
    /// Deletes one attribute of one user; true if it existed.
    async fn delete_value(&self, tenant: &TenantId, user_id: &str, name: &str) -> Result<bool>;
    /// Deletes every value of the attribute `name` and frees the name under the
    /// cap (whoever owns it; an integration still mapping it writes it again
    /// on its next run).
    async fn delete_name(&self, tenant: &TenantId, name: &str) -> Result<RemovedAttributes>;
    /// The tenant's registered attribute names and their owners, by name.
    async fn names(&self, tenant: &TenantId) -> Result<Vec<AttributeName>>;
    /// The user ids of `tenant` whose attributes match `filter`, sorted.
    async fn query(&self, tenant: &TenantId, filter: &Filter) -> Result<Vec<String>>;
    /// One page of the users matching `filter`, sorted by user id: those after
    /// `after` (a previous page's [`AttributePage::next`]), at most `limit`
    /// (capped at [`MAX_PAGE`]), with the total count of matches. SQL stores
    /// run the filter as parameterised SQL over indexes; the result is always
    /// the same as evaluating [`Filter::matches`] on every user.
    async fn query_page(
        &self,
        tenant: &TenantId,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<AttributePage>;
}

/// Refuses an integration's write of a name another owner has (`owners`:
/// registered name → owner), naming the attribute and the owner.
pub fn check_owners<'a>(
    owners: &std::collections::BTreeMap<String, AttributeOwner>,
    writer: &AttributeOwner,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    for name in names {
        let Some(owner) = owners.get(name) else {
            continue;
        };
        let allowed = owner == writer
            || (matches!(owner, AttributeOwner::Api) && writer.integration().is_some());
        if !allowed {
            let hint = match writer {
                AttributeOwner::Api => {
                    "its values are replaced by that integration's runs; change it in its source, or write another name"
                }
                AttributeOwner::Integration(_) => {
                    "each attribute belongs to one integration; map the column under another name, or remove it from the other integration first"
                }
            };
            return Err(crate::Error::new(
                crate::ErrorKind::Conflict,
                format!("the attribute {name:?} is imported by {owner}, not {writer}: {hint}"),
            ));
        }
    }
    Ok(())
}

/// Checks the names of an import run against the cap: the names owned by
/// others plus the run's names. `owners` holds every registered name.
pub fn check_import_cap(
    owners: &std::collections::BTreeMap<String, AttributeOwner>,
    integration: &str,
    names: &[String],
    cap: usize,
) -> Result<()> {
    let others: std::collections::BTreeSet<String> = owners
        .iter()
        .filter(|(_, o)| o.integration() != Some(integration))
        .map(|(n, _)| n.clone())
        .filter(|n| !names.contains(n))
        .collect();
    let batch = AttributeRecord {
        user_id: String::new(),
        attributes: names.iter().map(|n| (n.clone(), String::new())).collect(),
    };
    check_attribute_cap(&others, [&batch], cap).map(|_| ())
}

/// The import mode an integration's settings select (`"import_mode"`:
/// `"snapshot"` (default) or `"upsert_only"`).
pub fn import_mode_of(settings: &serde_json::Value) -> Result<ImportMode> {
    match settings.get(ImportMode::SETTING) {
        None | Some(serde_json::Value::Null) => Ok(ImportMode::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            crate::Error::config(format!(
                "the integration's {:?} setting must be \"snapshot\" or \"upsert_only\": {e}",
                ImportMode::SETTING
            ))
        }),
    }
}

/// Checks a batch against the cap given the names already registered; returns the
/// new names to register, or an [`crate::ErrorKind::AttributeCap`] error naming the
/// attributes over the cap. Shared by every store implementation.
pub fn check_attribute_cap<'a>(
    registered: &std::collections::BTreeSet<String>,
    batch: impl IntoIterator<Item = &'a AttributeRecord>,
    cap: usize,
) -> Result<Vec<String>> {
    let mut new_names = std::collections::BTreeSet::new();
    for record in batch {
        for name in record.attributes.keys() {
            if !registered.contains(name) {
                new_names.insert(name.clone());
            }
        }
    }
    let total = registered.len() + new_names.len();
    // Writing registered names only never fails (an import run's names may
    // sit beside the names it frees when it finishes).
    if total > cap && !new_names.is_empty() {
        let over: Vec<String> = new_names
            .iter()
            .skip(cap.saturating_sub(registered.len()))
            .cloned()
            .collect();
        return Err(crate::Error::new(
            crate::ErrorKind::AttributeCap,
            format!(
                "importing would make {total} attributes, over the cap of {cap}; over the cap: {}",
                over.join(", ")
            ),
        ));
    }
    Ok(new_names.into_iter().collect())
}
