//! Subscriptions and routing: which subscriptions an event goes to.
//!
//! Three indexes, each a hash map or a list that only holds the subscriptions of its kind:
//! `all` (every event), `by_type` (event type name) and `by_resource` (one map per
//! [`ResourceKind`], keyed by id). Routing an event costs one lookup per resource it concerns
//! plus one per type, independent of how many subscriptions are live.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// The routing maps' hasher: foldhash (randomly seeded per map), far cheaper than SipHash for
/// the short keys routed on every event (channel ids, type names, subscription ids).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use smallvec::SmallVec;

use crate::events::{Event, ResourceKind, ResourceRef};

/// Identifies a subscription of a [`Session`](super::Session). Ids grow with each
/// subscription and are never reused by a session, so ordering by id is creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(crate) u64);

impl SubscriptionId {
    /// The number behind the id.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub#{}", self.0)
    }
}

/// Which events a subscription receives.
///
/// ```
/// use ari_proto::events::{ResourceKind, StasisStart};
/// use ari_proto::session::Filter;
/// let _every_event = Filter::all();
/// let _stasis_starts = Filter::of::<StasisStart>();
/// let _by_name = Filter::event_type("ChannelDtmfReceived");
/// let _chan = Filter::channel("1700000000.1");
/// let _first_dtmf = Filter::channel("1700000000.1").with_type("ChannelDtmfReceived").once();
/// let _ep = Filter::resource(ResourceKind::Endpoint, "PJSIP/alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub(crate) target: Target,
    pub(crate) event_type: Option<Cow<'static, str>>,
    pub(crate) once: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    All,
    Resource(ResourceKind, Box<str>),
}

impl Filter {
    /// Every event.
    pub fn all() -> Self {
        Filter {
            target: Target::All,
            event_type: None,
            once: false,
        }
    }

    /// Every event of this wire type (`"StasisStart"`).
    pub fn event_type(type_name: impl Into<Cow<'static, str>>) -> Self {
        Filter::all().with_type(type_name)
    }

    /// Every event of type `T`.
    pub fn of<T: crate::EventType>() -> Self {
        Filter::event_type(T::TYPE)
    }

    /// Every event concerning this resource (see [`Event::resources`]). The id of an endpoint
    /// is `technology/resource` (`PJSIP/alice`); of a recording, its name.
    ///
    /// The subscription ends by itself once the resource's final event has been delivered
    /// ([`Event::ended_resource`]): `ChannelDestroyed`, `BridgeDestroyed`, `PlaybackFinished`,
    /// `RecordingFinished`, `RecordingFailed`. A channel that left Stasis without
    /// `ChannelDestroyed`, and a bridge the application destroyed without a `BridgeDestroyed`
    /// reaching it ([`Session::bridge_destroyed`](super::Session::bridge_destroyed)), end when
    /// their [linger](super::SessionConfig::stasis_end_linger) is over. Endpoints and device
    /// states have no final event: unsubscribe from them yourself. A subscription made after
    /// the final event ends at once if the session still remembers that end (the latest
    /// [`Limits::max_ended_ids`](super::Limits::max_ended_ids) ends); to reuse a client-side
    /// id for a new resource, call [`Session::forget_ended`](super::Session::forget_ended)
    /// before subscribing.
    pub fn resource(kind: ResourceKind, id: impl Into<String>) -> Self {
        Filter {
            target: Target::Resource(kind, id.into().into_boxed_str()),
            event_type: None,
            once: false,
        }
    }

    /// [`Filter::resource`] for a channel.
    pub fn channel(id: impl Into<String>) -> Self {
        Filter::resource(ResourceKind::Channel, id)
    }

    /// [`Filter::resource`] for a bridge.
    pub fn bridge(id: impl Into<String>) -> Self {
        Filter::resource(ResourceKind::Bridge, id)
    }

    /// [`Filter::resource`] for a playback.
    pub fn playback(id: impl Into<String>) -> Self {
        Filter::resource(ResourceKind::Playback, id)
    }

    /// [`Filter::resource`] for a live recording (by name).
    pub fn recording(name: impl Into<String>) -> Self {
        Filter::resource(ResourceKind::Recording, name)
    }

    /// Restricts the filter to one event type.
    pub fn with_type(mut self, type_name: impl Into<Cow<'static, str>>) -> Self {
        self.event_type = Some(type_name.into());
        self
    }

    /// Makes the subscription one-shot: it ends after its first event.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Whether the subscription is one-shot.
    pub fn is_once(&self) -> bool {
        self.once
    }

