//! # ari-conformance
//!
//! One end-to-end conformance suite for the ARI client, written once against the
//! runtime-generic API of [`ari_client`] and run against every adapter (`ari-tokio`,
//! `ari-smol`): each case is a generic `async fn case<R: Runtime>(h: &Harness<R>)` in
//! [`cases`] that drives a real client over real sockets (HTTP and the events WebSocket)
//! against a [`MockServer`](ari_testkit::MockServer) of `ari-testkit` (the simulated Asterisk, faults, request log).
//!
//! An adapter's test file invokes [`conformance_suite!`] with its runtime constructor and a
//! `block_on`, which generates one `#[test]` per case:
//!
//! ```text
//! // ari-smol/tests/conformance.rs
//! ari_conformance::conformance_suite! {
//!     runtime: ari_smol::SmolRuntime::new,
//!     block_on: smol::block_on,
//! }
//! ```
//!
//! ```text
//! // ari-tokio/tests/conformance.rs
//! fn block_on<F: std::future::Future>(fut: F) -> F::Output {
//!     tokio::runtime::Builder::new_multi_thread()
//!         .worker_threads(2)
//!         .enable_all()
//!         .build()
//!         .expect("a tokio runtime")
//!         .block_on(fut)
//! }
//! ari_conformance::conformance_suite! {
//!     runtime: ari_tokio::TokioRuntime::new,
//!     block_on: block_on,
//! }
//! ```
//!
//! `block_on` must leave the client's background tasks running on other threads while the
//! case's future runs (a multi-threaded tokio runtime; smol's global executor), because
//! some [`MockServer`](ari_testkit::MockServer) calls block the calling thread briefly.
//!
//! Every case finishes within [`CASE_LIVENESS`] or fails (a liveness bound, not a timing
//! assertion): a hang is a failure, never a stuck CI job.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

pub mod capture;
pub mod cases;
mod counted;
mod harness;

pub use counted::CountedRuntime;

pub use harness::{fast_sim_config, Harness, CASE_LIVENESS, DIALPLAN, LIVENESS};

