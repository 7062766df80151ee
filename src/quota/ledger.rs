//! The pods quotas count, and their running totals per namespace and per application.
//!
//! Two kinds of entries, each keyed by namespace and pod name in a map of its own: live Spark
//! pods the watch reported, and reservations for pods this replica admitted that the watch has
//! not shown yet. The two maps never share an entry: a reservation never removes a live pod (a
//! CREATE may reuse a live pod's name, and the apiserver refuses it with AlreadyExists only after
//! admission, so the live pod keeps counting), and the watch showing a pod releases the
//! reservation under its key. A reservation counts from admission until the watch shows its
//! pod or until it expires, at the time set when it was first made: repeating the admission
//! (a reinvoked webhook, or a client replaying a review) never extends it.
//!
//! Totals are kept for live pods and for reservations separately, so a decision can count
//! reservations where it may trust them (see [`Usage`]) and still reads only a handful of
//! numbers, never scanning pods.
//!
//! Live pods are held compactly, since a cluster may run 100,000 of them (issue 24): each
//! namespace holds its own pods by name, so no pod stores its namespace; an application's id
//! is one allocation shared by the namespace's map of applications and each of its pods, and
//! its name is kept once, with the application; a pod's name is one allocation shared by the
//! namespace's map of pods and its application's member set; a charge is held as two `u64`
//! (24 bytes with its tag, where [`Charge`] takes 32 and 16-byte alignment) when its memory is
//! a whole number of bytes (every pod a real cluster runs), exactly as given otherwise, so the
//! totals are the same either way. A live pod is 56 bytes beside its name (BENCHMARKS.md,
//! "Scale: 100,000 tracked pods", has the whole count). Reservations keep their [`Entry`] as it
//! came: there are at most [`MAX_RESERVATIONS`] of them.
//!
//! Pure data: no locks, no clock of its own (callers pass `now`), no I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;

use crate::policy::Role;

use super::charge::Charge;

/// A pod's identity for counting: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// `metadata.name`; for a pod created with `generateName` only, a name unique to the
    /// request (see [`crate::quota::Claim`]).
    pub name: String,
}

/// What counts of one pod: its application, role and charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `spark-app-selector`; a pod without it counts for its namespace only.
    pub app: Option<String>,
    /// The application's name, for messages.
    pub app_name: Option<String>,
    /// Driver or executor.
    pub role: Role,
    /// CPU and memory.
    pub charge: Charge,
}

/// A live pod as the watch reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedPod {
    /// What counts.
    pub entry: Entry,
    /// `metadata.resourceVersion` as a number, when it is one; orders the watch's view against
    /// a consistent LIST.
    pub resource_version: Option<u64>,
}

/// Pods, executors and their charge: one side (live or reserved) of an application's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Pods (drivers and executors).
    pub pods: u32,
    /// Executor pods.
    pub executors: u32,
    /// CPU and memory of those pods.
    pub charge: Charge,
}

impl Count {
    fn add(&mut self, role: Role, charge: Charge) {
        self.pods += 1;
        if role == Role::Executor {
            self.executors += 1;
        }
        self.charge = self.charge.plus(charge);
    }

    fn subtract(&mut self, role: Role, charge: Charge) {
        self.pods = self.pods.saturating_sub(1);
        if role == Role::Executor {
            self.executors = self.executors.saturating_sub(1);
        }
        self.charge = self.charge.minus(charge);
    }

    fn plus(self, other: Count) -> Count {
        Count {
            pods: self.pods + other.pods,
            executors: self.executors + other.executors,
            charge: self.charge.plus(other.charge),
        }
    }
}

/// Nano-units in one unit (one core, one byte).
const NANOS: i128 = 1_000_000_000;

/// A charge as a live pod keeps it. [`Charge`] is two `i128` nano-units (32 bytes, 16-aligned)
/// so that any quantity the apiserver accepts adds up exactly; a pod's own charge is almost
/// always far smaller (CPU under 18 billion cores in nano-cores, memory a whole number of
/// bytes), and that is held in two `u64`. Anything else (a fraction of a byte, an unreadable
/// quantity's [`super::charge::UNREADABLE`]) is held as it came, boxed, so the totals are the
/// same either way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PackedCharge {
    /// CPU in nano-cores, memory in bytes.
    Small { cpu: u64, memory_bytes: u64 },
    /// Anything that does not fit the above, exactly.
    Exact(Box<Charge>),
}

impl PackedCharge {
    fn new(charge: Charge) -> Self {
        let cpu = u64::try_from(charge.cpu).ok();
        let memory_bytes = (charge.memory % NANOS == 0)
            .then(|| u64::try_from(charge.memory / NANOS).ok())
            .flatten();
        match (cpu, memory_bytes) {
            (Some(cpu), Some(memory_bytes)) => Self::Small { cpu, memory_bytes },
            _ => Self::Exact(Box::new(charge)),
        }
    }

    fn charge(&self) -> Charge {
        match self {
            Self::Small { cpu, memory_bytes } => Charge {
                cpu: i128::from(*cpu),
                memory: i128::from(*memory_bytes) * NANOS,
            },
            Self::Exact(charge) => **charge,
        }
    }
}

/// A live pod as the ledger keeps it, under its name in its namespace's map.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LivePod {
    /// The application's id, shared with the namespace's key for the application.
    app: Option<Arc<str>>,
    charge: PackedCharge,
    // Resource versions are etcd revisions, never 0; one that reads 0 is kept as `None`,
    // which the merge with a LIST treats as "cannot be ordered": counted, the safe side.
    resource_version: Option<NonZeroU64>,
    /// The listing that last showed it (see [`Ledger::begin_listing`]); it fits in the
    /// padding beside `role`, so it costs no byte.
    listed_in: u32,
    role: Role,
}

/// Which of the two maps an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Live,
    Reserved,
}

/// One application's totals in its namespace, live pods and reservations apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppUsage {
    /// The application's name, if any of its pods carried one.
    pub name: Option<String>,
    /// Pods the watch shows.
    pub live: Count,
    /// Pods this replica admitted that the watch has not shown yet.
    pub reserved: Count,
    /// Names of its live pods: the same allocations as the namespace's map of pods.
    live_members: HashSet<Arc<str>>,
    /// Names of its reservations.
    reserved_members: HashSet<String>,
}

