//! The ledger shared between requests and the pod watch, and the admission of one pod against
//! it.
//!
//! Admitting is check-and-reserve under one lock, so concurrent creations on one replica can
//! never both take the last free slot. Across replicas each holds its own watch, which lags
//! behind pods the others admitted; so when a pod would bring its application within a margin
//! of a per-application limit (or the watch is not in step), the application's pods are read
//! with a consistent LIST first, and the decision is made on that LIST merged with what this
//! replica knows. Spark creates executors one `create` after another, each answered after the
//! pod is stored, so that LIST sees every earlier executor whichever replica admitted it: the
//! per-application limits are exact. This LIST is the only I/O on the request path, and only
//! near a limit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};

use crate::policy::{Quota, check_label_value};

use super::check::{Violation, check, near_application_limit, near_namespace_limit};
use super::lease::{LeaseRecords, Stored, Written, unix_now};
use super::ledger::{AppTotals, Entry, Ledger, Member, Own, PodKey, TrackedPod, Usage};
use super::room::{self, Admissions};
use super::watch::{LeanPod, SPARK_POD_SELECTOR, tracked};
use super::{Claim, ClaimKind, Error};

/// How the tracker decides.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long an admitted pod counts if the watch never shows it (a later admission step
    /// refused it). Longer than the whole admission chain can take.
    pub reservation_ttl: Duration,
    /// How many pods like the one admitted may separate an application from a limit before
    /// its count is confirmed with a consistent LIST.
    pub confirm_margin: u32,
    /// Longest wait for that LIST, and for the admissions in flight near a namespace limit
    /// to be read and written; past it, the decision uses this replica's own view.
    pub confirm_timeout: Duration,
    /// How many pods like the one admitted may separate a namespace from a limit before, with
    /// callers verified, the decision is made on the admissions every replica has in flight
    /// there ([`super::room`]). Namespace limits are exact while fewer creations than this,
    /// admitted by other replicas, are not yet shown to a replica deciding there.
    pub namespace_margin: u32,
    /// Whether every caller is known to be the kube-apiserver (`serve --client-ca`: the TLS
    /// handshake verified its client certificate). Only then may an admission the watch has
    /// not confirmed yet hold room against namespace limits (SPEC §5, "Untrusted callers").
    pub verified_callers: bool,
    /// How long after its driver was created the room granted to a cluster-mode submission's
    /// minimum executors is held (SPEC §5b gang admission).
    pub gang_expiry: Duration,
    /// Pods per page of the pod watch's initial LIST (see [`super::watch::PAGE_SIZE`]).
    pub watch_page_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(30),
            confirm_margin: 10,
            confirm_timeout: Duration::from_secs(2),
            namespace_margin: 20,
            verified_callers: false,
            gang_expiry: Duration::from_secs(300),
            watch_page_size: super::watch::PAGE_SIZE,
        }
    }
}

/// What a consistent read of the application's pods gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// Far from every per-application limit: the replica's own view decided.
    NotNeeded,
    /// The application's pods were listed and merged with the replica's view.
    Listed,
    /// The LIST failed; the replica's own view decided.
    Failed(String),
}

/// The quota decision for one pod.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Every limit the pod would take over; empty when admitted.
    pub violations: Vec<Violation>,
    /// Whether a consistent LIST was part of it.
    pub confirmation: Confirmation,
    /// Whether the admissions in flight near a namespace limit were.
    pub room: Room,
}

/// What the admissions every replica has in flight near a namespace limit did for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    /// Far from every namespace limit, or callers not verified: not read.
    NotNeeded,
    /// Decided on them, admitted, and written into them after `conflicts` conflicts.
    Held {
        /// Writes that found another decision stored first.
        conflicts: u32,
    },
    /// Decided on them and refused, or a dry run: nothing written.
    Read,
    /// They could not be read or written in time: this replica's own view decided.
    Fallback(String),
}

impl Decision {
    /// Whether the pod is admitted.
    pub fn admitted(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The live pods of one application, from a consistent LIST.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// The list's `metadata.resourceVersion` as a number.
    pub resource_version: Option<u64>,
    /// Live pods by name.
    pub pods: Vec<(String, Entry)>,
}

/// At most this many confirming LISTs are in flight at once: any client can send reviews that
/// ask for one (an application near its limit), and each is a quorum read of etcd. Past it, a
/// LIST waits for a turn within the confirm timeout, then the replica's own view decides.
pub const MAX_CONCURRENT_LISTS: usize = 8;

/// Most writes one decision makes of a namespace's admissions in flight (a deleted record let go
/// counts as one): each conflict means
/// another replica's decision was stored first, and this replica's own decisions there take
/// turns, so a few replicas contend at most this many times.
pub const MAX_ROOM_ATTEMPTS: u32 = 16;

/// The ledger, whether it is in step with the cluster, and how to confirm.
pub struct Tracker {
    ledger: Mutex<Ledger>,
    synced: AtomicBool,
    in_step: AtomicBool,
    client: OnceLock<kube::Client>,
    lists: tokio::sync::Semaphore,
    rooms: OnceLock<LeaseRecords>,
    // One decision at a time per namespace on this replica takes part in its admissions in
    // flight: the others wait their turn here rather than conflict in the apiserver.
    room_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    options: Options,
}

impl Tracker {
    /// An empty, unsynced tracker.
    pub fn new(options: Options) -> Self {
        Self {
            ledger: Mutex::new(Ledger::new()),
            synced: AtomicBool::new(false),
            in_step: AtomicBool::new(false),
            client: OnceLock::new(),
            lists: tokio::sync::Semaphore::new(MAX_CONCURRENT_LISTS),
            rooms: OnceLock::new(),
            room_turns: Mutex::new(HashMap::new()),
            options,
        }
    }