/// The names of every case of the suite, in the order [`conformance_suite!`] generates them.
pub const CASES: &[&str] = &[
    "asterisk_info_ping_and_variables",
    "applications_list_get_subscribe_unsubscribe",
    "channels_every_operation",
    "bridges_every_operation",
    "playbacks_get_control_stop",
    "recordings_live_and_stored",
    "live_recording_finished_reports_a_failure_whenever_the_handle_was_made",
    "endpoints_list_and_get",
    "device_states_update_get_list_delete",
    "sounds_list_and_get",
    "mailboxes_update_get_list_delete",
    "user_event_reaches_the_application",
    "instance_operations_never_repeat_ids",
    "listeners_attached_before_creation_receive_stasis_start",
    "listeners_released_after_1000_calls",
    "rest_over_websocket_equals_http",
    "errors_are_typed_404_409_422",
    "unreachable_host_fails_within_the_request_timeout",
    "reconnect_in_the_middle_of_a_call",
    "a_close_from_asterisk_is_answered_then_the_client_reconnects",
    "max_retries_when_reconnection_is_refused",
    "bad_frames_are_counted_and_skipped",
    "restart_with_other_apps_and_keepalive",
    "asterisk_restart_ends_the_previous_runs_calls",
    "waits_on_a_resource_that_already_ended_fail_at_once",
    "waits_on_a_channel_taken_after_its_stasis_end_end_with_its_linger",
    "destroying_a_bridge_ends_its_waits_within_the_linger",
    "destroying_a_bridge_the_application_subscribed_to_delivers_its_bridge_destroyed",
    "close_ends_streams_listeners_and_requests",
    "slow_consumer_lags_while_the_socket_is_read",
    "handler_panics_are_counted_and_events_keep_flowing",
    "hello_ivr_end_to_end",
    "application_replaced_moves_the_app_to_the_new_client",
    "subscribe_all_receives_other_applications_events",
    "websocket_dropped_every_few_hundred_of_10000_events",
    "asterisk_down_longer_than_the_retry_budget",
    "rest_calls_during_an_outage_fail_within_their_timeout",
    "secrets_never_appear_in_tracing_debug_or_errors",
    "dropping_the_last_handle_shuts_the_client_down",
    "stop_and_close_wait_for_the_close_frame",
    "incoming_calls_miss_no_event_after_stasis_start",
    "thousand_concurrent_requests_stay_under_the_session_limit",
    "a_second_burst_opens_no_new_connection",
    "outbound_per_call_connection_is_a_call_with_rest_over_it",
    "outbound_wrong_credentials_are_refused_with_401_and_counted",
    "outbound_reconnecting_asterisk_goes_on_in_the_same_client",
    "outbound_two_asterisks_on_one_host_get_a_client_each",
    "outbound_persistent_calls_queued_before_the_app_started_are_not_lost",
    "outbound_hundred_concurrent_per_call_connections",
    "outbound_shutdown_closes_live_calls_at_the_deadline",
    "outbound_per_call_redial_mid_call_goes_on_in_the_same_call",
    "outbound_tls_call_with_rest_over_wss",
    "outbound_persistent_asterisk_restart_ends_the_previous_runs_calls",
    "outbound_shutdown_frees_the_port_for_the_next_run",
    "outbound_a_call_arriving_during_shutdown_is_handed_back_to_asterisk",
    "outbound_hundreds_of_per_call_calls_leave_nothing_behind",
    "outbound_clients_follow_the_stasis_end_linger_option",
    "outbound_persistent_server_dialled_per_call_keeps_each_call",
    "outbound_per_call_request_in_flight_when_the_connection_drops_fails_typed",
    "outbound_per_call_server_dialled_persistent_yields_every_call",
    "outbound_persistent_redial_mid_call_keeps_the_calls_waits",
    "outbound_per_call_call_redialled_to_a_restarted_application_is_handed_out",
    "outbound_persistent_asterisk_gone_for_good_ends_the_calls_waits",
    "outbound_persistent_configuration_removed_ends_the_calls_waits_at_once",
    "outbound_per_call_calls_of_two_asterisks_with_the_same_channel_name_are_two_calls",
    "outbound_credentials_in_the_uri_take_precedence",
    "outbound_persistent_asterisk_id_change_serves_the_new_and_ends_the_old",
    "outbound_persistent_calls_in_stasis_across_an_application_restart_are_handed_out",
    "outbound_calls_waiting_for_a_slow_application_are_visible",
    "outbound_shutdown_with_calls_never_taken_hands_out_none_afterwards",
    "outbound_persistent_restart_hands_out_only_the_channels_in_stasis",
    "outbound_persistent_calls_are_not_held_up_by_the_in_stasis_lookup",
    "outbound_two_asterisks_with_the_same_id_behind_one_address_get_a_client_each",
    "outbound_persistent_subscribe_all_restart_hands_out_the_calls_in_stasis",
    "outbound_per_call_redialled_call_is_the_channel_its_connection_names",
    "outbound_persistent_shutdown_ends_when_the_last_call_ends",
    "outbound_persistent_call_moved_in_from_another_application_is_served",
    "outbound_an_answer_slower_than_connection_timeout_is_dropped_and_redialled",
    "outbound_asterisk_pings_are_answered_while_the_application_is_busy",
    "outbound_start_on_an_outbound_client_leaves_its_connection_alone",
    "outbound_a_stopped_persistent_client_leaves_the_next_connection_to_a_new_one",
    "outbound_per_call_stopped_client_call_redialled_is_handed_out_again",
    "outbound_per_call_application_with_a_colon_is_served_and_found_after_a_restart",
    "outbound_per_call_asterisk_crash_ends_the_call_promptly",
    "outbound_persistent_shutdown_during_the_in_stasis_lookup_waits_for_its_calls",
    "outbound_per_call_application_with_a_technology_after_a_colon_is_found_after_a_restart",
    "media_session_echoes_and_tears_down",
    "media_session_ends_when_the_caller_hangs_up",
    "media_pacer_plays_audio_handed_over_at_once",
    "media_pacer_on_a_thread_of_its_own_plays_audio",
    "media_pacer_mark_comes_after_the_prompt_is_played",
    "audiosocket_server_serves_a_call",
    "audiosocket_a_silent_connection_holds_up_no_call",
    "audiosocket_barge_in_and_hangup_mid_speech_account_for_every_frame",
    "media_client_mode_asterisk_dials_the_app",
    "media_client_mode_concurrent_opens_each_get_their_own_channel",
    "media_server_checks_basic_credentials",
    "media_flush_is_a_barge_in_that_discards_pending_marks",
    "media_overflow_is_counted_and_announced",
    "media_passthrough_refuses_commands_at_the_sender",
    "media_commands_refused_after_acceptance_are_reported",
    "media_on_a_call_gone_meanwhile_fails_and_leaves_nothing_behind",
    "media_handles_dropped_without_close_tear_the_session_down",
    "client_close_ends_live_media_sessions",
    "media_open_abandoned_midway_leaves_nothing_behind",
    "media_caller_hangup_mid_stream_counts_the_unsent_audio",
    "media_client_mode_fails_at_once_when_asterisk_cannot_connect",
    "media_session_and_client_dropped_leave_no_task_behind",
    "media_a_chunk_longer_than_asterisk_reads_is_split_or_refused",
    "media_many_sessions_ending_at_once_leave_nothing_behind",
    "media_audio_while_the_direction_is_in_is_refused_not_lost",
    "media_close_status_from_asterisk_reaches_the_application",
    "media_xoff_holds_the_audio_back_until_xon_and_nothing_is_lost",
    "media_flush_during_xoff_resumes_at_the_next_xon",
    "media_channel_hung_up_through_ari_ends_the_session_with_asterisks_close",
    "audiosocket_a_message_cut_off_at_either_end_is_counted",
    "audiosocket_hangup_never_answered_ends_the_session",
    "media_pacer_full_when_the_call_hangs_up_accounts_for_every_byte",
    "media_close_never_answered_ends_the_session_after_its_timeout",
    "media_close_from_asterisk_is_answered",
    "media_on_a_bridged_call_joins_its_bridge_and_keeps_the_parties_together",
    "media_on_a_call_whose_bridge_is_destroyed_meanwhile_joins_its_new_bridge",
    "media_marks_on_an_asterisk_without_mark_media_are_given_up_and_reported",
    "media_on_a_call_moved_out_of_its_bridge_meanwhile_follows_the_call",
    "media_socket_that_takes_nothing_holds_its_audio_in_the_bounded_queue",
    "media_slow_consumer_loses_audio_counted_but_never_a_digit",
    "audiosocket_audio_at_another_rate_than_the_senders_is_counted",
    "stream_consumer_that_keeps_up_loses_no_event_of_a_flood",
    "stream_consumer_that_stalls_lags_while_the_socket_is_read",
    "operations_newer_than_the_server_fail_at_once_with_a_typed_error",
    "rest_over_websocket_falls_back_on_a_server_without_it",
    "call_queue_ends_every_wait_and_leaves_nothing",
    "voicemail_records_to_its_limit_then_files_the_message",
    "a_spy_ends_with_the_call_it_spies_on",
    "dialplan_continue_ends_the_applications_waits",
    "a_playback_on_a_call_that_hangs_up_finishes",
    "handlers_that_call_rest_inside_finish",
    "handlers_registered_after_the_end_are_released",
    "incoming_calls_of_two_applications",
    "a_prompt_that_cannot_be_played_fails_finished",
    "a_refused_originate_or_play_ends_the_waits_set_up_for_it",
    "a_refused_local_originate_or_bridge_ends_the_waits_of_every_id",
    "a_recording_refused_with_409_ends_its_waits_unless_one_is_live",
    "a_live_recording_ending_during_the_409_check_keeps_its_final_event",
    "a_wait_made_after_a_recordings_events_keeps_its_final_event_past_a_409",
    "a_stop_sent_before_the_recording_starts_still_stops_it",
    "a_recording_queued_behind_the_greeting_ends_its_waits_when_the_caller_hangs_up",
    "a_prompt_queued_when_the_caller_hangs_up_ends_its_wait_in_or_out_of_a_bridge",
    "a_prompt_answered_after_the_caller_left_ends_its_wait",
    "a_server_id_prompt_dropped_at_the_hangup_ends_its_wait",
    "a_blind_transfer_is_followed_and_carried_out_by_the_application",
    "a_call_moved_to_another_application_keeps_its_waits",
    "a_call_sent_to_the_dialplan_and_back_is_followed_again",
    "early_media_ring_and_progress_before_answering",
    "a_key_menu_with_timeouts_leaves_no_wait_behind",
    "an_external_media_channel_is_followed_from_before_its_creation_to_its_end",
    "asterisk_restart_mid_call_ends_bridge_playback_and_recording_waits",
];

