//! The cost of a review grows linearly with the size of any one part of it (SPEC §7): for each
//! dimension a client controls, a whole review of the worst shape is answered at n and at 10n,
//! and its time and its peak heap must not grow more than 12 times (linear with slack; a
//! quadratic loop gives about 100 times).
//!
//! A pod review goes through `admission::parse_review` (without its bound on JSON objects, past
//! which the server refuses a review unread), `admission::review` and the encoding of the
//! answer, as the `/mutate` route does; a driver ConfigMap through `parse_review_of`,
//! `spark_conf::candidate`, `spark_conf::answer` and the encoding, as `/mutate-spark-conf`
//! does, with a quota that lowers `spark.executor.instances`, so the configuration is edited and
//! written back every time.
//!
//! Heap: the most bytes held at once by the thread answering, counted by allocation-counter's
//! global allocator (this binary's; the crate forbids `unsafe`, so it cannot have its own). It
//! is deterministic, and must not grow more than [`MAX_HEAP_RATIO`] times. Time: the CPU time
//! of the thread answering (the scheduler's account, so other processes on a shared machine do
//! not count; the clock where that is missing), the least of several runs of each size, the two
//! sizes alternated, compared as a ratio within the same run (no absolute limit), at most
//! [`MAX_TIME_RATIO`] times. Each test measures in a child process whose allocator is told to
//! keep its memory (see `measured_elsewhere`), so that both sizes reuse warm pages. The tests take a lock so they run one
//! at a time and do not time each other.
//!
//! Sizes: 10n is near the apiserver's 3 MiB object limit (2 to 3 MB of the dimension) where the
//! review stays small enough to answer in a debug build within the test's time; the dimensions
//! whose entries are large structs in memory (volumes and containers are 2 to 3 KB each, from
//! 30 bytes of JSON) are measured smaller, and in release at 3 MiB by `benches/hostile.sh`. A
//! list that a vector holds doubles its capacity as it grows, so 10n entries can take 16 times
//! the memory of n for that reason alone; n is chosen between 0.625 and 0.8 times a power of two
//! (counting what the fixture already has), where both sizes need the same share of slack (8
//! times the capacity for 10 times the entries). `COST_RUNS` sets the runs per size (default 3).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spark_admission::Policy;
use spark_admission::admission::{self, Outcome, spark_conf};
use spark_admission::engine::{ClusterFacts, KubernetesVersion};
use spark_admission::policy::{LocalDirs, Quantity};
use spark_admission::quota::ledger::AppTotals;

/// Linear, with room for allocator effects; a quadratic dimension gives ~100.
const MAX_HEAP_RATIO: f64 = 12.0;

/// Linear, with room for what time adds on a shared machine: caches (10n of a 3 MiB review
/// does not fit where n does) and the B-tree maps of labels and annotations (n log n: 12.3 at
/// these sizes). A quadratic dimension gives ~100.
const MAX_TIME_RATIO: f64 = 15.0;

/// The most heap a driver ConfigMap review may hold per byte of its body. At its peak, the
/// encoding of the answer, the text is held about five times (the configuration, the base64 of
/// the patch, and the answer's buffer as it doubles); executor labels become labels of the
/// executor pod, which the engine holds three times. Was 40 and more before the properties
/// kept a few bytes per byte of text.
const CONF_HEAP_PER_BODY_BYTE: f64 = 10.0;

static SERIAL: Mutex<()> = Mutex::new(());

const EXECUTOR_REVIEW: &[u8] = include_bytes!("fixtures/spark-4.3/executor-review.json");
const CONF_REVIEW: &[u8] = include_bytes!("fixtures/spark-4.3/cluster-mode/configmap-review.json");