    /// The event type it is restricted to, if any.
    pub fn type_name(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The resource it follows, if any.
    pub fn resource_ref(&self) -> Option<(ResourceKind, &str)> {
        match &self.target {
            Target::All => None,
            Target::Resource(k, id) => Some((*k, id)),
        }
    }

    /// Whether `event` matches this filter (the reference semantics routing implements).
    pub fn matches(&self, event: &Event) -> bool {
        if let Some(t) = &self.event_type {
            if event.type_name() != t.as_ref() {
                return false;
            }
        }
        match &self.target {
            Target::All => true,
            Target::Resource(kind, id) => event
                .resources()
                .iter()
                .any(|r| r.kind == *kind && key_matches(&r, id)),
        }
    }
}

fn key_matches(r: &ResourceRef<'_>, id: &str) -> bool {
    if r.kind == ResourceKind::Endpoint {
        id.len() == r.technology.len() + 1 + r.id.len()
            && id.starts_with(r.technology)
            && id.as_bytes().get(r.technology.len()) == Some(&b'/')
            && id.ends_with(r.id)
    } else {
        r.id == id
    }
}

/// Why the session ended a subscription by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// A one-shot subscription received its event.
    Once,
    /// The resource it followed received its final event (for a channel that left Stasis
    /// without one, or a bridge the application destroyed without a `BridgeDestroyed`
    /// reaching it: its [linger](super::SessionConfig::stasis_end_linger) ended).
    ResourceEnded,
    /// Asterisk refused the request that would have created the resource under the
    /// application's id (see [`Session::not_created`](super::Session::not_created)): it does
    /// not exist, and no event will come for it.
    NotCreated,
    /// The playback or recording was queued on a channel or bridge that left the
    /// application or went away before it started (see [`Session::queued_on`](super::Session::queued_on)):
    /// Asterisk drops the commands still queued on a channel when it leaves Stasis, without
    /// an event, so none will come for it.
    NeverStarted,
    /// An [accepted](super::Session::accepted) session's connection stayed down longer than
    /// [`SessionConfig::peer_timeout`](super::SessionConfig::peer_timeout): Asterisk did not
    /// come back, and the event will not come over this session.
    PeerGone,
    /// An [accepted](super::Session::accepted) session's connection had every application
    /// unregistered by Asterisk (`ApplicationUnregistered`: its `outbound_websocket`
    /// configuration was removed and reloaded), then Asterisk closed it with 1000: Asterisk
    /// does not dial again, and the event will not come over this session
    /// ([`ConnectionEvent::ApplicationsUnregistered`](super::ConnectionEvent::ApplicationsUnregistered)).
    ApplicationUnregistered,
}

struct Entry {
    filter: Filter,
}

const KINDS: usize = 6;

fn kind_index(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Channel => 0,
        ResourceKind::Bridge => 1,
        ResourceKind::Playback => 2,
        ResourceKind::Recording => 3,
        ResourceKind::Endpoint => 4,
        ResourceKind::DeviceState => 5,
    }
}

/// The subscriptions an event goes to, each with its data.
pub(crate) type Matches<T> = SmallVec<[(SubscriptionId, T); 4]>;

/// A subscription as its index lists hold it: what routing needs is kept together with the id
/// (its type restriction as an interned number, and whether it is one-shot), 16 bytes, so
/// routing reads no other map and the subscriptions of one resource share a cache line or two.
struct Listed<T> {
    id: SubscriptionId,
    /// [`TypeNames`] number of the type restriction; [`ANY_TYPE`] for none.
    ty: u32,
    once: bool,
    /// The application's data of the subscription, handed out with each delivery.
    data: T,
}

/// The `ty` of a subscription without a type restriction.
const ANY_TYPE: u32 = 0;

/// The event type names of live filters, interned as small numbers (never [`ANY_TYPE`]), each
/// with the number of filters using it. A number is freed with the last such filter and
/// reused, so the table is as large as the set of type names in use.
#[derive(Default)]
struct TypeNames {
    ids: FastMap<Box<str>, (u32, usize)>,
    free: Vec<u32>,
    next: u32,
}

impl TypeNames {
    fn acquire(&mut self, name: &str) -> u32 {
        if let Some((id, uses)) = self.ids.get_mut(name) {
            *uses += 1;
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.ids.insert(name.into(), (id, 1));
        id
    }

    fn release(&mut self, name: &str) {
        if let Some((id, uses)) = self.ids.get_mut(name) {
            *uses -= 1;
            if *uses == 0 {
                self.free.push(*id);
                self.ids.remove(name);
            }
        }
    }

    /// The number of `name`, or `None` when no live filter has that type.
    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).map(|(id, _)| *id)
    }
}

/// Ids grow, so a list in push order is sorted by id.
fn remove_listed<T>(v: &mut SubList<T>, id: SubscriptionId) -> Option<T> {
    let i = v.binary_search_by_key(&id, |l| l.id).ok()?;
    Some(v.remove(i).data)
}

/// The longest resource id kept inside its index entry (Asterisk's `1700000000.123` ids,
/// UUIDs, endpoint names); longer ones are allocated.
const INLINE_KEY: usize = 38;

