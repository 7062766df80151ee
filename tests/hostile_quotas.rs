//! Quotas as a hostile tenant tries them (issue 19): a client that is not the kube-apiserver
//! POSTs reviews to the webhook port, and a user who can create and update pods in their own
//! namespace reuses names, relabels pods and resizes them. Driven through the webhook's own
//! router against a synced ledger whose live pods are set as the pod watch would set them, so
//! each test says exactly which pods exist.
//!
//! Callers are not verified here (no `--client-ca`), as on most clusters: SPEC §5 "Untrusted
//! callers" says what must still hold.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use spark_admission::Policy;
use spark_admission::policy::Role;
use spark_admission::quota::{Charge, Entry, Options, PodKey, TrackedPod};
use spark_admission::state::State;
use support::{EXECUTOR_REVIEW, review_with};

const NAMESPACE: &str = "spark-jobs";
const CORE: i128 = 1_000_000_000;

const CONFIGMAP_REVIEW: &[u8] =
    include_bytes!("fixtures/spark-4.3/cluster-mode/configmap-review.json");

/// A state whose policy (with quotas) is in force over a synced pod watch with no pods.
fn state_with(policy: &str, options: Options) -> Arc<State> {
    let state = Arc::new(State::with_quota_options(options));
    state.set_policy(Policy::parse(policy).unwrap());
    state.quotas.synced_with([]);
    state.quota_watch_synced();
    assert!(state.is_ready());
    state
}

/// A live pod as the watch reports it.
fn live(state: &State, name: &str, app: &str, role: Role, cores: i128) {
    state.quotas.apply(
        PodKey {
            namespace: NAMESPACE.to_owned(),
            name: name.to_owned(),
        },
        TrackedPod {
            entry: Entry {
                app: Some(app.to_owned()),
                app_name: Some("nightly-etl".to_owned()),
                role,
                charge: Charge {
                    cpu: cores * CORE,
                    memory: 0,
                },
            },
            resource_version: Some(1),
        },
    );
}

