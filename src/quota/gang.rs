//! Gang admission of cluster-mode applications (SPEC §5b): a submission is admitted only when,
//! after its driver, its namespace's limits leave room for its minimum executors, counting the
//! room already held for other submissions whose executors have not all appeared. Pure: the
//! namespace's pods, the other submissions' records and the namespace's reservations come from
//! a consistent read (`crate::gang`).
//!
//! Concurrent submissions are made exact by compare-and-swap, as ResourceQuota is: the room
//! held for each admitted submission is written, before its answer, into one object per
//! namespace ([`Reservations`]) with the version it was decided on as a precondition. Of two
//! decisions made on the same version only one write succeeds; the other reads the
//! reservations again and is decided again, counting the first. A submission whose
//! ConfigMap is not stored yet and that holds no reservation is being decided (or was refused,
//! and spark-submit deletes its driver): it is left out, since its own decision will count
//! every reservation written before its own. So of 4 concurrent submissions with room for 2,
//! exactly 2 are admitted, on any replica, whatever order their reviews arrive in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::policy::{Quota, Role};

use super::Charge;

/// The annotation that records, on an admitted driver ConfigMap, the executors its room was
/// granted for.
pub const RESERVATION_ANNOTATION: &str = "spark-admission.io/gang-reservation";
/// How long after its driver a submission's ConfigMap may still be on its way (spark-submit
/// sends it within a second of the driver); a driver older than this without a stored
/// ConfigMap or a reservation was not made by a live spark-submit and counts as a pod only,
/// and a reservation whose driver is gone this long after it was written is dropped.
pub const SETTLING: Duration = Duration::from_secs(10);
/// Most reservations one namespace holds at once; past it a submission is refused (each is
/// about 150 bytes of the object's 256 KiB of annotations).
pub const MAX_RESERVATIONS: usize = 1000;

/// One live Spark pod of the namespace, as the read saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPod {
    /// `metadata.uid`.
    pub uid: String,
    /// `spark-app-selector`.
    pub app: Option<String>,
    /// Driver or executor.
    pub role: Role,
    /// CPU and memory.
    pub charge: Charge,
    /// `metadata.creationTimestamp`, in seconds since the epoch.
    pub created: i64,
}

/// What an admitted submission's record says it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Its minimum executors.
    pub executors: u32,
    /// One executor's charge.
    pub charge: Charge,
}

impl Granted {
    /// The record written into the annotation.
    pub fn record(&self) -> String {
        // Exact, so that it reads back as it was granted: CPU in thousandths (what pods are
        // charged in), memory in bytes (rounded up, as charges are).
        format!(
            "executors={} cpu={}m memory={}",
            self.executors,
            milli(self.charge.cpu),
            units(self.charge.memory)
        )
    }

    /// Reads a record written by [`Granted::record`]; `None` for anything else.
    pub fn parse(record: &str) -> Option<Self> {
        let mut executors = None;
        let mut cpu = None;
        let mut memory = None;
        for part in record.split_whitespace() {
            let (key, value) = part.split_once('=')?;
            match key {
                "executors" => executors = value.parse().ok(),
                "cpu" => {
                    cpu = crate::policy::Quantity::parse(value)
                        .ok()
                        .map(|q| q.nanos())
                }
                "memory" => {
                    memory = crate::policy::Quantity::parse(value)
                        .ok()
                        .map(|q| q.nanos())
                }
                _ => return None,
            }
        }
        Some(Self {
            executors: executors?,
            charge: Charge {
                cpu: cpu?,
                memory: memory?,
            },
        })
    }
}

/// Where a driver's submission stands, from its stored ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Admitted with room granted for its executors (the ConfigMap's record).
    Granted(Granted),
    /// Admitted with nothing granted (no gang check applied), not a cluster-mode driver, or
    /// not read: it counts as a pod.
    Nothing,
    /// Its ConfigMap has not been stored yet, within [`SETTLING`] of its driver: being
    /// decided, or refused and about to go.
    Pending,
}