impl AppUsage {
    /// Live pods and reservations together.
    pub fn all(&self) -> Count {
        self.live.plus(self.reserved)
    }

    fn count(&mut self, side: Side) -> &mut Count {
        match side {
            Side::Live => &mut self.live,
            Side::Reserved => &mut self.reserved,
        }
    }
}

/// One namespace's totals over its Spark pods and reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceUsage {
    /// Live pods (with or without an application) and their charge.
    pub live: Count,
    /// Reservations and their charge.
    pub reserved: Count,
    /// Applications with at least one live pod or reservation, by id (one allocation per
    /// application, which its live pods share).
    pub apps: HashMap<Arc<str>, AppUsage>,
    /// How many of `apps` have a live pod.
    live_apps: u32,
    /// Its live pods, by name.
    pods: HashMap<Arc<str>, LivePod>,
}

impl NamespaceUsage {
    /// Live pods and reservations together.
    pub fn all(&self) -> Count {
        self.live.plus(self.reserved)
    }

    /// Applications with at least one live pod.
    pub fn live_apps(&self) -> u32 {
        self.live_apps
    }

    /// Live pods held.
    pub fn tracked_pods(&self) -> usize {
        self.pods.len()
    }

    /// The application `app`, made if it is new, with the shared allocation of its id (found
    /// without allocating when the application is already held).
    fn app_mut(&mut self, app: &str) -> (Arc<str>, &mut AppUsage) {
        let id = match self.apps.get_key_value(app) {
            Some((id, _)) => id.clone(),
            None => Arc::from(app),
        };
        (id.clone(), self.apps.entry(id).or_default())
    }

    /// Takes `side`'s count of one pod of `app` (if any) off the application and the
    /// namespace, and forgets the application once it has nothing left.
    fn subtract(&mut self, side: Side, app: Option<&str>, role: Role, charge: Charge) {
        match side {
            Side::Live => self.live.subtract(role, charge),
            Side::Reserved => self.reserved.subtract(role, charge),
        }
        let Some(app) = app else {
            return;
        };
        let Some(usage) = self.apps.get_mut(app) else {
            return;
        };
        let had_live = usage.live.pods > 0;
        usage.count(side).subtract(role, charge);
        if side == Side::Live && had_live && usage.live.pods == 0 {
            self.live_apps = self.live_apps.saturating_sub(1);
        }
        if usage.all().pods == 0 {
            self.apps.remove(app);
        }
    }
}

/// A pod this replica admitted and the watch has not shown yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// What counts.
    pub entry: Entry,
    /// When it stops counting if the watch never shows the pod; set once, when it is made.
    pub expires: Instant,
}

/// The pod a decision is about, as the ledger may already hold it: left out of the totals so
/// that it is never counted against itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own<'a> {
    /// A pod being created. An earlier reservation under its key is the same pod admitted
    /// before (a reinvoked webhook) and is left out. A live pod of that name is another pod:
    /// the apiserver will refuse this one with AlreadyExists, and the live one keeps counting.
    Created(&'a PodKey),
    /// A live pod whose resources change: its live entry (and any reservation of its name) is
    /// left out, and the decision adds what it will charge after the change.
    Resized(&'a PodKey),
}

impl Own<'_> {
    /// The key of the pod.
    pub fn key(&self) -> &PodKey {
        match self {
            Own::Created(key) | Own::Resized(key) => key,
        }
    }
}

/// Totals a decision reads, with the pod's own entry left out (see [`Own`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU and memory of the namespace's Spark pods.
    pub namespace: Charge,
    /// Applications in the namespace.
    pub applications: u32,
    /// The pod's application, when it has one.
    pub app: Option<AppTotals>,
}

/// One application's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppTotals {
    /// Executor pods.
    pub executors: u32,
    /// CPU and memory of its pods.
    pub charge: Charge,
    /// Whether it counts as one of the namespace's applications without the pod being decided
    /// (if not, that pod starts a new application in the namespace).
    pub present: bool,
}

/// The most reservations a ledger holds. Each is a pod admitted in the last
/// `--quota-reservation-ttl` that the watch has not shown yet: a few hundred at most on a busy
/// cluster whose watch works, since the watch shows a pod milliseconds after it is stored. Any
/// client can make reservations, though, each holding up to about 2 KiB (names the apiserver
/// could store, see [`crate::quota::Claim::storable`]), so past this many the oldest gives way:
/// what a flood of forged reviews can hold stays under about 20 MiB.
pub const MAX_RESERVATIONS: usize = 10_000;