/// Every concern of the engine at work at once: labels and annotations from templates,
/// nodeSelector, required affinity of two ORed terms (every pod term is paired with each),
/// preferred terms, tolerations, env and resource defaults into every container, caps that
/// clamp, priority class and scheduler.
const WIDE_POLICY: &str = r#"
rules:
  - name: everything
    containers: all
    labels: {cost-center: "{namespace}", app: "{app_name}", id: "{app_id}", role: "{role}"}
    annotations: {owner: "{service_account}", prometheus.io/scrape: "true"}
    nodeSelector: {pool: spark, disk: ssd}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions: [{key: zone, operator: In, values: [a, b]}]
            - matchExpressions: [{key: pool, operator: Exists}]
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 10
            preference: {matchExpressions: [{key: spot, operator: In, values: ["true"]}]}
          - weight: 5
            preference: {matchExpressions: [{key: fast, operator: Exists}]}
    tolerations:
      - {key: dedicated, operator: Equal, value: spark, effect: NoSchedule}
      - {key: spot, operator: Exists}
    env:
      - {name: POLICY_VAR, value: "1"}
      - {name: OTHER_VAR, value: "2"}
    resources:
      executor:
        default: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "2"}}
        max: {cpu: "4", memory: 32Gi}
        onExceed: clamp
    priorityClassName: spark-batch
    schedulerName: spark-scheduler
"#;

static BUILTIN: LazyLock<Policy> = LazyLock::new(Policy::builtin_example);
static WIDE: LazyLock<Policy> = LazyLock::new(|| Policy::parse(WIDE_POLICY).unwrap());
/// The built-in rules and a quota that lowers the fixture's six executors to three.
static CONF_POLICY: LazyLock<Policy> = LazyLock::new(|| {
    Policy::parse(&format!(
        "{}\nquotas: [{{name: three, perApplication: {{maxExecutors: 3}}}}]\n",
        spark_admission::policy::BUILTIN_EXAMPLE
    ))
    .unwrap()
});

/// [`CONF_POLICY`]'s quota with `sparkConf` rules (SPEC §5b) that set settings from
/// templates under merge and under enforce, and caps read as Spark reads them.
static SPARK_CONF_POLICY: LazyLock<Policy> = LazyLock::new(|| {
    Policy::parse(
        r#"
rules:
  - name: observability
    sparkConf:
      set:
        spark.ui.prometheus.enabled: "true"
        spark.eventLog.enabled: "true"
        spark.eventLog.dir: "s3a://logs/{namespace}/{app_name}/"
      max: {spark.executor.memory: 64g, spark.executor.cores: "16", spark.driver.memory: 32g}
  - name: decommission
    mode: enforce
    sparkConf:
      set: {spark.decommission.enabled: "true"}
quotas: [{name: three, perApplication: {maxExecutors: 3}}]
"#,
    )
    .unwrap()
});

fn k8s<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// [`WIDE_POLICY`] with every field of SPEC §4a set as well, into every container
/// (`containers: all`): volumes and mounts, localDirs, envFrom, an init container and a sidecar
/// (native on [`NATIVE`]), both security contexts, pull secrets, a topology spread constraint
/// and pod (anti-)affinity terms from templates, the pod-wide values and host aliases.
///
/// Built in Rust: the parser does not read these fields yet. Once it does, this should become
/// YAML in `WIDE_POLICY`, so that the cost of parsing them is what is measured too.
static CUSTOM: LazyLock<Policy> = LazyLock::new(|| {
    let mut policy = Policy::parse(WIDE_POLICY).unwrap();
    let pod = &mut policy.rules[0].pod;
    pod.volumes = vec![k8s(
        json!({"name": "hadoop-conf", "configMap": {"name": "hadoop"}}),
    )];
    pod.volume_mounts = vec![k8s(
        json!({"name": "hadoop-conf", "mountPath": "/etc/hadoop/conf", "readOnly": true}),
    )];
    pod.env_from = vec![
        k8s(json!({"secretRef": {"name": "team-s3"}})),
        k8s(json!({"configMapRef": {"name": "defaults"}})),
    ];
    pod.init_containers = vec![k8s(json!({"name": "fetch-certs", "image": "certs:1"}))];
    pod.sidecars = vec![k8s(json!({"name": "fluent-bit", "image": "fluent-bit:3",
        "volumeMounts": [{"name": "hadoop-conf", "mountPath": "/fluent"}]}))];
    pod.security_context = Some(k8s(json!({"runAsNonRoot": true, "fsGroup": 185})));
    pod.container_security_context = Some(k8s(
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
    ));
    pod.image_pull_secrets = vec![k8s(json!({"name": "registry-creds"}))];
    pod.topology_spread_constraints = vec![k8s(json!({"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}"}}}))];
    pod.pod_affinity = Some(k8s(
        json!({"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "topology.kubernetes.io/zone",
         "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}", "spark-role": "driver"}}}]}),
    ));
    pod.pod_anti_affinity = Some(k8s(
        json!({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
         "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}"}}}}]}),
    ));
    pod.termination_grace_period_seconds = Some(120);
    pod.automount_service_account_token = Some(false);
    pod.runtime_class_name = Some("gvisor".into());
    pod.dns_config = Some(k8s(json!({"options": [{"name": "ndots", "value": "2"}]})));
    pod.host_aliases = vec![
        k8s(json!({"ip": "10.0.0.1", "hostnames": ["metadata"]})),
        k8s(json!({"ip": "10.0.0.2", "hostnames": ["proxy"]})),
    ];
    pod.local_dirs = Some(LocalDirs::EmptyDir {
        size_limit: Some(Quantity::parse("200Gi").unwrap()),
        medium: None,
    });
    policy
});

