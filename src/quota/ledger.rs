//! The pods quotas count, and their running totals per namespace and per application.
//!
//! Two kinds of entries, keyed by namespace and pod name: live Spark pods the watch reported,
//! and reservations for pods this replica admitted that the watch has not shown yet (they count
//! from admission until the watch shows them, or until they expire because a later admission
//! step refused them). A key is in at most one of the two: the watch showing a pod releases its
//! reservation. Totals are kept up to date on every change, so a decision reads a handful of
//! numbers and never scans pods.
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

/// One application's totals in its namespace: pods the watch shows plus reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppUsage {
    /// The application's name, if any of its pods carried one.
    pub name: Option<String>,
    /// Pods (drivers and executors).
    pub pods: u32,
    /// Executor pods.
    pub executors: u32,
    /// CPU and memory of all its pods.
    pub charge: Charge,
    /// Names of its pods and reservations.
    members: HashSet<String>,
}

/// One namespace's totals over its Spark pods and reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceUsage {
    /// Pods (with or without an application).
    pub pods: u32,
    /// CPU and memory of all of them.
    pub charge: Charge,
    /// Applications with at least one pod or reservation.
    pub apps: HashMap<String, AppUsage>,
}

/// A pod this replica admitted and the watch has not shown yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// What counts.
    pub entry: Entry,
    /// When it stops counting if the watch never shows the pod.
    pub expires: Instant,
}

/// Totals a decision reads, with one pod's own entry left out (so a repeated admission of the
/// same pod is not counted against itself).
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
    /// Whether it has any pod besides the one being decided (if not, that pod starts a new
    /// application in the namespace).
    pub present: bool,
}

/// Live pods, reservations and totals.
#[derive(Debug, Default)]
pub struct Ledger {
    pods: HashMap<PodKey, TrackedPod>,
    reservations: HashMap<PodKey, Reservation>,
    // When reservations expire, earliest first, one entry per reservation: a renewal only moves
    // the reservation's own time, and its entry, coming up early, is queued again at the new
    // time. An entry whose reservation was released is dropped when it comes up.
    expiry: BinaryHeap<Reverse<(Instant, PodKey)>>,
    namespaces: HashMap<String, NamespaceUsage>,
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

    /// The totals of every namespace with Spark pods or reservations.
    pub fn namespaces(&self) -> &HashMap<String, NamespaceUsage> {
        &self.namespaces
    }

    /// The watch shows `key` live: it counts from now on, and its reservation (if any) is
    /// released.
    pub fn apply(&mut self, key: PodKey, pod: TrackedPod) {
        self.forget(&key);
        self.add(&key, &pod.entry);
        self.pods.insert(key, pod);
    }

    /// The watch shows `key` gone, terminal or deleting: it no longer counts.
    pub fn remove(&mut self, key: &PodKey) {
        if let Some(old) = self.pods.remove(key) {
            self.subtract(key, &old.entry);
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
            self.add(key, entry);
        }
        for (key, pod) in &pods {
            self.add(key, &pod.entry);
        }
        self.pods = pods;
    }

