//! The store behaviour suite: every test runs against every `Store` implementation.
//!
//! Each `pub async fn` in the modules under `tests/store_suite/` takes a
//! [`harness::Backend`] and asserts one behaviour; the `suite!` macro below
//! instantiates it as a `#[tokio::test]` once per backend (`memory::…`,
//! `sqlite::…` on a file in a temporary directory, `sqlite_in_memory::…`).
//! Every backend is opened with a `Keyring::generate`d keyring. A new store
//! adds one `Backend` variant and one stanza to the macro (see the Postgres
//! placeholder).

#[path = "store_suite/harness.rs"]
mod harness;

#[path = "store_suite/attributes.rs"]
mod attributes;
#[path = "store_suite/claims.rs"]
mod claims;
#[path = "store_suite/connections.rs"]
mod connections;
#[path = "store_suite/outbox.rs"]
mod outbox;
#[path = "store_suite/parking.rs"]
mod parking;
#[path = "store_suite/records.rs"]
mod records;
#[cfg(feature = "sqlite")]
#[path = "store_suite/sqlite_only.rs"]
mod sqlite_only;

/// Instantiates every behaviour test once per backend.
macro_rules! suite {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::$module::$test(crate::harness::Backend::Memory).await;
                }
            )*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::$module::$test(crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite_in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::$module::$test(crate::harness::Backend::SqliteInMemory).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if crate::harness::postgres_url().is_none() {
                        eprintln!("skipped: SWITCHBOARD_POSTGRES_URL not set");
                        return;
                    }
                    crate::$module::$test(crate::harness::Backend::Postgres).await;
                }
            )*
        }
    };
}

suite!(
    // outbox
    outbox::enqueue_and_duplicate,
    outbox::event_ids_are_per_tenant,
    outbox::delivery_state_of_unknown_id,
    claims::claim_orders_by_due_time_then_id_and_respects_limit,
    claims::head_of_key_claims_one_per_key_in_order,
    claims::dead_head_releases_its_key,
    claims::expired_lease_is_reclaimed_and_stale_completion_ignored,
    claims::repeated_lease_expiry_keeps_increasing_attempt,
    claims::renew_extends_only_held_leases,
    claims::release_gives_claims_back_unattempted,
    claims::attempts_counted_at_claim_and_given_back,
    outbox::outcome_sent,
    outbox::outcome_retry,
    outbox::outcome_defer,
    outbox::outcome_dead,
    outbox::dead_letters_oldest_first_and_replay,
    outbox::dead_letters_filter_by_tenant,
    outbox::delivery_log_records_every_step_in_order,
    outbox::destination_stats_per_destination,
    outbox::destination_stats_per_tenant,
    outbox::batched_completion_applies_each_outcome,
    claims::concurrent_claims_never_hand_out_a_delivery_twice,
    claims::huge_limits_and_leases_are_accepted,
    outbox::prune_removes_old_sent_and_keeps_the_rest,
    // parking per (tenant, scope)
    parking::set_scope_parks_and_unparks_in_order,
    parking::connect_requeues_a_key_in_original_order,
    parking::set_scope_for_unknown_scope_is_listed,
    parking::parking_is_per_tenant_and_scope,
    parking::enqueue_into_disconnected_scope_is_parked,
    parking::parked_outcome_disconnects_its_scope,
    parking::parked_with_old_epoch_requeues_and_leaves_scope_connected,
    parking::disconnect_with_stale_epoch_is_a_no_op,
    // connections
    connections::connections_round_trip_with_secrets,
    connections::connections_list_per_tenant_by_key,
    connections::store_without_keyring_refuses_secrets,
    connections::wrong_key_cannot_open_secrets,
    connections::connection_owned_by_another_tenant_conflicts,
    connections::default_connection_selection,
    connections::swap_secrets_compares_revision,
    // links, integrations, runs, rules, single-use keys
    records::identity_links_and_manual_wins,
    records::identity_links_are_per_tenant,
    records::integrations_per_tenant_by_name,
    records::runs_never_overlap,
    records::runs_are_per_tenant,
    records::abandoned_run_is_taken_over_after_lease_expiry,
    records::renewed_run_lease_keeps_the_run,
    records::rules_put_get_remove,
    records::remember_once_respects_expiry,
    // attributes
    attributes::attributes_upsert_merges_and_counts,
    attributes::large_batches_count_and_merge_every_user,
    attributes::batches_write_what_their_records_write,
    attributes::attributes_query_numeric_and_text,
    attributes::attributes_query_agrees_with_filter_matches,
    attributes::segmentation_matches_the_rust_evaluator_on_a_generated_corpus,
    attributes::snapshot_runs_replace_the_integrations_values,
    attributes::a_failed_run_leaves_the_previous_snapshot,
    attributes::upsert_only_runs_merge,
    attributes::attribute_names_have_one_owner,
    attributes::deletes_free_names_under_the_cap,
    attributes::attribute_cap_names_the_overflow_and_writes_nothing,
    attributes::attribute_cap_is_per_tenant,
);