/// The room held for one admitted submission until its executors appear, as written in its
/// namespace's reservations. Amounts are in what pods are charged in, rounded up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// `spark-app-selector` of the application: its executors, as they appear, release it.
    pub app: String,
    /// Its minimum executors.
    pub executors: u32,
    /// One executor's CPU, in thousandths.
    pub executor_milli_cpu: u64,
    /// One executor's memory, in bytes.
    pub executor_memory: u64,
    /// Its driver's CPU, in thousandths (counted while a read does not list the driver yet).
    pub driver_milli_cpu: u64,
    /// Its driver's memory, in bytes.
    pub driver_memory: u64,
    /// When it was written, in seconds since the epoch.
    pub at: i64,
}

const NANOS: i128 = 1_000_000_000;

/// Thousandths of a charge in nano-units, rounded up.
fn milli(nanos: i128) -> u64 {
    u64::try_from((nanos + 999_999).div_euclid(1_000_000)).unwrap_or(0)
}

/// Whole units of a charge in nano-units, rounded up.
fn units(nanos: i128) -> u64 {
    u64::try_from((nanos + NANOS - 1).div_euclid(NANOS)).unwrap_or(0)
}

impl Reservation {
    /// The reservation of an application's `granted` executors, with its driver's charge, at
    /// `at`.
    pub fn new(app: &str, granted: &Granted, driver: Charge, at: i64) -> Self {
        Self {
            app: app.to_owned(),
            executors: granted.executors,
            executor_milli_cpu: milli(granted.charge.cpu),
            executor_memory: units(granted.charge.memory),
            driver_milli_cpu: milli(driver.cpu),
            driver_memory: units(driver.memory),
            at,
        }
    }

    /// One executor's charge.
    pub fn executor(&self) -> Charge {
        Charge {
            cpu: i128::from(self.executor_milli_cpu) * 1_000_000,
            memory: i128::from(self.executor_memory) * NANOS,
        }
    }

    /// The driver's charge.
    pub fn driver(&self) -> Charge {
        Charge {
            cpu: i128::from(self.driver_milli_cpu) * 1_000_000,
            memory: i128::from(self.driver_memory) * NANOS,
        }
    }
}

/// A namespace's reservations as one read saw them, by driver uid, with the version of the
/// object that holds them (`None`: there is none yet). A write of them succeeds only if the
/// object is still at that version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    /// The holding object's `resourceVersion`.
    pub version: Option<String>,
    /// The reservations, by driver uid.
    pub held: BTreeMap<String, Reservation>,
}

impl Reservations {
    /// The reservations still holding room at `now`: without those older than `expiry` and
    /// those whose driver `listed` does not hold ([`SETTLING`] after they were written: the
    /// submission was refused later, or its driver deleted).
    pub fn live(mut self, listed: &HashSet<&str>, now: i64, expiry: Duration) -> Self {
        self.held.retain(|uid, held| {
            let age = now.saturating_sub(held.at);
            !expired(held.at, now, expiry)
                && (listed.contains(uid.as_str()) || age <= SETTLING.as_secs() as i64)
        });
        self
    }
}

/// The namespace as one decision reads it.
#[derive(Debug, Clone, Default)]
pub struct NamespaceView {
    /// Its live Spark pods.
    pub pods: Vec<ViewPod>,
    /// For drivers younger than the expiry: where their submission stands, by driver uid.
    pub drivers: HashMap<String, Decided>,
    /// The room held for admitted submissions, read after the pods and ConfigMaps.
    pub reservations: Reservations,
    /// When it was read, in seconds since the epoch.
    pub read_at: i64,
}

impl NamespaceView {
    fn executors_of(&self) -> HashMap<&str, u32> {
        let mut executors_of: HashMap<&str, u32> = HashMap::new();
        for pod in self.pods.iter().filter(|p| p.role == Role::Executor) {
            if let Some(app) = &pod.app {
                *executors_of.entry(app.as_str()).or_default() += 1;
            }
        }
        executors_of
    }
}

/// What one submission asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Its minimum executors.
    pub executors: u32,
    /// One executor's charge.
    pub charge: Charge,
}

