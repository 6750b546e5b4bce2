//! The Zendesk REST client: authenticated requests paced by the account's budget, with every answer classified by `errors::classify`.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::config::{
    TICKET_UPDATE_WINDOW, TICKET_UPDATES_PER_WINDOW, ZendeskAccount, ZendeskConfig,
};
use super::errors::{FailureClass, ZendeskApiError, classify, parse_retry_after};
use super::models::{Group, Identity, NewTicket, Page, Ticket, TicketUpdate, Upload, User};
use crate::{Error, ErrorKind, Result};

/// Largest attachment Zendesk accepts: 50 MB per file.
pub const MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;
/// An upload token is valid for 60 minutes after the upload.
pub const UPLOAD_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// Page size of cursor-paginated lists (Zendesk's maximum for most endpoints).
pub const PAGE_SIZE: u32 = 100;

type ApiResult<T> = std::result::Result<T, ZendeskApiError>;

/// A pace that never exceeds `per_window` requests in any window of `window`:
/// a burst of `per_window / burst_divisor` (at least 1), the rest spread evenly.
fn quota(per_window: u32, window: Duration, burst_divisor: u32) -> Quota {
    let n = per_window.max(1);
    let burst = (n / burst_divisor.max(1)).clamp(1, n.saturating_sub(1).max(1));
    let steady = (n - burst).max(1);
    let period = window / steady;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_micros(1)))
        .map(|q| q.allow_burst(burst))
        .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
}

/// A Zendesk API client. Credentials come with each call (a [`ZendeskAccount`]);
/// the client paces requests per account (the configured requests-per-minute
/// budget) and ticket updates per ticket (30 per 10 minutes). Cheap to clone.
#[derive(Clone)]
pub struct ZendeskClient {
    http: reqwest::Client,
    account_pace: Arc<DefaultKeyedRateLimiter<String>>,
    ticket_pace: Arc<DefaultKeyedRateLimiter<String>>,
}

impl fmt::Debug for ZendeskClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZendeskClient").finish_non_exhaustive()
    }
}

impl ZendeskClient {
    /// A client with `config`'s timeout and budget.
    pub fn new(config: &ZendeskConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = config.request_timeout() {
            builder = builder.timeout(t);
        }
        let http = builder.build().map_err(|e| {
            Error::new(ErrorKind::Config, "could not build the HTTP client").with_source(e)
        })?;
        Ok(ZendeskClient {
            http,
            account_pace: Arc::new(RateLimiter::keyed(quota(
                config.budget_per_minute(),
                Duration::from_secs(60),
                20,
            ))),
            ticket_pace: Arc::new(RateLimiter::keyed(quota(
                TICKET_UPDATES_PER_WINDOW,
                TICKET_UPDATE_WINDOW,
                3,
            ))),
        })
    }