/// A cluster with native sidecars: [`CUSTOM`]'s sidecar becomes an init container.
static NATIVE: LazyLock<Arc<ClusterFacts>> = LazyLock::new(|| {
    Arc::new(ClusterFacts {
        kubernetes_version: KubernetesVersion::parse("1.31"),
        ..ClusterFacts::default()
    })
});

/// Runs per size at the least; a cheap review is run more, up to [`MOST_RUNS`], while its
/// large size has taken less than [`RUN_TIME`]: the least of more runs is steadier.
fn runs() -> usize {
    std::env::var("COST_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

const MOST_RUNS: usize = 6;
const RUN_TIME: Duration = Duration::from_millis(600);

#[derive(Debug, Clone, Copy)]
struct Cost {
    time: Duration,
    heap: u64,
}

/// What one review did, checked on both sizes so a test never measures an early exit.
type Check = fn(&Answer);

struct Answer {
    outcome: Outcome,
    lowered: bool,
    body: Vec<u8>,
}

fn pod_review(policy: &Policy, body: &[u8]) -> Answer {
    pod_review_on(policy, &Arc::default(), body)
}

fn pod_review_on(policy: &Policy, cluster: &Arc<ClusterFacts>, body: &[u8]) -> Answer {
    // Past `admission::MAX_OBJECTS` the server refuses a review unread; measured here is what
    // reading it would cost, so the engine stays linear however far that bound is raised.
    let request = admission::parse_review_within(body, usize::MAX).expect("the review parses");
    let (review, summary) = admission::review(request, policy, cluster);
    Answer {
        outcome: summary.outcome,
        lowered: false,
        body: serde_json::to_vec(&review).unwrap(),
    }
}

fn conf_review(policy: &Policy, body: &[u8]) -> Answer {
    let request = admission::parse_review_of::<ConfigMap>(body).expect("the review parses");
    let totals = AppTotals::default();
    let (review, lowered) = match spark_conf::candidate(request) {
        Ok(candidate) => {
            let (review, fitted) = spark_conf::answer(candidate, policy, &totals, None);
            (review, !fitted.fitted.changes.is_empty())
        }
        Err(unchanged) => (unchanged.review(), false),
    };
    Answer {
        outcome: Outcome::Unchanged,
        lowered,
        body: serde_json::to_vec(&review).unwrap(),
    }
}

/// The CPU time this thread has run, from the scheduler's own account (Linux): unlike the
/// time on the clock, it leaves out the time other processes of a shared machine took the CPU.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn measure(review: &dyn Fn(&[u8]) -> Answer, body: &[u8], check: Check) -> Cost {
    let (started, cpu) = (Instant::now(), thread_cpu_time());
    let mut answer = None;
    let info = allocation_counter::measure(|| answer = Some(review(black_box(body))));
    let time = match (cpu, thread_cpu_time()) {
        (Some(before), Some(after)) if after > before => after - before,
        _ => started.elapsed(),
    };
    let answer = answer.expect("measured");
    check(&answer);
    black_box(answer.body);
    Cost {
        time,
        heap: info.bytes_max,
    }
}

/// Runs this test again in a process whose allocator keeps the memory it was given: glibc
/// otherwise hands the top of its heap back once a review frees it, so the large review's runs
/// would pay for fresh pages every time while the small one's reuse theirs, and the time ratio
/// would measure that (x12 to x16 on cheap dimensions). Returns `false` when this is that process, which measures.
fn measured_elsewhere() -> bool {
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .expect("libtest names the thread after the test")
        .to_owned();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test, "--nocapture", "--test-threads=1"])
        // Never give the heap's top back. Large blocks are still mapped (and grown by
        // remapping, not copying), as glibc learns their sizes.
        .env("MALLOC_TRIM_THRESHOLD_", "18446744073709551615")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// Measures a review at both sizes and fails when either cost grows more than its limit;
