//! The Slack connector against a wiremock Slack: exact requests, Slack's documented answers and errors, pacing, parking per tenant, identity sync, inbound handlers for every workspace, OAuth per tenant and token rotation.
#![cfg(feature = "slack")]

#[path = "slack/common.rs"]
mod common;
#[path = "slack/defects.rs"]
mod defects;
#[path = "slack/follow_ups.rs"]
mod follow_ups;
#[path = "slack/identity.rs"]
mod identity;
#[path = "slack/inbound.rs"]
mod inbound;
#[path = "slack/interactivity.rs"]
mod interactivity;
#[path = "slack/lifecycle.rs"]
mod lifecycle;
#[path = "slack/oauth.rs"]
mod oauth;
#[path = "slack/outbound.rs"]
mod outbound;
#[path = "slack/parsers.rs"]
mod parsers;
#[path = "slack/rotation.rs"]
mod rotation;
#[path = "slack/socket.rs"]
mod socket;
#[path = "slack/tenants.rs"]
mod tenants;
#[path = "slack/workspaces.rs"]
mod workspaces;