    fn url(account: &ZendeskAccount, path: &str, query: &[(&str, &str)]) -> ApiResult<url::Url> {
        let mut url = url::Url::parse(&format!("{}{path}", account.base_url)).map_err(|_| {
            ZendeskApiError::new(FailureClass::Permanent, 0, path, "invalid Zendesk URL")
        })?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn send(
        &self,
        account: &ZendeskAccount,
        operation: &str,
        request: reqwest::RequestBuilder,
    ) -> ApiResult<(u16, Bytes)> {
        self.account_pace.until_key_ready(&account.subdomain).await;
        let mut auth = reqwest::header::HeaderValue::from_str(
            account.auth.header_value().expose_secret(),
        )
        .map_err(|_| {
            ZendeskApiError::new(
                FailureClass::Disconnected,
                0,
                operation,
                "the Zendesk credentials contain characters not allowed in a header: reconnect Zendesk",
            )
        })?;
        auth.set_sensitive(true);
        let response = request
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ZendeskApiError::network(operation, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response
            .bytes()
            .await
            .map_err(|e| ZendeskApiError::network(operation, e))?;
        if (200..300).contains(&status) {
            Ok((status, body))
        } else {
            Err(classify(operation, status, retry_after, &body))
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        account: &ZendeskAccount,
        operation: &str,
        request: reqwest::RequestBuilder,
    ) -> ApiResult<T> {
        let (status, body) = self.send(account, operation, request).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ZendeskApiError::new(
                FailureClass::Permanent,
                status,
                operation,
                format!("Zendesk answered with an unexpected body: {e}"),
            )
        })
    }

    /// `GET path?query` returning JSON.
    pub async fn get(
        &self,
        account: &ZendeskAccount,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> ApiResult<Value> {
        let url = Self::url(account, path, query)?;
        self.json(account, operation, self.http.get(url)).await
    }

    /// `method path` with a JSON body, returning JSON.
    pub async fn send_json(
        &self,
        account: &ZendeskAccount,
        operation: &str,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> ApiResult<Value> {
        let url = Self::url(account, path, &[])?;
        let request = self.http.request(method, url).json(body);
        self.json(account, operation, request).await
    }

    /// Users whose phone matches `e164`, via `GET /api/v2/search.json?query=type:user phone:{digits}`.
    ///
    /// This is the lookup Zendesk's Talk Partner Edition guide documents for
    /// identifying a caller: the number is given as digits only (no `+`,
    /// spaces or dashes) and matches every stored format of that number, in
    /// the `phone` field and in phone identities. The alternative,
    /// `/api/v2/users/search`, is a free-text search across names, emails and
    /// notes, so a number could match unrelated text. Search results come from
    /// Zendesk's index, which lags writes by a little; callers cache answers
    /// and treat a number shared by several users as ambiguous.
    pub async fn search_users_by_phone(
        &self,
        account: &ZendeskAccount,
        e164: &str,
    ) -> ApiResult<Vec<User>> {
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Ok(Vec::new());
        }
        let query = format!("type:user phone:{digits}");
        let v = self
            .get(
                account,
                "search users by phone",
                "/api/v2/search.json",
                &[("query", &query)],
            )
            .await?;
        Ok(results_of_type(&v, "user"))
    }

    /// Users whose email is `email`, via `GET /api/v2/search.json?query=type:user email:{email}`.
    pub async fn search_users_by_email(
        &self,
        account: &ZendeskAccount,
        email: &str,
    ) -> ApiResult<Vec<User>> {
        let query = format!("type:user email:{}", email.trim());
        let v = self
            .get(
                account,
                "search users by email",
                "/api/v2/search.json",
                &[("query", &query)],
            )
            .await?;
        Ok(results_of_type(&v, "user"))
    }

    /// Creates an end user: `POST /api/v2/users` with `name` (required), an
    /// E.164 `phone` and optionally an `email`.
    pub async fn create_end_user(
        &self,
        account: &ZendeskAccount,
        name: &str,
        phone: Option<&str>,
        email: Option<&str>,
    ) -> ApiResult<User> {
        let mut user = json!({ "name": name, "role": "end-user" });
        if let Some(p) = phone {
            user["phone"] = json!(p);
        }
        if let Some(e) = email {
            user["email"] = json!(e);
        }
        let v = self
            .send_json(
                account,
                "create user",
                reqwest::Method::POST,
                "/api/v2/users.json",
                &json!({ "user": user }),
            )
            .await?;
        field(v, "user", "create user")
    }

    /// A user's identities: `GET /api/v2/users/{id}/identities`.
    pub async fn list_identities(
        &self,
        account: &ZendeskAccount,
        user_id: u64,
    ) -> ApiResult<Vec<Identity>> {
        let v = self
            .get(
                account,
                "list identities",
                &format!("/api/v2/users/{user_id}/identities.json"),
                &[],
            )
            .await?;
        field(v, "identities", "list identities")
    }

    /// Adds a phone identity: `POST /api/v2/users/{id}/identities` with
    /// `{"identity": {"type": "phone_number", "value": e164}}`.
    pub async fn add_phone_identity(
        &self,
        account: &ZendeskAccount,
        user_id: u64,
        e164: &str,
    ) -> ApiResult<Identity> {
        let body = json!({ "identity": { "type": "phone_number", "value": e164 } });
        let v = self
            .send_json(
                account,
                "add phone identity",
                reqwest::Method::POST,
                &format!("/api/v2/users/{user_id}/identities.json"),
                &body,
            )
            .await?;
        field(v, "identity", "add phone identity")
    }

    /// One page of users of any role: `GET /api/v2/users?page[size]=100`.
    pub async fn list_users_page(
        &self,
        account: &ZendeskAccount,
        after: Option<&str>,
    ) -> ApiResult<Page<User>> {
        let size = PAGE_SIZE.to_string();
        let mut q = vec![("page[size]", size.as_str())];
        if let Some(a) = after {
            q.push(("page[after]", a));
        }
        let v = self
            .get(account, "list users", "/api/v2/users.json", &q)
            .await?;
        page(v, "users", "list users")
    }

    /// One page of agents and admins: `GET /api/v2/users?role[]=agent&role[]=admin&page[size]=100`.
    pub async fn list_agents_page(
        &self,
        account: &ZendeskAccount,
        after: Option<&str>,
    ) -> ApiResult<Page<User>> {
        let size = PAGE_SIZE.to_string();
        let mut q = vec![
            ("role[]", "agent"),
            ("role[]", "admin"),
            ("page[size]", size.as_str()),
        ];
        if let Some(a) = after {
            q.push(("page[after]", a));
        }
        let v = self
            .get(account, "list agents", "/api/v2/users.json", &q)
            .await?;
        page(v, "users", "list agents")
    }

    /// Every agent and admin, following the cursor to the end.
    pub async fn list_agents(&self, account: &ZendeskAccount) -> ApiResult<Vec<User>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = self.list_agents_page(account, after.as_deref()).await?;
            all.extend(p.items);
            match p.after {
                Some(a) if after.as_deref() != Some(a.as_str()) => after = Some(a),
                _ => return Ok(all),
            }
        }
    }