    /// A tracker over a fixed set of pods (`spark-admission mutate --pods`, `usage`): synced,
    /// never confirmed.
    pub fn offline(ledger: Ledger) -> Self {
        let tracker = Self::new(Options::default());
        *tracker.lock() = ledger;
        tracker.synced.store(true, Ordering::Release);
        tracker.in_step.store(true, Ordering::Release);
        tracker
    }

    /// The options it decides with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Gives the tracker a client for confirming LISTs (set once, by the server).
    pub fn set_client(&self, client: kube::Client) {
        let _ = self.client.set(client);
    }

    /// Gives the tracker a client and the webhook's own namespace, where the admissions in
    /// flight near namespace limits are kept (set once, by the server). Without it (or without
    /// verified callers) namespace limits count what this replica sees.
    pub fn set_home(&self, client: kube::Client, home: String) {
        let _ = self.rooms.set(
            LeaseRecords::new(client, home, room::LEASE_PREFIX, room::ANNOTATION)
                .with_finalizer(room::FINALIZER),
        );
    }

    /// Runs `f` on the ledger under its lock.
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Nothing panics while holding the lock; should it, the totals are still whole numbers
        // and the next relist rebuilds them.
        match self.ledger.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether the watch has listed every Spark pod at least once since it (re)started.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether the ledger follows the watch's events as they come (false after a watch error
    /// until its next event, and through a listing): if not, per-application decisions are
    /// confirmed with a LIST.
    pub fn is_in_step(&self) -> bool {
        self.in_step.load(Ordering::Acquire)
    }

    /// The live pods are exactly `pods` and the tracker is synced: a whole listing at once
    /// (the watch reports its pages as they come instead, [`Tracker::listing_started`]).
    pub fn synced_with(&self, pods: impl IntoIterator<Item = (PodKey, TrackedPod)>) {
        self.lock().replace_all(pods);
        self.in_step.store(true, Ordering::Release);
        self.synced.store(true, Ordering::Release);
    }

    /// The watch starts listing every Spark pod ([`Ledger::begin_listing`]): the pods it lists
    /// are applied as they come ([`Tracker::listed`]). A tracker that was synced stays synced
    /// and decides meanwhile on the ledger as it is (each pod in its last known state, none
    /// left out), and confirms per-application decisions with a LIST, as when behind. One
    /// that was not synced stays unsynced, so no policy with quotas goes into force on a
    /// half-listed cluster.
    pub fn listing_started(&self) {
        self.lock().begin_listing();
        self.in_step.store(false, Ordering::Release);
    }

    /// The listing in progress shows `key` live.
    pub fn listed(&self, key: PodKey, pod: TrackedPod) {
        self.lock().apply(key, pod);
    }

    /// The listing in progress is complete: the pods it did not show are dropped, and the
    /// tracker is synced and in step. Returns how many were dropped.
    pub fn listing_complete(&self) -> usize {
        let gone = self.lock().end_listing();
        self.in_step.store(true, Ordering::Release);
        self.synced.store(true, Ordering::Release);
        gone
    }

    /// The watch showed `key` live.
    pub fn apply(&self, key: PodKey, pod: TrackedPod) {
        self.lock().apply(key, pod);
        self.in_step.store(true, Ordering::Release);
    }

    /// The watch showed `key` gone.
    pub fn remove(&self, key: &PodKey) {
        self.lock().remove(key);
        self.in_step.store(true, Ordering::Release);
    }

    /// The watch failed and may have missed events until it shows the next one: until then,
    /// every per-application decision is confirmed with a LIST.
    pub fn fell_behind(&self) {
        self.in_step.store(false, Ordering::Release);
    }

    /// The policy no longer has quotas: forget everything.
    pub fn reset(&self) {
        self.synced.store(false, Ordering::Release);
        self.in_step.store(false, Ordering::Release);
        self.lock().clear();
    }

    /// Decides `claim` against the `quotas` of the policy in force (the claim holds the indices
    /// of those that match) and, when admitted and not a dry run, reserves the pod.
    pub async fn admit(&self, quotas: &[Quota], claim: &Claim, dry_run: bool) -> Decision {
        let matching: Vec<&Quota> = claim.quotas.iter().filter_map(|&i| quotas.get(i)).collect();
        let (confirm_with, coordinate) = {
            let mut ledger = self.lock();
            let usage = self.usage_now(&mut ledger, claim);
            let confirm_with = self.confirmation_needed(&matching, claim, &usage);
            let coordinate = self.room_needed(&matching, claim, &usage);
            if confirm_with.is_none() && coordinate.is_none() {
                return self.decide(
                    &mut ledger,
                    &matching,
                    claim,
                    usage,
                    dry_run,
                    Confirmation::NotNeeded,
                    Room::NotNeeded,
                );
            }
            (confirm_with, coordinate)
        };
        let listed = match confirm_with {
            Some((client, app)) => {
                let listed = self.list(client, &claim.key.namespace, &app).await;
                Some((app, listed))
            }
            None => None,
        };
        if let Some(records) = coordinate {
            return self
                .admit_in_room(records, &matching, claim, dry_run, listed.as_ref())
                .await;
        }
        let mut ledger = self.lock();
        let (usage, confirmation) = self.confirmed_usage(&mut ledger, claim, listed.as_ref());
        self.decide(
            &mut ledger,
            &matching,
            claim,
            usage,
            dry_run,
            confirmation,
            Room::NotNeeded,
        )
    }