/// `None` when the measuring was done by another process (see [`measured_elsewhere`]).
fn linear(
    name: &str,
    review: &dyn Fn(&[u8]) -> Answer,
    build: impl Fn(usize) -> Vec<u8>,
    n: usize,
    check: Check,
) -> Option<(Cost, Cost, usize)> {
    linear_within(name, review, build, n, check, MAX_TIME_RATIO)
}

/// [`linear`] with a time limit of its own (`f64::INFINITY`: time printed, not asserted).
fn linear_within(
    name: &str,
    review: &dyn Fn(&[u8]) -> Answer,
    build: impl Fn(usize) -> Vec<u8>,
    n: usize,
    check: Check,
    max_time_ratio: f64,
) -> Option<(Cost, Cost, usize)> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if measured_elsewhere() {
        return None;
    }
    let (small, large) = (build(n), build(10 * n));
    let (mut a, mut b) = (
        measure(review, &small, check),
        measure(review, &large, check),
    );
    let mut spent = b.time;
    let mut run = 1;
    while run < runs() || (run < MOST_RUNS && spent < RUN_TIME) {
        a.time = a.time.min(measure(review, &small, check).time);
        let large_run = measure(review, &large, check).time;
        b.time = b.time.min(large_run);
        spent += large_run;
        run += 1;
    }
    let time_ratio = b.time.as_secs_f64() / a.time.as_secs_f64().max(1e-9);
    let heap_ratio = b.heap as f64 / (a.heap as f64).max(1.0);
    println!(
        "{name}: n={n} ({} bytes) {:?} {} B heap; 10n ({} bytes) {:?} {} B heap ({:.1} per body byte); time x{time_ratio:.1}, heap x{heap_ratio:.1}",
        small.len(),
        a.time,
        a.heap,
        large.len(),
        b.time,
        b.heap,
        b.heap as f64 / large.len() as f64
    );
    assert!(
        time_ratio <= max_time_ratio && heap_ratio <= MAX_HEAP_RATIO,
        "{name}: from n={n} to 10n the time grew x{time_ratio:.1} ({:?} -> {:?}) and the peak heap x{heap_ratio:.1} ({} -> {} bytes); linear allows x{max_time_ratio} and x{MAX_HEAP_RATIO}",
        a.time,
        b.time,
        a.heap,
        b.heap
    );
    Some((a, b, large.len()))
}

// --- pod reviews --------------------------------------------------------------------------

fn executor_review(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
    edit(&mut review["request"]["object"]);
    serde_json::to_vec(&review).unwrap()
}

fn spark_container(pod: &mut Value) -> &mut Value {
    &mut pod["spec"]["containers"][0]
}

fn patched(answer: &Answer) {
    assert_eq!(answer.outcome, Outcome::Patched);
}

fn denied(answer: &Answer) {
    assert_eq!(answer.outcome, Outcome::Denied);
}

