//! The [`ScheduledJob`] trait: the work an integration's schedule runs.

use async_trait::async_trait;

use super::RunContext;
use crate::Result;
use crate::integration::IntegrationConfig;

/// A job that runs on an integration's schedule, e.g. an S3 attribute import.
///
/// By default a job runs the integrations named [`name`](ScheduledJob::name) of
/// **every tenant** — each run with that tenant's [`IntegrationConfig`] (see
/// [`RunContext::tenant`]), which says when it runs and whether it is enabled.
/// Override [`handles`](ScheduledJob::handles) to serve other names too.
#[async_trait]
pub trait ScheduledJob: Send + Sync {
    /// The integration's name.
    fn name(&self) -> &str;
    /// Whether this job runs `config` (default: its name is
    /// [`ScheduledJob::name`], in any tenant). A job registered under the
    /// integration's own name is preferred over others that handle it.
    fn handles(&self, config: &IntegrationConfig) -> bool {
        config.name == self.name()
    }
    /// Does the work, filling `ctx` with what it did. An error fails the run
    /// (its message is recorded); rejected rows make it partial; an
    /// [`ErrorKind::Shutdown`](crate::ErrorKind::Shutdown) error abandons it.
    async fn run(&self, ctx: &mut RunContext) -> Result<()>;
    /// Checks `config` before [`Scheduler::put_integration`](super::Scheduler::put_integration) saves it, given
    /// the tenant's other integrations (`others`, without `config` itself):
    /// e.g. two integrations claiming one attribute name, or two moving one
    /// file. The error is reported to the admin saving it. Default: accept.
    fn check_config(&self, config: &IntegrationConfig, others: &[IntegrationConfig]) -> Result<()> {
        let _ = (config, others);
        Ok(())
    }
    /// The attribute names `config` imports, if the job imports attributes
    /// (default: none). When the integration is saved, the names it imported
    /// before but no longer maps are freed under the tenant's cap and their
    /// values deleted ([`crate::attributes::AttributeStore::release_names`]).
    fn attribute_names(&self, config: &IntegrationConfig) -> Option<Vec<String>> {
        let _ = config;
        None
    }
}