/// A resource id as an index entry holds it: inline up to [`INLINE_KEY`] bytes.
enum ResourceKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl ResourceKey {
    fn new(key: &[u8]) -> Self {
        let mut bytes = [0u8; INLINE_KEY];
        match (bytes.get_mut(..key.len()), u8::try_from(key.len())) {
            (Some(head), Ok(len)) => {
                head.copy_from_slice(key);
                ResourceKey::Inline { len, bytes }
            }
            _ => ResourceKey::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            ResourceKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            ResourceKey::Heap(b) => b,
        }
    }
}

/// How many subscriptions of one resource (or of the `all` list, or of one event type) are
/// kept inline; more spill to the heap.
const INLINE_SUBS: usize = 6;

/// A list of subscriptions, in subscription order.
type SubList<T> = SmallVec<[Listed<T>; INLINE_SUBS]>;

/// The type tag of a subscription in a [`BlockHead`] whose `ty` does not fit in 16 bits: its
/// [`Listed`] entry is read instead.
const TY_ELSEWHERE: u16 = u16::MAX;

/// What routing reads first of a resource's block, in one cache line: the id, how many
/// subscriptions there are (up to [`INLINE_SUBS`]; more spill) and the type restriction of each
/// of the first [`INLINE_SUBS`]. Routing an event reads this line and then only the
/// subscriptions that match it, not every subscription of the resource.
#[repr(C, align(64))]
struct BlockHead {
    key: ResourceKey,
    /// `ty` of the first `cached` subscriptions (or [`TY_ELSEWHERE`]).
    tys: [u16; INLINE_SUBS],
    /// `min(subs.len(), INLINE_SUBS)`.
    cached: u8,
    /// Whether there are more than [`INLINE_SUBS`] subscriptions.
    more: bool,
    /// Whether an event of this resource was routed while it was followed (see
    /// [`Router::seen`]).
    seen: bool,
}

/// A resource's subscriptions, in subscription order: the first [`INLINE_SUBS`] in fixed
/// slots right after the block's head (no length or capacity word to read first: the head's
/// `cached` says how many there are), the rest in `spill`. Slot `i` is `Some` exactly for
/// `i < min(len, INLINE_SUBS)`, and `spill` is empty unless every slot is filled.
#[repr(C)]
struct BlockSubs<T> {
    inline: [Option<Listed<T>>; INLINE_SUBS],
    spill: Vec<Listed<T>>,
}

impl<T> BlockSubs<T> {
    fn new() -> Self {
        BlockSubs {
            inline: std::array::from_fn(|_| None),
            spill: Vec::new(),
        }
    }

    /// How many slots are filled.
    fn inline_len(&self) -> usize {
        self.inline
            .iter()
            .position(Option::is_none)
            .unwrap_or(INLINE_SUBS)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inline_len() + self.spill.len()
    }

    fn is_empty(&self) -> bool {
        self.inline[0].is_none()
    }

    /// The `i`th subscription in subscription order.
    #[cfg(test)]
    fn get(&self, i: usize) -> Option<&Listed<T>> {
        match self.inline.get(i) {
            Some(slot) => slot.as_ref(),
            None => self.spill.get(i - INLINE_SUBS),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Listed<T>> {
        self.inline.iter().flatten().chain(self.spill.iter())
    }

    /// Appends a subscription (ids grow: the list stays in subscription order).
    fn push(&mut self, listed: Listed<T>) {
        match self.inline.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(listed),
            None => self.spill.push(listed),
        }
    }

    /// Removes subscription `id`, keeping the order; its data, or `None` if absent.
    fn remove(&mut self, id: SubscriptionId) -> Option<T> {
        let filled = self.inline_len();
        let found = self
            .inline
            .iter()
            .take(filled)
            .position(|s| s.as_ref().is_some_and(|l| l.id == id));
        let Some(p) = found else {
            let i = self.spill.binary_search_by_key(&id, |l| l.id).ok()?;
            return Some(self.spill.remove(i).data);
        };
        let removed = self.inline.get_mut(p).and_then(Option::take);
        // The emptied slot moves to the end of the filled ones; the first spilled
        // subscription (if any) fills the last slot.
        if let Some(filled) = self.inline.get_mut(p..filled) {
            filled.rotate_left(1);
        }
        if !self.spill.is_empty() {
            if let Some(last) = self.inline.last_mut() {
                *last = Some(self.spill.remove(0));
            }
        }
        removed.map(|l| l.data)
    }
}

/// A resource's id and subscriptions, in one allocation: the head's line, then the first
/// [`INLINE_SUBS`] subscriptions (two to a cache line when they are 32 bytes, as with the
/// client's sinks), then the spill list.
#[repr(C)]
struct ResourceBlock<T> {
    head: BlockHead,
    subs: BlockSubs<T>,
}

impl<T> ResourceBlock<T> {
    /// Brings the head's copy of the first subscriptions' types up to date after a change.
    fn refresh_head(&mut self) {
        let head = &mut self.head;
        head.cached = 0;
        for (slot, l) in head.tys.iter_mut().zip(self.subs.iter()) {
            *slot = u16::try_from(l.ty)
                .ok()
                .filter(|t| *t != TY_ELSEWHERE)
                .unwrap_or(TY_ELSEWHERE);
            head.cached += 1;
        }
        head.more = !self.subs.spill.is_empty();
    }

