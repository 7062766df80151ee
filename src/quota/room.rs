//! Admissions in flight near a namespace limit, shared by every replica so that namespace
//! limits stay exact under concurrent creations from many applications (SPEC §5, "Several
//! replicas"). Pure: the read and the compare-and-swap write are the tracker's, through
//! [`super::lease`].
//!
//! Each replica counts what its own watch shows and what it admitted itself; what another
//! replica admitted a moment ago it cannot see until that pod is stored and its watch shows it.
//! Per-application limits are safe from that (Spark creates an application's pods one after
//! another), namespace limits are not: forty applications may each create a pod at once. So
//! once a decision brings a namespace within a margin of one of its limits, it is made on one
//! shared record as well: every admission decided that way is written into the namespace's
//! Lease, at the version the decision read, before it is answered. Of two decisions on the same
//! read only one write is stored; the other is decided again on what is there now. An
//! admission in the record counts until the deciding replica's own view holds its pod (then it
//! counts from there, once) or until it is [`SETTLE`] old: a pod the apiserver stores is in
//! every watch long before that, and one that is never stored (refused by a later admission
//! step) frees its room then. Only verified callers' admissions are written: a forged review
//! never holds namespace room.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::charge::Charge;
use super::ledger::{Entry, Usage};

/// The Leases holding a namespace's admissions in flight, before the namespace's name.
pub const LEASE_PREFIX: &str = "spark-admission-room-";
/// Their annotation: JSON, by pod name.
pub const ANNOTATION: &str = "spark-admission.io/admissions-in-flight";
/// Their finalizer: a deleted record stays in force until nothing in it counts, and is only
/// then let go (see [`super::lease::LeaseRecords::with_finalizer`]).
pub const FINALIZER: &str = "spark-admission.io/admissions-in-flight";
/// How long an admission counts from the record when no view shows its pod: longer than the
/// apiserver takes to store an admitted pod (its admission chain is bounded by webhook
/// timeouts of at most 30 s) and for every replica's watch to show it.
pub const SETTLE: Duration = Duration::from_secs(30);
/// Most admissions one namespace's record holds (each at most about 400 bytes of JSON, so the
/// record stays under the apiserver's 256 KiB for a Lease's annotations). Past it, decisions
/// fall back on the replica's own view: that many admissions near one namespace's limit in
/// [`SETTLE`] is far more than a limit near which they are decided has room for.
pub const MAX_ADMISSIONS: usize = 500;

/// One admission in flight: what it adds to its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    /// `spark-app-selector`, when the pod has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// CPU, in nano-cores (exact, as the ledger counts it).
    pub cpu: i128,
    /// Memory, in nano-bytes.
    pub memory: i128,
    /// When it was admitted, in seconds since the epoch; it never moves (see [`hold`]).
    pub at: i64,
}

impl InFlight {
    fn charge(&self) -> Charge {
        Charge {
            cpu: self.cpu,
            memory: self.memory,
        }
    }
}

/// A namespace's admissions in flight, by pod name.
pub type Admissions = BTreeMap<String, InFlight>;

/// The admissions of `stored` still counting at `now`: younger than [`SETTLE`]. Times in the
/// future (another replica's clock ahead of this one's) count until they are that old.
pub fn live(mut stored: Admissions, now: i64) -> Admissions {
    let settle = i64::try_from(SETTLE.as_secs()).unwrap_or(i64::MAX);
    stored.retain(|_, admission| now.saturating_sub(admission.at) < settle);
    stored
}

/// Adds to `usage` (a namespace's totals as one replica sees them, without the pod `own` being
/// decided) the admissions of `admissions` that replica does not hold: neither its watch nor
/// its own reservations have a pod of that name (`held`). Their charge counts against the
/// namespace; each application among them that the replica does not count yet
/// (`counted_app`) counts once; one of the decided pod's own application (`own_app`) makes it
/// present, so the decided pod does not count it again.
pub fn add_unseen(
    usage: &mut Usage,
    admissions: &Admissions,
    own: &str,
    own_app: Option<&str>,
    mut held: impl FnMut(&str) -> bool,
    counted_app: impl Fn(&str) -> bool,
) {
    // The decided pod's own application counts in `usage` when it is present there (its own
    // reservation, left out, may be all the replica holds of it); any other, in the replica's
    // ledger.
    let own_present = usage.app.is_some_and(|a| a.present);
    let counted = |app: &str| {
        if own_app == Some(app) {
            own_present
        } else {
            counted_app(app)
        }
    };
    let mut new_apps: Vec<&str> = Vec::new();
    for (name, admission) in admissions {
        if name == own || held(name) {
            continue;
        }
        usage.namespace = usage.namespace.plus(admission.charge());
        if let Some(app) = admission.app.as_deref()
            && !counted(app)
            && !new_apps.contains(&app)
        {
            new_apps.push(app);
        }
    }
    usage.applications = usage
        .applications
        .saturating_add(u32::try_from(new_apps.len()).unwrap_or(u32::MAX));
    if let (Some(app), Some(totals)) = (own_app, usage.app.as_mut())
        && new_apps.contains(&app)
    {
        totals.present = true;
    }
}

