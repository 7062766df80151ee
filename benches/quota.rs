//! Quota benchmarks: what a quota adds to one review when the replica tracks 10,000 live Spark
//! pods (SPEC §5; issue target: under 2 µs added per review).
//!
//! The ledger is spread like a busy cluster: 50 namespaces × 40 applications × 5 pods (a
//! driver and 4 executors), the executor fixture's namespace (`spark-jobs`) and application
//! among them, so the decision reads real totals rather than an empty map. The quota matches
//! `spark-jobs` with limits far above what the ledger holds, so every decision admits: a
//! refusal is not the common path and builds messages the admitted path never does.
//!
//! Everything in the group `quota-review` is the request path without sockets, bytes in and
//! response bytes out:
//! - `rules-only`: `examples/policies/platform.yaml` alone, as `benches/engine.rs`'s
//!   `review/policy/executor`;
//! - `rules+quota/dry-run`: the same rules plus the quota, then the tracker's decision with
//!   `dryRun` (nothing is reserved, so the ledger stays at 10,000 pods);
//! - `rules+quota/reserve`: the same, not a dry run: the fixture's pod is reserved, and every
//!   later iteration reserves the same pod name again, as a reinvoked webhook does;
//! - `rules+quota/empty-ledger`: the dry run against a ledger with no pods, to show the
//!   decision does not grow with the pods tracked.
//!
//! The reserving benches use a reservation lifetime of 100 ms instead of the server's 30 s. Each
//! renewal queues one expiry entry that is dropped when its time comes; at the millions of
//! renewals a second a bench makes, 30 s of them would be gigabytes. 100 ms keeps the same work
//! per renewal (one entry queued, one stale entry skipped later) in a queue that fits in memory;
//! the reservation itself never expires, since it is renewed every few microseconds.
//!
//! `rules+quota/* − rules-only` is the cost added per review, but a difference of a microsecond
//! or two between two figures of about 90 µs measured seconds apart on a shared machine is mostly
//! noise (either figure moved by 15% between runs here). Two ways around it:
//! - `quota-review/paired-difference/*` (printed after the group, not a criterion figure): both
//!   paths in turn, thousands of times, and the median of the pairs' differences;
//! - the group `quota-decision`, the added work alone:
//!   - `claim+admit_locally/*`: everything `admission::review` does only because the policy has
//!     quotas (`SparkPod::from_pod`, `Claim::new`), then the tracker's decision;
//!   - `admit_locally/*`: the decision alone on a ready `Claim`.
//!
//! It also prints what the 10,000-pod ledger holds in memory (RSS grown while building it).
//!
//! `admit_locally`, not `admit`: the server's async `admit` takes the same lock and does the
//! same work unless it must LIST (near a per-application limit, or the watch behind), which is
//! network I/O and not what this bench measures.

// Bench code: a failed expectation is a broken bench.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

// The same allocator as the binary, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use spark_admission::Policy;
use spark_admission::admission;
use spark_admission::engine::{RequestContext, SparkPod, evaluate};
use spark_admission::policy::Role;
use spark_admission::quota::{Charge, Claim, Entry, Ledger, Options, PodKey, TrackedPod, Tracker};

const EXECUTOR_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/executor-review.json");
const RULES: &str = include_str!("../examples/policies/platform.yaml");
// Far above what the ledger holds for `spark-jobs` (40 applications, 200 pods, 360 CPUs,
// about 435 GiB): every decision admits and reads every total.
const QUOTA: &str = r#"
quotas:
  - name: spark-jobs
    match: {namespaces: [spark-jobs]}
    perApplication: {maxExecutors: 1000, maxCpu: "10000", maxMemory: 100Ti}
    perNamespace: {maxApplications: 1000, maxCpu: "100000", maxMemory: 1000Ti}
"#;

const NAMESPACES: usize = 50;
const APPS_PER_NAMESPACE: usize = 40;
const EXECUTORS_PER_APP: usize = 4;
// The fixture's application; its executor `exec-1` is the pod being admitted.
const FIXTURE_NAMESPACE: &str = "spark-jobs";
const FIXTURE_APP: &str = "spark-d5eb9fa038f44e899300d4aa4fad7491";
const FIXTURE_POD_PREFIX: &str = "nightly-etl-521012a209d3fc2a";

