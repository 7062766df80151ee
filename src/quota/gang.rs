//! Gang admission of cluster-mode applications (SPEC §5b): a submission is admitted only when,
//! after its driver, its namespace's limits leave room for its minimum executors, counting the
//! room already granted to earlier submissions whose executors have not all appeared. Pure:
//! the namespace's pods and the earlier submissions' records come from a consistent read
//! (`crate::gang`).
//!
//! Concurrent submissions are decided in one order that every replica computes alike: by the
//! creation time of their driver pods, then their uids (spark-submit creates the driver pod
//! before the ConfigMap reviewed here, so every concurrent submission's driver is in the read).
//! A submission counts every earlier one: its pods, and the executors still owed to it when it
//! was admitted (from the record it was admitted with); an earlier one not decided yet is waited
//! for, and past the wait counted as asking what this one asks. It leaves out the drivers of
//! later submissions not decided yet: they are decided after it, counting it. So of 4
//! concurrent submissions with room for 2, exactly the first 2 in that order are admitted, on
//! any replica, whatever order their reviews arrive in.

use std::collections::HashMap;
use std::time::Duration;

use crate::policy::{Quota, Role};

use super::Charge;

/// The annotation that records, on an admitted driver ConfigMap, the executors its room was
/// granted for.
pub const RESERVATION_ANNOTATION: &str = "spark-admission.io/gang-reservation";

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

