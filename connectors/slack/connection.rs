//! Slack workspaces as connections: an install becomes a [`Connection`] (platform `slack`, account = the team id, or the enterprise id for an org-wide install), and requests find theirs again (`authorize`, as Bolt does).

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{OAuthAccess, SlackClient};
use super::config::PLATFORM;
use super::errors::SlackApiError;
use crate::store::ConnectionStore;
use crate::tenant::{Connection, ConnectionKey, TenantId};
use crate::{Error, ErrorKind, Result};

/// The non-secret ids of a Slack connection, kept in [`Connection::data`].
///
/// Field names in the JSON: `team_id`, `team_name`, `enterprise_id`,
/// `enterprise_name`, `is_enterprise_install`, `bot_user_id`, `scopes` (a
/// list), `app_id`, and optionally `team_ids` (the workspaces an org-wide
/// install lists channels and users in; discovered with `auth.teams.list`
/// when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackConnectionData {
    /// The workspace (absent for an org-wide install).
    #[serde(default)]
    pub team_id: Option<String>,
    /// The workspace's name.
    #[serde(default)]
    pub team_name: Option<String>,
    /// The Enterprise Grid organisation, if any.
    #[serde(default)]
    pub enterprise_id: Option<String>,
    /// The organisation's name.
    #[serde(default)]
    pub enterprise_name: Option<String>,
    /// True for an org-wide install (the account is the enterprise id).
    #[serde(default)]
    pub is_enterprise_install: bool,
    /// The app's bot user.
    #[serde(default)]
    pub bot_user_id: Option<String>,
    /// Granted bot scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The app's id.
    #[serde(default)]
    pub app_id: Option<String>,
    /// For org-wide installs: the workspaces to list channels and users in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub team_ids: Vec<String>,
}

impl SlackConnectionData {
    /// Reads the ids of a connection (missing or malformed fields are left empty).
    pub fn from_connection(connection: &Connection) -> SlackConnectionData {
        serde_json::from_value(connection.data.clone()).unwrap_or_default()
    }

    /// The connection's account key: the enterprise id for an org-wide
    /// install, else the team id.
    pub fn account(&self) -> Option<&str> {
        if self.is_enterprise_install {
            self.enterprise_id.as_deref()
        } else {
            self.team_id.as_deref()
        }
    }