fn terms(n: usize) -> Value {
    (0..n)
        .map(|i| json!({"matchExpressions": [{"key": format!("k{i}"), "operator": "In", "values": ["v"]}]}))
        .collect()
}

fn with_required_terms(n: usize) -> Vec<u8> {
    executor_review(|pod| {
        pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms(n)}}});
    })
}

#[test]
fn node_selector_terms_under_the_builtin_policy() {
    // The reported attack: 45,000 distinct terms, 2.9 MB, against the built-in policy.
    linear(
        "nodeSelectorTerms (builtin)",
        &|body| pod_review(&BUILTIN, body),
        with_required_terms,
        3_200,
        patched,
    );
}

#[test]
fn node_selector_terms_paired_with_two_policy_terms() {
    linear(
        "nodeSelectorTerms (wide)",
        &|body| pod_review(&WIDE, body),
        with_required_terms,
        3_200,
        patched,
    );
}

#[test]
fn match_expressions_of_one_term() {
    linear(
        "matchExpressions per term",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let expressions: Vec<Value> = (0..n)
                    .map(|i| json!({"key": format!("k{i}"), "operator": "In", "values": ["v"]}))
                    .collect();
                pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]}}});
            })
        },
        6_000,
        patched,
    );
}

#[test]
fn values_of_one_match_expression() {
    linear(
        "values per matchExpression",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
                pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": values}]}]}}});
            })
        },
        25_000,
        patched,
    );
}

#[test]
fn preferred_terms() {
    linear(
        "preferred terms",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let preferred: Vec<Value> = (0..n)
                    .map(|i| json!({"weight": 1, "preference": {"matchExpressions": [{"key": format!("k{i}"), "operator": "Exists"}]}}))
                    .collect();
                pod["spec"]["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}});
            })
        },
        3_200,
        patched,
    );
}

#[test]
fn tolerations() {
    linear(
        "tolerations",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                pod["spec"]["tolerations"] = (0..n)
                    .map(|i| json!({"key": format!("k{i}"), "operator": "Exists", "effect": "NoSchedule"}))
                    .collect();
            })
        },
        5_200,
        patched,
    );
}

/// A string map of `n` distinct keys at `pointer`.
fn with_map(pointer: &'static str, n: usize) -> Vec<u8> {
    executor_review(|pod| {
        let map = pod.pointer_mut(pointer).unwrap().as_object_mut().unwrap();
        for i in 0..n {
            map.insert(format!("key-{i}"), json!("v"));
        }
    })
}

#[test]
fn labels() {
    linear(
        "labels",
        &|body| pod_review(&WIDE, body),
        |n| with_map("/metadata/labels", n),
        18_000,
        patched,
    );
}

#[test]
fn annotations() {
    linear(
        "annotations",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                pod["metadata"]["annotations"] = (0..n)
                    .map(|i| (format!("key-{i}"), json!("v")))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            })
        },
        18_000,
        patched,
    );
}

#[test]
fn node_selector_keys() {
    linear(
        "nodeSelector keys",
        &|body| pod_review(&WIDE, body),
        |n| with_map("/spec/nodeSelector", n),
        18_000,
        patched,
    );
}

#[test]
fn containers() {
    // Every container is selected (`containers: all`), so each gets the env and defaults.
    linear(
        "containers",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let containers = pod["spec"]["containers"].as_array_mut().unwrap();
                for i in 0..n {
                    containers.push(json!({"name": format!("side-{i}"), "image": "busybox", "resources": {"limits": {"cpu": "1"}}}));
                }
            })
        },
        1_600,
        patched,
    );
}

#[test]
fn env_of_the_spark_container() {
    linear(
        "env per container",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let env = spark_container(pod)["env"].as_array_mut().unwrap();
                for i in 0..n {
                    env.push(json!({"name": format!("E{i}"), "value": "x"}));
                }
            })
        },
        6_000,
        patched,
    );
}