    /// The decision near a namespace limit, with callers verified: made on this replica's view
    /// plus the admissions in flight in the namespace's Lease that it does not hold, and, when
    /// admitted, written there at the version it read before it is answered. A conflict (another
    /// decision stored first) reads the record again and decides again. Within
    /// `--quota-confirm-timeout` and [`MAX_ROOM_ATTEMPTS`] writes; past them, or when the
    /// record cannot be read or written, this replica's own view decides
    /// ([`Room::Fallback`]).
    async fn admit_in_room(
        &self,
        records: &LeaseRecords,
        quotas: &[&Quota],
        claim: &Claim,
        dry_run: bool,
        listed: Option<&(String, Result<Listed, Error>)>,
    ) -> Decision {
        let namespace = claim.key.namespace.as_str();
        let deadline = Instant::now() + self.options.confirm_timeout;
        let turn = self.room_turn(namespace);
        let decided = async {
            let _turn = tokio::time::timeout_at(deadline.into(), turn.lock())
                .await
                .map_err(|_| {
                    format!("this replica's earlier decisions in namespace {namespace} took longer than {:?}", self.options.confirm_timeout)
                })?;
            let mut stored: Stored<Admissions> = records
                .read(namespace, deadline)
                .await
                .map_err(|error| error.to_string())?;
            let mut conflicts = 0;
            for _ in 0..MAX_ROOM_ATTEMPTS {
                let now = unix_now();
                let admissions = room::live(std::mem::take(&mut stored.value), now);
                // A deleted record is let go once nothing in it counts; then written afresh.
                if let (true, true, Some(version)) =
                    (stored.terminating, admissions.is_empty(), stored.version.as_deref())
                {
                    let released = records
                        .release(namespace, version, &admissions, deadline)
                        .await
                        .map_err(|error| error.to_string())?;
                    stored = match released {
                        Written::Stored => Stored::default(),
                        Written::Conflict => records
                            .read(namespace, deadline)
                            .await
                            .map_err(|error| error.to_string())?,
                    };
                    continue;
                }
                let confirmation = {
                    let mut ledger = self.lock();
                    let (mut usage, confirmation) = self.confirmed_usage(&mut ledger, claim, listed);
                    let mut key = PodKey {
                        namespace: namespace.to_owned(),
                        name: String::new(),
                    };
                    room::add_unseen(
                        &mut usage,
                        &admissions,
                        &claim.key.name,
                        claim.entry.app.as_deref(),
                        |name| {
                            name.clone_into(&mut key.name);
                            ledger.holds(&key)
                        },
                        |app| ledger.has_application(namespace, app),
                    );
                    let violations: Vec<Violation> =
                        quotas.iter().flat_map(|q| check(q, claim, &usage)).collect();
                    if !violations.is_empty() || dry_run {
                        return Ok(Decision {
                            violations,
                            confirmation,
                            room: Room::Read,
                        });
                    }
                    confirmation
                };
                let write = room::hold(admissions, &claim.key.name, &claim.entry, now)
                    .ok_or_else(|| {
                        format!(
                            "namespace {namespace} has {} admissions in flight already",
                            room::MAX_ADMISSIONS
                        )
                    })?;
                let written = records
                    .write(namespace, stored.version.as_deref(), &write, deadline)
                    .await
                    .map_err(|error| error.to_string())?;
                match written {
                    Written::Stored => {
                        self.reserve_admitted(&mut self.lock(), claim, false);
                        return Ok(Decision {
                            violations: Vec::new(),
                            confirmation,
                            room: Room::Held { conflicts },
                        });
                    }
                    Written::Conflict => {
                        conflicts += 1;
                        stored = records
                            .read(namespace, deadline)
                            .await
                            .map_err(|error| error.to_string())?;
                    }
                }
            }
            Err(format!(
                "{MAX_ROOM_ATTEMPTS} writes of namespace {namespace}'s admissions in flight found another decision stored first"
            ))
        }
        .await;
        decided.unwrap_or_else(|why| {
            let mut ledger = self.lock();
            let (usage, confirmation) = self.confirmed_usage(&mut ledger, claim, listed);
            self.decide(
                &mut ledger,
                quotas,
                claim,
                usage,
                dry_run,
                confirmation,
                Room::Fallback(why),
            )
        })
    }

    /// The turn of decisions in `namespace`'s admissions in flight on this replica.
    fn room_turn(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = match self.room_turns.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Only namespaces with a decision waiting or deciding stay.
        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        turns.entry(namespace.to_owned()).or_default().clone()
    }

    /// This replica's totals for `claim`, with the application's from a consistent LIST
    /// (`listed`) merged in when there was one.
    fn confirmed_usage(
        &self,
        ledger: &mut Ledger,
        claim: &Claim,
        listed: Option<&(String, Result<Listed, Error>)>,
    ) -> (Usage, Confirmation) {
        let mut usage = self.usage_now(ledger, claim);
        let confirmation = match listed {
            None => Confirmation::NotNeeded,
            Some((app, Ok(listed))) => {
                let members = ledger.app_members(&claim.key.namespace, app);
                usage.app = Some(merge(
                    listed,
                    &members,
                    claim.own(),
                    self.options.verified_callers,
                ));
                Confirmation::Listed
            }
            Some((_, Err(error))) => Confirmation::Failed(error.to_string()),
        };
        (usage, confirmation)
    }

    /// The same decision without I/O: this replica's view only (`mutate --pods`, tests).
    pub fn admit_locally(&self, quotas: &[Quota], claim: &Claim, dry_run: bool) -> Decision {
        let matching: Vec<&Quota> = claim.quotas.iter().filter_map(|&i| quotas.get(i)).collect();
        let mut ledger = self.lock();
        let usage = self.usage_now(&mut ledger, claim);
        self.decide(
            &mut ledger,
            &matching,
            claim,
            usage,
            dry_run,
            Confirmation::NotNeeded,
            Room::NotNeeded,
        )
    }