/// Live pods, reservations and totals.
#[derive(Debug)]
pub struct Ledger {
    // Live pods are held inside their namespace's totals (see the module documentation).
    namespaces: HashMap<Arc<str>, NamespaceUsage>,
    reservations: HashMap<PodKey, Reservation>,
    max_reservations: usize,
    // When reservations expire, earliest first, one entry per reservation made. A reservation's
    // time never moves, so an entry that comes up and finds no reservation under its key, or
    // one made later (with an entry of its own), is simply dropped.
    expiry: BinaryHeap<Reverse<(Instant, PodKey)>>,
    evicted: u64,
    // The listing in progress or last complete: every live pod the watch shows is marked with
    // it, so the pods a listing did not show again are known at its end without a second copy.
    listing: u32,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            namespaces: HashMap::new(),
            reservations: HashMap::new(),
            max_reservations: MAX_RESERVATIONS,
            expiry: BinaryHeap::new(),
            evicted: 0,
            listing: 0,
        }
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live pods held.
    pub fn tracked_pods(&self) -> usize {
        self.namespaces
            .values()
            .map(NamespaceUsage::tracked_pods)
            .sum()
    }

    /// Reservations held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Reservations released before their time to keep under [`MAX_RESERVATIONS`], since the
    /// ledger was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The totals of every namespace with Spark pods or reservations.
    pub fn namespaces(&self) -> &HashMap<Arc<str>, NamespaceUsage> {
        &self.namespaces
    }

    /// The watch shows `key` live: it counts from now on, in place of its earlier state, and
    /// the reservation under its key (the admission of this pod) is released.
    pub fn apply(&mut self, key: PodKey, pod: TrackedPod) {
        self.release(&key);
        self.remove(&key);
        let PodKey { namespace, name } = key;
        let TrackedPod {
            entry,
            resource_version,
        } = pod;
        let listing = self.listing;
        let ns = self.namespace_mut(&namespace);
        let name: Arc<str> = Arc::from(name);
        ns.live.add(entry.role, entry.charge);
        let app = match &entry.app {
            None => None,
            Some(app) => {
                let (id, usage) = ns.app_mut(app);
                let starts = usage.live.pods == 0;
                usage.live.add(entry.role, entry.charge);
                usage.live_members.insert(name.clone());
                if entry.app_name.is_some() {
                    usage.name = entry.app_name;
                }
                if starts {
                    ns.live_apps += 1;
                }
                Some(id)
            }
        };
        ns.pods.insert(
            name,
            LivePod {
                app,
                charge: PackedCharge::new(entry.charge),
                resource_version: resource_version.and_then(NonZeroU64::new),
                listed_in: listing,
                role: entry.role,
            },
        );
    }

    /// The watch shows `key` gone, terminal or deleting: it no longer counts. A reservation
    /// under the same key is another pod (created after this one was deleted) and stays.
    pub fn remove(&mut self, key: &PodKey) {
        let Some(ns) = self.namespaces.get_mut(key.namespace.as_str()) else {
            return;
        };
        let Some((name, pod)) = ns.pods.remove_entry(key.name.as_str()) else {
            return;
        };
        if let Some(usage) = pod.app.as_deref().and_then(|app| ns.apps.get_mut(app)) {
            usage.live_members.remove(&name);
        }
        ns.subtract(
            Side::Live,
            pod.app.as_deref(),
            pod.role,
            pod.charge.charge(),
        );
        if ns.all().pods == 0 {
            self.namespaces.remove(key.namespace.as_str());
        }
    }

    /// Replaces every live pod at once with `pods` (a listing of the whole cluster):
    /// [`Ledger::begin_listing`], each pod applied, [`Ledger::end_listing`].
    pub fn replace_all(&mut self, pods: impl IntoIterator<Item = (PodKey, TrackedPod)>) {
        self.begin_listing();
        for (key, pod) in pods {
            self.apply(key, pod);
        }
        self.end_listing();
    }

    /// The watch starts listing every Spark pod again (after a restart, or when it fell too
    /// far behind): each pod it shows from now on is marked as listed, and
    /// [`Ledger::end_listing`] drops the live pods it did not show. Meanwhile the ledger holds
    /// every pod of the earlier listing not yet shown again, as it last knew it, and the
    /// listed ones as they are now: each pod counts once, in its older or its newer state, and
    /// a pod deleted while the watch was down counts until the listing ends, as it did before
    /// the listing began. The listing is never held as a second ledger beside this one, which
    /// at 100,000 pods would double the memory a relist peaks at (BENCHMARKS.md, "Scale").
    pub fn begin_listing(&mut self) {
        self.listing = self.listing.wrapping_add(1);
    }

    /// The listing [`Ledger::begin_listing`] started is complete: the live pods it did not
    /// show are gone and stop counting (their reservations were released when they were shown
    /// live; reservations for pods not yet shown stay). Returns how many were dropped.
    pub fn end_listing(&mut self) -> usize {
        let listing = self.listing;
        let mut gone = Vec::new();
        for (namespace, ns) in &self.namespaces {
            for (name, pod) in &ns.pods {
                if pod.listed_in != listing {
                    gone.push((namespace.clone(), name.clone()));
                }
            }
        }
        for (namespace, name) in &gone {
            self.remove(&PodKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        gone.len()
    }

    /// Forgets everything (the policy no longer has quotas).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Reserves `key` until the watch shows it or `expires`. The same key reserved again (a
    /// reinvoked webhook) takes the new entry but keeps the time it was first given, so
    /// repeating an admission never makes it count longer. A live pod under the same key is
    /// left as it is: it is another pod.
    pub fn reserve(&mut self, key: &PodKey, entry: &Entry, expires: Instant) {
        if let Some(reservation) = self.reservations.get(key) {
            if reservation.entry == *entry {
                return;
            }
            let (old, expires) = (reservation.entry.clone(), reservation.expires);
            self.subtract_reserved(key, &old);
            self.add_reserved(key, entry);
            self.reservations.insert(
                key.clone(),
                Reservation {
                    entry: entry.clone(),
                    expires,
                },
            );
            return;
        }
        while self.reservations.len() >= self.max_reservations.max(1) && self.evict_oldest() {}
        self.add_reserved(key, entry);
        self.expiry.push(Reverse((expires, key.clone())));
        self.reservations.insert(
            key.clone(),
            Reservation {
                entry: entry.clone(),
                expires,
            },
        );
    }

    /// Drops the reservations that expired by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(Reverse((when, _))) = self.expiry.peek() {
            if *when > now {
                break;
            }
            let Some(Reverse((_, key))) = self.expiry.pop() else {
                break;
            };
            // A reservation made after this entry was queued has an entry of its own.
            if self
                .reservations
                .get(&key)
                .is_some_and(|r| r.expires <= now)
            {
                self.release(&key);
                expired += 1;
            }
        }
        // A burst of reservations grows the queue; give the memory back once it has drained.
        if self.expiry.capacity() > 64 && self.expiry.len() < self.expiry.capacity() / 4 {
            self.expiry.shrink_to(self.expiry.len() * 2);
        }
        expired
    }

    /// The totals for a pod of application `app` in `own`'s namespace, leaving out `own`'s
    /// own entries. Reservations always count against their own application; against the
    /// namespace (its CPU, memory and application count) only with `reservations_count_in_namespace`,
    /// which is for callers verified to be the apiserver: any client can make a reservation,
    /// but only the apiserver's admissions end in stored pods.
    pub fn usage(
        &self,
        app: Option<&str>,
        own: Own<'_>,
        reservations_count_in_namespace: bool,
    ) -> Usage {
        let key = own.key();
        let own_reserved = self.reservations.get(key).map(|r| &r.entry);
        let Some(ns) = self.namespaces.get(key.namespace.as_str()) else {
            return Usage {
                app: app.map(|_| AppTotals::default()),
                ..Usage::default()
            };
        };
        let own_live = match own {
            Own::Created(_) => None,
            Own::Resized(key) => ns.pods.get(key.name.as_str()),
        };
        let with_reserved = reservations_count_in_namespace;
        let mut namespace = ns.live.charge;
        let mut applications = ns.live_apps;
        if with_reserved {
            namespace = namespace.plus(ns.reserved.charge);
            applications = u32::try_from(ns.apps.len()).unwrap_or(u32::MAX);
        }
        if let Some(own) = own_live {
            namespace = namespace.minus(own.charge.charge());
        }
        if let Some(own) = own_reserved.filter(|_| with_reserved) {
            namespace = namespace.minus(own.charge);
        }
        let mut usage = Usage {
            namespace,
            applications,
            app: None,
        };
        let Some(app) = app else {
            return usage;
        };
        let Some(found) = ns.apps.get(app) else {
            usage.app = Some(AppTotals::default());
            return usage;
        };
        let mut live = found.live;
        let mut reserved = found.reserved;
        if let Some(own) = own_live.filter(|own| own.app.as_deref() == Some(app)) {
            live.subtract(own.role, own.charge.charge());
        }
        if let Some(own) = own_reserved.filter(|own| own.app.as_deref() == Some(app)) {
            reserved.subtract(own.role, own.charge);
        }
        // As the namespace counts it: live pods, and reservations where they count there.
        let counted = |live: &Count, reserved: &Count| {
            live.pods + if with_reserved { reserved.pods } else { 0 }
        };
        let before = counted(&found.live, &found.reserved);
        let after = counted(&live, &reserved);
        if before > 0 && after == 0 {
            usage.applications = usage.applications.saturating_sub(1);
        }
        let all = live.plus(reserved);
        usage.app = Some(AppTotals {
            executors: all.executors,
            charge: all.charge,
            present: after > 0,
        });
        usage
    }

    /// Whether the ledger holds a pod of that key, live or reserved.
    pub fn holds(&self, key: &PodKey) -> bool {
        self.reservations.contains_key(key)
            || self
                .namespaces
                .get(key.namespace.as_str())
                .is_some_and(|ns| ns.pods.contains_key(key.name.as_str()))
    }

    /// Whether application `app` has a live pod or a reservation in `namespace`.
    pub fn has_application(&self, namespace: &str, app: &str) -> bool {
        self.namespaces
            .get(namespace)
            .is_some_and(|ns| ns.apps.contains_key(app))
    }

    /// The pods and reservations of one application, by name: what a consistent LIST is
    /// merged with. A name may appear twice, as a live pod and as a reservation. A live pod's
    /// entry is made from what the ledger keeps of it (its application's name is the
    /// application's), only for this: a confirming LIST, near a limit.
    pub fn app_members(&self, namespace: &str, app: &str) -> Vec<Member<'_>> {
        let Some(found) = self
            .namespaces
            .get(namespace)
            .and_then(|ns| Some((ns, ns.apps.get(app)?)))
        else {
            return Vec::new();
        };
        let (ns, found) = found;
        let live = found.live_members.iter().filter_map(|name| {
            let pod = ns.pods.get(name)?;
            let entry = Entry {
                app: Some(app.to_owned()),
                app_name: found.name.clone(),
                role: pod.role,
                charge: pod.charge.charge(),
            };
            Some(Member::Tracked(
                name,
                entry,
                pod.resource_version.map(NonZeroU64::get),
            ))
        });
        let reserved = found.reserved_members.iter().filter_map(|name| {
            let key = PodKey {
                namespace: namespace.to_owned(),
                name: name.clone(),
            };
            self.reservations
                .get(&key)
                .map(|r| Member::Reserved(name, &r.entry))
        });
        live.chain(reserved).collect()
    }

    /// Releases the reservation that expires first (every one has the same time to live, so
    /// the oldest); false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some(Reverse((when, key))) = self.expiry.pop() {
            // An entry whose reservation was released, or made again later, is stale.
            if self
                .reservations
                .get(&key)
                .is_some_and(|r| r.expires == when)
            {
                self.release(&key);
                self.evicted += 1;
                return true;
            }
        }
        false
    }

    /// Releases the reservation under `key`, if any.
    fn release(&mut self, key: &PodKey) {
        if let Some(reservation) = self.reservations.remove(key) {
            self.subtract_reserved(key, &reservation.entry);
        }
    }

    /// The namespace's totals, made if it is new. A namespace already held is found without
    /// allocating: this runs for every pod the watch shows.
    fn namespace_mut(&mut self, namespace: &str) -> &mut NamespaceUsage {
        let id = match self.namespaces.get_key_value(namespace) {
            Some((id, _)) => id.clone(),
            None => Arc::from(namespace),
        };
        self.namespaces.entry(id).or_default()
    }

    fn add_reserved(&mut self, key: &PodKey, entry: &Entry) {
        let ns = self.namespace_mut(&key.namespace);
        ns.reserved.add(entry.role, entry.charge);
        let Some(app) = &entry.app else {
            return;
        };
        let (_, usage) = ns.app_mut(app);
        if entry.app_name.is_some() {
            usage.name.clone_from(&entry.app_name);
        }
        usage.reserved.add(entry.role, entry.charge);
        usage.reserved_members.insert(key.name.clone());
    }

    fn subtract_reserved(&mut self, key: &PodKey, entry: &Entry) {
        let Some(ns) = self.namespaces.get_mut(key.namespace.as_str()) else {
            return;
        };
        if let Some(usage) = entry.app.as_deref().and_then(|app| ns.apps.get_mut(app)) {
            usage.reserved_members.remove(&key.name);
        }
        ns.subtract(
            Side::Reserved,
            entry.app.as_deref(),
            entry.role,
            entry.charge,
        );
        if ns.all().pods == 0 {
            self.namespaces.remove(key.namespace.as_str());
        }
    }
}