/// Each volume is 3.2 KB in memory (k8s-openapi keeps every volume source inline) from 30
/// bytes of JSON: the engine never reads them, and the review's time is the allocator's
/// handling of those blocks (x9 to x55 from run to run, at any size tried), so only the heap,
/// deterministic, is held to linear here; the time is printed.
#[test]
fn volumes() {
    linear_within(
        "volumes",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let volumes = pod["spec"]["volumes"].as_array_mut().unwrap();
                for i in 0..n {
                    volumes.push(json!({"name": format!("v{i}"), "emptyDir": {}}));
                }
            })
        },
        750,
        patched,
        f64::INFINITY,
    );
}

#[test]
fn init_containers_over_the_cap() {
    // Each one is over the Spark container's cpu cap, so each is clamped, warned about and
    // patched.
    linear(
        "initContainers",
        &|body| pod_review(&BUILTIN, body),
        |n| {
            executor_review(|pod| {
                pod["spec"]["initContainers"] = (0..n)
                    .map(|i| json!({"name": format!("init-{i}"), "image": "busybox", "resources": {"requests": {"cpu": "16"}}}))
                    .collect();
            })
        },
        1_600,
        patched,
    );
}

#[test]
fn ports_of_the_spark_container() {
    linear(
        "ports",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                spark_container(pod)["ports"] = (0..n)
                    .map(|i| json!({"containerPort": i + 1, "protocol": "TCP"}))
                    .collect();
            })
        },
        6_000,
        patched,
    );
}

#[test]
fn args_of_the_spark_container() {
    linear(
        "args",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let args = spark_container(pod)["args"].as_array_mut().unwrap();
                for i in 0..n {
                    args.push(json!(format!("--a{i}")));
                }
            })
        },
        24_000,
        patched,
    );
}

#[test]
fn a_long_application_name_that_needs_sanitising() {
    // Expanded into a label by a template, sanitised, and quoted in a warning.
    linear(
        "app name length",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                pod["metadata"]["labels"]["spark-app-name"] = json!("a b ".repeat(n / 4));
            })
        },
        290_000,
        patched,
    );
}

#[test]
fn a_long_quantity() {
    // Too large to compare with the cap: the pod is refused, naming the quantity.
    linear(
        "quantity length",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                spark_container(pod)["resources"]["requests"]["cpu"] = json!("9".repeat(n));
            })
        },
        290_000,
        denied,
    );
}

#[test]
fn containers_that_all_claim_to_be_the_spark_container() {
    linear(
        "claiming containers",
        &|body| pod_review(&WIDE, body),
        |n| {
            executor_review(|pod| {
                let containers = pod["spec"]["containers"].as_array_mut().unwrap();
                for i in 0..n {
                    containers.push(
                        json!({"name": format!("decoy-{i}"), "image": "x", "args": ["executor"]}),
                    );
                }
            })
        },
        1_600,
        denied,
    );
}

// --- SPEC §4a's fields ---------------------------------------------------------------------

/// As [`volumes`], under a policy that adds a volume and sets Spark's local dirs: the pod's
/// volumes are looked up by name once, never searched per policy volume.
#[test]
fn volumes_under_a_volumes_rule() {
    linear_within(
        "volumes (volumes rule)",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                let volumes = pod["spec"]["volumes"].as_array_mut().unwrap();
                for i in 0..n {
                    volumes.push(
                        json!({"name": format!("spark-local-dir-{}", i + 2), "emptyDir": {}}),
                    );
                }
            })
        },
        750,
        patched,
        f64::INFINITY,
    );
}

#[test]
fn volume_mounts_under_a_volume_mounts_rule() {
    linear(
        "volumeMounts (volumeMounts rule)",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                let mounts = spark_container(pod)["volumeMounts"].as_array_mut().unwrap();
                for i in 0..n {
                    mounts
                        .push(json!({"name": "spark-local-dir-1", "mountPath": format!("/m/{i}")}));
                }
            })
        },
        6_000,
        patched,
    );
}

fn with_init_containers(n: usize) -> Vec<u8> {
    executor_review(|pod| {
        pod["spec"]["initContainers"] = (0..n)
            .map(|i| json!({"name": format!("init-{i}"), "image": "busybox"}))
            .collect();
    })
}

