//! User attributes: records, the `AttributeStore` trait, segmentation filters and CSV import.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::tenant::TenantId;

mod csv;
mod filter;
mod input;
mod number;

pub use csv::{
    CsvMapping, CsvRecord, CsvRecords, CsvRow, CsvSample, DEFAULT_MAX_RECORD_BYTES, ErrorReport,
    ImportCollector, ImportSummary, MAX_USER_ID_BYTES, RowError, RowErrorReason, UserIdFormat,
    discover_csv, discover_csv_encoded, discover_csv_with, import_rows, read_csv,
};
pub use filter::{Comparison, Filter};
pub use input::TextEncoding;
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

/// Stores user attributes per tenant and answers segmentation queries within a tenant.
#[async_trait]
pub trait AttributeStore: Send + Sync {
    /// Merges the records into `tenant`'s users (later records for the same user
    /// win). Fails before writing anything if the batch would push the tenant's
    /// number of distinct attribute names over its cap; the error names the
    /// attributes over the cap. Other tenants' caps are independent.
    async fn upsert(&self, tenant: &TenantId, batch: &[AttributeRecord]) -> Result<UpsertStats>;
    /// One user's attributes within `tenant`.
    async fn get(&self, tenant: &TenantId, user_id: &str) -> Result<Option<Attributes>>;
    /// The user ids of `tenant` whose attributes match `filter`, sorted.
    async fn query(&self, tenant: &TenantId, filter: &Filter) -> Result<Vec<String>>;
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
    if total > cap {
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