    /// Forgets everything (the policy no longer has quotas).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Reserves `key` until the watch shows it or `expires`. A live pod or an earlier
    /// reservation under the same key is replaced, so the same pod never counts twice; the same
    /// pod reserved again (a reinvoked webhook) only has its time moved.
    pub fn reserve(&mut self, key: &PodKey, entry: &Entry, expires: Instant) {
        if let Some(reservation) = self.reservations.get_mut(key)
            && reservation.entry == *entry
        {
            reservation.expires = reservation.expires.max(expires);
            return;
        }
        // A reservation held under this key already has its entry in the queue.
        let queued = self.reservations.contains_key(key);
        self.forget(key);
        self.add(key, entry);
        if !queued {
            self.expiry.push(Reverse((expires, key.clone())));
        }
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
            match self.reservations.get(&key).map(|r| r.expires) {
                Some(expires) if expires <= now => {
                    if let Some(reservation) = self.reservations.remove(&key) {
                        self.subtract(&key, &reservation.entry);
                        expired += 1;
                    }
                }
                // Renewed since it was queued: queued again at its new time.
                Some(expires) => self.expiry.push(Reverse((expires, key))),
                // Released when the watch showed the pod.
                None => {}
            }
        }
        // A burst of reservations grows the queue; give the memory back once it has drained.
        if self.expiry.capacity() > 64 && self.expiry.len() < self.expiry.capacity() / 4 {
            self.expiry.shrink_to(self.expiry.len() * 2);
        }
        expired
    }

    /// The totals for a pod in `namespace` of application `app`, leaving out whatever is held
    /// under `key` (a reservation from an earlier admission of the same pod, or a live pod of
    /// that name).
    pub fn usage(&self, namespace: &str, app: Option<&str>, key: &PodKey) -> Usage {
        let own = self
            .reservations
            .get(key)
            .map(|r| &r.entry)
            .or_else(|| self.pods.get(key).map(|p| &p.entry))
            .filter(|_| key.namespace == namespace);
        let Some(ns) = self.namespaces.get(namespace) else {
            return Usage {
                app: app.map(|_| AppTotals::default()),
                ..Usage::default()
            };
        };
        let mut usage = Usage {
            namespace: ns.charge,
            applications: u32::try_from(ns.apps.len()).unwrap_or(u32::MAX),
            app: None,
        };
        if let Some(own) = own {
            usage.namespace = usage.namespace.minus(own.charge);
        }
        if let Some(app) = app {
            let mut totals = AppTotals::default();
            if let Some(found) = ns.apps.get(app) {
                let mut pods = found.pods;
                totals.executors = found.executors;
                totals.charge = found.charge;
                if let Some(own) = own.filter(|own| own.app.as_deref() == Some(app)) {
                    pods = pods.saturating_sub(1);
                    totals.charge = totals.charge.minus(own.charge);
                    if own.role == Role::Executor {
                        totals.executors = totals.executors.saturating_sub(1);
                    }
                    if pods == 0 {
                        usage.applications = usage.applications.saturating_sub(1);
                    }
                }
                totals.present = pods > 0;
            }
            usage.app = Some(totals);
        }
        usage
    }

    /// The pods and reservations of one application, by name: what a consistent LIST is
    /// merged with.
    pub fn app_members(&self, namespace: &str, app: &str) -> Vec<Member<'_>> {
        let Some(found) = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.apps.get(app))
        else {
            return Vec::new();
        };
        found
            .members
            .iter()
            .filter_map(|name| {
                let key = PodKey {
                    namespace: namespace.to_owned(),
                    name: name.clone(),
                };
                if let Some(reservation) = self.reservations.get(&key) {
                    Some(Member::Reserved(name, &reservation.entry))
                } else {
                    self.pods
                        .get(&key)
                        .map(|pod| Member::Tracked(name, &pod.entry, pod.resource_version))
                }
            })
            .collect()
    }

    /// Removes a key's live pod or reservation, whichever is held.
    fn forget(&mut self, key: &PodKey) {
        if let Some(reservation) = self.reservations.remove(key) {
            self.subtract(key, &reservation.entry);
        }
        self.remove(key);
    }

    fn add(&mut self, key: &PodKey, entry: &Entry) {
        let ns = self.namespaces.entry(key.namespace.clone()).or_default();
        ns.pods += 1;
        ns.charge = ns.charge.plus(entry.charge);
        if let Some(app) = &entry.app {
            let usage = ns.apps.entry(app.clone()).or_default();
            usage.pods += 1;
            if entry.role == Role::Executor {
                usage.executors += 1;
            }
            usage.charge = usage.charge.plus(entry.charge);
            if entry.app_name.is_some() {
                usage.name.clone_from(&entry.app_name);
            }
            usage.members.insert(key.name.clone());
        }
    }

    fn subtract(&mut self, key: &PodKey, entry: &Entry) {
        let Some(ns) = self.namespaces.get_mut(&key.namespace) else {
            return;
        };
        ns.pods = ns.pods.saturating_sub(1);
        ns.charge = ns.charge.minus(entry.charge);
        if let Some(app) = &entry.app
            && let Some(usage) = ns.apps.get_mut(app)
        {
            usage.pods = usage.pods.saturating_sub(1);
            if entry.role == Role::Executor {
                usage.executors = usage.executors.saturating_sub(1);
            }
            usage.charge = usage.charge.minus(entry.charge);
            usage.members.remove(&key.name);
            if usage.pods == 0 {
                ns.apps.remove(app);
            }
        }
        if ns.pods == 0 {
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

    #[test]
    fn totals_follow_every_apply_and_remove() {
        let mut ledger = Ledger::new();
        ledger.apply(key("d"), tracked(Some("a"), Role::Driver, 1));
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        ledger.apply(key("e2"), tracked(Some("a"), Role::Executor, 2));
        ledger.apply(key("x"), tracked(None, Role::Executor, 4));
        let usage = ledger.usage("ns", Some("a"), &key("new"));
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
        let usage = ledger.usage("ns", Some("a"), &key("new"));
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
        let usage = ledger.usage("ns", Some("a"), &key("e2"));
        assert_eq!(usage.app.map(|a| a.executors), Some(1));
        ledger.apply(key("e1"), tracked(Some("a"), Role::Executor, 2));
        assert_eq!(ledger.reservations(), 0);
        let usage = ledger.usage("ns", Some("a"), &key("e2"));
        assert_eq!(usage.app.map(|a| a.executors), Some(1), "counted once");
        // The stale expiry entry of the released reservation does nothing.
        assert_eq!(ledger.expire(now + Duration::from_secs(60)), 0);
        assert_eq!(
            ledger
                .usage("ns", Some("a"), &key("e2"))
                .app
                .map(|a| a.executors),
            Some(1)
        );
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
        assert_eq!(
            ledger
                .usage("ns", Some("a"), &key("x"))
                .app
                .map(|a| a.executors),
            Some(1)
        );
        assert_eq!(ledger.expire(now + Duration::from_secs(5)), 1);
        assert!(ledger.namespaces().is_empty());
    }

    #[test]
    fn a_renewed_reservation_expires_at_its_latest_time_and_queues_nothing_more() {
        let mut ledger = Ledger::new();
        let now = Instant::now();
        let executor = entry(Some("a"), Role::Executor, 2);
        for second in 1..=1000 {
            ledger.reserve(&key("e1"), &executor, now + Duration::from_secs(second));
        }
        assert_eq!(ledger.expiry.len(), 1, "one queued expiry per reservation");
        assert_eq!(ledger.expire(now + Duration::from_secs(10)), 0, "renewed");
        assert_eq!(ledger.expiry.len(), 1, "queued again at its new time");
        assert_eq!(ledger.expire(now + Duration::from_secs(1000)), 1);
        assert!(ledger.namespaces().is_empty());
        assert!(ledger.expiry.is_empty());
    }

    #[test]
    fn a_pod_is_never_counted_against_itself() {
        let mut ledger = Ledger::new();
        let later = Instant::now() + Duration::from_secs(30);
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        // The same pod again (a reinvoked webhook): its own reservation is left out...
        let usage = ledger.usage("ns", Some("a"), &key("e1"));
        assert_eq!(
            usage.app,
            Some(AppTotals::default()),
            "nothing else in the app"
        );
        assert_eq!(usage.applications, 0, "the pod would start the app anew");
        // ...and reserving it again replaces the reservation.
        ledger.reserve(&key("e1"), &entry(Some("a"), Role::Executor, 2), later);
        assert_eq!(ledger.reservations(), 1);
        assert_eq!(
            ledger
                .usage("ns", Some("a"), &key("e2"))
                .app
                .map(|a| a.executors),
            Some(1)
        );
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
        let usage = ledger.usage("ns", Some("a"), &key("new"));
        assert_eq!(
            usage.app.map(|a| a.executors),
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
        let usage = ledger.usage("ns", Some("new"), &key("new-d"));
        assert_eq!(usage.applications, 2);
        assert_eq!(usage.app.map(|a| a.present), Some(false));
        assert_eq!(
            ledger
                .usage("ns", Some("a"), &key("a-e"))
                .app
                .map(|a| a.present),
            Some(true)
        );
    }
}