#[test]
fn init_containers_under_native_sidecars_and_init_containers_rules() {
    // The policy's sidecar and init container go in front of all of them.
    linear(
        "initContainers (native sidecars)",
        &|body| pod_review_on(&CUSTOM, &NATIVE, body),
        with_init_containers,
        1_600,
        patched,
    );
}

#[test]
fn init_containers_under_appended_sidecars_and_init_containers_rules() {
    linear(
        "initContainers (appended sidecars)",
        &|body| pod_review(&CUSTOM, body),
        with_init_containers,
        1_600,
        patched,
    );
}

#[test]
fn containers_under_container_fields_for_all() {
    // Every container gets the mounts, envFrom and security context (`containers: all`).
    linear(
        "containers (mounts, envFrom, securityContext)",
        &|body| pod_review_on(&CUSTOM, &NATIVE, body),
        |n| {
            executor_review(|pod| {
                let containers = pod["spec"]["containers"].as_array_mut().unwrap();
                for i in 0..n {
                    containers.push(json!({"name": format!("side-{i}"), "image": "busybox"}));
                }
            })
        },
        1_600,
        patched,
    );
}

#[test]
fn topology_spread_constraints_under_a_rule_adding_one() {
    linear(
        "topologySpreadConstraints",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                pod["spec"]["topologySpreadConstraints"] = (0..n)
                    .map(|i| json!({"maxSkew": 1, "topologyKey": format!("k{i}"), "whenUnsatisfiable": "DoNotSchedule"}))
                    .collect();
            })
        },
        3_200,
        patched,
    );
}

#[test]
fn pod_affinity_terms_under_a_rule_adding_some() {
    linear(
        "pod (anti-)affinity terms",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                let terms: Vec<Value> = (0..n)
                    .map(|i| json!({"topologyKey": format!("k{i}")}))
                    .collect();
                let weighted: Vec<Value> = (0..n)
                    .map(|i| json!({"weight": 1, "podAffinityTerm": {"topologyKey": format!("k{i}")}}))
                    .collect();
                pod["spec"]["affinity"] = json!({
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": weighted},
                });
            })
        },
        1_600,
        patched,
    );
}

#[test]
fn env_from_of_the_spark_container() {
    linear(
        "envFrom",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                spark_container(pod)["envFrom"] = (0..n)
                    .map(|i| json!({"secretRef": {"name": format!("s{i}")}}))
                    .collect();
            })
        },
        5_200,
        patched,
    );
}

#[test]
fn image_pull_secrets() {
    linear(
        "imagePullSecrets",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                pod["spec"]["imagePullSecrets"] =
                    (0..n).map(|i| json!({"name": format!("r{i}")})).collect();
            })
        },
        5_200,
        patched,
    );
}

#[test]
fn host_aliases() {
    linear(
        "hostAliases",
        &|body| pod_review(&CUSTOM, body),
        |n| {
            executor_review(|pod| {
                pod["spec"]["hostAliases"] = (0..n)
                    .map(|i| json!({"ip": format!("10.1.{}.{}", i / 250, i % 250), "hostnames": ["h"]}))
                    .collect();
            })
        },
        5_200,
        patched,
    );
}

// --- driver ConfigMap reviews -------------------------------------------------------------

/// The driver ConfigMap review with its `spark.properties` changed by `edit`.
fn conf_review_with(edit: impl FnOnce(&mut String)) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(CONF_REVIEW).unwrap();
    let data = &mut review["request"]["object"]["data"]["spark.properties"];
    let mut text = data.as_str().unwrap().to_owned();
    edit(&mut text);
    *data = Value::String(text);
    serde_json::to_vec(&review).unwrap()
}

fn lowered(answer: &Answer) {
    assert!(answer.lowered, "spark.executor.instances was lowered");
}

/// [`linear`] for a ConfigMap dimension, and its peak heap per byte of the body bounded.
fn conf_linear(name: &str, build: impl Fn(usize) -> Vec<u8>, n: usize) {
    conf_linear_under(&CONF_POLICY, name, build, n);
}