    /// One page of groups: `GET /api/v2/groups?page[size]=100`.
    pub async fn list_groups_page(
        &self,
        account: &ZendeskAccount,
        after: Option<&str>,
    ) -> ApiResult<Page<Group>> {
        let size = PAGE_SIZE.to_string();
        let mut q = vec![("page[size]", size.as_str())];
        if let Some(a) = after {
            q.push(("page[after]", a));
        }
        let v = self
            .get(account, "list groups", "/api/v2/groups.json", &q)
            .await?;
        page(v, "groups", "list groups")
    }

    /// Every group (deleted ones skipped), following the cursor to the end.
    pub async fn list_groups(&self, account: &ZendeskAccount) -> ApiResult<Vec<Group>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = self.list_groups_page(account, after.as_deref()).await?;
            all.extend(p.items.into_iter().filter(|g| !g.deleted));
            match p.after {
                Some(a) if after.as_deref() != Some(a.as_str()) => after = Some(a),
                _ => return Ok(all),
            }
        }
    }

    /// Creates a ticket: `POST /api/v2/tickets` with `{"ticket": …}`.
    pub async fn create_ticket(
        &self,
        account: &ZendeskAccount,
        ticket: &NewTicket,
    ) -> ApiResult<Ticket> {
        let body = json!({ "ticket": ticket });
        let v = self
            .send_json(
                account,
                "create ticket",
                reqwest::Method::POST,
                "/api/v2/tickets.json",
                &body,
            )
            .await?;
        field(v, "ticket", "create ticket")
    }

    /// Tickets carrying `external_id`: `GET /api/v2/tickets?external_id=…`.
    pub async fn tickets_by_external_id(
        &self,
        account: &ZendeskAccount,
        external_id: &str,
    ) -> ApiResult<Vec<Ticket>> {
        let v = self
            .get(
                account,
                "find ticket by external id",
                "/api/v2/tickets.json",
                &[("external_id", external_id)],
            )
            .await?;
        field(v, "tickets", "find ticket by external id")
    }

    /// Reads a ticket: `GET /api/v2/tickets/{id}`.
    pub async fn get_ticket(&self, account: &ZendeskAccount, id: u64) -> ApiResult<Ticket> {
        let v = self
            .get(
                account,
                "show ticket",
                &format!("/api/v2/tickets/{id}.json"),
                &[],
            )
            .await?;
        field(v, "ticket", "show ticket")
    }

    /// Updates a ticket: `PUT /api/v2/tickets/{id}` with `{"ticket": …}`, paced
    /// to Zendesk's 30 updates per 10 minutes per ticket.
    pub async fn update_ticket(
        &self,
        account: &ZendeskAccount,
        id: u64,
        update: &TicketUpdate,
    ) -> ApiResult<Ticket> {
        self.ticket_pace
            .until_key_ready(&format!("{}:{id}", account.subdomain))
            .await;
        let body = json!({ "ticket": update });
        let v = self
            .send_json(
                account,
                "update ticket",
                reqwest::Method::PUT,
                &format!("/api/v2/tickets/{id}.json"),
                &body,
            )
            .await?;
        field(v, "ticket", "update ticket")
    }

    /// Uploads a file: `POST /api/v2/uploads?filename=…` with the raw bytes and
    /// their MIME type. Files over [`MAX_UPLOAD_BYTES`] are refused before sending.
    /// The returned token is valid for [`UPLOAD_TOKEN_TTL`].
    pub async fn upload(
        &self,
        account: &ZendeskAccount,
        filename: &str,
        content_type: &str,
        data: Bytes,
    ) -> ApiResult<Upload> {
        if data.len() as u64 > MAX_UPLOAD_BYTES {
            return Err(ZendeskApiError::new(
                FailureClass::Permanent,
                0,
                "upload",
                format!(
                    "the file is {} bytes; Zendesk attachments are limited to 50 MB",
                    data.len()
                ),
            ));
        }
        let url = Self::url(account, "/api/v2/uploads.json", &[("filename", filename)])?;
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(data);
        let v: Value = self.json(account, "upload", request).await?;
        field(v, "upload", "upload")
    }

    /// Opens a ticket in the agent's browser (Talk Partner Edition):
    /// `POST /api/v2/channels/voice/agents/{agent}/tickets/{ticket}/display`.
    pub async fn display_ticket(
        &self,
        account: &ZendeskAccount,
        agent_id: u64,
        ticket_id: u64,
    ) -> ApiResult<()> {
        let url = Self::url(
            account,
            &format!("/api/v2/channels/voice/agents/{agent_id}/tickets/{ticket_id}/display.json"),
            &[],
        )?;
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        self.send(account, "open ticket for agent", request)
            .await
            .map(|_| ())
    }
}