/// One pod of an application as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member<'a> {
    /// Shown by the watch, at this resource version: its entry as the ledger keeps it.
    Tracked(&'a str, Entry, Option<u64>),
    /// Admitted by this replica, not yet shown by the watch.
    Reserved(&'a str, &'a Entry),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "ns".to_owned(),
            name: name.to_owned(),
        }
    }

    fn entry(app: Option<&str>, role: Role, cpu: i128) -> Entry {
        Entry {
            app: app.map(str::to_owned),
            app_name: app.map(|a| format!("{a}-name")),
            role,
            charge: Charge { cpu, memory: 10 },
        }
    }

    fn tracked(app: Option<&str>, role: Role, cpu: i128) -> TrackedPod {
        TrackedPod {
            entry: entry(app, role, cpu),
            resource_version: Some(1),
        }
    }

    /// Usage for a new pod `name` of application `app` in `ns`, callers verified.
    fn created(ledger: &Ledger, app: Option<&str>, name: &str) -> Usage {
        ledger.usage(app, Own::Created(&key(name)), true)
    }

    fn executors(usage: Usage) -> Option<u32> {
        usage.app.map(|a| a.executors)
    }

    #[test]
    fn totals_follow_every_apply_and_remove() {
        let mut ledger = Ledger::new();
        ledger.apply(key("d"), tracked(Some("a"), Role::Driver, 1));
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        ledger.apply(key("e2"), tracked(Some("a"), Role::Executor, 2));
        ledger.apply(key("x"), tracked(None, Role::Executor, 4));
        let usage = created(&ledger, Some("a"), "new");
        assert_eq!(usage.namespace, Charge { cpu: 9, memory: 40 });
        assert_eq!(usage.applications, 1, "a pod without an app is not an app");
        assert_eq!(
            usage.app,
            Some(AppTotals {
                executors: 2,
                charge: Charge { cpu: 5, memory: 30 },
                present: true
            })
        );
        // An update of the same pod replaces it rather than adding to it.
        ledger.apply(key("e2"), tracked(Some("a"), Role::Executor, 3));
        ledger.remove(&key("e1"));
        let usage = created(&ledger, Some("a"), "new");
        assert_eq!(usage.app.map(|a| (a.executors, a.charge.cpu)), Some((1, 4)));
        ledger.remove(&key("d"));
        ledger.remove(&key("e2"));
        ledger.remove(&key("x"));
        assert!(ledger.namespaces().is_empty(), "nothing left behind");
    }

    #[test]
    fn a_reservation_counts_until_the_watch_shows_the_pod_then_only_the_pod_counts() {
        let mut ledger = Ledger::new();
        let now = Instant::now();
        ledger.reserve(
            &key("e1"),
            &entry(Some("a"), Role::Executor, 2),
            now + Duration::from_secs(30),
        );
        assert_eq!(executors(created(&ledger, Some("a"), "e2")), Some(1));
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        assert_eq!(ledger.reservations(), 0);
        assert_eq!(
            executors(created(&ledger, Some("a"), "e2")),
            Some(1),
            "counted once"
        );
        // The queued expiry of the released reservation does nothing.
        assert_eq!(ledger.expire(now + Duration::from_secs(60)), 0);
        assert_eq!(executors(created(&ledger, Some("a"), "e2")), Some(1));
    }

    #[test]
    fn a_reservation_the_watch_never_shows_expires() {
        let mut ledger = Ledger::new();
        let now = Instant::now();
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), now);
        ledger.reserve(
            &key("e2"),
            &entry(Some("a"), Role::Executor, 2),
            now + Duration::from_secs(5),
        );
        assert_eq!(ledger.expire(now), 1);
        assert_eq!(executors(created(&ledger, Some("a"), "x")), Some(1));
        assert_eq!(ledger.expire(now + Duration::from_secs(5)), 1);
        assert!(ledger.namespaces().is_empty());
    }

    #[test]
    fn repeating_a_reservation_never_makes_it_count_longer() {
        let mut ledger = Ledger::new();
        let now = Instant::now();
        let executor = entry(Some("a"), Role::Executor, 2);
        for second in 1..=1000 {
            ledger.reserve(&key("e1"), &executor, now + Duration::from_secs(second));
        }
        assert_eq!(ledger.expiry.len(), 1, "one queued expiry per reservation");
        // A repeat with another entry (a second webhook changed the pod) takes the entry,
        // not a new time.
        ledger.reserve(
            &key("e1"),
            &entry(Some("a"), Role::Executor, 5),
            now + Duration::from_secs(2000),
        );
        let usage = created(&ledger, Some("a"), "other");
        assert_eq!(usage.app.map(|a| a.charge.cpu), Some(5));
        assert_eq!(ledger.expire(now + Duration::from_secs(1)), 1, "first time");
        assert!(ledger.namespaces().is_empty());
        assert!(ledger.expiry.is_empty());
        // Made again after it expired, it is a new reservation with a new time.
        ledger.reserve(&key("e1"), &executor, now + Duration::from_secs(40));
        assert_eq!(ledger.expire(now + Duration::from_secs(39)), 0);
        assert_eq!(ledger.expire(now + Duration::from_secs(40)), 1);
    }

    #[test]
    fn past_the_most_reservations_the_oldest_gives_way() {
        let mut ledger = Ledger {
            max_reservations: 3,
            ..Ledger::new()
        };
        let now = Instant::now();
        for i in 0..5_u64 {
            ledger.reserve(
                &key(&format!("e{i}")),
                &entry(Some("a"), Role::Executor, 1),
                now + Duration::from_secs(30 + i),
            );
        }
        assert_eq!(ledger.reservations(), 3);
        assert_eq!(ledger.evicted(), 2);
        let names: Vec<String> = ledger.reservations.keys().map(|k| k.name.clone()).collect();
        for kept in ["e2", "e3", "e4"] {
            assert!(names.contains(&kept.to_owned()), "{names:?}");
        }
        assert_eq!(executors(created(&ledger, Some("a"), "x")), Some(3));
    }

    #[test]
    fn a_pod_is_never_counted_against_itself() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        // The same pod again (a reinvoked webhook): its own reservation is left out...
        let usage = created(&ledger, Some("a"), "e1");
        assert_eq!(
            usage.app,
            Some(AppTotals::default()),
            "nothing else in the app"
        );
        assert_eq!(usage.applications, 0, "the pod would start the app anew");
        // ...and reserving it again replaces the reservation.
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        assert_eq!(ledger.reservations(), 1);
        assert_eq!(executors(created(&ledger, Some("a"), "e2")), Some(1));
    }

    #[test]
    fn a_create_reusing_a_live_pods_name_never_uncounts_the_live_pod() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        // Decided as a pod of its own: the live e1 counts.
        let usage = created(&ledger, Some("a"), "e1");
        assert_eq!(executors(usage), Some(1));
        assert_eq!(usage.namespace.cpu, 2);
        // Admitted, it is reserved beside the live pod, which keeps counting.
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        assert_eq!((ledger.tracked_pods(), ledger.reservations()), (1, 1));
        assert_eq!(executors(created(&ledger, Some("a"), "e9")), Some(2));
        // The apiserver refused it (AlreadyExists); the live pod's next event releases it.
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        assert_eq!((ledger.tracked_pods(), ledger.reservations()), (1, 0));
        assert_eq!(executors(created(&ledger, Some("a"), "e9")), Some(1));
        // A live pod deleted while a pod of its name is being created leaves the reservation.
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        ledger.remove(&key("e1"));
        assert_eq!((ledger.tracked_pods(), ledger.reservations()), (0, 1));
        assert_eq!(executors(created(&ledger, Some("a"), "e9")), Some(1));
    }

    #[test]
    fn reservations_count_against_the_namespace_only_for_verified_callers() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.apply(key("a-driver"), tracked(Some("a"), Role::Driver, 1));
        // A review nobody vouches for: a new application "b" with a big executor.
        ledger.reserve(&key("b-exec"), &entry(Some("b"), Role::Executor, 50), later);
        let unverified = ledger.usage(Some("c"), Own::Created(&key("c-driver")), false);
        assert_eq!(unverified.namespace.cpu, 1, "only the live pod");
        assert_eq!(unverified.applications, 1, "b has no live pod");
        let verified = ledger.usage(Some("c"), Own::Created(&key("c-driver")), true);
        assert_eq!(verified.namespace.cpu, 51);
        assert_eq!(verified.applications, 2);
        // Against its own application a reservation always counts...
        let same_app = ledger.usage(Some("b"), Own::Created(&key("b-exec-2")), false);
        assert_eq!(executors(same_app), Some(1));
        // ...but does not make the application present in the namespace's count.
        assert_eq!(same_app.app.map(|a| a.present), Some(false));
        let same_app = ledger.usage(Some("b"), Own::Created(&key("b-exec-2")), true);
        assert_eq!(same_app.app.map(|a| a.present), Some(true));
    }

    #[test]
    fn a_resized_pod_is_left_out_of_its_own_totals() {
        let mut ledger = Ledger::new();
        ledger.apply(key("d"), tracked(Some("a"), Role::Driver, 1));
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        let usage = ledger.usage(Some("a"), Own::Resized(&key("e1")), false);
        assert_eq!(usage.namespace.cpu, 1);
        assert_eq!(
            usage.app,
            Some(AppTotals {
                executors: 0,
                charge: Charge { cpu: 1, memory: 10 },
                present: true
            })
        );
        assert_eq!(usage.applications, 1);
    }

    #[test]
    fn a_relist_replaces_pods_and_releases_the_reservations_it_shows() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.apply(key("gone"), tracked(Some("a"), Role::Executor, 2));
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        ledger.reserve(&key("e2"), &entry(Some("a"), Role::Executor, 2), later);
        let listed = HashMap::from([(key("e1"), tracked(Some("a"), Role::Executor, 2))]);
        ledger.replace_all(listed);
        assert_eq!(ledger.tracked_pods(), 1);
        assert_eq!(ledger.reservations(), 1, "e2 is still in flight");
        assert_eq!(
            executors(created(&ledger, Some("a"), "new")),
            Some(2),
            "e1 and e2, not gone"
        );
        let mut members: Vec<String> = ledger
            .app_members("ns", "a")
            .iter()
            .map(|m| match m {
                Member::Tracked(name, ..) => format!("tracked {name}"),
                Member::Reserved(name, _) => format!("reserved {name}"),
            })
            .collect();
        members.sort();
        assert_eq!(members, ["reserved e2", "tracked e1"]);
    }

    #[test]
    fn applications_are_counted_per_namespace() {
        let mut ledger = Ledger::new();
        ledger.apply(key("a-d"), tracked(Some("a"), Role::Driver, 1));
        ledger.apply(key("b-d"), tracked(Some("b"), Role::Driver, 1));
        let other = PodKey {
            namespace: "other".to_owned(),
            name: "c-d".to_owned(),
        };
        ledger.apply(other, tracked(Some("c"), Role::Driver, 1));
        let usage = created(&ledger, Some("new"), "new-d");
        assert_eq!(usage.applications, 2);
        assert_eq!(usage.app.map(|a| a.present), Some(false));
        assert_eq!(
            created(&ledger, Some("a"), "a-e").app.map(|a| a.present),
            Some(true)
        );
        assert_eq!(ledger.namespaces()["ns"].live_apps(), 2);
    }

    /// 1 GiB in nano-bytes, 1 core in nano-cores.
    const GIB: i128 = (1 << 30) * NANOS;
    const CORE: i128 = NANOS;

    fn pod_in(namespace: &str, name: &str) -> PodKey {
        PodKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn live_with(app: Option<&str>, role: Role, charge: Charge) -> TrackedPod {
        TrackedPod {
            entry: Entry {
                app: app.map(str::to_owned),
                app_name: app.map(|_| "nightly-etl".to_owned()),
                role,
                charge,
            },
            resource_version: Some(7),
        }
    }

    #[test]
    fn a_live_pod_is_held_in_a_few_words() {
        // What keeps 100,000 pods small (BENCHMARKS.md, "Scale: 100,000 tracked pods"): a
        // regression here is a regression in bytes per pod.
        assert_eq!(std::mem::size_of::<PackedCharge>(), 24);
        assert_eq!(std::mem::size_of::<LivePod>(), 56);
        assert_eq!(std::mem::size_of::<Charge>(), 32, "what a pod held before");
    }

    #[test]
    fn an_applications_id_and_a_pods_name_are_one_allocation_each() {
        let mut ledger = Ledger::new();
        for name in ["d", "e1", "e2"] {
            let role = if name == "d" {
                Role::Driver
            } else {
                Role::Executor
            };
            ledger.apply(key(name), tracked(Some("spark-1"), role, 1));
        }
        ledger.apply(key("loose"), tracked(None, Role::Executor, 1));
        assert_eq!(
            ledger.namespaces().len(),
            1,
            "one namespace key for every pod"
        );
        let ns = &ledger.namespaces()["ns"];
        let (id, app) = ns.apps.get_key_value("spark-1").unwrap();
        // The key in the map of applications, and one reference per live pod: no copies.
        assert_eq!(Arc::strong_count(id), 4);
        for name in ["d", "e1", "e2"] {
            let pod = &ns.pods[name];
            assert!(Arc::ptr_eq(pod.app.as_ref().unwrap(), id), "{name}");
        }
        assert_eq!(ns.pods["loose"].app, None);
        // A pod's name: the map of pods' key, shared by the application's member set.
        for (name, _) in ns.pods.iter().filter(|(_, p)| p.app.is_some()) {
            let member = app.live_members.get(name).unwrap();
            assert!(Arc::ptr_eq(member, name));
            assert_eq!(Arc::strong_count(name), 2);
        }
        // The application's name once, with the application.
        assert_eq!(app.name.as_deref(), Some("spark-1-name"));
        // Another namespace's application of the same id is another application.
        ledger.apply(
            pod_in("other", "d"),
            tracked(Some("spark-1"), Role::Driver, 1),
        );
        let ns = &ledger.namespaces()["ns"];
        assert_eq!(
            Arc::strong_count(ns.apps.get_key_value("spark-1").unwrap().0),
            4
        );
        // Once its last pod is gone, nothing of the application is left.
        for name in ["d", "e1", "e2"] {
            ledger.remove(&key(name));
        }
        assert!(!ledger.namespaces()["ns"].apps.contains_key("spark-1"));
    }

    #[test]
    fn charges_are_held_exactly_whatever_their_size() {
        let cases = [
            // What real pods ask: whole bytes, milli-cores.
            (
                Charge {
                    cpu: 2 * CORE,
                    memory: 2432 * (1 << 20) * NANOS,
                },
                true,
            ),
            (
                Charge {
                    cpu: 1_500_000_000,
                    memory: 0,
                },
                true,
            ),
            (
                Charge {
                    cpu: 1,
                    memory: NANOS,
                },
                true,
            ),
            (Charge::default(), true),
            (
                Charge {
                    cpu: i128::from(u64::MAX),
                    memory: i128::from(u64::MAX) * NANOS,
                },
                true,
            ),
            // A fraction of a byte ("100m" of memory), too many cores, unreadable, negative.
            (
                Charge {
                    cpu: CORE,
                    memory: 100_000_000,
                },
                false,
            ),
            (
                Charge {
                    cpu: i128::from(u64::MAX) + 1,
                    memory: 0,
                },
                false,
            ),
            (
                Charge {
                    cpu: super::super::charge::UNREADABLE,
                    memory: super::super::charge::UNREADABLE,
                },
                false,
            ),
            (Charge { cpu: -1, memory: 0 }, false),
            (
                Charge {
                    cpu: 0,
                    memory: -NANOS,
                },
                false,
            ),
            (
                Charge {
                    cpu: 0,
                    memory: (i128::from(u64::MAX) + 1) * NANOS,
                },
                false,
            ),
        ];
        for (charge, small) in cases {
            let packed = PackedCharge::new(charge);
            assert_eq!(
                matches!(packed, PackedCharge::Small { .. }),
                small,
                "{charge:?}"
            );
            assert_eq!(packed.charge(), charge);
        }
    }

    #[test]
    fn totals_after_apply_remove_and_relist_are_the_sums_by_hand() {
        let executor = Charge {
            cpu: 2 * CORE,
            memory: 2432 * (1 << 20) * NANOS,
        };
        let driver = Charge {
            cpu: 1_500_000_000,
            memory: 4 * GIB,
        };
        // Not a whole number of bytes: held exactly, not packed.
        let odd = Charge {
            cpu: 250_000_000,
            memory: 100_000_000,
        };
        let mut ledger = Ledger::new();
        ledger.apply(key("d"), live_with(Some("a"), Role::Driver, driver));
        for i in 0..4 {
            ledger.apply(
                key(&format!("e{i}")),
                live_with(Some("a"), Role::Executor, executor),
            );
        }
        ledger.apply(key("odd"), live_with(Some("b"), Role::Executor, odd));
        ledger.apply(key("loose"), live_with(None, Role::Executor, executor));
        // 1.5 + 4 x 2 + 0.25 + 2 cores; 4 GiB + 4 x 2432 MiB + 0.1 byte + 2432 MiB.
        let ns = &ledger.namespaces()["ns"];
        assert_eq!(ns.live.pods, 7);
        assert_eq!(ns.live.executors, 6);
        assert_eq!(ns.live.charge.cpu, 11_750_000_000);
        assert_eq!(
            ns.live.charge.memory,
            (4 * 1024 + 5 * 2432) * (1 << 20) * NANOS + 100_000_000
        );
        assert_eq!(ns.live_apps(), 2);
        let a = &ns.apps["a"];
        assert_eq!((a.live.pods, a.live.executors), (5, 4));
        assert_eq!(a.live.charge.cpu, 9_500_000_000);
        assert_eq!(
            a.live.charge.memory,
            (4 * 1024 + 4 * 2432) * (1 << 20) * NANOS
        );
        assert_eq!(ns.apps["b"].live.charge, odd);

        // An executor gone, the odd pod resized to the executor's size.
        ledger.remove(&key("e3"));
        ledger.apply(key("odd"), live_with(Some("b"), Role::Executor, executor));
        // 1.5 + 3 x 2 + 2 + 2 cores; 4 GiB + 5 x 2432 MiB.
        let ns = &ledger.namespaces()["ns"];
        assert_eq!(ns.live.pods, 6);
        assert_eq!(ns.live.charge.cpu, 11_500_000_000);
        assert_eq!(
            ns.live.charge.memory,
            (4 * 1024 + 5 * 2432) * (1 << 20) * NANOS
        );
        assert_eq!(ns.apps["a"].live.executors, 3);

        // A relist that shows the driver and one executor of a, and b's pod.
        ledger.begin_listing();
        ledger.apply(key("d"), live_with(Some("a"), Role::Driver, driver));
        ledger.apply(key("e0"), live_with(Some("a"), Role::Executor, executor));
        ledger.apply(key("odd"), live_with(Some("b"), Role::Executor, odd));
        assert_eq!(ledger.end_listing(), 3, "e1, e2 and loose were not listed");
        assert_eq!(ledger.tracked_pods(), 3);
        let ns = &ledger.namespaces()["ns"];
        assert_eq!((ns.live.pods, ns.live.executors), (3, 2));
        assert_eq!(ns.live.charge.cpu, 3_750_000_000);
        assert_eq!(
            ns.live.charge.memory,
            (4 * 1024 + 2432) * (1 << 20) * NANOS + 100_000_000
        );
        assert_eq!(ns.apps["a"].live.executors, 1);
        assert_eq!(ns.live_apps(), 2);
        assert!(!ns.pods.contains_key("loose"));
    }

    #[test]
    fn a_relist_keeps_the_reservations_of_pods_it_does_not_show() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.apply(key("d"), tracked(Some("a"), Role::Driver, 1));
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        ledger.reserve(&key("e2"), &entry(Some("a"), Role::Executor, 3), later);
        // In flight in another application, and in another namespace.
        ledger.reserve(&key("b-e1"), &entry(Some("b"), Role::Executor, 4), later);
        ledger.reserve(
            &pod_in("other", "c-d"),
            &entry(Some("c"), Role::Driver, 5),
            later,
        );
        ledger.replace_all([
            (key("d"), tracked(Some("a"), Role::Driver, 1)),
            (key("e1"), tracked(Some("a"), Role::Executor, 2)),
        ]);
        assert_eq!(ledger.tracked_pods(), 2);
        assert_eq!(
            ledger.reservations(),
            3,
            "e2, b-e1 and c-d are still in flight"
        );
        let ns = &ledger.namespaces()["ns"];
        assert_eq!((ns.live.pods, ns.live.charge.cpu), (2, 3));
        assert_eq!((ns.reserved.pods, ns.reserved.charge.cpu), (2, 7));
        assert_eq!(ns.apps["a"].reserved.charge.cpu, 3);
        assert_eq!(ns.apps["b"].reserved.executors, 1);
        assert_eq!(ns.live_apps(), 1, "b has no live pod");
        assert_eq!(ledger.namespaces()["other"].reserved.charge.cpu, 5);
        let usage = created(&ledger, Some("a"), "new");
        assert_eq!(usage.app.map(|a| (a.executors, a.charge.cpu)), Some((2, 6)));
        assert_eq!(usage.namespace.cpu, 10);
        assert_eq!(usage.applications, 2);
        // They still expire at their time, and nothing is left of them after.
        assert_eq!(ledger.expire(later), 3);
        let ns = &ledger.namespaces()["ns"];
        assert_eq!((ns.reserved.pods, ns.reserved.charge.cpu), (0, 0));
        assert!(!ledger.namespaces().contains_key("other"));
    }

    #[test]
    fn a_listing_counts_each_pod_once_whatever_it_repeats() {
        let mut ledger = Ledger::new();
        ledger.replace_all([
            (key("e1"), tracked(Some("a"), Role::Executor, 2)),
            (key("e1"), tracked(Some("a"), Role::Executor, 5)),
            (key("e2"), tracked(Some("b"), Role::Executor, 1)),
        ]);
        let ns = &ledger.namespaces()["ns"];
        assert_eq!((ns.live.pods, ns.live.charge.cpu), (2, 6));
        assert_eq!(ns.apps["a"].live.charge.cpu, 5, "the later entry");
    }

    #[test]
    fn while_a_relist_runs_each_pod_counts_once_in_its_older_or_newer_state() {
        let mut ledger = Ledger::new();
        ledger.replace_all([
            (key("kept"), tracked(Some("a"), Role::Executor, 2)),
            (key("resized"), tracked(Some("a"), Role::Executor, 2)),
            (key("deleted"), tracked(Some("b"), Role::Executor, 4)),
        ]);
        ledger.begin_listing();
        ledger.apply(key("resized"), tracked(Some("a"), Role::Executor, 3));
        ledger.apply(key("created"), tracked(Some("c"), Role::Driver, 1));
        // Half listed: "kept" and "deleted" as the last listing knew them, "resized" as it is
        // now, "created" new: nothing undercounted, nothing twice.
        let ns = &ledger.namespaces()["ns"];
        assert_eq!((ns.live.pods, ns.live.charge.cpu), (4, 2 + 3 + 4 + 1));
        assert_eq!(ns.apps["a"].live.charge.cpu, 5);
        assert_eq!(ns.live_apps(), 3);
        ledger.apply(key("kept"), tracked(Some("a"), Role::Executor, 2));
        assert_eq!(
            ledger.end_listing(),
            1,
            "deleted, which the listing did not show"
        );
        let ns = &ledger.namespaces()["ns"];
        assert_eq!((ns.live.pods, ns.live.charge.cpu), (3, 2 + 3 + 1));
        assert!(!ns.apps.contains_key("b"));
        assert_eq!(ns.live_apps(), 2);
        // A listing that shows nothing empties the ledger of live pods, namespaces included.
        ledger.begin_listing();
        assert_eq!(ledger.end_listing(), 3);
        assert_eq!(ledger.tracked_pods(), 0);
        assert!(ledger.namespaces().is_empty());
    }

    #[test]
    fn a_live_pod_takes_no_more_room_for_its_listing_mark() {
        assert_eq!(std::mem::size_of::<LivePod>(), 56);
    }

    #[test]
    fn an_applications_members_carry_what_the_ledger_keeps_of_them() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        let mut unversioned = tracked(Some("a"), Role::Driver, 1);
        unversioned.resource_version = None;
        ledger.apply(key("d"), unversioned);
        ledger.reserve(&key("e2"), &entry(Some("a"), Role::Executor, 3), later);
        let mut members = ledger.app_members("ns", "a");
        members.sort_by_key(|m| match m {
            Member::Tracked(name, ..) | Member::Reserved(name, _) => name.to_string(),
        });
        assert_eq!(
            members,
            [
                Member::Tracked("d", entry(Some("a"), Role::Driver, 1), None),
                Member::Tracked("e1", entry(Some("a"), Role::Executor, 2), Some(1)),
                Member::Reserved("e2", &entry(Some("a"), Role::Executor, 3)),
            ]
        );
        assert!(ledger.app_members("ns", "nobody").is_empty());
        assert!(ledger.app_members("elsewhere", "a").is_empty());
    }
}