impl ViewPod {
    fn order(&self) -> (i64, &str) {
        (self.created, self.uid.as_str())
    }
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
        let nanos = 1_000_000_000_i128;
        format!(
            "executors={} cpu={}m memory={}",
            self.executors,
            (self.charge.cpu + 999_999).div_euclid(1_000_000),
            (self.charge.memory + nanos - 1).div_euclid(nanos)
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

/// Where a driver's submission stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Admitted with room granted for its executors.
    Granted(Granted),
    /// Admitted with nothing granted (no gang check applied), or not a cluster-mode driver.
    Nothing,
    /// Its ConfigMap has not been stored yet: being decided, or refused and about to go.
    Pending,
}

/// The namespace as one decision reads it.
#[derive(Debug, Clone, Default)]
pub struct NamespaceView {
    /// Its live Spark pods.
    pub pods: Vec<ViewPod>,
    /// For drivers younger than the expiry: where their submission stands, by driver uid.
    pub drivers: HashMap<String, Decided>,
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
    /// How many earlier submissions still hold room for executors.
    pub holding: usize,
}

/// Checks `ask` of the submission whose driver has uid `own` against every namespace limit of
/// `quotas` (the quotas that match its executors). `None`: there is room.
pub fn check(view: &NamespaceView, own: &str, ask: &Ask, quotas: &[&Quota]) -> Option<Shortfall> {
    if ask.executors == 0 {
        return None;
    }
    let own_order = view
        .pods
        .iter()
        .find(|pod| pod.uid == own)
        .map(|pod| (pod.created, pod.uid.clone()));
    let before = |pod: &ViewPod| match &own_order {
        Some((created, uid)) => pod.order() < (*created, uid.as_str()),
        // Not in the read: it came last.
        None => true,
    };
    let mut executors_of: HashMap<&str, u32> = HashMap::new();
    for pod in view.pods.iter().filter(|p| p.role == Role::Executor) {
        if let Some(app) = &pod.app {
            *executors_of.entry(app.as_str()).or_default() += 1;
        }
    }
    let mut used = Charge::default();
    let mut holding = 0;
    for pod in &view.pods {
        // Its own driver counts as a pod, whatever the read says of its (undecided) submission.
        let decided = view
            .drivers
            .get(&pod.uid)
            .copied()
            .filter(|_| pod.uid != own);
        let later = !before(pod);
        match (pod.role, decided) {
            // A later submission not decided yet is decided after this one, counting it.
            (Role::Driver, Some(Decided::Pending)) if later => continue,
            (Role::Driver, Some(Decided::Pending)) => {
                // Still undecided after the wait: counted as asking what this one asks.
                used = used
                    .plus(pod.charge)
                    .plus(ask.charge.times(i128::from(ask.executors)));
                holding += 1;
                continue;
            }
            (Role::Driver, Some(Decided::Granted(granted))) => {
                let seen = pod
                    .app
                    .as_deref()
                    .and_then(|app| executors_of.get(app))
                    .copied()
                    .unwrap_or(0);
                let owed = granted.executors.saturating_sub(seen);
                if owed > 0 {
                    used = used.plus(granted.charge.times(i128::from(owed)));
                    holding += 1;
                }
            }
            _ => {}
        }
        used = used.plus(pod.charge);
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

    fn four_drivers() -> Vec<ViewPod> {
        // Created in the same second: ordered by uid.
        vec![
            pod("d-a", "app-a", Role::Driver, 1, 100),
            pod("d-b", "app-b", Role::Driver, 1, 100),
            pod("d-c", "app-c", Role::Driver, 1, 100),
            pod("d-d", "app-d", Role::Driver, 1, 100),
        ]
    }

    #[test]
    fn of_four_concurrent_submissions_with_room_for_two_exactly_the_first_two_are_admitted() {
        let policy = policy();
        let quotas = quotas(&policy);
        let pending = |uids: &[&str]| -> HashMap<String, Decided> {
            uids.iter()
                .map(|u| ((*u).to_owned(), Decided::Pending))
                .collect()
        };
        // The first decides before anything is stored: the later drivers are left out.
        let view = NamespaceView {
            pods: four_drivers(),
            drivers: pending(&["d-b", "d-c", "d-d"]),
        };
        assert_eq!(check(&view, "d-a", &ASK, &quotas), None);
        // The second sees the first granted 1 executor: 1 + 1 + 1 + 1 = 4.
        let mut drivers = pending(&["d-c", "d-d"]);
        drivers.insert(
            "d-a".into(),
            Decided::Granted(Granted {
                executors: 1,
                charge: ASK.charge,
            }),
        );
        let view = NamespaceView {
            pods: four_drivers(),
            drivers: drivers.clone(),
        };
        assert_eq!(check(&view, "d-b", &ASK, &quotas), None);
        // The third: a and b with their executors owed, its own driver and executor: 5 > 4.
        drivers.insert(
            "d-b".into(),
            Decided::Granted(Granted {
                executors: 1,
                charge: ASK.charge,
            }),
        );
        let view = NamespaceView {
            pods: four_drivers(),
            drivers: drivers.clone(),
        };
        let shortfall = check(&view, "d-c", &ASK, &quotas).expect("refused");
        assert_eq!(
            shortfall,
            Shortfall {
                quota: "ns".into(),
                limit: "maxCpu 4".into(),
                room: 0,
                holding: 2
            }
        );
        // The fourth, once the third's driver is gone (spark-submit deletes it): refused too.
        let pods: Vec<ViewPod> = four_drivers()
            .into_iter()
            .filter(|p| p.uid != "d-c")
            .collect();
        let view = NamespaceView {
            pods,
            drivers: drivers.clone(),
        };
        assert!(check(&view, "d-d", &ASK, &quotas).is_some());
        // The second decided again after the others arrived (a retried review): still room.
        let view = NamespaceView {
            pods: four_drivers(),
            drivers,
        };
        assert_eq!(check(&view, "d-b", &ASK, &quotas), None);
    }

    #[test]
    fn executors_that_appeared_release_the_room_granted_for_them() {
        let policy = policy();
        let quotas = quotas(&policy);
        let granted = |executors| {
            HashMap::from([(
                "d-a".to_owned(),
                Decided::Granted(Granted {
                    executors,
                    charge: ASK.charge,
                }),
            )])
        };
        // a's driver and 1 executor are live; b's driver; b asks 1: 1 + 1 + 1 + 1 = 4 fits ...
        let mut pods = vec![
            pod("d-a", "app-a", Role::Driver, 1, 100),
            pod("e-a1", "app-a", Role::Executor, 1, 101),
            pod("d-b", "app-b", Role::Driver, 1, 102),
        ];
        let view = |pods: &[ViewPod], drivers| NamespaceView {
            pods: pods.to_vec(),
            drivers,
        };
        assert_eq!(check(&view(&pods, granted(1)), "d-b", &ASK, &quotas), None);
        // ... unless a was granted 2 and its 2nd executor is still owed: 5.
        let shortfall = check(&view(&pods, granted(2)), "d-b", &ASK, &quotas).expect("refused");
        assert_eq!(shortfall.holding, 1);
        // Once it appears it counts as a pod, not as owed: the same 5.
        pods.push(pod("e-a2", "app-a", Role::Executor, 1, 103));
        assert!(check(&view(&pods, granted(2)), "d-b", &ASK, &quotas).is_some());
        assert_eq!(
            check(&view(&pods, granted(2)), "d-b", &ASK, &quotas)
                .unwrap()
                .holding,
            0
        );
    }

    #[test]
    fn an_earlier_submission_still_undecided_counts_as_asking_the_same() {
        let policy = policy();
        let quotas = quotas(&policy);
        let view = NamespaceView {
            pods: vec![
                pod("d-a", "app-a", Role::Driver, 1, 100),
                pod("d-b", "app-b", Role::Driver, 1, 101),
                pod("d-x", "app-x", Role::Driver, 1, 90),
            ],
            drivers: HashMap::from([("d-a".to_owned(), Decided::Pending)]),
        };
        // x (earlier, with nothing recorded) 1 + a 1 + a's assumed 1 + b 1 + own 1 = 5.
        let shortfall = check(&view, "d-b", &ASK, &quotas).expect("refused");
        assert_eq!(shortfall.holding, 1);
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
            drivers: HashMap::new(),
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