/// The executor fixture's CREATE review, as pod `name` of application `app` asking `cpu`
/// (its memory request and limit removed, so only CPU is charged).
fn executor(name: &str, app: &str, cpu: &str) -> Vec<u8> {
    review_with(EXECUTOR_REVIEW, |review| {
        let request = &mut review["request"];
        request["uid"] = json!(format!("uid-{name}-{}", rand_suffix()));
        request["name"] = json!(name);
        let pod = &mut request["object"];
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["labels"]["spark-app-selector"] = json!(app);
        pod["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu}});
    })
}

/// A request uid that differs per call, as the apiserver's do.
fn rand_suffix() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The UPDATE review of `create` (a CREATE review) into what `change` makes of its pod.
fn update(create: &[u8], sub_resource: Option<&str>, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    review_with(create, |review| {
        let request = review["request"].as_object_mut().unwrap();
        request.insert("operation".to_owned(), json!("UPDATE"));
        let old = request["object"].clone();
        let mut new = old.clone();
        change(&mut new);
        request.insert("oldObject".to_owned(), old);
        request.insert("object".to_owned(), new);
        if let Some(sub) = sub_resource {
            request.insert("subResource".to_owned(), json!(sub));
        }
    })
}

async fn answer(state: &Arc<State>, path: &str, body: Vec<u8>) -> Value {
    support::review_by_router(state, path, body).await["response"].clone()
}

fn allowed(response: &Value) -> bool {
    response["allowed"] == Value::Bool(true)
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn forged_reviews_resent_leave_another_applications_next_pod_admitted() {
    let policy = r#"
quotas:
  - name: jobs
    match: {namespaces: [spark-jobs]}
    perNamespace: {maxCpu: "10", maxApplications: 2}
"#;
    let state = state_with(policy, Options::default());
    live(&state, "a-driver", "spark-a", Role::Driver, 1);
    // A client with no credentials: reviews for executors of applications that will never
    // exist, each 4 CPUs, each sent five times over.
    for round in 0..5 {
        for forged in 0..20 {
            let body = executor(
                &format!("forged-{forged}"),
                &format!("spark-x{forged}"),
                "4",
            );
            let response = answer(&state, "/mutate", body).await;
            assert!(allowed(&response), "round {round}: {}", message(&response));
        }
    }
    // Another application's next pod still fits: 1 + 4 CPUs, 2 applications.
    let response = answer(&state, "/mutate", executor("b-exec-1", "spark-b", "4")).await;
    assert!(allowed(&response), "{}", message(&response));
    // What the watch shows still counts: with the namespace at 9 CPUs, 4 more are refused.
    live(&state, "a-exec-1", "spark-a", Role::Executor, 8);
    let response = answer(&state, "/mutate", executor("b-exec-2", "spark-b", "4")).await;
    assert_eq!(
        message(&response),
        "quota jobs: Spark in namespace spark-jobs would use 13 CPUs, the limit is 10; ask for fewer executors (spark.executor.instances, spark.dynamicAllocation.maxExecutors) or fewer cores each (spark.executor.cores, spark.kubernetes.executor.request.cores), or wait for other applications to finish"
    );
}

#[tokio::test]
async fn with_verified_callers_every_admission_in_flight_holds_namespace_room() {
    // The other side of the same design: once the TLS handshake proves every caller is the
    // apiserver (serve --client-ca), an admission the watch has not shown yet counts, so a
    // burst cannot overshoot.
    let policy = "quotas: [{name: jobs, perNamespace: {maxCpu: \"10\"}}]";
    let options = Options {
        verified_callers: true,
        ..Options::default()
    };
    let state = state_with(policy, options);
    let first = answer(&state, "/mutate", executor("x-1", "spark-x", "6")).await;
    assert!(allowed(&first));
    let second = answer(&state, "/mutate", executor("y-1", "spark-y", "6")).await;
    assert!(
        message(&second).contains("would use 12 CPUs, the limit is 10"),
        "{}",
        message(&second)
    );
}

#[tokio::test]
async fn creates_reusing_live_pod_names_never_admit_past_max_executors() {
    let policy = r#"
quotas:
  - name: thirty
    match: {namespaces: [spark-jobs]}
    perApplication: {maxExecutors: 30}
    perNamespace: {maxCpu: "64"}
"#;
    let state = state_with(policy, Options::default());
    for i in 1..=30 {
        live(&state, &format!("exec-{i}"), "spark-a", Role::Executor, 2);
    }
    // The apiserver would refuse these with AlreadyExists, but only after admission.
    for i in 1..=30 {
        let response = answer(
            &state,
            "/mutate",
            executor(&format!("exec-{i}"), "spark-a", "2"),
        )
        .await;
        assert!(!allowed(&response), "exec-{i} admitted again");
        assert!(
            message(&response).contains("would have 31 executors, the limit is 30"),
            "{}",
            message(&response)
        );
    }
    for i in 31..=50 {
        let response = answer(
            &state,
            "/mutate",
            executor(&format!("exec-{i}"), "spark-a", "2"),
        )
        .await;
        assert!(!allowed(&response), "exec-{i} admitted past the limit");
    }
    assert_eq!(state.quotas.with_ledger(|l| l.tracked_pods()), 30);
    // The usage metric tells the truth: 60 of 64 CPUs (set as a scrape sets it).
    state.update_quota_usage();
    let metrics = state.metrics.encode();
    assert_eq!(
        support::series_value(
            &metrics,
            "spark_admission_quota_usage_ratio{quota=\"thirty\",namespace=\"spark-jobs\",resource=\"cpu\"}"
        ),
        Some(60.0 / 64.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn relabelling_a_spark_pod_to_leave_its_quota_is_refused() {
    let policy = "quotas: [{name: thirty, perApplication: {maxExecutors: 30}}]";
    let state = state_with(policy, Options::default());
    for i in 1..=30 {
        live(&state, &format!("exec-{i}"), "spark-a", Role::Executor, 1);
    }
    for i in 1..=20 {
        let created = executor(&format!("exec-{i}"), "spark-a", "1");
        let without_role = update(&created, None, |pod| {
            pod["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("spark-role");
        });
        let response = answer(&state, "/mutate", without_role).await;
        assert_eq!(response["status"]["code"], 403);
        assert!(
            message(&response).contains(&format!(
                "Spark pod spark-jobs/exec-{i} cannot change its labels spark-role and spark-app-selector after creation (this update changes spark-role from \"executor\" to none)"
            )),
            "{}",
            message(&response)
        );
        let elsewhere = update(&created, None, |pod| {
            pod["metadata"]["labels"]["spark-app-selector"] = json!("spark-elsewhere");
        });
        assert!(!allowed(&answer(&state, "/mutate", elsewhere).await));
    }
    // Refused, the pods kept their labels, so the application is still full.
    let response = answer(&state, "/mutate", executor("exec-31", "spark-a", "1")).await;
    assert!(message(&response).contains("would have 31 executors, the limit is 30"));
    // Spark's own label update passes.
    let inactive = update(&executor("exec-1", "spark-a", "1"), None, |pod| {
        pod["metadata"]["labels"]["spark-exec-inactive"] = json!("true");
    });
    let response = answer(&state, "/mutate", inactive).await;
    assert!(allowed(&response));
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn a_resize_is_decided_for_its_new_charge_and_reserves_nothing() {
    let policy = "quotas: [{name: ten, perApplication: {maxCpu: \"10\"}}]";
    let state = state_with(policy, Options::default());
    live(&state, "a-driver", "spark-a", Role::Driver, 1);
    live(&state, "exec-1", "spark-a", Role::Executor, 2);
    let created = executor("exec-1", "spark-a", "2");
    let to = |cpu: &str| {
        let cpu = cpu.to_owned();
        update(&created, Some("resize"), move |pod| {
            pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!(cpu);
        })
    };
    // The pod itself is left out: 1 + 9 = 10 fits.
    assert!(allowed(&answer(&state, "/mutate", to("9")).await));
    let refused = answer(&state, "/mutate", to("10")).await;
    assert!(
        message(&refused).contains("would use 11 CPUs, the limit is 10"),
        "{}",
        message(&refused)
    );
    assert_eq!(state.quotas.with_ledger(|l| l.reservations()), 0);
}

/// A stand-in for the apiserver that answers every pod LIST with no pods after `delay`,
/// counting the LISTs and the most in flight at once.
#[derive(Default)]
struct CountingApiserver {
    lists: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl CountingApiserver {
    fn client(self: &Arc<Self>, delay: Duration) -> kube::Client {
        let counts = self.clone();
        let service = tower::service_fn(move |_: axum::http::Request<kube::client::Body>| {
            let counts = counts.clone();
            async move {
                counts.lists.fetch_add(1, Ordering::SeqCst);
                let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                counts.in_flight.fetch_sub(1, Ordering::SeqCst);
                let list = json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "10"}, "items": [],
                });
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(list.to_string()))
            }
        });
        kube::Client::new(service, "default")
    }
}

#[tokio::test]
async fn forged_configmap_reviews_for_a_namespace_no_quota_limits_cost_the_apiserver_nothing() {
    let policy =
        "quotas: [{name: etl, match: {namespaces: [etl]}, perApplication: {maxExecutors: 3}}]";
    let state = state_with(policy, Options::default());
    let apiserver = Arc::new(CountingApiserver::default());
    state
        .quotas
        .set_client(apiserver.client(Duration::from_millis(1)));
    for i in 0..50 {
        let body = review_with(CONFIGMAP_REVIEW, |review| {
            review["request"]["uid"] = json!(format!("forged-{i}"));
        });
        assert!(allowed(&answer(&state, "/mutate-spark-conf", body).await));
    }
    assert_eq!(apiserver.lists.load(Ordering::SeqCst), 0);
    // In a namespace a quota limits, the application's pods are confirmed with one LIST.
    let body = review_with(CONFIGMAP_REVIEW, |review| {
        review["request"]["namespace"] = json!("etl");
    });
    answer(&state, "/mutate-spark-conf", body).await;
    assert_eq!(apiserver.lists.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirming_lists_are_at_most_eight_at_once_however_many_reviews_ask() {
    // maxExecutors 2 is within the confirm margin of any application: every review asks for a
    // consistent LIST of its application's pods.
    let policy = "quotas: [{name: two, perApplication: {maxExecutors: 2}}]";
    let state = state_with(policy, Options::default());
    let apiserver = Arc::new(CountingApiserver::default());
    state
        .quotas
        .set_client(apiserver.client(Duration::from_millis(100)));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                answer(
                    &state,
                    "/mutate",
                    executor("exec-1", &format!("spark-{i}"), "1"),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        assert!(allowed(&task.await.unwrap()));
    }
    assert_eq!(apiserver.lists.load(Ordering::SeqCst), 40);
    let most = apiserver.most_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=spark_admission::quota::tracker::MAX_CONCURRENT_LISTS).contains(&most),
        "{most} LISTs in flight at once"
    );
}

#[tokio::test]
async fn reviews_of_pods_the_apiserver_could_never_store_reserve_nothing() {
    // The apiserver validates names and labels after admission; a forged review may carry a
    // megabyte where an application id goes, and a reservation would keep it for 30 s.
    let policy = "quotas: [{name: apps, perApplication: {maxExecutors: 100}}]";
    let state = state_with(policy, Options::default());
    let huge = "a".repeat(1 << 20);
    for body in [
        executor("exec-1", &huge, "1"),
        executor("Not_A_Pod_Name", "spark-a", "1"),
        review_with(&executor("exec-2", "spark-a", "1"), |review| {
            review["request"]["namespace"] = json!("no.dots-in-a-namespace");
        }),
    ] {
        let response = answer(&state, "/mutate", body).await;
        assert!(allowed(&response), "{}", message(&response));
    }
    assert_eq!(state.quotas.with_ledger(|l| l.reservations()), 0);
    // A pod it could store is reserved.
    assert!(allowed(
        &answer(&state, "/mutate", executor("exec-3", "spark-a", "1")).await
    ));
    assert_eq!(state.quotas.with_ledger(|l| l.reservations()), 1);
}
