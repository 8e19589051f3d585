//! The conformance suite of `ari-conformance` on `TokioRuntime`.

/// A multi-threaded runtime per test: the client's tasks run on its workers while the case
/// runs on the test thread.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(fut)
}

ari_conformance::conformance_suite! {
    runtime: ari_tokio::TokioRuntime::new,
    block_on: block_on,
}

/// The operation and event cases again with the client of an outbound connection: the
/// simulated Asterisk dials the application and every request goes over that WebSocket.
mod over_outbound {
    use super::block_on;

    ari_conformance::outbound_conformance_suite! {
        runtime: ari_tokio::TokioRuntime::new,
        block_on: block_on,
    }
}

/// The everyday call-control cases on a current-thread runtime (what `#[tokio::main(flavor =
/// "current_thread")]` gives an application): the client's tasks and the case share one
/// thread.
mod current_thread {
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(fut)
    }

    ari_conformance::conformance_suite! {
        @cases (ari_tokio::TokioRuntime::new) (block_on)
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
        a_call_moved_to_another_application_keeps_its_waits,
        a_call_sent_to_the_dialplan_and_back_is_followed_again,
        early_media_ring_and_progress_before_answering,
        a_key_menu_with_timeouts_leaves_no_wait_behind,
        an_external_media_channel_is_followed_from_before_its_creation_to_its_end,
        asterisk_restart_mid_call_ends_bridge_playback_and_recording_waits,
        hello_ivr_end_to_end,
        reconnect_in_the_middle_of_a_call,
        asterisk_restart_ends_the_previous_runs_calls,
        destroying_a_bridge_ends_its_waits_within_the_linger,
        playbacks_get_control_stop,
        recordings_live_and_stored,
    }
}