/// The cases [`outbound_conformance_suite!`] runs over an outbound connection: every case
/// about operations and events. (Cases about the application's own connection — connect,
/// reconnect, restart, close, REST over WebSocket versus HTTP, the HTTP pool — concern a
/// client that dials Asterisk and stay in [`conformance_suite!`].)
pub const OUTBOUND_CASES: &[&str] = &[
    "asterisk_info_ping_and_variables",
    "channels_every_operation",
    "bridges_every_operation",
    "playbacks_get_control_stop",
    "recordings_live_and_stored",
    "endpoints_list_and_get",
    "device_states_update_get_list_delete",
    "sounds_list_and_get",
    "user_event_reaches_the_application",
    "errors_are_typed_404_409_422",
    "instance_operations_never_repeat_ids",
    "listeners_attached_before_creation_receive_stasis_start",
    "hello_ivr_end_to_end",
    "incoming_calls_miss_no_event_after_stasis_start",
    "handler_panics_are_counted_and_events_keep_flowing",
    "waits_on_a_resource_that_already_ended_fail_at_once",
    "waits_on_a_channel_taken_after_its_stasis_end_end_with_its_linger",
    "listeners_released_after_1000_calls",
];

/// Generates one `#[test]` per case of [`OUTBOUND_CASES`], each run with a client of an
/// outbound connection: the simulated Asterisk dials an
/// [`OutboundServer`](ari_client::OutboundServer) of the adapter's runtime
/// ([`Harness::over_outbound`]) and every request travels over that WebSocket.
///
/// Same arguments as [`conformance_suite!`]; the runtime must be a
/// [`Stack`](ari_client::Stack) (what every adapter's runtime is).
#[macro_export]
macro_rules! outbound_conformance_suite {
    (runtime: $runtime:expr, block_on: $block_on:expr $(,)?) => {
        $crate::outbound_conformance_suite!(@cases ($runtime) ($block_on)
            asterisk_info_ping_and_variables,
            channels_every_operation,
            bridges_every_operation,
            playbacks_get_control_stop,
            recordings_live_and_stored,
            endpoints_list_and_get,
            device_states_update_get_list_delete,
            sounds_list_and_get,
            user_event_reaches_the_application,
            errors_are_typed_404_409_422,
            instance_operations_never_repeat_ids,
            listeners_attached_before_creation_receive_stasis_start,
            hello_ivr_end_to_end,
            incoming_calls_miss_no_event_after_stasis_start,
            handler_panics_are_counted_and_events_keep_flowing,
            waits_on_a_resource_that_already_ended_fail_at_once,
            waits_on_a_channel_taken_after_its_stasis_end_end_with_its_linger,
            listeners_released_after_1000_calls,
        );
    };
    (@cases ($runtime:expr) ($block_on:expr) $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let block_on = $block_on;
                block_on(async {
                    let runtime = ($runtime)();
                    let harness = $crate::Harness::over_outbound(runtime).await;
                    harness
                        .run_case(stringify!($case), $crate::cases::$case(&harness))
                        .await;
                    harness.assert_everything_went_over_the_outbound_socket();
                });
            }
        )*
    };
}

