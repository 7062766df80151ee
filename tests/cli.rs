//! The `check` and `mutate` commands as a user runs them: exit codes, stdout and stderr.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");
const EXECUTOR: &str = "tests/fixtures/spark-4.3/executor-review.json";
const DRIVER: &str = "tests/fixtures/spark-4.3/driver-review.json";
const PLATFORM: &str = "examples/policies/platform.yaml";

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn policy_file(yaml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(yaml.as_bytes()).expect("write");
    file
}

#[test]
fn check_accepts_every_example_policy_with_a_summary() {
    for entry in std::fs::read_dir("examples/policies").expect("examples") {
        let path = entry.expect("entry").path();
        let out = run(&["check", path.to_str().expect("utf-8")]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        let policy = std::fs::read_to_string(&path).expect("policy");
        assert!(
            stdout.starts_with(&format!("{}: ok, ", path.display()))
                && stdout.ends_with(&format!(", hash {}\n", support::policy_hash(&policy))),
            "{stdout}"
        );
    }
}

#[test]
fn check_lists_every_mistake_with_its_path_and_exits_1() {
    let out = run(&["check", "tests/data/policy-with-mistakes.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for expected in [
        "policy has 5 errors",
        "rules[0].name:",
        "rules[0].labels.cost-center: \"{namespce}\" uses unknown variable {namespce}",
        "rules[0].tolerations[0].operator: \"Equals\" is not a toleration operator; allowed: Equal, Exists",
        "rules[1].nodeSelectr: unknown field \"nodeSelectr\" (did you mean \"nodeSelector\"?)",
        "rules[1].resources.executor.max.cpu: \"lots\" is not a Kubernetes quantity",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_lists_every_mistake_in_the_pod_fields_with_its_path_and_exits_1() {
    let out = run(&["check", "tests/data/pod-fields-with-mistakes.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for expected in [
        "policy has 9 errors",
        "rules[0].volumes[1].emptyDri: unknown volume source \"emptyDri\" (did you mean \"emptyDir\"?)",
        "rules[0].volumes[1]: has no volume source",
        "rules[0].volumeMounts[1].mountPath: \"/etc/hadoop/conf\" is already mounted by rules[0].volumeMounts[0]",
        "rules[0].volumeMounts[2].name: \"data\" names no volume of this rule",
        "rules[0].sidecars[0].ports[0].containerPort: 70000 is not a port; allowed: 1 to 65535",
        "rules[0].sidecars[0].livenessProbe.httpGet.schme: unknown field \"schme\" (did you mean \"scheme\"?)",
        "rules[0].topologySpreadConstraints[0].labelSelector.matchLabels.spark-app-selector: \"{app_idd}\" uses unknown variable {app_idd}",
        "rules[0].securityContext.runAsUser: -1 is not a user id; allowed: 0 to 2147483647",
        "rules[0].localDirs: give sizeLimit and medium (keep Spark's emptyDir) or ephemeral",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
}

#[test]
fn check_reports_yaml_syntax_errors_with_line_and_column() {
    let file = policy_file("rules:\n  - name: a\n    labels: {x: \"y\"\n  - name: b\n");
    let out = run(&["check", file.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not valid YAML") && stderr.contains("line "),
        "{stderr}"
    );
}

#[test]
fn mutate_prints_the_mutated_pod_as_yaml_and_reports_rules_on_stderr() {
    let out = run(&["mutate", "--policy", PLATFORM, EXECUTOR]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: serde_json::Value =
        spark_admission::policy::from_yaml(&text(&out.stdout)).expect("YAML pod");
    assert_eq!(pod["metadata"]["labels"]["cost-center"], "spark-jobs");
    assert_eq!(pod["spec"]["tolerations"][2]["key"], "dedicated");
    assert!(
        pod["metadata"]["managedFields"].is_array(),
        "the rest of the pod is kept"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "rules applied: cost-labels, executor-pool, warehouse-credentials, resource-guardrails"
        ),
        "{stderr}"
    );
}

#[test]
fn mutate_diff_shows_added_lines() {
    let out = run(&["mutate", "-p", PLATFORM, "--diff", EXECUTOR]);
    assert_eq!(out.status.code(), Some(0));
    let diff = text(&out.stdout);
    assert!(diff.contains("+    cost-center: spark-jobs"), "{diff}");
    assert!(diff.contains("@@"), "{diff}");
    assert!(
        !diff.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn mutate_exits_3_with_the_denial_on_stderr() {
    let file = policy_file("rules: [{name: caps, resources: {executor: {max: {memory: 1Gi}}}}]");
    let out = run(&[
        "mutate",
        "-p",
        file.path().to_str().expect("utf-8"),
        EXECUTOR,
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "denied: container spark-kubernetes-executor requests memory 2432Mi, over the max 1Gi set by rule caps"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn mutate_reads_a_yaml_pod_from_stdin_with_the_namespace_flag() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {spark-role: driver, spark-app-name: demo}\nspec:\n  containers:\n  - name: spark-kubernetes-driver\n    image: spark\n";
    let out = run_with_stdin(
        &[
            "mutate",
            "-p",
            "examples/policies/minimal.yaml",
            "-n",
            "team-a",
            "-",
        ],
        pod,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("cost-center: team-a"),
        "{}",
        text(&out.stdout)
    );
}

/// As the apiserver sends it on a cluster whose global default class is `normal`: the Priority
/// plugin wrote the class and its value. Told so, `mutate` lets the policy's class replace it
/// under merge and drops the value (SPEC §4, priorityClassName); not told, it keeps the class.
#[test]
fn mutate_with_the_global_default_priority_class_replaces_it_under_merge() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"exec-1","labels":{"spark-role":"executor"}},"spec":{"priorityClassName":"normal","priority":1000,"preemptionPolicy":"PreemptLowerPriority","containers":[{"name":"spark-kubernetes-executor","image":"spark"}]}}"#;
    let policy = policy_file("rules: [{name: batch, priorityClassName: spark-batch}]");
    let path = policy.path().to_str().expect("utf-8");
    let out = run_with_stdin(
        &[
            "mutate",
            "-p",
            path,
            "-o",
            "json",
            "--global-default-priority-class",
            "normal",
            "-",
        ],
        pod,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mutated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(mutated["spec"]["priorityClassName"], "spark-batch");
    assert_eq!(mutated["spec"].get("priority"), None);
    assert_eq!(mutated["spec"].get("preemptionPolicy"), None);

    let out = run_with_stdin(&["mutate", "-p", path, "-o", "json", "-"], pod);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mutated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(mutated["spec"]["priorityClassName"], "normal");
    assert_eq!(mutated["spec"]["priority"], 1000);
    assert!(
        text(&out.stderr).contains("kept the pod's \"normal\""),
        "{}",
        text(&out.stderr)
    );
}

/// SPEC §4a: told the cluster is 1.29 or later, `mutate` makes the policy's sidecar a native
/// one (an init container with `restartPolicy: Always`); told 1.28, or not told, it appends it
/// to the containers. A version that does not read is a usage error naming the form.
#[test]
fn mutate_with_the_kubernetes_version_decides_how_sidecars_are_added() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"exec-1","labels":{"spark-role":"executor"}},"spec":{"containers":[{"name":"spark-kubernetes-executor","image":"spark"}]}}"#;
    let policy = policy_file(
        "rules: [{name: logs, sidecars: [{name: fluent-bit, image: \"fluent/fluent-bit:3\"}]}]",
    );
    let path = policy.path().to_str().expect("utf-8");
    let mutate = |version: Option<&str>| {
        let mut args = vec!["mutate", "-p", path, "-o", "json"];
        if let Some(version) = version {
            args.extend(["--kubernetes-version", version]);
        }
        args.push("-");
        let out = run_with_stdin(&args, pod);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let mutated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let names = |list: &str| -> Vec<String> {
            mutated["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}:{}",
                        c["name"].as_str().unwrap_or(""),
                        c["restartPolicy"].as_str().unwrap_or("-")
                    )
                })
                .collect()
        };
        (names("initContainers"), names("containers"))
    };
    assert_eq!(
        mutate(Some("v1.29.3")),
        (
            vec!["fluent-bit:Always".to_owned()],
            vec!["spark-kubernetes-executor:-".to_owned()]
        )
    );
    let appended = (
        vec![],
        vec![
            "spark-kubernetes-executor:-".to_owned(),
            "fluent-bit:-".to_owned(),
        ],
    );
    assert_eq!(mutate(Some("1.28")), appended);
    assert_eq!(mutate(None), appended);

    let out = run_with_stdin(
        &["mutate", "-p", path, "--kubernetes-version", "latest", "-"],
        pod,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"latest\" is not a Kubernetes version; write MAJOR.MINOR"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mutate_leaves_a_non_spark_pod_unchanged() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}"#;
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "-o", "json", "-"], pod);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("not a Spark pod"));
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        echoed,
        serde_json::from_str::<serde_json::Value>(pod).expect("json")
    );
}