    /// One application's totals and name (from its pods' `spark-app-name`): from a consistent
    /// LIST merged with this replica's view when a client is set, else from the ledger. For
    /// fitting a new application's executor counts to its quotas, where the driver pod was
    /// created a moment ago, perhaps through another replica.
    pub async fn application(
        &self,
        namespace: &str,
        app: &str,
    ) -> (AppTotals, Option<String>, Confirmation) {
        let mut confirmation = Confirmation::NotNeeded;
        if let Some(client) = self.client.get()
            && check_label_value(app).is_ok()
        {
            match self.list(client, namespace, app).await {
                Ok(listed) => {
                    let ledger = self.lock();
                    let members = ledger.app_members(namespace, app);
                    // No pod is being decided: an empty name matches none.
                    let nobody = PodKey {
                        namespace: namespace.to_owned(),
                        name: String::new(),
                    };
                    let totals = merge(
                        &listed,
                        &members,
                        Own::Created(&nobody),
                        self.options.verified_callers,
                    );
                    let name = listed
                        .pods
                        .iter()
                        .find_map(|(_, entry)| entry.app_name.clone())
                        .or_else(|| app_name(&ledger, namespace, app));
                    return (totals, name, Confirmation::Listed);
                }
                Err(error) => confirmation = Confirmation::Failed(error.to_string()),
            }
        }
        let mut ledger = self.lock();
        ledger.expire(Instant::now());
        let nobody = PodKey {
            namespace: namespace.to_owned(),
            name: String::new(),
        };
        let totals = ledger
            .usage(
                Some(app),
                Own::Created(&nobody),
                self.options.verified_callers,
            )
            .app
            .unwrap_or_default();
        (totals, app_name(&ledger, namespace, app), confirmation)
    }

    /// [`list_application`] within `--quota-confirm-timeout`, waiting for its turn among the
    /// [`MAX_CONCURRENT_LISTS`] within that time too.
    async fn list(
        &self,
        client: &kube::Client,
        namespace: &str,
        app: &str,
    ) -> Result<Listed, Error> {
        let timeout = self.options.confirm_timeout;
        let turn_and_list = async {
            // The semaphore is never closed; a closed one would only skip the wait.
            let _turn = self.lists.acquire().await.ok();
            list_application(client, namespace, app).await
        };
        tokio::time::timeout(timeout, turn_and_list)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    namespace: namespace.to_owned(),
                    app: app.to_owned(),
                    timeout,
                })
            })
    }

    fn usage_now(&self, ledger: &mut Ledger, claim: &Claim) -> Usage {
        ledger.expire(Instant::now());
        ledger.usage(
            claim.entry.app.as_deref(),
            claim.own(),
            self.options.verified_callers,
        )
    }

    /// The client and application to LIST, when the decision must be confirmed.
    fn confirmation_needed(
        &self,
        quotas: &[&Quota],
        claim: &Claim,
        usage: &Usage,
    ) -> Option<(&kube::Client, String)> {
        let client = self.client.get()?;
        // The label value goes into a label selector: an invalid one (the apiserver validates
        // labels only after admission) could change the selector's meaning.
        let app = claim
            .entry
            .app
            .as_ref()
            .filter(|a| check_label_value(a).is_ok())?;
        let has_app_limits = quotas.iter().any(|q| q.per_application.is_some());
        let near = quotas
            .iter()
            .any(|q| near_application_limit(q, claim, usage, self.options.confirm_margin));
        let lagging = !self.in_step.load(Ordering::Acquire);
        (has_app_limits && (near || lagging)).then(|| (client, app.clone()))
    }

    /// The records of `namespace`'s admissions in flight, when the decision must be made on
    /// them: callers verified, a pod being created that the apiserver could store, and the
    /// namespace near one of its limits.
    fn room_needed(
        &self,
        quotas: &[&Quota],
        claim: &Claim,
        usage: &Usage,
    ) -> Option<&LeaseRecords> {
        if !self.options.verified_callers || claim.kind != ClaimKind::Create || !claim.storable {
            return None;
        }
        let records = self.rooms.get()?;
        quotas
            .iter()
            .any(|q| near_namespace_limit(q, claim, usage, self.options.namespace_margin))
            .then_some(records)
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        ledger: &mut Ledger,
        quotas: &[&Quota],
        claim: &Claim,
        usage: Usage,
        dry_run: bool,
        confirmation: Confirmation,
        room: Room,
    ) -> Decision {
        let violations: Vec<Violation> = quotas
            .iter()
            .flat_map(|q| check(q, claim, &usage))
            .collect();
        if violations.is_empty() {
            self.reserve_admitted(ledger, claim, dry_run);
        }
        Decision {
            violations,
            confirmation,
            room,
        }
    }

    /// Reserves an admitted pod being created, unless a dry run or not storable.
    fn reserve_admitted(&self, ledger: &mut Ledger, claim: &Claim, dry_run: bool) {
        if !dry_run && claim.kind == ClaimKind::Create && claim.storable {
            ledger.reserve(
                &claim.key,
                &claim.entry,
                Instant::now() + self.options.reservation_ttl,
            );
        }
    }
}

fn app_name(ledger: &Ledger, namespace: &str, app: &str) -> Option<String> {
    ledger
        .namespaces()
        .get(namespace)?
        .apps
        .get(app)?
        .name
        .clone()
}

