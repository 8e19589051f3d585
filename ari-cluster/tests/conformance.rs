//! The conformance cases that exercise operations and events (ari-conformance), run with the
//! typed client over NATS: the harness's simulated Asterisk gets a proxy, the client's runtime
//! is a [`NatsRuntime`](ari_cluster::NatsRuntime). Every operation these cases call travels as
//! a `RESTRequest` through the proxy; no case knows it is not talking to Asterisk directly.
//! The proxy sends them on to the simulator as `RESTRequest` frames on its events WebSocket
//! (REST over WebSocket), except in the one case that reads the simulator's HTTP log.
//! (Cases about the WebSocket itself — reconnects, bad frames — concern the proxy's own
//! connection to Asterisk and stay with the adapters' suites.)

mod common;

use std::future::Future;
use std::time::Duration;

use ari_cluster::{Cluster, Proxy, ProxyConfig};
use ari_conformance::{cases, Harness};

/// Every application the cases below register.
const APPS: &[&str] = &[
    "conf-apps",
    "conf-channels",
    "conf-bridges",
    "conf-playbacks",
    "conf-recordings",
    "conf-userevent",
    "conf-instances",
    "conf-early",
    "conf-errors",
    "hello",
];

fn run<F, Fut>(apps: &[&str], ws_rest: bool, case: F)
where
    F: FnOnce(Harness<ari_cluster::NatsRuntime>) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let nats = common::nats();
        let cluster = Cluster::connect(&nats.url()).await.expect("cluster");
        let h = Harness::new(cluster.runtime().clone());
        let server = h.server();
        let mut config = ProxyConfig::new(
            &server.base_url(),
            server.username(),
            server.password(),
            &nats.url(),
            apps,
        );
        config.announce_interval = Duration::from_millis(100);
        config.rest_over_websocket = ws_rest;
        let proxy = Proxy::start(config).await.expect("proxy");
        assert!(cluster.wait_for_nodes(1, Duration::from_secs(10)).await);
        case(h).await;
        let stats = proxy.stats();
        assert_eq!((stats.events_dropped, stats.publish_errors), (0, 0));
        assert!(stats.rest_requests > 0);
        assert_eq!(stats.rest_over_websocket > 0, ws_rest, "{stats:?}");
        proxy.stop().await;
    });
}

macro_rules! over_nats {
    ($($name:ident $(: $apps:expr)? $(; over $http:ident)?),* $(,)?) => {$(
        #[test]
        fn $name() {
            #[allow(unused_variables)]
            let apps: &[&str] = APPS;
            $(let apps: &[&str] = $apps;)?
            #[allow(unused_variables)]
            let ws_rest = true;
            $(let _ = stringify!($http); let ws_rest = false;)?
            run(apps, ws_rest, |h| async move { cases::$name(&h).await });
        }
    )*};
}

over_nats!(
    asterisk_info_ping_and_variables,
    // The case lists the registered applications: the proxy registers only its own.
    applications_list_get_subscribe_unsubscribe: &["conf-apps", "conf-apps-2"],
    channels_every_operation,
    bridges_every_operation,
    playbacks_get_control_stop,
    recordings_live_and_stored,
    endpoints_list_and_get,
    device_states_update_get_list_delete,
    sounds_list_and_get,
    user_event_reaches_the_application,
    errors_are_typed_404_409_422,
    // The case reads the requests the simulator logged as HTTP: the proxy uses HTTP for it.
    instance_operations_never_repeat_ids; over http,
    listeners_attached_before_creation_receive_stasis_start,
    hello_ivr_end_to_end,
);
