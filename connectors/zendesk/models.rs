//! Zendesk records as the API returns them (users, identities, groups, tickets, uploads, cursor pages) and the request bodies switchboard sends.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Deserializes `null` or a missing field as the default value.
pub(crate) fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Zendesk user (unknown fields ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user id.
    pub id: u64,
    /// The name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// The primary email.
    #[serde(default)]
    pub email: Option<String>,
    /// The primary phone, as entered.
    #[serde(default)]
    pub phone: Option<String>,
    /// `end-user`, `agent` or `admin`.
    #[serde(default, deserialize_with = "null_default")]
    pub role: String,
    /// False for deleted users.
    #[serde(default = "yes", deserialize_with = "null_true")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

fn null_true<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// One of a user's identities (email, phone number, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The identity id.
    pub id: u64,
    /// The owner.
    #[serde(default, deserialize_with = "null_default")]
    pub user_id: u64,
    /// `email`, `phone_number`, `twitter`, …
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// The address or number.
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
}

/// A Zendesk group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group id.
    pub id: u64,
    /// The name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Deleted groups.
    #[serde(default, deserialize_with = "null_default")]
    pub deleted: bool,
}

/// A Zendesk ticket (the fields switchboard reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The ticket id.
    pub id: u64,
    /// The requester.
    #[serde(default)]
    pub requester_id: Option<u64>,
    /// The assignee.
    #[serde(default)]
    pub assignee_id: Option<u64>,
    /// The group.
    #[serde(default)]
    pub group_id: Option<u64>,
    /// The subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// `new`, `open`, `pending`, `solved`, …
    #[serde(default)]
    pub status: Option<String>,
    /// The external id (switchboard puts the call id here).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
}

/// What `POST /api/v2/uploads` returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The token to put in a comment's `uploads` (valid 60 minutes).
    pub token: String,
    /// The attachments created.
    #[serde(default, deserialize_with = "null_default")]
    pub attachments: Vec<Attachment>,
}

/// An attachment of an [`Upload`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The attachment id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: u64,
    /// The file name.
    #[serde(default, deserialize_with = "null_default")]
    pub file_name: String,
    /// Where it can be downloaded.
    #[serde(default)]
    pub content_url: Option<String>,
    /// Size in bytes.
    #[serde(default, deserialize_with = "null_default")]
    pub size: u64,
}

/// One page of a cursor-paginated list (`meta.has_more`, `meta.after_cursor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` at the end.
    pub after: Option<String>,
}

/// A ticket comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// The text.
    pub body: String,
    /// Public (visible to the requester) or an internal note.
    pub public: bool,
    /// Upload tokens to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<String>,
}

impl Comment {
    /// An internal note.
    pub fn internal(body: impl Into<String>) -> Self {
        Comment {
            body: body.into(),
            public: false,
            uploads: Vec::new(),
        }
    }
    /// A public reply.
    pub fn public(body: impl Into<String>) -> Self {
        Comment {
            body: body.into(),
            public: true,
            uploads: Vec::new(),
        }
    }
}

/// The requester of a new ticket given by name and email (Zendesk creates the
/// user if the email is unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequesterRef {
    /// The name.
    pub name: String,
    /// The email.
    pub email: String,
}

/// The body of `POST /api/v2/tickets` (the `ticket` object).
///
/// `via` is read-only in the Tickets API (Zendesk sets it to `api`); only the
/// Talk Partner Edition endpoints can mark a ticket as a phone call, so
/// switchboard tags call tickets instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTicket {
    /// The subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The first comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    /// The requester by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<u64>,
    /// The requester by name and email (when no id is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<RequesterRef>,
    /// The group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u64>,
    /// The assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<u64>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// An external id (idempotency: switchboard looks it up before creating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The body of `PUT /api/v2/tickets/{id}` (the `ticket` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketUpdate {
    /// A comment to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    /// A new status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A new assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<u64>,
    /// Any further fields, merged in verbatim.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
}