#[test]
fn mutate_says_quotas_are_not_evaluated_without_pods() {
    let out = run(&[
        "mutate",
        "-p",
        "examples/policies/quotas.yaml",
        "--patch",
        DRIVER,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains(
        "note: quotas (analytics-apps) need the cluster's Spark pods and are not evaluated; give them with --pods"
    ));
}

const QUOTA_POLICY: &str = "tests/data/quotas/policy.yaml";

#[test]
fn mutate_with_pods_refuses_an_executor_over_its_applications_limits_and_exits_3() {
    let out = run(&[
        "mutate",
        "-p",
        QUOTA_POLICY,
        "--pods",
        "tests/data/quotas/pods-at-limit.yaml",
        EXECUTOR,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    // 3 live executors of 2 CPUs (the Succeeded one, the deleting one and the one in another
    // namespace do not count) plus this one.
    assert!(
        stderr.contains(
            "denied: quota etl-apps: application spark-d5eb9fa038f44e899300d4aa4fad7491 (nightly-etl) would have 4 executors, the limit is 3; ask for fewer with spark.executor.instances or spark.dynamicAllocation.maxExecutors\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "denied: quota etl-apps: application spark-d5eb9fa038f44e899300d4aa4fad7491 (nightly-etl) would use 8 CPUs, the limit is 7; "
        ),
        "{stderr}"
    );
}

#[test]
fn mutate_with_pods_admits_a_pod_that_fits_and_says_which_quotas_it_met() {
    let out = run(&[
        "mutate",
        "-p",
        QUOTA_POLICY,
        "--pods",
        "tests/data/quotas/pods-with-room.json",
        "--patch",
        EXECUTOR,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("quotas: within etl-apps with these pods"));
    // The driver of another application: the namespace may hold 2 applications.
    let out = run(&[
        "mutate",
        "-p",
        QUOTA_POLICY,
        "--pods",
        "tests/data/quotas/pods-at-limit.yaml",
        "--patch",
        DRIVER,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn usage_prints_each_namespace_and_application_against_the_limits() {
    let out = run(&[
        "usage",
        "-p",
        QUOTA_POLICY,
        "--pods",
        "tests/data/quotas/pods-at-limit.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<Vec<String>> = text(&out.stdout)
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "QUOTA",
                "NAMESPACE",
                "APPLICATION",
                "APPLICATIONS",
                "EXECUTORS",
                "CPU",
                "MEMORY"
            ],
            vec![
                "etl-apps",
                "spark-jobs",
                "-",
                "1/2 (50%)",
                "-",
                "6/100 (6%)",
                "-"
            ],
            vec![
                "etl-apps",
                "spark-jobs",
                "spark-d5eb9fa038f44e899300d4aa4fad7491 (nightly-etl)",
                "-",
                "3/3 (100%)",
                "6/7 (86%)",
                "-"
            ],
        ]
    );
    let out = run(&[
        "usage",
        "-p",
        QUOTA_POLICY,
        "--pods",
        "tests/data/quotas/pods-at-limit.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json[1],
        serde_json::json!({
            "quota": "etl-apps",
            "namespace": "spark-jobs",
            "application": "spark-d5eb9fa038f44e899300d4aa4fad7491",
            "applicationName": "nightly-etl",
            "measures": [
                {"resource": "executors", "used": "3", "limit": "3", "ratio": 1.0},
                {"resource": "cpu", "used": "6", "limit": "7", "ratio": 6.0 / 7.0},
            ]
        })
    );
}

/// The executor fixture's review, edited by `edit`, as stdin for `mutate -`.
fn edited_review(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(EXECUTOR).expect("fixture")).expect("json");
    edit(&mut review);
    review.to_string()
}

fn patch_of(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON patch")
}

#[test]
fn mutate_allows_an_update_review_unchanged() {
    // SPEC §2: only CREATE is mutated; UPDATE is allowed unchanged.
    let input = edited_review(|review| review["request"]["operation"] = "UPDATE".into());
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "--patch", "-"], &input);
    assert_eq!(patch_of(&out), serde_json::json!([]));
    assert!(
        text(&out.stderr).contains("operation UPDATE is allowed unchanged"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mutate_takes_the_namespace_from_the_review_over_the_pods() {
    // SPEC §2: the namespace is request.namespace; the platform policy's cost-center label is
    // "{namespace}".
    let input = edited_review(|review| {
        review["request"]["namespace"] = "team-b".into();
        review["request"]["object"]["metadata"]["namespace"] = "team-a".into();
    });
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "-o", "json", "-"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON pod");
    assert_eq!(pod["metadata"]["labels"]["cost-center"], "team-b");
    assert!(text(&out.stderr).contains("executor pod in namespace team-b"));
}

#[test]
fn mutate_falls_back_to_the_namespace_flag_for_a_review_that_names_none() {
    // SPEC §8: the review's namespace, else the pod's (the fixture's pod names none), else
    // --namespace.
    let input = edited_review(|review| {
        review["request"]
            .as_object_mut()
            .expect("request")
            .remove("namespace");
    });
    let out = run_with_stdin(
        &["mutate", "-p", PLATFORM, "-n", "team-c", "-o", "json", "-"],
        &input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON pod");
    assert_eq!(pod["metadata"]["labels"]["cost-center"], "team-c");
}

#[test]
fn mutate_refuses_a_review_the_webhook_refuses() {
    // The webhook is registered for admission.k8s.io/v1 reviews only (deploy/base:
    // admissionReviewVersions: [v1]), and a body that is not one is answered with HTTP 400
    // (SPEC §7). `mutate` used to accept any version, and to take a review without an
    // operation for a CREATE.
    let input = edited_review(|review| review["apiVersion"] = "admission.k8s.io/v1beta1".into());
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "-"], &input);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("HTTP 400") && text(&out.stderr).contains("admission.k8s.io/v1"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let input = edited_review(|review| {
        review["request"]
            .as_object_mut()
            .expect("request")
            .remove("operation");
    });
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "--patch", "-"], &input);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("operation"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn mutate_allows_a_review_of_anything_but_a_pod_unchanged() {
    // SPEC §2: the creation of a Spark pod is mutated, anything else that reaches the webhook
    // is allowed unchanged: a request on a pod's subresource, or another kind (the webhook is
    // registered for "pods" only). `mutate` used to mutate the object of the first and refuse
    // the second as bad input.
    let input = edited_review(|review| review["request"]["subResource"] = "binding".into());
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "--patch", "-"], &input);
    assert_eq!(patch_of(&out), serde_json::json!([]));
    assert!(
        text(&out.stderr).contains("binding subresource of a Pod, not a pod: allowed unchanged"),
        "{}",
        text(&out.stderr)
    );

    // A ConfigMap's review is answered as /mutate-spark-conf answers it (SPEC §5b); a policy
    // without sparkConf rules or quotas allows every ConfigMap unread.
    let out = run(&["mutate", "-p", PLATFORM, "-o", "json", EXECUTOR_CONF]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(echoed, object_of(EXECUTOR_CONF), "printed as sent");
    assert_eq!(
        text(&out.stderr),
        "the policy has no sparkConf rules and no quotas: the ConfigMap is allowed unchanged\n"
    );
}

#[test]
fn mutate_never_reads_managed_fields() {
    // The policy never touches metadata.managedFields, so what they hold cannot change the
    // answer; `mutate` used to refuse a pod whose managedFields it could not read.
    let input = edited_review(|review| {
        review["request"]["object"]["metadata"]["managedFields"] = "not a list".into();
    });
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "-o", "json", "-"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON pod");
    assert_eq!(pod["metadata"]["labels"]["cost-center"], "spark-jobs");
    assert_eq!(
        pod["metadata"]["managedFields"], "not a list",
        "kept as sent"
    );
}

#[test]
fn bad_input_exits_1_and_bad_usage_exits_2() {
    let out = run_with_stdin(&["mutate", "-p", PLATFORM, "-"], "{not json: [");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = run(&[
        "mutate",
        "-p",
        "tests/data/policy-with-mistakes.yaml",
        EXECUTOR,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["mutate", "-p", PLATFORM, "/nonexistent/pod.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["mutate", EXECUTOR]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --policy is a usage error"
    );
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_deployed_policy_is_the_checked_example_policy() {
    let deployed = std::fs::read_to_string("deploy/base/policy.yaml").expect("deploy policy");
    let example = std::fs::read_to_string(PLATFORM).expect("example policy");
    assert!(
        deployed.ends_with(&example),
        "deploy/base/policy.yaml must be a copy of {PLATFORM} below its header"
    );
    let out = run(&["check", "deploy/base/policy.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn an_error_says_each_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("missing.crt");
    let key = dir.path().join("missing.key");
    let out = run(&[
        "serve",
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(
        error,
        format!(
            "error: failed to load the serving certificate: failed to read certificate files: {}: No such file or directory (os error 2)",
            cert.display()
        )
    );
}

// A cluster-mode driver's ConfigMap (SPEC §5a, §5b: `mutate` takes one, or its review, and shows
// the resulting properties and refusals offline). The captured one: application nightly-etl
// (spark-b80cad1763024b8b848f4455477ea33a) in namespace capture-cm, 6 executors of 2 cores.

const DRIVER_CONF: &str = "tests/fixtures/spark-4.3/cluster-mode/configmap-review.json";
const EXECUTOR_CONF: &str = "tests/fixtures/spark-4.3/cluster-mode/executor-configmap-review.json";
const OBSERVABILITY: &str = "tests/data/spark-conf/observability.policy.yaml";
/// What the observability policy's rule writes, by hand from SPEC §5b and §5a's record: the
/// settings in key order, each with its value before.
const OBSERVABILITY_SET: &str = "spark.decommission.enabled=true (was unset) by rule observability, spark.eventLog.dir=s3a://spark-logs/capture-cm/ (was unset) by rule observability, spark.eventLog.enabled=true (was unset) by rule observability, spark.ui.prometheus.enabled=true (was unset) by rule observability";

/// The object of a review file, as the apiserver sent it.
fn object_of(review: &str) -> serde_json::Value {
    let review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(review).expect("fixture")).expect("json");
    review["request"]["object"].clone()
}

/// The driver ConfigMap's `spark.properties` as the fixture has it.
fn fixture_properties() -> String {
    object_of(DRIVER_CONF)["data"]["spark.properties"]
        .as_str()
        .expect("properties")
        .to_owned()
}

/// The settings of a properties text written as `key=value` lines (as all of these are).
fn setting<'a>(properties: &'a str, key: &str) -> Option<&'a str> {
    properties
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn mutate_prints_a_driver_configmap_with_the_spark_conf_rules_applied() {
    let out = run(&["mutate", "-p", OBSERVABILITY, DRIVER_CONF]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stored: serde_json::Value =
        spark_admission::policy::from_yaml(&text(&out.stdout)).expect("YAML ConfigMap");
    let expected =
        std::fs::read_to_string("tests/data/spark-conf/observability.expected.properties")
            .expect("expected properties");
    assert_eq!(stored["data"]["spark.properties"], expected.as_str());
    assert_eq!(
        stored["metadata"]["annotations"]["spark-admission.io/spark-conf-set"],
        OBSERVABILITY_SET
    );
    // Everything else is kept as sent.
    let mut rest = stored.clone();
    rest["data"]["spark.properties"] = fixture_properties().into();
    rest["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    assert_eq!(rest, object_of(DRIVER_CONF));
    assert_eq!(
        text(&out.stderr),
        format!(
            "driver configuration of application spark-b80cad1763024b8b848f4455477ea33a (nightly-etl) in namespace capture-cm
warning: spark-admission kept spark.executor.memory=2g as the application set it; rule observability would set 8g
warning: spark-admission set {OBSERVABILITY_SET} in application spark-b80cad1763024b8b848f4455477ea33a
"
        )
    );
}

#[test]
fn mutate_patch_json_and_diff_of_a_driver_configmap_agree() {
    let expected =
        std::fs::read_to_string("tests/data/spark-conf/observability.expected.properties")
            .expect("expected properties");
    let out = run(&["mutate", "-p", OBSERVABILITY, "--patch", DRIVER_CONF]);
    assert_eq!(
        patch_of(&out),
        serde_json::json!([
            {"op": "add", "path": "/metadata/annotations",
             "value": {"spark-admission.io/spark-conf-set": OBSERVABILITY_SET}},
            {"op": "replace", "path": "/data/spark.properties", "value": expected},
        ])
    );

    let out = run(&["mutate", "-p", OBSERVABILITY, "-o", "json", DRIVER_CONF]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut object = object_of(DRIVER_CONF);
    object["data"]["spark.properties"] = expected.clone().into();
    object["metadata"]["annotations"] =
        serde_json::json!({"spark-admission.io/spark-conf-set": OBSERVABILITY_SET});
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"),
        object
    );

    // Each setting written is a line of the diff: spark.properties is a YAML block.
    let out = run(&["mutate", "-p", OBSERVABILITY, "--diff", DRIVER_CONF]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    for line in [
        "+    spark.decommission.enabled=true\n",
        "+    spark.eventLog.dir=s3a\\://spark-logs/capture-cm/\n",
        "+    spark.eventLog.enabled=true\n",
        "+    spark.ui.prometheus.enabled=true\n",
        "+  annotations:\n",
        "     spark.executor.instances=6\n",
    ] {
        assert!(diff.contains(line), "missing {line:?} in:\n{diff}");
    }
    assert!(
        !diff.lines().any(|l| l.starts_with("-    ")),
        "no setting removed:\n{diff}"
    );
}

#[test]
fn mutate_exits_3_for_a_driver_configmap_over_a_max_with_the_refusal_on_stderr() {
    // A bare ConfigMap (as `kubectl get configmap -o json` prints it) is sent as its CREATE.
    let mut config_map = object_of(DRIVER_CONF);
    config_map["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    let caps = policy_file(
        "rules: [{name: caps, sparkConf: {max: {spark.executor.memory: 1g, spark.executor.cores: 1, spark.driver.memory: 512m}}}]",
    );
    let out = run_with_stdin(
        &["mutate", "-p", caps.path().to_str().expect("utf-8"), "-"],
        &config_map.to_string(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    // SPEC §5b: the setting, its value (Spark's default when unset) and the max, for each.
    assert!(
        text(&out.stderr).ends_with(
            "denied: spark-admission refused Spark application nightly-etl (spark-b80cad1763024b8b848f4455477ea33a): \
             spark.driver.memory=1g (Spark's default) is above the max 512m of rule caps; \
             spark.executor.cores=2 is above the max 1 of rule caps; \
             spark.executor.memory=2g is above the max 1g of rule caps; \
             submit it again with these settings within the max\n"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mutate_takes_a_bare_configmaps_namespace_from_the_flag_when_it_names_none() {
    let mut config_map = object_of(DRIVER_CONF);
    config_map["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    let policy = policy_file(
        "rules: [{name: logs, mode: enforce, match: {namespaces: [team-x]}, sparkConf: {set: {spark.eventLog.dir: 's3a://logs/{namespace}/{app_name}/'}}}]",
    );
    let out = run_with_stdin(
        &[
            "mutate",
            "-p",
            policy.path().to_str().expect("utf-8"),
            "-n",
            "team-x",
            "-o",
            "json",
            "-",
        ],
        &config_map.to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let properties = stored["data"]["spark.properties"].as_str().expect("text");
    // Java properties escape ':' in what they write.
    assert_eq!(
        setting(properties, "spark.eventLog.dir"),
        Some("s3a\\://logs/team-x/nightly-etl/")
    );
    assert!(
        text(&out.stderr).contains("in namespace team-x"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mutate_leaves_a_configmap_that_is_not_a_drivers_configuration_alone_and_says_why() {
    let policy =
        policy_file("rules: [{name: logs, sparkConf: {set: {spark.eventLog.enabled: 'true'}}}]");
    let path = policy.path().to_str().expect("utf-8");
    // The ConfigMap the driver makes for its executors.
    let out = run(&["mutate", "-p", path, "-o", "json", EXECUTOR_CONF]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"),
        object_of(EXECUTOR_CONF)
    );
    assert_eq!(
        text(&out.stderr),
        "the ConfigMap is allowed unchanged: spark-exec-fa1739a213f959c0-conf-map is not named spark-drv-*-conf-map\n"
    );
    // Only CREATE is mutated.
    let mut review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DRIVER_CONF).expect("fixture"))
            .expect("json");
    review["request"]["operation"] = "UPDATE".into();
    let out = run_with_stdin(&["mutate", "-p", path, "--patch", "-"], &review.to_string());
    assert_eq!(patch_of(&out), serde_json::json!([]));
    assert!(
        text(&out.stderr).contains("allowed unchanged: not a ConfigMap CREATE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mutate_fits_a_driver_configmap_to_its_quota_only_given_the_clusters_pods() {
    // maxCpu 8 for the application, executors of 2 CPUs: 4 fit an application with no pods,
    // (8 - 1) / 2 = 3 beside its 1-CPU driver (SPEC §5a); the 6 asked for are lowered.
    let policy = policy_file("quotas: [{name: size, perApplication: {maxCpu: '8'}}]");
    let path = policy.path().to_str().expect("utf-8");
    let out = run(&["mutate", "-p", path, "--patch", DRIVER_CONF]);
    assert_eq!(patch_of(&out), serde_json::json!([]));
    assert!(
        text(&out.stderr).starts_with(
            "note: quotas (size) need the cluster's Spark pods and are not evaluated; give them with --pods\n"
        ),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let driver = dir.path().join("pods.yaml");
    std::fs::write(
        &driver,
        "apiVersion: v1
kind: List
items:
  - metadata:
      name: nightly-etl-9bdd68a213f7ca52-driver
      namespace: capture-cm
      labels: {spark-role: driver, spark-app-selector: spark-b80cad1763024b8b848f4455477ea33a, spark-app-name: nightly-etl}
    spec: {containers: [{name: spark-kubernetes-driver, resources: {requests: {cpu: '1', memory: 1433Mi}}}]}
    status: {phase: Pending}
",
    )
    .expect("write");
    let empty = dir.path().join("empty.json");
    std::fs::write(
        &empty,
        "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": []}",
    )
    .expect("write");
    for (pods, executors) in [(&driver, "3"), (&empty, "4")] {
        let out = run(&[
            "mutate",
            "-p",
            path,
            "--pods",
            pods.to_str().expect("utf-8"),
            "-o",
            "json",
            DRIVER_CONF,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stored: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let properties = stored["data"]["spark.properties"].as_str().expect("text");
        assert_eq!(
            setting(properties, "spark.executor.instances"),
            Some(executors)
        );
        // Every other line as spark-submit wrote it.
        assert_eq!(
            properties,
            fixture_properties().replace(
                "spark.executor.instances=6\n",
                &format!("spark.executor.instances={executors}\n")
            )
        );
        let lowered =
            format!("spark.executor.instances={executors} (was 6) to fit quota size (maxCpu 8");
        assert!(
            stored["metadata"]["annotations"]["spark-admission.io/spark-conf-lowered"]
                .as_str()
                .is_some_and(|a| a.starts_with(&lowered)),
            "{stored}"
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("warning: spark-admission lowered spark.executor.instances of application spark-b80cad1763024b8b848f4455477ea33a: {lowered}")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "quotas: {executors} executors fit quota size (maxCpu 8"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("not evaluated"), "{stderr}");
    }
}

#[test]
fn mutate_refuses_a_configmap_input_the_webhook_could_not_read() {
    let policy =
        policy_file("rules: [{name: logs, sparkConf: {set: {spark.eventLog.enabled: 'true'}}}]");
    let path = policy.path().to_str().expect("utf-8");
    let mut review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DRIVER_CONF).expect("fixture"))
            .expect("json");
    review["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let out = run_with_stdin(&["mutate", "-p", path, "-"], &review.to_string());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the webhook would answer this review with HTTP 400"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let out = run_with_stdin(
        &["mutate", "-p", path, "-"],
        "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"spark-drv-1-conf-map\"}, \"data\": [1, 2]}",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("error: input is not a valid ConfigMap: "),
        "{}",
        text(&out.stderr)
    );

    let out = run_with_stdin(
        &["mutate", "-p", path, "-"],
        "{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {\"name\": \"s\"}}",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "error: input is a Secret; expected a Pod, a ConfigMap or an AdmissionReview\n"
    );
}

#[test]
fn mutate_refuses_a_driver_configmap_whose_quota_leaves_no_room_for_one_executor() {
    // SPEC §5b, gang admission: without dynamic allocation the application needs 1 executor to
    // start; maxCpu 2 leaves 1 CPU beside its 1-CPU driver, and an executor asks 2. The
    // namespace limit needs a read of the namespace the offline answer does not make.
    let policy = policy_file(
        "quotas: [{name: tight, perNamespace: {maxCpu: '100'}, perApplication: {maxCpu: '2'}}]",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let pods = dir.path().join("pods.json");
    std::fs::write(
        &pods,
        serde_json::json!({"items": [{
            "metadata": {"name": "nightly-etl-9bdd68a213f7ca52-driver", "namespace": "capture-cm",
                         "labels": {"spark-role": "driver", "spark-app-selector": "spark-b80cad1763024b8b848f4455477ea33a"}},
            "spec": {"containers": [{"name": "spark-kubernetes-driver", "resources": {"requests": {"cpu": "1", "memory": "1433Mi"}}}]},
            "status": {"phase": "Running"},
        }]})
        .to_string(),
    )
    .expect("write");
    let out = run(&[
        "mutate",
        "-p",
        policy.path().to_str().expect("utf-8"),
        "--pods",
        pods.to_str().expect("utf-8"),
        DRIVER_CONF,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("note: the room quotas leave in namespace capture-cm for the application's minimum executors (gang admission) needs a consistent read of the namespace and is not evaluated offline; per-application limits are\n"),
        "{stderr}"
    );
    let denial = stderr
        .lines()
        .find(|line| line.starts_with("denied: "))
        .unwrap_or_else(|| panic!("no denial in {stderr}"));
    assert!(
        denial.starts_with(
            "denied: spark-admission refused Spark application nightly-etl (spark-b80cad1763024b8b848f4455477ea33a): quota tight ("
        ) && denial.contains("leaves room for 0 of the 1 executors it needs to start"),
        "{denial}"
    );
}

const PLATFORM_ALLOWLIST: &str =
    "pods=[cost-center,spark-app,spark-app-name,spark-app-selector,spark-role,spark-role-name]";

#[test]
fn check_kube_state_metrics_prints_the_allowlist_alone_on_stdout_and_the_label_names_on_stderr() {
    let out = run(&["check", "--kube-state-metrics", "deploy/base/policy.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{PLATFORM_ALLOWLIST}\n"));
    assert_eq!(
        text(&out.stderr),
        "kube-state-metrics exposes them on kube_pod_labels as:\n\
         \x20 cost-center         label_cost_center\n\
         \x20 spark-app           label_spark_app\n\
         \x20 spark-app-name      label_spark_app_name\n\
         \x20 spark-app-selector  label_spark_app_selector\n\
         \x20 spark-role          label_spark_role\n\
         \x20 spark-role-name     label_spark_role_name\n"
    );

    // What deploy/prometheus says to give kube-state-metrics, and the labels its recording
    // rules read, are this policy's.
    let rules = std::fs::read_to_string("deploy/prometheus/spark-usage.yaml").expect("rules");
    let tests = std::fs::read_to_string("deploy/prometheus/spark-usage_test.yaml").expect("tests");
    assert!(rules.contains(PLATFORM_ALLOWLIST) && tests.contains(PLATFORM_ALLOWLIST));
    let exposed = text(&out.stderr);
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("label_") && !matches!(word, "label_team" | "label_") {
            assert!(
                exposed.contains(&format!(" {word}\n")),
                "spark-usage.yaml reads {word}, which the allowlist does not give"
            );
        }
    }
}

#[test]
fn check_kube_state_metrics_takes_a_policy_on_stdin_with_templated_labels() {
    let policy = "rules:\n  - name: teams\n    labels: {team: \"{namespace}\", example.com/queue: \"root.{service_account}\"}\n";
    let out = run_with_stdin(&["check", "--kube-state-metrics", "-"], policy);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "pods=[example.com/queue,spark-app-name,spark-app-selector,spark-role,team]\n"
    );
    assert!(
        text(&out.stderr).contains("  example.com/queue   label_example_com_queue\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_kube_state_metrics_refuses_keys_that_become_one_prometheus_label_and_prints_no_allowlist()
{
    let file = policy_file(
        "rules:\n  - name: a\n    labels: {team-name: x}\n  - name: b\n    labels: {team.name: y}\n",
    );
    let path = file.path().to_str().expect("utf-8");
    let out = run(&["check", "--kube-state-metrics", path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "", "no allowlist to paste");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{path}: labels have 2 errors:\n  - rules[0].labels.team-name: label \"team-name\" \
             becomes label_team_name in kube-state-metrics, as \"team.name\" does; on a pod that \
             carries more than one, kube-state-metrics names them label_team_name_conflict1, \
             label_team_name_conflict2, which the recording rules and dashboards do not read; \
             use label keys that differ in more than case and punctuation"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "\n  - rules[1].labels.team.name: label \"team.name\" becomes label_team_name"
        ),
        "{stderr}"
    );

    // An invalid policy: its problems, as without the flag.
    let out = run(&[
        "check",
        "--kube-state-metrics",
        "tests/data/policy-with-mistakes.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("policy has 5 errors:"),
        "{}",
        text(&out.stderr)
    );
}