    /// Calls `take` with each subscription whose type restriction admits the event: none,
    /// or the one numbered `event_ty()` (looked up only if needed, at most once).
    fn for_each_match(
        &self,
        event_ty: &mut impl FnMut() -> u32,
        take: &mut impl FnMut(&Listed<T>),
    ) {
        let head = &self.head;
        let cached = usize::from(head.cached);
        // A slot is read only when its subscription admits the event (or its type is not in
        // the head): the others' lines are not touched.
        for (i, &t) in head.tys.iter().enumerate().take(cached) {
            let slot = || self.subs.inline.get(i).and_then(Option::as_ref);
            let admits = match t {
                0 => slot(),
                TY_ELSEWHERE => slot().filter(|l| l.ty == ANY_TYPE || l.ty == event_ty()),
                t if u32::from(t) == event_ty() => slot(),
                _ => None,
            };
            if let Some(l) = admits {
                take(l);
            }
        }
        if head.more {
            for l in self.subs.spill.iter() {
                if l.ty == ANY_TYPE || l.ty == event_ty() {
                    take(l);
                }
            }
        }
    }
}

/// A table entry: the full hash (resizing and mismatches never read the block) and the block.
struct ResourceEntry<T> {
    hash: u64,
    block: Box<ResourceBlock<T>>,
}

/// The subscriptions of one resource kind, by resource id. The table's entries are 16 bytes
/// (160 KiB of them for 10,000 resources, cache-resident); each points to one block holding
/// the id and the first [`INLINE_SUBS`] subscriptions, so routing an event reads the control
/// bytes, one entry and one block. Entries are removed with their last subscription.
struct ResourceIndex<T> {
    table: hashbrown::HashTable<ResourceEntry<T>>,
    hasher: foldhash::fast::RandomState,
}

impl<T> Default for ResourceIndex<T> {
    fn default() -> Self {
        ResourceIndex {
            table: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<T> ResourceIndex<T> {
    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn get(&self, key: &[u8]) -> Option<&ResourceBlock<T>> {
        let hash = self.hash(key);
        self.table
            .find(hash, |e| {
                e.hash == hash && e.block.head.key.as_bytes() == key
            })
            .map(|e| &*e.block)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut ResourceBlock<T>> {
        let hash = self.hash(key);
        self.table
            .find_mut(hash, |e| {
                e.hash == hash && e.block.head.key.as_bytes() == key
            })
            .map(|e| &mut *e.block)
    }

    /// Adds a subscription to the list of `key`, created if absent.
    fn push(&mut self, key: &[u8], listed: Listed<T>) {
        let hash = self.hash(key);
        let entry = self.table.entry(
            hash,
            |e| e.hash == hash && e.block.head.key.as_bytes() == key,
            |e| e.hash,
        );
        let block = &mut entry
            .or_insert_with(|| ResourceEntry {
                hash,
                block: Box::new(ResourceBlock {
                    head: BlockHead {
                        key: ResourceKey::new(key),
                        tys: [ANY_TYPE as u16; INLINE_SUBS],
                        cached: 0,
                        more: false,
                        seen: false,
                    },
                    subs: BlockSubs::new(),
                }),
            })
            .into_mut()
            .block;
        block.subs.push(listed);
        block.refresh_head();
    }

    /// Removes the whole list of `key` (one lookup), if any.
    fn take(&mut self, key: &[u8]) -> Option<Box<ResourceBlock<T>>> {
        let hash = self.hash(key);
        let entry = self
            .table
            .find_entry(hash, |e| {
                e.hash == hash && e.block.head.key.as_bytes() == key
            })
            .ok()?;
        Some(entry.remove().0.block)
    }

    /// Removes subscription `id` from the list of `key`, and the list once empty; returns
    /// the subscription's data.
    fn remove(&mut self, key: &[u8], id: SubscriptionId) -> Option<T> {
        let hash = self.hash(key);
        let mut entry = self
            .table
            .find_entry(hash, |e| {
                e.hash == hash && e.block.head.key.as_bytes() == key
            })
            .ok()?;
        let block = &mut entry.get_mut().block;
        let data = block.subs.remove(id);
        block.refresh_head();
        if entry.get().block.subs.is_empty() {
            entry.remove();
        }
        data
    }
}

/// The subscriptions, each with the application's data `T` (see
/// [`Session::with_subscription_data`](super::Session::with_subscription_data)).
pub(crate) struct Router<T> {
    next_id: u64,
    entries: FastMap<SubscriptionId, Entry>,
    all: SubList<T>,
    by_type: FastMap<Box<str>, SubList<T>>,
    by_resource: [ResourceIndex<T>; KINDS],
    per_kind: [usize; KINDS],
    types: TypeNames,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            next_id: 0,
            entries: FastMap::default(),
            all: SubList::new(),
            by_type: FastMap::default(),
            by_resource: std::array::from_fn(|_| ResourceIndex::default()),
            per_kind: [0; KINDS],
            types: TypeNames::default(),
        }
    }
}

impl<T> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("live", &self.entries.len())
            .field("all", &self.all.len())
            .field("by_type", &self.by_type.len())
            .field("per_kind", &self.per_kind)
            .finish()
    }
}

impl<T: Clone> Router<T> {
    pub(crate) fn subscribe(&mut self, filter: Filter, data: T) -> SubscriptionId {
        self.next_id += 1;
        let id = SubscriptionId(self.next_id);
        let listed = Listed {
            id,
            ty: filter
                .event_type
                .as_deref()
                .map_or(ANY_TYPE, |t| self.types.acquire(t)),
            once: filter.once,
            data,
        };
        match (&filter.target, &filter.event_type) {
            (Target::All, None) => self.all.push(listed),
            (Target::All, Some(t)) => self
                .by_type
                .entry(t.as_ref().into())
                .or_default()
                .push(listed),
            (Target::Resource(kind, rid), _) => {
                let k = kind_index(*kind);
                self.by_resource[k].push(rid.as_bytes(), listed);
                self.per_kind[k] += 1;
            }
        }
        self.entries.insert(id, Entry { filter });
        id
    }

