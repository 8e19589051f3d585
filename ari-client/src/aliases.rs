//! The type aliases every adapter exports, written once.

/// Declares, in an adapter crate, the aliases of this crate's generic types with the adapter's
/// runtime filled in (`Client`, `Channel`, `Channels`, …), so that every adapter offers exactly
/// the same names.
///
/// ```text
/// ari_client::runtime_aliases!(TokioRuntime);
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! runtime_aliases {
    ($rt:ty) => {
        /// The ARI client (see [`ari_client::Client`]).
        pub type Client = $crate::Client<$rt>;
        /// Options for a [`Client`] (see [`ari_client::ClientBuilder`]).
        pub type ClientBuilder = $crate::ClientBuilder<$rt>;
        /// A pending REST call to `.await`, with its optional parameters as setters (see
        /// [`ari_client::Call`]).
        pub type Call<O> = $crate::Call<$rt, O>;

        /// A channel instance (see [`ari_client::Channel`]).
        pub type Channel = $crate::Channel<$rt>;
        /// A bridge instance (see [`ari_client::Bridge`]).
        pub type Bridge = $crate::Bridge<$rt>;
        /// A playback instance (see [`ari_client::Playback`]).
        pub type Playback = $crate::Playback<$rt>;
        /// A live recording instance (see [`ari_client::LiveRecording`]).
        pub type LiveRecording = $crate::LiveRecording<$rt>;
        /// A stored recording instance (see [`ari_client::StoredRecording`]).
        pub type StoredRecording = $crate::StoredRecording<$rt>;
        /// An endpoint instance (see [`ari_client::Endpoint`]).
        pub type Endpoint = $crate::Endpoint<$rt>;
        /// A device state instance (see [`ari_client::DeviceState`]).
        pub type DeviceState = $crate::DeviceState<$rt>;
        /// A Stasis application instance (see [`ari_client::Application`]).
        pub type Application = $crate::Application<$rt>;

        /// The two channels of a `Dial` event (see [`ari_client::DialParties`]).
        pub type DialParties = $crate::DialParties<$rt>;
        /// A stream of client-wide events of one type with their instances (see
        /// [`ari_client::ClientStream`]).
        pub type ClientStream<T> = $crate::ClientStream<$rt, T>;
        /// The next client-wide event of one type with its instances (see
        /// [`ari_client::ClientOnce`]).
        pub type ClientOnce<T> = $crate::ClientOnce<$rt, T>;

        /// `client.asterisk()`: operations on the Asterisk system (see [`ari_client::Asterisk`]).
        pub type Asterisk = $crate::Asterisk<$rt>;
        /// `client.endpoints()` (see [`ari_client::Endpoints`]).
        pub type Endpoints = $crate::Endpoints<$rt>;
        /// `client.channels()` (see [`ari_client::Channels`]).
        pub type Channels = $crate::Channels<$rt>;
        /// `client.bridges()` (see [`ari_client::Bridges`]).
        pub type Bridges = $crate::Bridges<$rt>;
        /// `client.recordings()` (see [`ari_client::Recordings`]).
        pub type Recordings = $crate::Recordings<$rt>;
        /// `client.sounds()` (see [`ari_client::Sounds`]).
        pub type Sounds = $crate::Sounds<$rt>;
        /// `client.playbacks()` (see [`ari_client::Playbacks`]).
        pub type Playbacks = $crate::Playbacks<$rt>;
        /// `client.device_states()` (see [`ari_client::DeviceStates`]).
        pub type DeviceStates = $crate::DeviceStates<$rt>;
        /// `client.mailboxes()` (see [`ari_client::Mailboxes`]).
        pub type Mailboxes = $crate::Mailboxes<$rt>;
        /// `client.user_events()`: user events (see [`ari_client::UserEvents`]).
        pub type UserEvents = $crate::UserEvents<$rt>;
        /// `client.applications()` (see [`ari_client::Applications`]).
        pub type Applications = $crate::Applications<$rt>;
    };
}
