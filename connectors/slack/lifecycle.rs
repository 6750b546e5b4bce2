//! Message lifecycle by receipt: `chat.update`, `chat.delete`, thread replies, `chat.postEphemeral`, and the App Home tab (`views.publish`), each with the tenant connection's token.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::PostMessage;
use super::blocks::Block;
use super::destination::SlackDestination;
use super::errors::{FailureClass, SlackApiError};
use super::layout::SlackMessage;
use crate::destination::Receipt;
use crate::tenant::Connection;

/// Where a posted Slack message is: its channel and `ts` (what
/// `chat.update`, `chat.delete` and thread replies need).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackReceipt {
    /// The channel (`C…`, `G…`, `D…`).
    pub channel: String,
    /// The message's timestamp.
    pub ts: String,
}

impl SlackReceipt {
    /// From a delivery's [`Receipt`] ([`Receipt::location`] is the channel,
    /// [`Receipt::remote_id`] the `ts`); `None` if either is missing.
    pub fn from_receipt(receipt: &Receipt) -> Option<SlackReceipt> {
        Some(SlackReceipt {
            channel: receipt.location.clone().filter(|c| !c.is_empty())?,
            ts: receipt.remote_id.clone().filter(|t| !t.is_empty())?,
        })
    }

    /// As a [`Receipt`].
    pub fn to_receipt(&self) -> Receipt {
        Receipt {
            remote_id: Some(self.ts.clone()),
            location: Some(self.channel.clone()),
        }
    }
}

/// A `home` view for [`SlackDestination::publish_home`].
pub fn home_view(blocks: &[Block]) -> Value {
    json!({
        "type": "home",
        "blocks": blocks.iter().map(Block::to_json).collect::<Vec<_>>(),
    })
}

impl SlackDestination {
    /// Replaces the message of `receipt` with `message` (`chat.update`), with
    /// `connection`'s token (the fixed token's workspace when `None`).
    pub async fn update(
        &self,
        connection: Option<&Connection>,
        receipt: &SlackReceipt,
        message: &SlackMessage,
    ) -> Result<SlackReceipt, SlackApiError> {
        let token = self.token_for(connection).await?;
        let posted = self
            .client()
            .chat_update(
                &token,
                &receipt.channel,
                &receipt.ts,
                &message.text,
                &message.blocks,
            )
            .await?;
        Ok(SlackReceipt {
            channel: Some(posted.channel)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| receipt.channel.clone()),
            ts: Some(posted.ts)
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| receipt.ts.clone()),
        })
    }

    /// Deletes the message of `receipt` (`chat.delete`). A message already
    /// gone (`message_not_found`) counts as deleted.
    pub async fn delete(
        &self,
        connection: Option<&Connection>,
        receipt: &SlackReceipt,
    ) -> Result<(), SlackApiError> {
        let token = self.token_for(connection).await?;
        match self
            .client()
            .chat_delete(&token, &receipt.channel, &receipt.ts)
            .await
        {
            Err(e) if e.code() == Some("message_not_found") => Ok(()),
            other => other,
        }
    }

    /// Posts `message` as a reply in the thread of `parent`; with
    /// `broadcast` it also shows in the channel (`reply_broadcast`).
    pub async fn reply(
        &self,
        connection: Option<&Connection>,
        parent: &SlackReceipt,
        message: &SlackMessage,
        broadcast: bool,
    ) -> Result<SlackReceipt, SlackApiError> {
        let token = self.token_for(connection).await?;
        let post = PostMessage::new(parent.channel.clone(), message.text.clone())
            .blocks(message.blocks.clone())
            .in_thread(parent.ts.clone(), broadcast);
        let posted = self.client().post_message(&token, &post).await?;
        Ok(SlackReceipt {
            channel: Some(posted.channel)
                .filter(|c| !c.is_empty())
                .unwrap_or(post.channel),
            ts: posted.ts,
        })
    }

    /// Posts `message` to `channel` visible only to `user`
    /// (`chat.postEphemeral`); returns its `message_ts`.
    pub async fn post_ephemeral(
        &self,
        connection: Option<&Connection>,
        channel: &str,
        user: &str,
        message: &SlackMessage,
    ) -> Result<String, SlackApiError> {
        let token = self.token_for(connection).await?;
        self.client()
            .chat_post_ephemeral(&token, channel, user, &message.text, &message.blocks)
            .await
    }

    /// Publishes `user`'s App Home tab (`views.publish`) from `view` (e.g.
    /// [`home_view`]); returns the view id.
    pub async fn publish_home(
        &self,
        connection: Option<&Connection>,
        user: &str,
        view: &Value,
    ) -> Result<String, SlackApiError> {
        if view.get("type").and_then(Value::as_str) != Some("home") {
            return Err(SlackApiError::new(
                FailureClass::Permanent,
                "views.publish",
                None,
                "an App Home view must have \"type\": \"home\"",
            ));
        }
        let token = self.token_for(connection).await?;
        self.client().views_publish(&token, user, view).await
    }
}