    /// Removes a subscription; its data, or `None` if it was not live.
    pub(crate) fn unsubscribe(&mut self, id: SubscriptionId) -> Option<T> {
        let entry = self.entries.remove(&id)?;
        if let Some(t) = entry.filter.event_type.as_deref() {
            self.types.release(t);
        }
        match (&entry.filter.target, &entry.filter.event_type) {
            (Target::All, None) => remove_listed(&mut self.all, id),
            (Target::All, Some(t)) => {
                let v = self.by_type.get_mut(t.as_ref())?;
                let data = remove_listed(v, id);
                if v.is_empty() {
                    self.by_type.remove(t.as_ref());
                }
                data
            }
            (Target::Resource(kind, rid), _) => {
                let k = kind_index(*kind);
                self.per_kind[k] -= 1;
                self.by_resource[k].remove(rid.as_bytes(), id)
            }
        }
    }

    /// Removes every subscription, returning their data in creation order.
    pub(crate) fn unsubscribe_all(&mut self) -> Vec<(SubscriptionId, T)> {
        let mut ids: Vec<SubscriptionId> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| Some((id, self.unsubscribe(id)?)))
            .collect()
    }

    /// The id the next subscription will get: every live id is below it.
    pub(crate) fn next_id(&self) -> SubscriptionId {
        SubscriptionId(self.next_id + 1)
    }

    /// Removes the subscriptions made before `before` that follow a resource of one of
    /// `kinds`, in creation order.
    pub(crate) fn unsubscribe_kinds_before(
        &mut self,
        kinds: &[ResourceKind],
        before: SubscriptionId,
    ) -> Vec<(SubscriptionId, Filter, T)> {
        let mut ids: Vec<SubscriptionId> = self
            .entries
            .iter()
            .filter(|(id, e)| {
                **id < before
                    && e.filter
                        .resource_ref()
                        .is_some_and(|(kind, _)| kinds.contains(&kind))
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let filter = self.entries.get(&id)?.filter.clone();
                Some((id, filter, self.unsubscribe(id)?))
            })
            .collect()
    }