    /// As `Connection::data`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The key of the connection for a workspace: `slack:{enterprise id}` for an
/// org-wide install, else `slack:{team id}`.
pub fn connection_key(
    team_id: Option<&str>,
    enterprise_id: Option<&str>,
    is_enterprise_install: bool,
) -> Option<ConnectionKey> {
    let account = if is_enterprise_install {
        enterprise_id
    } else {
        team_id
    }?;
    let account = account.trim();
    (!account.is_empty()).then(|| ConnectionKey::new(PLATFORM, account))
}

pub(super) fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn expires_at(now: DateTime<Utc>, expires_in: Option<i64>) -> Option<DateTime<Utc>> {
    expires_in
        .filter(|s| *s > 0)
        .map(|s| now + chrono::Duration::seconds(s))
}

/// The connection of `tenant` for what `oauth.v2.access` returned: account =
/// the team id, or the enterprise id for an org-wide install; the bot token
/// (and refresh token, with rotation) as secrets; the ids in `data`
/// ([`SlackConnectionData`]).
pub fn connection_from_access(
    tenant: TenantId,
    access: OAuthAccess,
    now: DateTime<Utc>,
) -> Result<Connection> {
    let key = connection_key(
        access.team_id.as_deref(),
        access.enterprise_id.as_deref(),
        access.is_enterprise_install,
    )
    .ok_or_else(|| {
        Error::new(
            ErrorKind::Platform,
            "oauth.v2.access answered without a team id (or an enterprise id for an org-wide install)",
        )
    })?;
    let data = SlackConnectionData {
        team_id: access.team_id.clone(),
        team_name: access.team_name.clone(),
        enterprise_id: access.enterprise_id.clone(),
        enterprise_name: access.enterprise_name.clone(),
        is_enterprise_install: access.is_enterprise_install,
        bot_user_id: access.bot_user_id.clone(),
        scopes: split_scopes(&access.scope),
        app_id: access.app_id.clone(),
        team_ids: Vec::new(),
    };
    let mut builder = Connection::builder(tenant, key.platform, key.account)
        .access_token(access.access_token)
        .data(data.to_value())
        .at(now);
    if let Some(r) = access.refresh_token {
        builder = builder.refresh_token(r);
    }
    if let Some(at) = expires_at(now, access.expires_in) {
        builder = builder.expires_at(at);
    }
    builder.build()
}

/// The connection of `tenant` for a bot token the host already has (a token
/// pasted by an admin, `SLACK_BOT_TOKEN`): `auth.test` tells the workspace.
pub async fn connection_from_token(
    client: &SlackClient,
    tenant: TenantId,
    token: SecretString,
) -> Result<Connection> {
    let who = client.auth_test(&token).await.map_err(Error::from)?;
    let key = connection_key(
        who.team_id.as_deref(),
        who.enterprise_id.as_deref(),
        who.is_enterprise_install,
    )
    .ok_or_else(|| Error::new(ErrorKind::Platform, "auth.test answered without a team id"))?;
    let data = SlackConnectionData {
        team_id: who.team_id,
        team_name: who.team,
        enterprise_id: who.enterprise_id,
        is_enterprise_install: who.is_enterprise_install,
        bot_user_id: who.user_id,
        ..SlackConnectionData::default()
    };
    Connection::builder(tenant, key.platform, key.account)
        .access_token(token)
        .data(data.to_value())
        .build()
}

/// Finds the connection a request from a workspace belongs to, as Bolt's
/// `authorize` does: an org-wide install by the enterprise id, a workspace
/// install by the team id; when the request does not say which it is, the
/// team's own connection first, then the organisation's org-wide install.
/// Only connected connections count.
pub async fn authorize(
    store: &dyn ConnectionStore,
    team_id: Option<&str>,
    enterprise_id: Option<&str>,
    is_enterprise_install: Option<bool>,
) -> Result<Option<Connection>> {
    let team = connection_key(team_id, None, false);
    let org = connection_key(None, enterprise_id, true);
    let order = match is_enterprise_install {
        Some(true) => [org, None],
        Some(false) => [team, None],
        None => [team, org],
    };
    for key in order.into_iter().flatten() {
        if let Some(c) = store.connection(&key).await? {
            if c.is_connected() {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// The workspaces list calls (`conversations.list`, `users.list`) must name
/// with `team_id` for `connection`: none (one call without `team_id`) for a
/// workspace install; for an org-wide install its `team_ids`, else the
/// workspaces `auth.teams.list` reports for the token.
pub async fn list_workspaces(
    client: &SlackClient,
    connection: &Connection,
    token: &SecretString,
) -> Result<Vec<Option<String>>, SlackApiError> {
    let data = SlackConnectionData::from_connection(connection);
    if !data.is_enterprise_install {
        return Ok(vec![None]);
    }
    if !data.team_ids.is_empty() {
        return Ok(data.team_ids.into_iter().map(Some).collect());
    }
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .auth_teams_list(token, cursor.as_deref(), 200)
            .await?;
        all.extend(page.items.into_iter().map(Some));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(all)
}

/// Maps a store failure while reading credentials into a temporary Slack error.
pub(super) fn store_error(method: &str, e: &Error) -> SlackApiError {
    SlackApiError::new(
        super::errors::FailureClass::Temporary,
        method,
        None,
        format!("could not read the Slack connection: {}", e.message()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_wide_installs_are_keyed_by_enterprise_id() {
        assert_eq!(
            connection_key(Some("T1"), Some("E1"), true).map(|k| k.to_string()),
            Some("slack:E1".to_owned())
        );
        assert_eq!(
            connection_key(Some("T1"), Some("E1"), false).map(|k| k.to_string()),
            Some("slack:T1".to_owned())
        );
        assert_eq!(connection_key(None, Some("E1"), false), None);
    }
}