/// The record with the admission of pod `own` (its `entry`) added at `now`, or `None` when the
/// record is full ([`MAX_ADMISSIONS`]). An admission of the same pod already there (a
/// reinvoked webhook) keeps its time: repeating an admission never makes it count longer.
pub fn hold(mut admissions: Admissions, own: &str, entry: &Entry, now: i64) -> Option<Admissions> {
    let at = admissions.get(own).map_or(now, |earlier| earlier.at);
    if !admissions.contains_key(own) && admissions.len() >= MAX_ADMISSIONS {
        return None;
    }
    admissions.insert(
        own.to_owned(),
        InFlight {
            app: entry.app.clone(),
            cpu: entry.charge.cpu,
            memory: entry.charge.memory,
            at,
        },
    );
    Some(admissions)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::policy::Role;
    use crate::quota::ledger::AppTotals;

    const CPU: i128 = 1_000_000_000;

    fn in_flight(app: Option<&str>, cpus: i128, at: i64) -> InFlight {
        InFlight {
            app: app.map(str::to_owned),
            cpu: cpus * CPU,
            memory: 0,
            at,
        }
    }

    fn entry(app: &str, cpus: i128) -> Entry {
        Entry {
            app: Some(app.to_owned()),
            app_name: None,
            role: Role::Executor,
            charge: Charge {
                cpu: cpus * CPU,
                memory: 0,
            },
        }
    }

    #[test]
    fn admissions_count_for_thirty_seconds_from_when_they_were_made() {
        let stored = Admissions::from([
            ("a".to_owned(), in_flight(None, 1, 1000)),
            ("b".to_owned(), in_flight(None, 1, 1029)),
            ("c".to_owned(), in_flight(None, 1, 1070)),
        ]);
        let names: Vec<String> = live(stored, 1030).into_keys().collect();
        assert_eq!(names, ["b", "c"], "a is 30 s old; c is ahead of this clock");
    }

    #[test]
    fn unseen_admissions_add_their_cpu_and_each_new_application_once() {
        // The replica sees 10 CPUs and 3 applications (app-1 among them) in the namespace.
        let mut usage = Usage {
            namespace: Charge {
                cpu: 10 * CPU,
                memory: 0,
            },
            applications: 3,
            app: Some(AppTotals::default()),
        };
        let admissions = Admissions::from([
            ("seen".to_owned(), in_flight(Some("app-9"), 100, 0)),
            ("x1".to_owned(), in_flight(Some("app-1"), 2, 0)),
            ("x2".to_owned(), in_flight(Some("app-2"), 2, 0)),
            ("x3".to_owned(), in_flight(Some("app-2"), 2, 0)),
            ("x4".to_owned(), in_flight(None, 1, 0)),
            ("own".to_owned(), in_flight(Some("app-3"), 50, 0)),
        ]);
        add_unseen(
            &mut usage,
            &admissions,
            "own",
            Some("app-3"),
            |name| name == "seen",
            |app| app == "app-1",
        );
        // 10 + 2 + 2 + 2 + 1: "seen" is held by the replica, "own" is the pod decided.
        assert_eq!(usage.namespace.cpu, 17 * CPU);
        // app-2 is new, once; app-1 was counted already.
        assert_eq!(usage.applications, 4);
        assert!(
            !usage.app.unwrap().present,
            "app-3 has nothing else in flight"
        );
    }

    #[test]
    fn an_unseen_admission_of_the_decided_pods_application_makes_it_present() {
        let mut usage = Usage {
            namespace: Charge::default(),
            applications: 0,
            app: Some(AppTotals::default()),
        };
        let admissions = Admissions::from([("driver".to_owned(), in_flight(Some("app-1"), 1, 0))]);
        add_unseen(
            &mut usage,
            &admissions,
            "exec-1",
            Some("app-1"),
            |_| false,
            |_| false,
        );
        assert_eq!(usage.applications, 1);
        assert!(
            usage.app.unwrap().present,
            "its executor does not start a second application"
        );
    }

    #[test]
    fn a_held_admission_keeps_its_time_and_a_full_record_takes_no_more() {
        let first = hold(Admissions::new(), "exec-1", &entry("app-1", 2), 100).unwrap();
        let again = hold(first, "exec-1", &entry("app-1", 3), 200).unwrap();
        assert_eq!(again["exec-1"], in_flight(Some("app-1"), 3, 100));
        let full: Admissions = (0..MAX_ADMISSIONS)
            .map(|i| (format!("p{i}"), in_flight(None, 1, 0)))
            .collect();
        assert!(hold(full.clone(), "new", &entry("app-1", 1), 5).is_none());
        assert!(
            hold(full, "p7", &entry("app-1", 1), 5).is_some(),
            "a pod already held is replaced"
        );
    }

    #[test]
    fn the_stored_form_is_json_by_pod_name_with_exact_nano_units() {
        let held = hold(
            Admissions::new(),
            "exec-1",
            &entry("app-1", 2),
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&held).unwrap(),
            r#"{"exec-1":{"app":"app-1","cpu":2000000000,"memory":0,"at":1700000000}}"#
        );
        let read: Admissions = serde_json::from_str(
            r#"{"p":{"cpu":170141183460469231731687303715884105727,"memory":1,"at":5}}"#,
        )
        .unwrap();
        assert_eq!(read["p"].cpu, i128::MAX);
        assert_eq!(read["p"].app, None);
    }
}
