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
//! Pure data: no locks, no clock of its own (callers pass `now`), no I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
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
    fn add(&mut self, entry: &Entry) {
        self.pods += 1;
        if entry.role == Role::Executor {
            self.executors += 1;
        }
        self.charge = self.charge.plus(entry.charge);
    }

    fn subtract(&mut self, entry: &Entry) {
        self.pods = self.pods.saturating_sub(1);
        if entry.role == Role::Executor {
            self.executors = self.executors.saturating_sub(1);
        }
        self.charge = self.charge.minus(entry.charge);
    }

    fn plus(self, other: Count) -> Count {
        Count {
            pods: self.pods + other.pods,
            executors: self.executors + other.executors,
            charge: self.charge.plus(other.charge),
        }
    }
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
    /// Names of its live pods.
    live_members: HashSet<String>,
    /// Names of its reservations.
    reserved_members: HashSet<String>,
}

impl AppUsage {
    /// Live pods and reservations together.
    pub fn all(&self) -> Count {
        self.live.plus(self.reserved)
    }

    fn side(&mut self, side: Side) -> (&mut Count, &mut HashSet<String>) {
        match side {
            Side::Live => (&mut self.live, &mut self.live_members),
            Side::Reserved => (&mut self.reserved, &mut self.reserved_members),
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
    /// Applications with at least one live pod or reservation.
    pub apps: HashMap<String, AppUsage>,
    /// How many of `apps` have a live pod.
    live_apps: u32,
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
    pods: HashMap<PodKey, TrackedPod>,
    reservations: HashMap<PodKey, Reservation>,
    max_reservations: usize,
    // When reservations expire, earliest first, one entry per reservation made. A reservation's
    // time never moves, so an entry that comes up and finds no reservation under its key, or
    // one made later (with an entry of its own), is simply dropped.
    expiry: BinaryHeap<Reverse<(Instant, PodKey)>>,
    namespaces: HashMap<String, NamespaceUsage>,
    evicted: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            pods: HashMap::new(),
            reservations: HashMap::new(),
            max_reservations: MAX_RESERVATIONS,
            expiry: BinaryHeap::new(),
            namespaces: HashMap::new(),
            evicted: 0,
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
        self.pods.len()
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
    pub fn namespaces(&self) -> &HashMap<String, NamespaceUsage> {
        &self.namespaces
    }

    /// The watch shows `key` live: it counts from now on, in place of its earlier state, and
    /// the reservation under its key (the admission of this pod) is released.
    pub fn apply(&mut self, key: PodKey, pod: TrackedPod) {
        self.release(&key);
        if let Some(old) = self.pods.remove(&key) {
            self.subtract(&key, &old.entry, Side::Live);
        }
        self.add(&key, &pod.entry, Side::Live);
        self.pods.insert(key, pod);
    }

    /// The watch shows `key` gone, terminal or deleting: it no longer counts. A reservation
    /// under the same key is another pod (created after this one was deleted) and stays.
    pub fn remove(&mut self, key: &PodKey) {
        if let Some(old) = self.pods.remove(key) {
            self.subtract(key, &old.entry, Side::Live);
        }
    }

    /// Replaces every live pod at once (the watch listed them all again after a restart);
    /// reservations for pods in the list are released, the others stay.
    pub fn replace_all(&mut self, pods: HashMap<PodKey, TrackedPod>) {
        self.pods.clear();
        self.namespaces.clear();
        self.reservations.retain(|key, _| !pods.contains_key(key));
        let reserved: Vec<(PodKey, Entry)> = self
            .reservations
            .iter()
            .map(|(key, r)| (key.clone(), r.entry.clone()))
            .collect();
        for (key, entry) in &reserved {
            self.add(key, entry, Side::Reserved);
        }
        for (key, pod) in &pods {
            self.add(key, &pod.entry, Side::Live);
        }
        self.pods = pods;
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
            self.subtract(key, &old, Side::Reserved);
            self.add(key, entry, Side::Reserved);
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
        self.add(key, entry, Side::Reserved);
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
        let own_live = match own {
            Own::Created(_) => None,
            Own::Resized(key) => self.pods.get(key).map(|p| &p.entry),
        };
        let Some(ns) = self.namespaces.get(&key.namespace) else {
            return Usage {
                app: app.map(|_| AppTotals::default()),
                ..Usage::default()
            };
        };
        let with_reserved = reservations_count_in_namespace;
        let mut namespace = ns.live.charge;
        let mut applications = ns.live_apps;
        if with_reserved {
            namespace = namespace.plus(ns.reserved.charge);
            applications = u32::try_from(ns.apps.len()).unwrap_or(u32::MAX);
        }
        if let Some(own) = own_live {
            namespace = namespace.minus(own.charge);
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
            live.subtract(own);
        }
        if let Some(own) = own_reserved.filter(|own| own.app.as_deref() == Some(app)) {
            reserved.subtract(own);
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
        self.pods.contains_key(key) || self.reservations.contains_key(key)
    }

    /// Whether application `app` has a live pod or a reservation in `namespace`.
    pub fn has_application(&self, namespace: &str, app: &str) -> bool {
        self.namespaces
            .get(namespace)
            .is_some_and(|ns| ns.apps.contains_key(app))
    }

    /// The pods and reservations of one application, by name: what a consistent LIST is
    /// merged with. A name may appear twice, as a live pod and as a reservation.
    pub fn app_members(&self, namespace: &str, app: &str) -> Vec<Member<'_>> {
        let Some(found) = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.apps.get(app))
        else {
            return Vec::new();
        };
        let key = |name: &String| PodKey {
            namespace: namespace.to_owned(),
            name: name.clone(),
        };
        let live = found.live_members.iter().filter_map(|name| {
            self.pods
                .get(&key(name))
                .map(|pod| Member::Tracked(name, &pod.entry, pod.resource_version))
        });
        let reserved = found.reserved_members.iter().filter_map(|name| {
            self.reservations
                .get(&key(name))
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
            self.subtract(key, &reservation.entry, Side::Reserved);
        }
    }

    fn add(&mut self, key: &PodKey, entry: &Entry, side: Side) {
        let ns = self.namespaces.entry(key.namespace.clone()).or_default();
        match side {
            Side::Live => ns.live.add(entry),
            Side::Reserved => ns.reserved.add(entry),
        }
        let Some(app) = &entry.app else {
            return;
        };
        let usage = ns.apps.entry(app.clone()).or_default();
        if side == Side::Live && usage.live.pods == 0 {
            ns.live_apps += 1;
        }
        if entry.app_name.is_some() {
            usage.name.clone_from(&entry.app_name);
        }
        let (count, members) = usage.side(side);
        count.add(entry);
        members.insert(key.name.clone());
    }

    fn subtract(&mut self, key: &PodKey, entry: &Entry, side: Side) {
        let Some(ns) = self.namespaces.get_mut(&key.namespace) else {
            return;
        };
        match side {
            Side::Live => ns.live.subtract(entry),
            Side::Reserved => ns.reserved.subtract(entry),
        }
        if let Some(app) = &entry.app
            && let Some(usage) = ns.apps.get_mut(app)
        {
            let had_live = usage.live.pods > 0;
            let (count, members) = usage.side(side);
            count.subtract(entry);
            members.remove(&key.name);
            if side == Side::Live && had_live && usage.live.pods == 0 {
                ns.live_apps = ns.live_apps.saturating_sub(1);
            }
            if usage.all().pods == 0 {
                ns.apps.remove(app);
            }
        }
        if ns.all().pods == 0 {
            self.namespaces.remove(&key.namespace);
        }
    }
}

/// One pod of an application as the ledger holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member<'a> {
    /// Shown by the watch, at this resource version.
    Tracked(&'a str, &'a Entry, Option<u64>),
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
}