/// 50 × 40 × (1 driver + 4 executors) = 10,000 live pods with Spark's own naming: application
/// ids `spark-<32 hex>`, pod names `<app name>-<16 hex>-driver` / `-exec-<n>`, the fixture's
/// executor sizing (2 CPUs, 2432Mi) and Spark's default driver (1 CPU, 1408Mi). The fixture's
/// application holds its driver and executors 2 to 5, so the fixture's `exec-1` joins an
/// application that already exists.
fn busy_cluster() -> Ledger {
    let mut ledger = Ledger::new();
    let mib = |n: i128| n * (1 << 20) * 1_000_000_000;
    let executor_charge = Charge {
        cpu: 2_000_000_000,
        memory: mib(2432),
    };
    let driver_charge = Charge {
        cpu: 1_000_000_000,
        memory: mib(1408),
    };
    let mut version = 1_000_u64;
    for ns in 0..NAMESPACES {
        let namespace = if ns == 0 {
            FIXTURE_NAMESPACE.to_owned()
        } else {
            format!("team-{ns:02}-spark")
        };
        for a in 0..APPS_PER_NAMESPACE {
            let (app, prefix) = if ns == 0 && a == 0 {
                (FIXTURE_APP.to_owned(), FIXTURE_POD_PREFIX.to_owned())
            } else {
                (
                    format!(
                        "spark-{:032x}",
                        (ns * 1000 + a) as u128 * 0x9e37_79b9_7f4a_7c15
                    ),
                    format!(
                        "etl-job-{a:02}-{:016x}",
                        (ns * 1000 + a) as u64 * 0x2545_f491
                    ),
                )
            };
            let app_name = format!("etl-job-{a:02}");
            let mut add = |name: String, role, charge| {
                version += 1;
                ledger.apply(
                    PodKey {
                        namespace: namespace.clone(),
                        name,
                    },
                    TrackedPod {
                        entry: Entry {
                            app: Some(app.clone()),
                            app_name: Some(app_name.clone()),
                            role,
                            charge,
                        },
                        resource_version: Some(version),
                    },
                );
            };
            add(format!("{prefix}-driver"), Role::Driver, driver_charge);
            for e in 0..EXECUTORS_PER_APP {
                // exec-2 to exec-5: exec-1 is the fixture's pod, admitted by the bench.
                add(
                    format!("{prefix}-exec-{}", e + 2),
                    Role::Executor,
                    executor_charge,
                );
            }
        }
    }
    assert_eq!(ledger.tracked_pods(), 10_000);
    ledger
}

/// This process's resident memory in KiB (`VmRSS`), 0 where /proc is missing.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A tracker holding `ledger`, with the server's default options but `reservation_ttl`.
fn tracker_with(ledger: Ledger, reservation_ttl: Duration) -> Tracker {
    let tracker = Tracker::new(Options {
        reservation_ttl,
        ..Options::default()
    });
    tracker.with_ledger(|l| *l = ledger);
    tracker
}