/// The application's totals from a consistent LIST merged with this replica's view, leaving
/// out the pod being decided (`own`):
/// - every listed pod counts: a stored pod with the name of a pod being created is another
///   pod (that creation will fail with AlreadyExists), and only a resized pod is itself listed;
/// - a pod the watch shows and the LIST does not counts only if the watch saw it after the
///   LIST was taken (created since); otherwise it was deleted before the LIST;
/// - a pod this replica admitted and neither shows counts (it is still in flight); it makes
///   the application present in its namespace only when `reservations_make_present` (callers
///   verified: see [`Ledger::usage`]).
pub fn merge(
    listed: &Listed,
    members: &[Member<'_>],
    own: Own<'_>,
    reservations_make_present: bool,
) -> AppTotals {
    let own_name = own.key().name.as_str();
    let is_own = |name: &str| matches!(own, Own::Resized(_)) && name == own_name;
    let mut totals = AppTotals::default();
    let mut count = |entry: &Entry, present: bool| {
        totals.present |= present;
        totals.charge = totals.charge.plus(entry.charge);
        if entry.role == crate::policy::Role::Executor {
            totals.executors += 1;
        }
    };
    let mut seen = HashSet::new();
    for (name, entry) in &listed.pods {
        if !is_own(name) && seen.insert(name.as_str()) {
            count(entry, true);
        }
    }
    for member in members {
        if let Member::Tracked(name, entry, version) = member
            && !is_own(name)
            && !seen.contains(name)
        {
            let newer = match (*version, listed.resource_version) {
                (Some(seen_at), Some(listed_at)) => seen_at > listed_at,
                // Versions that are not numbers cannot be ordered: count it, to be safe.
                _ => true,
            };
            if newer {
                seen.insert(*name);
                count(entry, true);
            }
        }
    }
    for member in members {
        if let Member::Reserved(name, entry) = *member
            && name != own_name
            && !seen.contains(name)
        {
            count(entry, reservations_make_present);
        }
    }
    totals
}

/// A consistent (quorum) LIST of one application's Spark pods.
async fn list_application(
    client: &kube::Client,
    namespace: &str,
    app: &str,
) -> Result<Listed, Error> {
    let api: Api<LeanPod> = Api::namespaced(client.clone(), namespace);
    // No resourceVersion: the apiserver reads from etcd, not from its cache.
    let params = ListParams::default().labels(&format!(
        "{SPARK_POD_SELECTOR},{}={app}",
        crate::engine::APP_ID_LABEL
    ));
    let list = api.list(&params).await.map_err(|source| Error::List {
        namespace: namespace.to_owned(),
        app: app.to_owned(),
        source,
    })?;
    let resource_version = list
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok());
    let pods = list
        .items
        .iter()
        .filter_map(|pod| tracked(pod).map(|(key, pod)| (key.name, pod.entry)))
        .collect();
    Ok(Listed {
        resource_version,
        pods,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::policy::{Policy, Role};
    use crate::quota::charge::Charge;

    fn entry(role: Role) -> Entry {
        Entry {
            app: Some("spark-1".to_owned()),
            app_name: None,
            role,
            charge: Charge { cpu: 1, memory: 1 },
        }
    }

    fn claim(name: &str) -> Claim {
        Claim {
            key: PodKey {
                namespace: "analytics".to_owned(),
                name: name.to_owned(),
            },
            entry: Entry {
                app: Some("spark-1".to_owned()),
                app_name: Some("nightly".to_owned()),
                role: Role::Executor,
                charge: Charge {
                    cpu: 1_000_000_000,
                    memory: 1 << 30,
                },
            },
            quotas: vec![0],
            kind: ClaimKind::Create,
            storable: true,
        }
    }

    #[test]
    fn one_hundred_concurrent_admissions_under_max_executors_50_admit_exactly_50() {
        let policy =
            Policy::parse("quotas: [{name: q, perApplication: {maxExecutors: 50}}]").unwrap();
        let tracker = Arc::new(Tracker::offline(Ledger::new()));
        let quotas = Arc::new(policy.quotas);
        let barrier = Arc::new(std::sync::Barrier::new(100));
        let threads: Vec<_> = (0..100)
            .map(|i| {
                let (tracker, quotas, barrier) = (tracker.clone(), quotas.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    tracker
                        .admit_locally(&quotas, &claim(&format!("exec-{i}")), false)
                        .admitted()
                })
            })
            .collect();
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&admitted| admitted)
            .count();
        assert_eq!(admitted, 50);
        assert_eq!(tracker.with_ledger(|l| l.reservations()), 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_hundred_concurrent_async_admissions_admit_exactly_50() {
        let policy =
            Policy::parse("quotas: [{name: q, perApplication: {maxExecutors: 50}}]").unwrap();
        let tracker = Arc::new(Tracker::new(Options::default()));
        tracker.synced_with([]);
        let quotas = Arc::new(policy.quotas);
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (tracker, quotas) = (tracker.clone(), quotas.clone());
                tokio::spawn(async move {
                    tracker
                        .admit(&quotas, &claim(&format!("exec-{i}")), false)
                        .await
                        .admitted()
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += usize::from(task.await.unwrap());
        }
        assert_eq!(admitted, 50);
    }

    #[test]
    fn a_dry_run_reserves_nothing_and_a_repeated_admission_counts_once() {
        let policy =
            Policy::parse("quotas: [{name: q, perApplication: {maxExecutors: 1}}]").unwrap();
        let tracker = Tracker::offline(Ledger::new());
        assert!(
            tracker
                .admit_locally(&policy.quotas, &claim("exec-1"), true)
                .admitted()
        );
        assert_eq!(tracker.with_ledger(|l| l.reservations()), 0);
        assert!(
            tracker
                .admit_locally(&policy.quotas, &claim("exec-1"), false)
                .admitted()
        );
        // The apiserver reinvokes the webhook for the same pod: same name, new request.
        assert!(
            tracker
                .admit_locally(&policy.quotas, &claim("exec-1"), false)
                .admitted(),
            "the pod is not counted against itself"
        );
        let refused = tracker.admit_locally(&policy.quotas, &claim("exec-2"), false);
        assert!(!refused.admitted());
        assert!(
            refused.violations[0]
                .message
                .contains("would have 2 executors, the limit is 1")
        );
    }

    /// How the stand-in apiserver answers a confirming LIST.
    #[derive(Clone, Copy)]
    enum ListAnswer {
        /// A PodList with this many live executors of `spark-1` (1 CPU each).
        Executors(usize),
        /// 500 Internal Server Error.
        Failure,
        /// Never.
        Never,
    }

    /// A stand-in for the apiserver that answers every LIST of pods as `answer` says and counts
    /// them in `lists`.
    fn apiserver(answer: ListAnswer, lists: Arc<std::sync::atomic::AtomicUsize>) -> kube::Client {
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let lists = lists.clone();
            async move {
                assert_eq!(request.uri().path(), "/api/v1/namespaces/analytics/pods");
                let query = request.uri().query().unwrap_or_default().to_owned();
                assert!(query.contains("spark-app-selector"), "{query}");
                lists.fetch_add(1, Ordering::SeqCst);
                let executors = match answer {
                    ListAnswer::Executors(n) => n,
                    ListAnswer::Failure => {
                        let mut response = axum::http::Response::new(
                            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcdserver: request timed out", "code": 500}).to_string(),
                        );
                        *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        return Ok::<_, std::convert::Infallible>(response);
                    }
                    ListAnswer::Never => futures::future::pending().await,
                };
                let items: Vec<serde_json::Value> = (0..executors)
                    .map(|i| {
                        serde_json::json!({
                            "metadata": {"name": format!("listed-{i}"), "namespace": "analytics", "resourceVersion": "50",
                                "labels": {"spark-role": "executor", "spark-app-selector": "spark-1"}},
                            "spec": {"containers": [{"name": "spark-kubernetes-executor", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
                            "status": {"phase": "Running"},
                        })
                    })
                    .collect();
                let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "100"}, "items": items});
                Ok(axum::http::Response::new(list.to_string()))
            }
        });
        kube::Client::new(service, "default")
    }

    fn tracker_listing(
        answer: ListAnswer,
        options: Options,
    ) -> (Tracker, Arc<std::sync::atomic::AtomicUsize>) {
        let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tracker = Tracker::new(options);
        tracker.set_client(apiserver(answer, lists.clone()));
        tracker.synced_with([]);
        (tracker, lists)
    }

    #[tokio::test]
    async fn a_watch_that_fell_behind_has_every_per_application_decision_confirmed_until_it_catches_up()
     {
        // Far from the limit: in step, the replica's view decides alone.
        let policy =
            Policy::parse("quotas: [{name: q, perApplication: {maxExecutors: 50}}]").unwrap();
        let (tracker, lists) = tracker_listing(ListAnswer::Executors(3), Options::default());
        let decision = tracker.admit(&policy.quotas, &claim("exec-1"), false).await;
        assert!(decision.admitted());
        assert_eq!(decision.confirmation, Confirmation::NotNeeded);
        assert_eq!(lists.load(Ordering::SeqCst), 0);
        // The watch failed: it may have missed pods, so even far from the limit a LIST decides.
        tracker.fell_behind();
        let decision = tracker.admit(&policy.quotas, &claim("exec-2"), false).await;
        assert!(decision.admitted());
        assert_eq!(decision.confirmation, Confirmation::Listed);
        assert_eq!(lists.load(Ordering::SeqCst), 1);
        // Its next event shows it in step again.
        let (key, pod) = (
            PodKey {
                namespace: "analytics".to_owned(),
                name: "exec-1".to_owned(),
            },
            TrackedPod {
                entry: claim("exec-1").entry,
                resource_version: Some(120),
            },
        );
        tracker.apply(key, pod);
        let decision = tracker.admit(&policy.quotas, &claim("exec-3"), false).await;
        assert_eq!(decision.confirmation, Confirmation::NotNeeded);
        assert_eq!(lists.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn near_the_limit_the_list_decides_and_a_failed_or_late_list_falls_back_on_the_replicas_view()
     {
        let policy =
            Policy::parse("quotas: [{name: q, perApplication: {maxExecutors: 2}}]").unwrap();
        // The LIST shows 2 executors this replica never saw (created through another one).
        let (tracker, lists) = tracker_listing(ListAnswer::Executors(2), Options::default());
        let decision = tracker.admit(&policy.quotas, &claim("exec-1"), false).await;
        assert_eq!(decision.confirmation, Confirmation::Listed);
        assert_eq!(lists.load(Ordering::SeqCst), 1);
        assert!(!decision.admitted());
        assert!(
            decision.violations[0]
                .message
                .contains("would have 3 executors, the limit is 2"),
            "{:?}",
            decision.violations
        );

        // A LIST the apiserver fails: the replica's view (no executors) decides, and says so.
        let (tracker, lists) = tracker_listing(ListAnswer::Failure, Options::default());
        let decision = tracker.admit(&policy.quotas, &claim("exec-1"), false).await;
        assert_eq!(lists.load(Ordering::SeqCst), 1);
        assert!(decision.admitted());
        match &decision.confirmation {
            Confirmation::Failed(error) => assert!(
                error.contains("application spark-1 in namespace analytics"),
                "{error}"
            ),
            other => panic!("expected a failed confirmation, got {other:?}"),
        }

        // A LIST that never ends: bounded by the confirm timeout, then the same fallback.
        let options = Options {
            confirm_timeout: std::time::Duration::from_millis(200),
            ..Options::default()
        };
        let (tracker, _) = tracker_listing(ListAnswer::Never, options);
        let started = std::time::Instant::now();
        let decision = tracker.admit(&policy.quotas, &claim("exec-1"), false).await;
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
        assert!(decision.admitted());
        match &decision.confirmation {
            Confirmation::Failed(error) => {
                assert!(error.contains("took longer than 200ms"), "{error}")
            }
            other => panic!("expected a timed-out confirmation, got {other:?}"),
        }
    }

    #[test]
    fn the_merge_counts_the_list_in_flight_pods_and_pods_created_after_the_list() {
        let (driver, executor) = (entry(Role::Driver), entry(Role::Executor));
        let listed = Listed {
            resource_version: Some(100),
            pods: vec![
                ("driver".to_owned(), driver.clone()),
                ("exec-1".to_owned(), executor.clone()),
            ],
        };
        let members = [
            // Also in the list: counted once.
            Member::Tracked("exec-1", executor.clone(), Some(90)),
            // Deleted before the list (the watch has not caught up): not counted.
            Member::Tracked("exec-deleted", executor.clone(), Some(95)),
            // Created after the list: counted.
            Member::Tracked("exec-new", executor.clone(), Some(105)),
            // Admitted here, not stored yet: counted.
            Member::Reserved("exec-in-flight", &executor),
            // Admitted here and stored: counted once.
            Member::Reserved("exec-1", &executor),
            // The pod being decided: never counted against itself.
            Member::Reserved("exec-own", &executor),
        ];
        let own = key("exec-own");
        let totals = merge(&listed, &members, Own::Created(&own), true);
        assert_eq!(totals.executors, 3, "exec-1, exec-new, exec-in-flight");
        assert_eq!(totals.charge.cpu, 4, "with the driver");
        assert!(totals.present);
        assert_eq!(
            merge(&Listed::default(), &[], Own::Created(&own), true),
            AppTotals::default()
        );
    }

    #[test]
    fn the_merge_counts_a_stored_pod_of_the_created_name_but_not_a_resized_pod_itself() {
        let executor = entry(Role::Executor);
        let listed = Listed {
            resource_version: Some(100),
            pods: vec![("exec-1".to_owned(), executor.clone())],
        };
        let members = [
            Member::Tracked("exec-1", executor.clone(), Some(90)),
            Member::Reserved("exec-1", &executor),
        ];
        let name = key("exec-1");
        // A CREATE reusing the stored pod's name: the stored pod counts, once.
        let created = merge(&listed, &members, Own::Created(&name), false);
        assert_eq!(created.executors, 1);
        // A resize of that pod: the pod itself is left out.
        let resized = merge(&listed, &members, Own::Resized(&name), false);
        assert_eq!(resized.executors, 0);
    }

    #[test]
    fn reservations_alone_make_an_application_present_only_for_verified_callers() {
        let executor = entry(Role::Executor);
        let members = [Member::Reserved("exec-1", &executor)];
        let own = key("exec-2");
        let unverified = merge(&Listed::default(), &members, Own::Created(&own), false);
        assert_eq!((unverified.executors, unverified.present), (1, false));
        let verified = merge(&Listed::default(), &members, Own::Created(&own), true);
        assert_eq!((verified.executors, verified.present), (1, true));
    }

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "analytics".to_owned(),
            name: name.to_owned(),
        }
    }

    mod room {
        //! Namespace limits across replicas, with callers verified: the admissions in flight
        //! near a limit, in a Lease kept by a stand-in apiserver as the real one keeps it.

        use std::sync::atomic::AtomicU64;

        use super::*;
        use crate::quota::lease::stand_in::{Leases, status};
        use crate::quota::room;

        /// The stand-in apiserver's Leases in namespace `home`, with every request counted and,
        /// when `hang`, never answered.
        struct Apiserver {
            leases: Leases,
            requests: AtomicU64,
            hang: AtomicBool,
        }

        fn apiserver() -> (Arc<Apiserver>, kube::Client) {
            let server = Arc::new(Apiserver {
                leases: Leases::default(),
                requests: AtomicU64::new(0),
                hang: AtomicBool::new(false),
            });
            let shared = server.clone();
            let service =
                tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
                    let server = shared.clone();
                    async move {
                        use http_body_util::BodyExt;
                        server.requests.fetch_add(1, Ordering::SeqCst);
                        if server.hang.load(Ordering::SeqCst) {
                            futures::future::pending::<()>().await;
                        }
                        let method = request.method().clone();
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        // A moment in the apiserver, so that decisions interleave.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        let response = server
                            .leases
                            .answer(method.as_str(), &path, &body)
                            .unwrap_or_else(|| status(404, "NotFound"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            (server, kube::Client::new(service, "default"))
        }

        fn replica(client: Option<&kube::Client>) -> Arc<Tracker> {
            let tracker = Tracker::new(Options {
                verified_callers: true,
                confirm_timeout: Duration::from_millis(300),
                ..Options::default()
            });
            tracker.synced_with([]);
            if let Some(client) = client {
                tracker.set_home(client.clone(), "home".to_owned());
            }
            Arc::new(tracker)
        }

        /// Executor `i` of an application of its own, with 2 CPUs.
        fn own_application(i: usize) -> Claim {
            let mut claim = claim(&format!("exec-{i}"));
            claim.entry.app = Some(format!("app-{i}"));
            claim.entry.charge = Charge {
                cpu: 2_000_000_000,
                memory: 1 << 30,
            };
            claim
        }

        /// Creations `range` decided all at once, through the replicas in turn; how many
        /// were admitted.
        async fn create(
            replicas: &[Arc<Tracker>],
            quotas: &Arc<Vec<Quota>>,
            range: std::ops::Range<usize>,
        ) -> usize {
            let tasks: Vec<_> = range
                .map(|i| {
                    let (tracker, quotas) = (replicas[i % replicas.len()].clone(), quotas.clone());
                    tokio::spawn(async move {
                        tracker
                            .admit(&quotas, &own_application(i), false)
                            .await
                            .admitted()
                    })
                })
                .collect();
            let mut admitted = 0;
            for task in tasks {
                admitted += usize::from(task.await.unwrap());
            }
            admitted
        }

        fn quotas(limits: &str) -> Arc<Vec<Quota>> {
            let policy =
                Policy::parse(&format!("quotas: [{{name: q, perNamespace: {limits}}}]")).unwrap();
            Arc::new(policy.quotas)
        }

        const LEASE: &str = "spark-admission-room-analytics";

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn forty_creations_of_forty_applications_through_two_replicas_into_room_for_twenty_admit_twenty()
         {
            for limits in ["{maxApplications: 20}", "{maxCpu: \"40\"}"] {
                let quotas = quotas(limits);
                let (server, client) = apiserver();
                let replicas = [replica(Some(&client)), replica(Some(&client))];
                let admitted = create(&replicas, &quotas, 0..40).await;
                assert_eq!(admitted, 20, "{limits}");
                let lease = server.leases.get(LEASE).unwrap();
                let record: Admissions = serde_json::from_str(
                    lease["metadata"]["annotations"][crate::quota::room::ANNOTATION]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(
                    record.len(),
                    20,
                    "{limits}: every admission is in the record"
                );
                // Without the record each replica counts only what it admitted itself.
                let alone = [replica(None), replica(None)];
                assert_eq!(create(&alone, &quotas, 0..40).await, 40, "{limits}");
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn a_record_deleted_mid_run_stays_in_force_until_nothing_in_it_counts() {
            let quotas = quotas("{maxApplications: 20}");
            let (server, client) = apiserver();
            let replicas = [replica(Some(&client)), replica(Some(&client))];
            assert_eq!(create(&replicas, &quotas, 0..10).await, 10);
            // Deleted while its 10 admissions are in flight (no watch has shown their pods):
            // its finalizer keeps it, and its record still counts.
            server.leases.delete(LEASE);
            assert_eq!(create(&replicas, &quotas, 10..40).await, 10, "20 in all");
            let lease = server.leases.get(LEASE).unwrap();
            assert!(!lease["metadata"]["deletionTimestamp"].is_null());
            assert_eq!(lease["metadata"]["finalizers"][0], room::FINALIZER);

            // Once nothing in it counts (every admission 30 s old), the next decision lets it
            // go and writes a new one.
            let old = serde_json::json!({"p": {"app": "app-x", "cpu": 0, "memory": 0, "at": 0}});
            let (server, client) = apiserver();
            server.leases.stored.lock().unwrap().insert(
                LEASE.to_owned(),
                (
                    7,
                    serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": LEASE, "namespace": "home", "resourceVersion": "7",
                            "deletionTimestamp": "2026-12-07T00:00:00Z",
                            "finalizers": [room::FINALIZER],
                            "annotations": {room::ANNOTATION: old.to_string()}}}),
                ),
            );
            let decision = replica(Some(&client))
                .admit(&quotas, &own_application(0), false)
                .await;
            assert_eq!(decision.room, Room::Held { conflicts: 0 });
            let lease = server.leases.get(LEASE).unwrap();
            assert!(
                lease["metadata"]["deletionTimestamp"].is_null(),
                "a new Lease"
            );
            let record: Admissions = serde_json::from_str(
                lease["metadata"]["annotations"][room::ANNOTATION]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(record.keys().collect::<Vec<_>>(), ["exec-0"]);
        }

        #[tokio::test]
        async fn far_from_the_limit_no_request_is_made_and_a_hung_apiserver_costs_the_timeout() {
            let (server, client) = apiserver();
            let tracker = replica(Some(&client));
            // 1 application and 2 CPUs of 1000: 20 more like it are far from either limit.
            let far = quotas("{maxApplications: 1000, maxCpu: \"1000\"}");
            let decision = tracker.admit(&far, &own_application(0), false).await;
            assert!(decision.admitted());
            assert_eq!(decision.room, Room::NotNeeded);
            assert_eq!(server.requests.load(Ordering::SeqCst), 0);

            let near = quotas("{maxApplications: 3}");
            server.hang.store(true, Ordering::SeqCst);
            let started = Instant::now();
            let decision = tracker.admit(&near, &own_application(1), false).await;
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "bounded by --quota-confirm-timeout (300 ms here)"
            );
            assert!(
                matches!(&decision.room, Room::Fallback(why) if why.contains("took longer")),
                "{:?}",
                decision.room
            );
            assert!(
                decision.admitted(),
                "this replica's view has room: {decision:?}"
            );
        }

        #[tokio::test]
        async fn a_dry_run_or_a_refusal_writes_nothing_and_unverified_callers_never_read() {
            let (server, client) = apiserver();
            let quotas = quotas("{maxApplications: 1}");
            let tracker = replica(Some(&client));
            let decision = tracker.admit(&quotas, &own_application(0), true).await;
            assert!(decision.admitted());
            assert_eq!(decision.room, Room::Read);
            assert!(
                server.leases.get(LEASE).is_none(),
                "a dry run holds nothing"
            );
            let held = tracker.admit(&quotas, &own_application(1), false).await;
            assert_eq!(held.room, Room::Held { conflicts: 0 });
            let refused = tracker.admit(&quotas, &own_application(2), false).await;
            assert!(!refused.admitted());
            assert_eq!(refused.room, Room::Read);
            assert_eq!(server.leases.writes.load(Ordering::SeqCst), 1);

            let unverified = Tracker::new(Options::default());
            unverified.synced_with([]);
            unverified.set_home(client.clone(), "home".to_owned());
            let requests = server.requests.load(Ordering::SeqCst);
            let decision = unverified.admit(&quotas, &own_application(3), false).await;
            assert_eq!(decision.room, Room::NotNeeded);
            assert_eq!(server.requests.load(Ordering::SeqCst), requests);
        }
    }
}