    pub(crate) fn live(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn live_for_kind(&self, kind: ResourceKind) -> usize {
        self.per_kind[kind_index(kind)]
    }

    pub(crate) fn is_live(&self, id: SubscriptionId) -> bool {
        self.entries.contains_key(&id)
    }

    /// The channel a live subscription follows, if it follows one.
    pub(crate) fn channel_of(&self, id: SubscriptionId) -> Option<&str> {
        match self.entries.get(&id)?.filter.resource_ref()? {
            (ResourceKind::Channel, c) => Some(c),
            _ => None,
        }
    }

    /// Whether some subscription follows this resource (not an endpoint).
    pub(crate) fn follows(&self, kind: ResourceKind, id: &str) -> bool {
        self.by_resource[kind_index(kind)]
            .get(id.as_bytes())
            .is_some_and(|b| !b.subs.is_empty())
    }

    /// Whether an event of this resource (not an endpoint) was routed since its first
    /// current subscription was made: the subscriptions following it then follow a resource
    /// that exists (or existed: its final event, which ends them, is routed or on its way).
    pub(crate) fn seen(&self, kind: ResourceKind, id: &str) -> bool {
        self.by_resource[kind_index(kind)]
            .get(id.as_bytes())
            .is_some_and(|b| b.head.seen && !b.subs.is_empty())
    }

    /// Removes every subscription following this resource (not an endpoint), in
    /// subscription order.
    pub(crate) fn unsubscribe_resource(
        &mut self,
        kind: ResourceKind,
        id: &str,
    ) -> Vec<(SubscriptionId, T)> {
        let mut out = Vec::new();
        self.end_resource(kind, id, |s, data| out.push((s, data)));
        out
    }

    /// Removes the subscriptions following this resource (not an endpoint) made before
    /// `before`, in subscription order.
    pub(crate) fn unsubscribe_resource_before(
        &mut self,
        kind: ResourceKind,
        id: &str,
        before: SubscriptionId,
    ) -> Vec<(SubscriptionId, T)> {
        let Some(block) = self.by_resource[kind_index(kind)].get(id.as_bytes()) else {
            return Vec::new();
        };
        let mut ids: Vec<SubscriptionId> = block
            .subs
            .iter()
            .map(|l| l.id)
            .filter(|s| *s < before)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|s| Some((s, self.unsubscribe(s)?)))
            .collect()
    }

    /// Removes every subscription following this resource (not an endpoint) and passes each
    /// to `f`, in subscription order. The resource's list leaves its index in one removal
    /// (a channel's `ChannelDestroyed` ends all its subscriptions at once).
    fn end_resource(&mut self, kind: ResourceKind, id: &str, mut f: impl FnMut(SubscriptionId, T)) {
        let k = kind_index(kind);
        if self.by_resource[k].is_empty() {
            return;
        }
        let Some(block) = self.by_resource[k].take(id.as_bytes()) else {
            return;
        };
        let subs = block.subs;
        for l in subs.inline.into_iter().flatten().chain(subs.spill) {
            let Some(entry) = self.entries.remove(&l.id) else {
                continue;
            };
            if let Some(t) = entry.filter.event_type.as_deref() {
                self.types.release(t);
            }
            self.per_kind[k] -= 1;
            f(l.id, l.data);
        }
    }