/// A namespace limit that leaves too little room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The quota.
    pub quota: String,
    /// The limit, in words (`maxCpu 8`).
    pub limit: String,
    /// How many of the minimum executors fit.
    pub room: u64,
    /// How many other submissions still hold room for executors.
    pub holding: usize,
}

/// Checks `ask` of the submission whose driver has uid `own` against every namespace limit of
/// `quotas` (the quotas that match its executors). `None`: there is room.
pub fn check(view: &NamespaceView, own: &str, ask: &Ask, quotas: &[&Quota]) -> Option<Shortfall> {
    if ask.executors == 0 {
        return None;
    }
    let executors_of = view.executors_of();
    let owed = |app: Option<&str>, granted: u32| -> u32 {
        let seen = app.and_then(|app| executors_of.get(app)).copied();
        granted.saturating_sub(seen.unwrap_or(0))
    };
    let mut used = Charge::default();
    let mut holding = 0;
    let mut listed = HashSet::new();
    for pod in &view.pods {
        listed.insert(pod.uid.as_str());
        if pod.role == Role::Driver && pod.uid != own {
            if let Some(held) = view.reservations.held.get(&pod.uid) {
                let owed = owed(Some(&held.app), held.executors);
                if owed > 0 {
                    used = used.plus(held.executor().times(i128::from(owed)));
                    holding += 1;
                }
            } else {
                match view.drivers.get(&pod.uid) {
                    // Being decided: its decision counts this one's reservation.
                    Some(Decided::Pending) => continue,
                    // Admitted before its reservation was written, or once it was dropped.
                    Some(Decided::Granted(granted)) => {
                        let owed = owed(pod.app.as_deref(), granted.executors);
                        if owed > 0 {
                            used = used.plus(granted.charge.times(i128::from(owed)));
                            holding += 1;
                        }
                    }
                    Some(Decided::Nothing) | None => {}
                }
            }
        }
        used = used.plus(pod.charge);
    }
    // Reservations written after the pods were listed: their drivers too.
    for (uid, held) in &view.reservations.held {
        if uid != own && !listed.contains(uid.as_str()) {
            used = used
                .plus(held.driver())
                .plus(held.executor().times(i128::from(held.executors)));
            holding += 1;
        }
    }
    for quota in quotas {
        let Some(limits) = &quota.per_namespace else {
            continue;
        };
        let fits = |limit: i128, used: i128, each: i128| -> u64 {
            if each <= 0 {
                return u64::MAX;
            }
            u64::try_from((limit - used).max(0) / each).unwrap_or(u64::MAX)
        };
        let mut shortest: Option<(u64, String)> = None;
        if let Some(max) = &limits.max_cpu {
            let room = fits(max.nanos(), used.cpu, ask.charge.cpu);
            shortest = Some((room, format!("maxCpu {max}")));
        }
        if let Some(max) = &limits.max_memory {
            let room = fits(max.nanos(), used.memory, ask.charge.memory);
            if shortest.as_ref().is_none_or(|(r, _)| room < *r) {
                shortest = Some((room, format!("maxMemory {max}")));
            }
        }
        if let Some((room, limit)) = shortest
            && room < u64::from(ask.executors)
        {
            return Some(Shortfall {
                quota: quota.name.clone(),
                limit,
                room,
                holding,
            });
        }
    }
    None
}

/// The reservations to write for admitting the submission of driver `own` with `held`: those
/// of the view still owed executors, and its own (replacing one a retried review wrote), at
/// the view's version. `Err` with the number held when the namespace holds
/// [`MAX_RESERVATIONS`] already.
pub fn hold(view: &NamespaceView, own: &str, held: Reservation) -> Result<Reservations, usize> {
    let executors_of = view.executors_of();
    let listed: HashSet<&str> = view.pods.iter().map(|pod| pod.uid.as_str()).collect();
    let mut kept: BTreeMap<String, Reservation> = view
        .reservations
        .held
        .iter()
        .filter(|(uid, other)| {
            let seen = executors_of.get(other.app.as_str()).copied().unwrap_or(0);
            uid.as_str() != own && (seen < other.executors || !listed.contains(uid.as_str()))
        })
        .map(|(uid, other)| (uid.clone(), other.clone()))
        .collect();
    if kept.len() >= MAX_RESERVATIONS {
        return Err(kept.len());
    }
    kept.insert(own.to_owned(), held);
    Ok(Reservations {
        version: view.reservations.version.clone(),
        held: kept,
    })
}