/// Generates one `#[test]` per conformance case for an adapter.
///
/// `runtime` is an expression callable with no argument that returns the adapter's
/// [`ari_client::Runtime`] (called inside `block_on`); `block_on` is an expression callable
/// with one future that runs it to completion (a generic function such as `smol::block_on`,
/// or a closure).
///
/// ```text
/// ari_conformance::conformance_suite! {
///     runtime: ari_smol::SmolRuntime::new,
///     block_on: smol::block_on,
/// }
/// ```
#[macro_export]
macro_rules! conformance_suite {
    (runtime: $runtime:expr, block_on: $block_on:expr $(,)?) => {
        $crate::conformance_suite!(@cases ($runtime) ($block_on)
            asterisk_info_ping_and_variables,
            applications_list_get_subscribe_unsubscribe,
            channels_every_operation,
            bridges_every_operation,
            playbacks_get_control_stop,
            recordings_live_and_stored,
            live_recording_finished_reports_a_failure_whenever_the_handle_was_made,
            endpoints_list_and_get,
            device_states_update_get_list_delete,
            sounds_list_and_get,
            mailboxes_update_get_list_delete,
            user_event_reaches_the_application,
            instance_operations_never_repeat_ids,
            listeners_attached_before_creation_receive_stasis_start,
            listeners_released_after_1000_calls,
            rest_over_websocket_equals_http,
            errors_are_typed_404_409_422,
            unreachable_host_fails_within_the_request_timeout,
            reconnect_in_the_middle_of_a_call,
            a_close_from_asterisk_is_answered_then_the_client_reconnects,
            max_retries_when_reconnection_is_refused,
            bad_frames_are_counted_and_skipped,
            restart_with_other_apps_and_keepalive,
            asterisk_restart_ends_the_previous_runs_calls,
            waits_on_a_resource_that_already_ended_fail_at_once,
            waits_on_a_channel_taken_after_its_stasis_end_end_with_its_linger,
            destroying_a_bridge_ends_its_waits_within_the_linger,
            destroying_a_bridge_the_application_subscribed_to_delivers_its_bridge_destroyed,
            close_ends_streams_listeners_and_requests,
            slow_consumer_lags_while_the_socket_is_read,
            handler_panics_are_counted_and_events_keep_flowing,
            hello_ivr_end_to_end,
            application_replaced_moves_the_app_to_the_new_client,
            subscribe_all_receives_other_applications_events,
            websocket_dropped_every_few_hundred_of_10000_events,
            asterisk_down_longer_than_the_retry_budget,
            rest_calls_during_an_outage_fail_within_their_timeout,
            secrets_never_appear_in_tracing_debug_or_errors,
            dropping_the_last_handle_shuts_the_client_down,
            stop_and_close_wait_for_the_close_frame,
            incoming_calls_miss_no_event_after_stasis_start,
            thousand_concurrent_requests_stay_under_the_session_limit,
            a_second_burst_opens_no_new_connection,
            outbound_per_call_connection_is_a_call_with_rest_over_it,
            outbound_wrong_credentials_are_refused_with_401_and_counted,
            outbound_reconnecting_asterisk_goes_on_in_the_same_client,
            outbound_two_asterisks_on_one_host_get_a_client_each,
            outbound_persistent_calls_queued_before_the_app_started_are_not_lost,
            outbound_hundred_concurrent_per_call_connections,
            outbound_shutdown_closes_live_calls_at_the_deadline,
            outbound_per_call_redial_mid_call_goes_on_in_the_same_call,
            outbound_tls_call_with_rest_over_wss,
            outbound_persistent_asterisk_restart_ends_the_previous_runs_calls,
            outbound_shutdown_frees_the_port_for_the_next_run,
            outbound_a_call_arriving_during_shutdown_is_handed_back_to_asterisk,
            outbound_hundreds_of_per_call_calls_leave_nothing_behind,
            outbound_clients_follow_the_stasis_end_linger_option,
            outbound_persistent_server_dialled_per_call_keeps_each_call,
            outbound_per_call_request_in_flight_when_the_connection_drops_fails_typed,
            outbound_per_call_server_dialled_persistent_yields_every_call,
            outbound_persistent_redial_mid_call_keeps_the_calls_waits,
            outbound_per_call_call_redialled_to_a_restarted_application_is_handed_out,
            outbound_persistent_asterisk_gone_for_good_ends_the_calls_waits,
            outbound_persistent_configuration_removed_ends_the_calls_waits_at_once,
            outbound_per_call_calls_of_two_asterisks_with_the_same_channel_name_are_two_calls,
            outbound_credentials_in_the_uri_take_precedence,
            outbound_persistent_asterisk_id_change_serves_the_new_and_ends_the_old,
            outbound_persistent_calls_in_stasis_across_an_application_restart_are_handed_out,
            outbound_calls_waiting_for_a_slow_application_are_visible,
            outbound_shutdown_with_calls_never_taken_hands_out_none_afterwards,
            outbound_persistent_restart_hands_out_only_the_channels_in_stasis,
            outbound_persistent_calls_are_not_held_up_by_the_in_stasis_lookup,
            outbound_two_asterisks_with_the_same_id_behind_one_address_get_a_client_each,
            outbound_persistent_subscribe_all_restart_hands_out_the_calls_in_stasis,
            outbound_per_call_redialled_call_is_the_channel_its_connection_names,
            outbound_persistent_shutdown_ends_when_the_last_call_ends,
            outbound_persistent_call_moved_in_from_another_application_is_served,
            outbound_an_answer_slower_than_connection_timeout_is_dropped_and_redialled,
            outbound_asterisk_pings_are_answered_while_the_application_is_busy,
            outbound_start_on_an_outbound_client_leaves_its_connection_alone,
            outbound_a_stopped_persistent_client_leaves_the_next_connection_to_a_new_one,
            outbound_per_call_stopped_client_call_redialled_is_handed_out_again,
            outbound_per_call_application_with_a_colon_is_served_and_found_after_a_restart,
            outbound_per_call_asterisk_crash_ends_the_call_promptly,
            outbound_persistent_shutdown_during_the_in_stasis_lookup_waits_for_its_calls,
            outbound_per_call_application_with_a_technology_after_a_colon_is_found_after_a_restart,
            media_session_echoes_and_tears_down,
            media_session_ends_when_the_caller_hangs_up,
            media_pacer_plays_audio_handed_over_at_once,
            media_pacer_on_a_thread_of_its_own_plays_audio,
            media_pacer_mark_comes_after_the_prompt_is_played,
            audiosocket_server_serves_a_call,
            audiosocket_a_silent_connection_holds_up_no_call,
            audiosocket_barge_in_and_hangup_mid_speech_account_for_every_frame,
            media_client_mode_asterisk_dials_the_app,
            media_client_mode_concurrent_opens_each_get_their_own_channel,
            media_server_checks_basic_credentials,
            media_flush_is_a_barge_in_that_discards_pending_marks,
            media_overflow_is_counted_and_announced,
            media_passthrough_refuses_commands_at_the_sender,
            media_commands_refused_after_acceptance_are_reported,
            media_on_a_call_gone_meanwhile_fails_and_leaves_nothing_behind,
            media_handles_dropped_without_close_tear_the_session_down,
            client_close_ends_live_media_sessions,
            media_open_abandoned_midway_leaves_nothing_behind,
            media_caller_hangup_mid_stream_counts_the_unsent_audio,
            media_client_mode_fails_at_once_when_asterisk_cannot_connect,
            media_session_and_client_dropped_leave_no_task_behind,
            media_a_chunk_longer_than_asterisk_reads_is_split_or_refused,
            media_many_sessions_ending_at_once_leave_nothing_behind,
            media_audio_while_the_direction_is_in_is_refused_not_lost,
            media_close_status_from_asterisk_reaches_the_application,
            media_xoff_holds_the_audio_back_until_xon_and_nothing_is_lost,
            media_flush_during_xoff_resumes_at_the_next_xon,
            media_channel_hung_up_through_ari_ends_the_session_with_asterisks_close,
            audiosocket_a_message_cut_off_at_either_end_is_counted,
            audiosocket_hangup_never_answered_ends_the_session,
            media_pacer_full_when_the_call_hangs_up_accounts_for_every_byte,
            media_close_never_answered_ends_the_session_after_its_timeout,
            media_close_from_asterisk_is_answered,
            media_on_a_bridged_call_joins_its_bridge_and_keeps_the_parties_together,
            media_on_a_call_whose_bridge_is_destroyed_meanwhile_joins_its_new_bridge,
            media_marks_on_an_asterisk_without_mark_media_are_given_up_and_reported,
            media_on_a_call_moved_out_of_its_bridge_meanwhile_follows_the_call,
            media_socket_that_takes_nothing_holds_its_audio_in_the_bounded_queue,
            media_slow_consumer_loses_audio_counted_but_never_a_digit,
            audiosocket_audio_at_another_rate_than_the_senders_is_counted,
            stream_consumer_that_keeps_up_loses_no_event_of_a_flood,
            stream_consumer_that_stalls_lags_while_the_socket_is_read,
            operations_newer_than_the_server_fail_at_once_with_a_typed_error,
            rest_over_websocket_falls_back_on_a_server_without_it,
            call_queue_ends_every_wait_and_leaves_nothing,
            voicemail_records_to_its_limit_then_files_the_message,
            a_spy_ends_with_the_call_it_spies_on,
            dialplan_continue_ends_the_applications_waits,
            a_playback_on_a_call_that_hangs_up_finishes,
            handlers_that_call_rest_inside_finish,
            handlers_registered_after_the_end_are_released,
            incoming_calls_of_two_applications,
            a_prompt_that_cannot_be_played_fails_finished,
            a_refused_originate_or_play_ends_the_waits_set_up_for_it,
            a_refused_local_originate_or_bridge_ends_the_waits_of_every_id,
            a_recording_refused_with_409_ends_its_waits_unless_one_is_live,
            a_live_recording_ending_during_the_409_check_keeps_its_final_event,
            a_wait_made_after_a_recordings_events_keeps_its_final_event_past_a_409,
            a_stop_sent_before_the_recording_starts_still_stops_it,
            a_recording_queued_behind_the_greeting_ends_its_waits_when_the_caller_hangs_up,
            a_prompt_queued_when_the_caller_hangs_up_ends_its_wait_in_or_out_of_a_bridge,
            a_prompt_answered_after_the_caller_left_ends_its_wait,
            a_server_id_prompt_dropped_at_the_hangup_ends_its_wait,
            a_blind_transfer_is_followed_and_carried_out_by_the_application,
            a_call_moved_to_another_application_keeps_its_waits,
            a_call_sent_to_the_dialplan_and_back_is_followed_again,
            early_media_ring_and_progress_before_answering,
            a_key_menu_with_timeouts_leaves_no_wait_behind,
            an_external_media_channel_is_followed_from_before_its_creation_to_its_end,
            asterisk_restart_mid_call_ends_bridge_playback_and_recording_waits,
        );
    };
    (@cases ($runtime:expr) ($block_on:expr) $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let block_on = $block_on;
                block_on(async {
                    let runtime = ($runtime)();
                    let harness = $crate::Harness::new(runtime);
                    harness
                        .run_case(stringify!($case), $crate::cases::$case(&harness))
                        .await;
                });
            }
        )*
    };
}