    /// The subscriptions `event` goes to, in creation order, each once; then removes the
    /// one-shot ones that matched and every subscription of a resource the event ends,
    /// reporting them through `ended`.
    pub(crate) fn route(
        &mut self,
        event: &Event,
        ended: &mut Vec<(SubscriptionId, EndReason, T)>,
    ) -> Matches<T> {
        let mut out = Matches::new();
        // One-shot subscriptions among them.
        let mut once: SmallVec<[SubscriptionId; 2]> = SmallVec::new();
        let mut take = |l: &Listed<T>| {
            if l.once {
                once.push(l.id);
            }
            out.push((l.id, l.data.clone()));
        };
        let type_name = event.type_name();
        self.all.iter().for_each(&mut take);
        if let Some(v) = self.by_type.get(type_name) {
            v.iter().for_each(&mut take);
        }
        // The event's type number, looked up once, and only if a resource list needs it.
        let mut event_ty = None;
        let types = &self.types;
        let mut event_ty =
            || *event_ty.get_or_insert_with(|| types.get(type_name).unwrap_or(ANY_TYPE));
        let resources = event.resources();
        let by_resource = &mut self.by_resource;
        for r in resources.iter() {
            if let Some(b) = resource_block_mut(by_resource, &r) {
                if !b.head.seen {
                    b.head.seen = true;
                }
                b.for_each_match(&mut event_ty, &mut take);
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by_key(|(id, _)| *id);
            out.dedup_by_key(|(id, _)| *id);
        }
        // One-shot subscriptions that received the event end now, in subscription order.
        if once.len() > 1 {
            once.sort_unstable();
            once.dedup();
        }
        for id in once {
            if let Some(data) = self.unsubscribe(id) {
                ended.push((id, EndReason::Once, data));
            }
        }
        // Every subscription following a resource that has just ended ends with it.
        if let Some(r) = event.ended_resource() {
            self.end_resource(r.kind, r.id, |id, data| {
                ended.push((id, EndReason::ResourceEnded, data))
            });
        }
        out
    }
}

/// The block of the resource an event names, if it is followed.
fn resource_block_mut<'a, T>(
    by_resource: &'a mut [ResourceIndex<T>; KINDS],
    r: &ResourceRef<'_>,
) -> Option<&'a mut ResourceBlock<T>> {
    let map = by_resource.get_mut(kind_index(r.kind))?;
    if map.is_empty() {
        return None;
    }
    if r.kind == ResourceKind::Endpoint {
        let mut key = String::with_capacity(r.technology.len() + 1 + r.id.len());
        key.push_str(r.technology);
        key.push('/');
        key.push_str(r.id);
        map.get_mut(key.as_bytes())
    } else {
        map.get_mut(r.id.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_keys_inline_and_allocated_round_trip() {
        for len in [0, 1, 15, 36, INLINE_KEY, INLINE_KEY + 1, 200] {
            let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let k = ResourceKey::new(&key);
            assert_eq!(k.as_bytes(), key.as_slice(), "length {len}");
            assert_eq!(
                matches!(k, ResourceKey::Inline { .. }),
                len <= INLINE_KEY,
                "length {len}"
            );
        }
    }

    #[test]
    fn resource_index_finds_adds_and_removes_by_id() {
        let mut index = ResourceIndex::default();
        let long = "x".repeat(INLINE_KEY + 10);
        let ids = ["1700000000.1", "1700000000.10", long.as_str(), ""];
        for (n, id) in ids.iter().enumerate() {
            for s in 0..2u64 {
                index.push(
                    id.as_bytes(),
                    Listed {
                        id: SubscriptionId(n as u64 * 10 + s),
                        ty: ANY_TYPE,
                        once: false,
                        data: (),
                    },
                );
            }
        }
        for (n, id) in ids.iter().enumerate() {
            let got: Vec<u64> = index
                .get(id.as_bytes())
                .map(|b| b.subs.iter().map(|l| l.id.0).collect())
                .unwrap_or_default();
            assert_eq!(got, vec![n as u64 * 10, n as u64 * 10 + 1], "{id:?}");
        }
        assert!(index.get(b"1700000000.100").is_none());
        // Removing the last subscription of an id removes its entry; others stay.
        index.remove(long.as_bytes(), SubscriptionId(20));
        assert_eq!(index.get(long.as_bytes()).map(|b| b.subs.len()), Some(1));
        index.remove(long.as_bytes(), SubscriptionId(21));
        assert!(index.get(long.as_bytes()).is_none());
        assert_eq!(index.table.len(), 3);
        for (n, id) in ids.iter().enumerate() {
            index.remove(id.as_bytes(), SubscriptionId(n as u64 * 10));
            index.remove(id.as_bytes(), SubscriptionId(n as u64 * 10 + 1));
        }
        assert!(index.is_empty());
    }

    #[test]
    fn a_block_head_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<BlockHead>(), 64);
        assert_eq!(std::mem::align_of::<BlockHead>(), 64);
    }

    /// With a fat pointer as data (the client's sinks), a slot is 32 bytes and the slots
    /// start right after the head: two subscriptions to a cache line, none straddling two.
    #[test]
    fn block_slots_follow_the_head_two_to_a_line() {
        type Data = std::sync::Arc<dyn Fn() + Send + Sync>;
        assert_eq!(std::mem::size_of::<Option<Listed<Data>>>(), 32);
        assert_eq!(std::mem::offset_of!(ResourceBlock<Data>, subs), 64);
        assert_eq!(std::mem::offset_of!(BlockSubs<Data>, inline), 0);
    }

    proptest::proptest! {
        /// The slots and the spill list behave as one ordered list: pushes of growing ids and
        /// removals (present or not) agree with a plain vector, element by element.
        #[test]
        fn block_subs_match_a_vector(ops in proptest::collection::vec((proptest::bool::ANY, 0u64..24), 0..200)) {
            let mut subs = BlockSubs::new();
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut next = 0u64;
            for (push, pick) in ops {
                if push {
                    next += 1;
                    subs.push(Listed { id: SubscriptionId(next), ty: 0, once: false, data: next * 10 });
                    model.push((next, next * 10));
                } else {
                    let id = pick % (next + 2);
                    let expected = model.iter().position(|(i, _)| *i == id).map(|p| model.remove(p).1);
                    proptest::prop_assert_eq!(subs.remove(SubscriptionId(id)), expected);
                }
                let got: Vec<(u64, u64)> = subs.iter().map(|l| (l.id.0, l.data)).collect();
                proptest::prop_assert_eq!(&got, &model);
                proptest::prop_assert_eq!(subs.len(), model.len());
                proptest::prop_assert_eq!(subs.is_empty(), model.is_empty());
                proptest::prop_assert_eq!(subs.inline_len(), model.len().min(INLINE_SUBS));
                for (i, (id, _)) in model.iter().enumerate() {
                    proptest::prop_assert_eq!(subs.get(i).map(|l| l.id.0), Some(*id));
                }
                proptest::prop_assert!(subs.get(model.len()).is_none());
            }
        }
    }

    /// More subscriptions on one channel than its block head caches, mixed type restrictions,
    /// and type numbers too large for the head's 16-bit tags: routing agrees with
    /// [`Filter::matches`], in subscription order, before and after removals.
    #[test]
    fn routing_through_block_heads_agrees_with_filters() {
        let mut r: Router<usize> = Router::default();
        // The next type numbers do not fit in 16 bits.
        r.types.next = u32::from(u16::MAX) - 2;
        let types = [
            "ChannelStateChange",
            "ChannelVarset",
            "ChannelDestroyed",
            "ChannelDtmfReceived",
        ];
        let mut filters = Vec::new();
        for i in 0..(INLINE_SUBS * 2 + 1) {
            let f = match i % 5 {
                0 => Filter::channel("c1"),
                n => Filter::channel("c1").with_type(types[n - 1]),
            };
            let id = r.subscribe(f.clone(), i);
            filters.push((id, f));
        }
        let expect = |filters: &[(SubscriptionId, Filter)], e: &Event| -> Vec<SubscriptionId> {
            filters
                .iter()
                .filter(|(_, f)| f.matches(e))
                .map(|(id, _)| *id)
                .collect()
        };
        for round in 0..3 {
            for t in ["ChannelStateChange", "ChannelVarset", "ChannelDtmfReceived"] {
                let e = channel_event(t, "c1");
                let mut ended = Vec::new();
                let got: Vec<SubscriptionId> =
                    r.route(&e, &mut ended).iter().map(|(id, _)| *id).collect();
                assert_eq!(got, expect(&filters, &e), "{t}, round {round}");
                assert!(!got.is_empty(), "{t}, round {round}");
                assert!(ended.is_empty());
                let other = channel_event(t, "c2");
                assert!(r.route(&other, &mut ended).is_empty());
            }
            // Remove the first and a spilled subscription; the heads follow.
            for at in [0, INLINE_SUBS] {
                if at < filters.len() {
                    let (id, _) = filters.remove(at);
                    assert!(r.unsubscribe(id).is_some());
                }
            }
        }
        let mut ended = Vec::new();
        let e = channel_event("ChannelDestroyed", "c1");
        let got: Vec<SubscriptionId> = r.route(&e, &mut ended).iter().map(|(id, _)| *id).collect();
        assert_eq!(got, expect(&filters, &e));
        assert_eq!(ended.len(), filters.len(), "every subscription of c1 ended");
        assert_eq!(r.live(), 0);
    }

    fn channel_event(type_name: &str, channel: &str) -> Event {
        let frame = format!(
            r#"{{"type":"{type_name}","timestamp":"2026-11-26T11:14:38.299+0000","application":"a",
            "channel":{{"id":"{channel}","name":"PJSIP/x","state":"Up","protocol_id":"",
            "caller":{{"name":"","number":""}},"connected":{{"name":"","number":""}},
            "accountcode":"","dialplan":{{"context":"default","exten":"s","priority":1,
            "app_name":"Stasis","app_data":"a"}},"creationtime":"2026-11-26T11:14:38.299+0000",
            "language":"en"}},"cause":16,"cause_txt":"Normal Clearing","args":[]}}"#
        );
        Event::decode(frame.as_bytes()).expect("test frame decodes")
    }

    #[test]
    fn each_delivery_and_each_end_carries_the_subscriptions_data() {
        let mut r: Router<&'static str> = Router::default();
        let all = r.subscribe(Filter::all(), "all");
        let typed = r.subscribe(Filter::event_type("ChannelStateChange"), "typed");
        let chan = r.subscribe(Filter::channel("c1"), "chan");
        let once = r.subscribe(
            Filter::channel("c1").with_type("ChannelStateChange").once(),
            "once",
        );
        let other = r.subscribe(Filter::channel("c2"), "other");
        let mut ended = Vec::new();
        let got = r.route(&channel_event("ChannelStateChange", "c1"), &mut ended);
        assert_eq!(
            got.to_vec(),
            vec![
                (all, "all"),
                (typed, "typed"),
                (chan, "chan"),
                (once, "once")
            ]
        );
        assert_eq!(ended, vec![(once, EndReason::Once, "once")]);
        ended.clear();
        let got = r.route(&channel_event("ChannelDestroyed", "c1"), &mut ended);
        assert_eq!(got.to_vec(), vec![(all, "all"), (chan, "chan")]);
        assert_eq!(ended, vec![(chan, EndReason::ResourceEnded, "chan")]);
        assert_eq!(r.unsubscribe(typed), Some("typed"));
        assert_eq!(r.unsubscribe(typed), None);
        assert_eq!(r.unsubscribe_all(), vec![(all, "all"), (other, "other")]);
        assert_eq!(r.live(), 0);
        assert!(
            r.types.ids.is_empty(),
            "type names released with their filters"
        );
    }
}