/// Whether a driver created at `created` (seconds since the epoch) is older than `expiry` at
/// `now`: its grant no longer holds room.
pub fn expired(created: i64, now: i64, expiry: Duration) -> bool {
    now.saturating_sub(created) > i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    const CORE: i128 = 1_000_000_000;

    fn pod(uid: &str, app: &str, role: Role, cores: i128, created: i64) -> ViewPod {
        ViewPod {
            uid: uid.to_owned(),
            app: Some(app.to_owned()),
            role,
            charge: Charge {
                cpu: cores * CORE,
                memory: 0,
            },
            created,
        }
    }

    fn quotas(policy: &Policy) -> Vec<&Quota> {
        policy.quotas.iter().collect()
    }

    /// Room for 2 applications of a 1-core driver and 1 executor of 1 core: 4 cores.
    fn policy() -> Policy {
        Policy::parse("quotas: [{name: ns, perNamespace: {maxCpu: '4'}}]").unwrap()
    }

    const ASK: Ask = Ask {
        executors: 1,
        charge: Charge {
            cpu: CORE,
            memory: 0,
        },
    };

    const ONE_CORE: Charge = Charge {
        cpu: CORE,
        memory: 0,
    };

    fn granted(executors: u32) -> Granted {
        Granted {
            executors,
            charge: ASK.charge,
        }
    }

    fn four_drivers() -> Vec<ViewPod> {
        vec![
            pod("d-a", "app-a", Role::Driver, 1, 100),
            pod("d-b", "app-b", Role::Driver, 1, 100),
            pod("d-c", "app-c", Role::Driver, 1, 100),
            pod("d-d", "app-d", Role::Driver, 1, 100),
        ]
    }

    fn pending(uids: &[&str]) -> HashMap<String, Decided> {
        uids.iter()
            .map(|u| ((*u).to_owned(), Decided::Pending))
            .collect()
    }

    #[test]
    fn of_four_concurrent_submissions_with_room_for_two_the_first_two_reserved_are_admitted() {
        let policy = policy();
        let quotas = quotas(&policy);
        // Nothing stored or reserved: the others are being decided and left out (1 + 1).
        let mut view = NamespaceView {
            pods: four_drivers(),
            drivers: pending(&["d-a", "d-b", "d-c", "d-d"]),
            reservations: Reservations::default(),
            read_at: 100,
        };
        assert_eq!(check(&view, "d-c", &ASK, &quotas), None);
        // Whichever writes first (c here) is counted by the next: 1 + 1 + 1 + 1 = 4.
        view.reservations = hold(
            &view,
            "d-c",
            Reservation::new("app-c", &granted(1), ONE_CORE, 100),
        )
        .unwrap();
        view.reservations.version = Some("1".into());
        assert_eq!(check(&view, "d-a", &ASK, &quotas), None);
        view.reservations = hold(
            &view,
            "d-a",
            Reservation::new("app-a", &granted(1), ONE_CORE, 100),
        )
        .unwrap();
        assert_eq!(view.reservations.held.len(), 2);
        // The third and fourth: both with their executors owed, its own driver and executor: 5.
        for own in ["d-b", "d-d"] {
            assert_eq!(
                check(&view, own, &ASK, &quotas),
                Some(Shortfall {
                    quota: "ns".into(),
                    limit: "maxCpu 4".into(),
                    room: 0,
                    holding: 2
                })
            );
        }
        // A retried review of an admitted one is decided on the others only: still room.
        assert_eq!(check(&view, "d-a", &ASK, &quotas), None);
    }

    #[test]
    fn a_reservation_written_after_the_listing_counts_its_driver_too() {
        let policy = policy();
        let view = NamespaceView {
            pods: vec![pod("d-b", "app-b", Role::Driver, 1, 100)],
            drivers: HashMap::new(),
            reservations: Reservations {
                version: Some("7".into()),
                held: BTreeMap::from([(
                    "d-late".to_owned(),
                    Reservation::new("app-late", &granted(1), ONE_CORE, 100),
                )]),
            },
            read_at: 100,
        };
        // b 1 + b's 1 + late's driver 1 and executor 1 = 4 fits, a second executor would not.
        assert_eq!(check(&view, "d-b", &ASK, &quotas(&policy)), None);
        let two = Ask {
            executors: 2,
            ..ASK
        };
        assert_eq!(
            check(&view, "d-b", &two, &quotas(&policy)).map(|s| (s.room, s.holding)),
            Some((1, 1))
        );
    }

    #[test]
    fn executors_that_appeared_release_the_room_held_for_them() {
        let policy = policy();
        let quotas = quotas(&policy);
        let by_record =
            |executors| HashMap::from([("d-a".to_owned(), Decided::Granted(granted(executors)))]);
        // a's driver and 1 executor are live; b's driver; b asks 1: 1 + 1 + 1 + 1 = 4 fits ...
        let mut pods = vec![
            pod("d-a", "app-a", Role::Driver, 1, 100),
            pod("e-a1", "app-a", Role::Executor, 1, 101),
            pod("d-b", "app-b", Role::Driver, 1, 102),
        ];
        let view = |pods: &[ViewPod], drivers| NamespaceView {
            pods: pods.to_vec(),
            drivers,
            ..NamespaceView::default()
        };
        assert_eq!(
            check(&view(&pods, by_record(1)), "d-b", &ASK, &quotas),
            None
        );
        // ... unless a was granted 2 and its 2nd executor is still owed: 5.
        let shortfall = check(&view(&pods, by_record(2)), "d-b", &ASK, &quotas).expect("refused");
        assert_eq!(shortfall.holding, 1);
        // The same from a reservation instead of the ConfigMap's record.
        let mut reserved = view(&pods, HashMap::new());
        reserved.reservations.held.insert(
            "d-a".into(),
            Reservation::new("app-a", &granted(2), ONE_CORE, 100),
        );
        assert_eq!(
            check(&reserved, "d-b", &ASK, &quotas).map(|s| s.holding),
            Some(1)
        );
        // Once it appears it counts as a pod, not as owed: the same 5, nothing held.
        pods.push(pod("e-a2", "app-a", Role::Executor, 1, 103));
        reserved.pods = pods.clone();
        assert_eq!(
            check(&view(&pods, by_record(2)), "d-b", &ASK, &quotas).map(|s| s.holding),
            Some(0)
        );
        assert_eq!(
            check(&reserved, "d-b", &ASK, &quotas).map(|s| s.holding),
            Some(0)
        );
        // And the next write drops it; b's own is added.
        let written = hold(
            &reserved,
            "d-b",
            Reservation::new("app-b", &granted(1), ONE_CORE, 104),
        )
        .unwrap();
        assert_eq!(written.held.keys().collect::<Vec<_>>(), ["d-b"]);
    }

    #[test]
    fn a_driver_without_a_stored_configmap_is_left_out_and_others_count_as_pods() {
        let policy = policy();
        let view = NamespaceView {
            pods: vec![
                pod("d-a", "app-a", Role::Driver, 1, 100),
                pod("d-b", "app-b", Role::Driver, 1, 101),
                pod("d-x", "app-x", Role::Driver, 1, 90),
            ],
            drivers: HashMap::from([
                ("d-a".to_owned(), Decided::Pending),
                ("d-x".to_owned(), Decided::Nothing),
            ]),
            ..NamespaceView::default()
        };
        // x (admitted without a grant, or not read) 1 + b 1: room for 2; a is left out.
        let three = Ask {
            executors: 3,
            ..ASK
        };
        assert_eq!(
            check(&view, "d-b", &three, &quotas(&policy)).map(|s| (s.room, s.holding)),
            Some((2, 0))
        );
    }

    #[test]
    fn reservations_expire_and_go_with_their_driver_and_a_namespace_holds_a_bounded_number() {
        let held = |at| Reservation::new("app", &granted(1), ONE_CORE, at);
        let reservations = Reservations {
            version: Some("3".into()),
            held: BTreeMap::from([
                ("listed-old".to_owned(), held(100)),
                ("listed-expired".to_owned(), held(10)),
                ("gone-young".to_owned(), held(395)),
                ("gone-old".to_owned(), held(380)),
            ]),
        };
        let listed = HashSet::from(["listed-old", "listed-expired"]);
        let live = reservations.live(&listed, 400, Duration::from_secs(300));
        assert_eq!(live.version.as_deref(), Some("3"));
        assert_eq!(
            live.held.keys().collect::<Vec<_>>(),
            ["gone-young", "listed-old"]
        );
        let mut view = NamespaceView::default();
        for i in 0..MAX_RESERVATIONS {
            view.reservations.held.insert(format!("d-{i}"), held(400));
        }
        assert_eq!(hold(&view, "own", held(400)), Err(MAX_RESERVATIONS));
        // A retried review replaces its own reservation.
        view.reservations.held.remove("d-0");
        view.reservations.held.insert("own".into(), held(1));
        let written = hold(&view, "own", held(400)).unwrap();
        assert_eq!(written.held.len(), MAX_RESERVATIONS);
        assert_eq!(written.held["own"].at, 400);
    }

    #[test]
    fn a_reservation_reads_back_in_what_pods_are_charged_in() {
        let gib = (1_i128 << 30) * NANOS;
        let granted = Granted {
            executors: 3,
            charge: Charge {
                cpu: 1_500_000_000,
                memory: 2 * gib + 1,
            },
        };
        let held = Reservation::new(
            "app",
            &granted,
            Charge {
                cpu: 1,
                memory: gib,
            },
            5,
        );
        let text = serde_json::to_string(&held).unwrap();
        assert_eq!(
            text,
            r#"{"app":"app","executors":3,"executorMilliCpu":1500,"executorMemory":2147483649,"driverMilliCpu":1,"driverMemory":1073741824,"at":5}"#
        );
        assert_eq!(serde_json::from_str::<Reservation>(&text).unwrap(), held);
        // Rounded up, never down.
        assert_eq!(held.executor().memory, (2 << 30) * NANOS + NANOS);
        assert_eq!(held.driver().cpu, 1_000_000);
    }

    #[test]
    fn memory_limits_and_records_read_back() {
        let policy =
            Policy::parse("quotas: [{name: mem, perNamespace: {maxMemory: 8Gi}}]").unwrap();
        let gib = (1_i128 << 30) * 1_000_000_000;
        let ask = Ask {
            executors: 3,
            charge: Charge {
                cpu: CORE,
                memory: 2 * gib,
            },
        };
        let mut driver = pod("d", "app", Role::Driver, 1, 1);
        driver.charge.memory = 3 * gib;
        let view = NamespaceView {
            pods: vec![driver],
            ..NamespaceView::default()
        };
        let shortfall = check(&view, "d", &ask, &quotas(&policy)).expect("refused");
        assert_eq!(
            (shortfall.room, shortfall.limit.as_str()),
            (2, "maxMemory 8Gi")
        );
        let granted = Granted {
            executors: 3,
            charge: ask.charge,
        };
        assert_eq!(granted.record(), "executors=3 cpu=1000m memory=2147483648");
        assert_eq!(Granted::parse(&granted.record()), Some(granted));
        assert_eq!(Granted::parse("executors=3 cpu=1"), None);
        assert_eq!(Granted::parse("anything else"), None);
    }

    #[test]
    fn grants_expire_with_their_driver_age() {
        assert!(!expired(100, 400, Duration::from_secs(300)));
        assert!(expired(100, 401, Duration::from_secs(300)));
    }
}