/// Runs `without` and `with` in turn, `PAIRS` times, alternating which goes first, and prints
/// the median of `with − without` with the quartiles of those differences, beside the median
/// of each side.
fn paired_difference(name: &str, mut without: impl FnMut(), mut with: impl FnMut()) {
    const PAIRS: usize = 4000;
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        f();
        started.elapsed().as_secs_f64() * 1e6
    };
    for _ in 0..200 {
        without();
        with();
    }
    let (mut differences, mut withouts, mut withs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let (a, b) = if i % 2 == 0 {
            let a = time(&mut without);
            (a, time(&mut with))
        } else {
            let b = time(&mut with);
            (time(&mut without), b)
        };
        differences.push(b - a);
        withouts.push(a);
        withs.push(b);
    }
    let quantile = |values: &mut Vec<f64>, q: f64| {
        values.sort_by(f64::total_cmp);
        values[((values.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "{name}\n                        added: median {:.2} µs (quartiles {:.2} to {:.2} µs) \
         over {PAIRS} pairs; medians {:.2} µs without, {:.2} µs with",
        quantile(&mut differences, 0.5),
        quantile(&mut differences, 0.25),
        quantile(&mut differences, 0.75),
        quantile(&mut withouts, 0.5),
        quantile(&mut withs, 0.5),
    );
}

fn quota(c: &mut Criterion) {
    let rules = Policy::parse(RULES).expect("platform.yaml parses");
    let with_quota = Policy::parse(&format!("{RULES}{QUOTA}")).expect("policy with quota parses");
    assert_eq!(with_quota.quotas.len(), 1);
    let server_ttl = Options::default().reservation_ttl;
    // What the ledger of 10,000 pods holds in memory, as this process's RSS grows while it is
    // built (the bench's own allocations before it are done; mimalloc hands out fresh pages).
    let before = rss_kb();
    let ledger = busy_cluster();
    let grown = rss_kb().saturating_sub(before);
    println!(
        "ledger of {} pods: {:.1} MB of RSS, {} bytes per pod",
        ledger.tracked_pods(),
        grown as f64 / 1024.0,
        grown * 1024 / ledger.tracked_pods() as u64
    );
    let busy = tracker_with(ledger, server_ttl);
    let busy_renewing = tracker_with(busy_cluster(), Duration::from_millis(100));
    let empty = tracker_with(Ledger::new(), server_ttl);

    // The claim the server would decide, checked once: it matches the quota and is admitted.
    let request = admission::parse_review(EXECUTOR_REVIEW).expect("fixture parses");
    let (_, summary) = admission::review(request, &with_quota, &Default::default());
    let claim = summary.quota_claim.expect("the quota matches the fixture");
    assert_eq!(claim.key.namespace, FIXTURE_NAMESPACE);
    assert_eq!(claim.entry.app.as_deref(), Some(FIXTURE_APP));
    let decision = busy.admit_locally(&with_quota.quotas, &claim, true);
    assert!(decision.admitted(), "{:?}", decision.violations);

    let mut group = c.benchmark_group("quota-review");
    let rules_only = || {
        let request = admission::parse_review(black_box(EXECUTOR_REVIEW)).expect("parses");
        let (review, summary) = admission::review(request, &rules, &Default::default());
        assert!(summary.quota_claim.is_none());
        serde_json::to_vec(&review).expect("serialises")
    };
    let with_decision = |tracker: &Tracker, dry_run: bool| {
        let request = admission::parse_review(black_box(EXECUTOR_REVIEW)).expect("parses");
        let (review, mut summary) = admission::review(request, &with_quota, &Default::default());
        let claim = summary.quota_claim.take().expect("claim");
        let decision = tracker.admit_locally(&with_quota.quotas, &claim, dry_run);
        assert!(decision.admitted());
        serde_json::to_vec(&review).expect("serialises")
    };
    group.bench_function("rules-only/executor", |b| b.iter(rules_only));
    for (name, tracker, dry_run) in [
        ("rules+quota/dry-run", &busy, true),
        ("rules+quota/reserve", &busy_renewing, false),
        ("rules+quota/empty-ledger", &empty, true),
    ] {
        group.bench_function(format!("{name}/executor"), |b| {
            b.iter(|| with_decision(tracker, dry_run))
        });
    }
    group.finish();

    // The figures above come from different seconds of a shared machine, and the drift between
    // them is larger than the difference sought. Here both paths run in turn, alternating which
    // goes first, and the median of the pairs' differences is printed: drift cancels within a
    // pair. (Not a criterion bench: criterion needs positive times, and a pair's difference is
    // negative whenever noise outweighs the quota.) Only under `cargo bench`, not in test mode.
    if std::env::args().any(|arg| arg == "--bench") {
        for (name, tracker, dry_run) in [
            ("dry-run", &busy, true),
            ("reserve", &busy_renewing, false),
            ("empty-ledger", &empty, true),
        ] {
            paired_difference(
                &format!("quota-review/paired-difference/{name}"),
                || drop(black_box(rules_only())),
                || drop(black_box(with_decision(tracker, dry_run))),
            );
        }
    }

    // What `admission::review` does only when the policy has quotas (the Spark view of the
    // pod and the claim), then the decision: the whole cost a quota adds to a review, measured
    // without the rest of the review, whose noise would swamp a difference of 1 to 2 µs.
    let mut pod = admission::parse_review(EXECUTOR_REVIEW)
        .expect("fixture parses")
        .object
        .expect("pod");
    pod.metadata.managed_fields = None;
    let context = RequestContext {
        namespace: FIXTURE_NAMESPACE.to_owned(),
        ..RequestContext::default()
    };
    let desired = evaluate(&pod, &context, &with_quota)
        .expect("spark pod")
        .desired;
    let claim_of = |pod: &Pod| {
        let spark = SparkPod::from_pod(pod, FIXTURE_NAMESPACE).expect("spark pod");
        Claim::new(
            &with_quota,
            &spark,
            &desired,
            "124f4f1c-0564-4efe-bb9f-76b309ae2667",
        )
        .expect("claim")
    };
    assert_eq!(claim_of(&pod), claim);

    let mut group = c.benchmark_group("quota-decision");
    group.bench_function("claim+admit_locally/dry-run", |b| {
        b.iter(|| {
            let claim = claim_of(black_box(&pod));
            busy.admit_locally(&with_quota.quotas, &claim, true)
                .admitted()
        })
    });
    group.bench_function("claim+admit_locally/reserve", |b| {
        b.iter(|| {
            let claim = claim_of(black_box(&pod));
            busy_renewing
                .admit_locally(&with_quota.quotas, &claim, false)
                .admitted()
        })
    });
    group.bench_function("admit_locally/dry-run", |b| {
        b.iter(|| {
            busy.admit_locally(&with_quota.quotas, black_box(&claim), true)
                .admitted()
        })
    });
    group.bench_function("admit_locally/reserve", |b| {
        b.iter(|| {
            busy_renewing
                .admit_locally(&with_quota.quotas, black_box(&claim), false)
                .admitted()
        })
    });
    group.finish();

    // The dry runs reserved nothing; the reserving benches renewed one reservation (expired by
    // now if the last renewal is over 100 ms old), never counting the pod twice.
    busy.with_ledger(|l| assert_eq!((l.tracked_pods(), l.reservations()), (10_000, 0)));
    busy_renewing.with_ledger(|l| {
        assert_eq!(l.tracked_pods(), 10_000);
        assert!(l.reservations() <= 1);
    });
}

criterion_group!(benches, quota);
criterion_main!(benches);