/// [`conf_linear`] under `policy`.
fn conf_linear_under(policy: &Policy, name: &str, build: impl Fn(usize) -> Vec<u8>, n: usize) {
    let Some((_, large, bytes)) =
        linear(name, &|body| conf_review(policy, body), build, n, lowered)
    else {
        return;
    };
    let per_byte = large.heap as f64 / bytes as f64;
    assert!(
        per_byte <= CONF_HEAP_PER_BODY_BYTE,
        "{name}: a {bytes}-byte review held {} bytes at its peak, {per_byte:.1} per byte of the body; at most {CONF_HEAP_PER_BODY_BYTE} allowed",
        large.heap
    );
}

#[test]
fn conf_lines() {
    conf_linear("ConfigMap lines", with_lines, 36_000);
}

/// The driver ConfigMap review with `n` more lines, each a setting of its own.
fn with_lines(n: usize) -> Vec<u8> {
    conf_review_with(|text| {
        for i in 0..n {
            text.push_str(&format!("k{i}=v\n"));
        }
    })
}

#[test]
fn conf_value_length() {
    conf_linear(
        "ConfigMap value length",
        |n| conf_review_with(|text| text.push_str(&format!("spark.custom={}\n", "x".repeat(n)))),
        290_000,
    );
}

#[test]
fn conf_key_length() {
    conf_linear(
        "ConfigMap key length",
        |n| conf_review_with(|text| text.push_str(&format!("{}=v\n", "k".repeat(n)))),
        290_000,
    );
}

#[test]
fn conf_continuation_lines_of_the_value_that_is_lowered() {
    // `spark.executor.instances=6` written over n continued lines, then replaced whole.
    conf_linear(
        "ConfigMap continuation lines",
        |n| {
            conf_review_with(|text| {
                *text = text.replace(
                    "spark.executor.instances=6\n",
                    &format!("spark.executor.instances=\\\n{}  6\n", "  \\\n".repeat(n)),
                );
            })
        },
        70_000,
    );
}

#[test]
fn conf_unicode_escapes() {
    conf_linear(
        "ConfigMap \\u escapes",
        |n| {
            conf_review_with(|text| {
                text.push_str(&format!("spark.custom={}\n", "\\u0041".repeat(n)))
            })
        },
        48_000,
    );
}

#[test]
fn conf_duplicate_keys() {
    conf_linear(
        "ConfigMap duplicate keys",
        |n| conf_review_with(|text| text.push_str(&"spark.executor.instances=6\n".repeat(n))),
        10_000,
    );
}

#[test]
fn conf_executor_label_properties() {
    // Each becomes a label of the executor pod the policy is run on.
    conf_linear(
        "ConfigMap executor labels",
        |n| {
            conf_review_with(|text| {
                for i in 0..n {
                    text.push_str(&format!("spark.kubernetes.executor.label.l{i}=v\n"));
                }
            })
        },
        7_000,
    );
}

#[test]
fn conf_comment_and_blank_lines() {
    conf_linear(
        "ConfigMap comments",
        |n| conf_review_with(|text| text.push_str(&"#c\n\n".repeat(n))),
        70_000,
    );
}

#[test]
fn conf_lines_under_spark_conf_rules() {
    conf_linear_under(
        &SPARK_CONF_POLICY,
        "ConfigMap lines, sparkConf rules",
        with_lines,
        36_000,
    );
}

#[test]
fn conf_duplicates_of_keys_the_rules_set_and_cap() {
    // Each is a setting an enforce rule replaces, a merge rule keeps, or a max reads.
    conf_linear_under(
        &SPARK_CONF_POLICY,
        "ConfigMap duplicates of set and capped keys, sparkConf rules",
        |n| {
            conf_review_with(|text| {
                text.push_str(
                    &"spark.decommission.enabled=false\nspark.eventLog.dir=x\nspark.executor.memory=2g\n"
                        .repeat(n),
                )
            })
        },
        3_400,
    );
}