fn results_of_type(v: &Value, kind: &str) -> Vec<User> {
    v.get("results")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter(|r| {
                    r.get("result_type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == kind)
                })
                .filter_map(|r| serde_json::from_value::<User>(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn field<T: DeserializeOwned>(mut v: Value, name: &str, operation: &str) -> ApiResult<T> {
    let inner = v.get_mut(name).map(Value::take).unwrap_or(Value::Null);
    serde_json::from_value(inner).map_err(|e| {
        ZendeskApiError::new(
            FailureClass::Permanent,
            200,
            operation,
            format!("Zendesk's answer has no usable \"{name}\": {e}"),
        )
    })
}

fn page<T: DeserializeOwned>(v: Value, name: &str, operation: &str) -> ApiResult<Page<T>> {
    let has_more = v
        .pointer("/meta/has_more")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let after = v
        .pointer("/meta/after_cursor")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let items = field(v, name, operation)?;
    Ok(Page {
        items,
        after: if has_more { after } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_never_exceed_the_budget_in_a_window() {
        for (n, secs, divisor) in [
            (200, 60, 20),
            (2500, 60, 20),
            (30, 600, 3),
            (2, 60, 3),
            (7, 60, 20),
        ] {
            let window = Duration::from_secs(secs);
            let q = quota(n, window, divisor);
            let burst = q.burst_size().get();
            let steady =
                (window.as_secs_f64() / q.replenish_interval().as_secs_f64()).round() as u32;
            assert!(
                burst >= 1 && burst + steady <= n,
                "n={n}: burst {burst} + steady {steady}"
            );
        }
        // 30 updates per 10 minutes per ticket: 10 at once, then one every 30 s.
        let q = quota(TICKET_UPDATES_PER_WINDOW, TICKET_UPDATE_WINDOW, 3);
        assert_eq!(
            (q.burst_size().get(), q.replenish_interval()),
            (10, Duration::from_secs(30))
        );
    }
}
