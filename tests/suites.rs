//! `spark-admission test` as a platform team's CI runs it: the example suites pass, a wrong
//! expectation fails with a readable diff, a broken suite exits 2 with every problem, and the
//! JUnit report is XML a parser reads back with the right counts.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");
const WRONG: &str = "tests/data/suites/wrong-expectations.test.yaml";

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The cases of a suite file as written: entries of its top-level `cases` list.
fn cases_in(path: &std::path::Path) -> usize {
    let document: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    document["cases"].as_array().unwrap().len()
}

#[test]
fn every_example_suite_passes() {
    let out = run(&["test", "examples/"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let suites: Vec<_> = std::fs::read_dir("examples/suites")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    // One suite per example policy, so a new policy without tests is noticed.
    let policies = std::fs::read_dir("examples/policies").unwrap().count();
    assert_eq!(suites.len(), policies, "{suites:?}");
    let cases: usize = suites.iter().map(|p| cases_in(p)).sum();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS ")).count(),
        cases,
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!("\n{cases} passed, 0 failed\n")),
        "{stdout}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_of_expected_and_actual() {
    let out = run(&["test", WRONG]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The executor fixture is in namespace spark-jobs (its request says so) and
    // platform.yaml's executor-pool rule sets nodeSelector pool=spark.
    let expected = format!(
        "\
PASS {WRONG}: right
FAIL {WRONG}: wrong label and node selector
    expect.labels.cost-center:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -finance
      +spark-jobs
    expect.nodeSelector.pool:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -spark-large
      +spark
FAIL {WRONG}: expects a refusal of an admitted pod
    expect.admitted:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -refused with a message containing: over the max
      +admitted
"
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    // The driver has Kubernetes' two default tolerations and not the executor pool's; the
    // diff shows just the missing one. Its CPU limit 2 (the driver default) equals 2000m.
    assert!(
        stdout.contains(
            "\
    expect.tolerations[0]:
      --- expected
      +++ actual
      @@ -6,7 +6,3 @@
         key: node.kubernetes.io/unreachable
         operator: Exists
         tolerationSeconds: 300
      -- effect: NoSchedule
      -  key: dedicated
      -  operator: Equal
      -  value: spark
"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("expect.resources"), "{stdout}");
    assert!(stdout.ends_with("\n1 passed, 3 failed\n"), "{stdout}");
}

#[test]
fn a_refusal_message_is_matched_by_substring() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::env::current_dir().unwrap();
    let suite = dir.path().join("refusal.test.yaml");
    std::fs::write(
        &suite,
        format!(
            "policy: {root}/examples/policies/platform.yaml
cases:
  - name: cap
    input: {root}/examples/suites/data/executor-100g.yaml
    expect: {{admitted: false, message: over the max 32Gi}}
",
            root = root.display()
        ),
    )
    .unwrap();
    let out = run(&["test", suite.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "    expect.message:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -a message containing: over the max 32Gi
      +container spark-kubernetes-executor requests memory 100Gi, over the max 64Gi set by rule resource-guardrails"
        ),
        "{stdout}"
    );
}

/// A pod the apiserver gave the cluster's global default class: with the suite saying which
/// class that is, a policy's class under merge replaces it (SPEC §4, priorityClassName); without,
/// the pod keeps it and the warning says so.
#[test]
fn a_case_can_state_the_clusters_global_default_priority_class() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("priority.test.yaml");
    std::fs::write(
        &suite,
        "policy: {rules: [{name: batch, priorityClassName: spark-batch}]}
cases:
  - name: the global default is replaced
    input: &pod
      metadata: {name: exec-1, namespace: jobs, labels: {spark-role: executor}}
      spec:
        priorityClassName: normal
        priority: 1000
        containers: [{name: spark-kubernetes-executor, image: spark}]
    globalDefaultPriorityClass: normal
    expect: {priorityClassName: spark-batch}
  - name: another class is kept
    input: *pod
    globalDefaultPriorityClass: low
    expect: {priorityClassName: normal, warnings: [kept the pod's \"normal\"]}
  - name: nothing known, the class is kept
    input: *pod
    expect: {priorityClassName: normal}
",
    )
    .unwrap();
    let out = run(&["test", suite.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.ends_with("\n3 passed, 0 failed\n"), "{stdout}");
}

#[test]
fn unknown_fields_and_broken_references_exit_2_with_every_problem() {
    let out = run(&["test", "tests/data/suites/bad"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "ERROR tests/data/suites/bad/typos.test.yaml: suite has 3 errors:",
        "  - cases[0].namespce: unknown field \"namespce\" (did you mean \"namespace\"?); allowed: name, input, namespace,",
        "  - cases[0].expect.lables: unknown field \"lables\" (did you mean \"labels\"?)",
        "  - cases[0].expect.resources.request: unknown field \"request\" (did you mean \"requests\"?); allowed: requests, limits",
        "ERROR tests/data/suites/bad/missing-input.test.yaml: suite has 2 errors:",
        "  - policy.rules[0].labels.cost-center: \"{namespce}\" uses unknown variable {namespce}",
        "  - cases[0].input: failed to read tests/data/suites/bad/no-such-pod.yaml (relative to the suite): ",
        "0 passed, 0 failed, 2 suites could not be run",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn a_directory_without_suites_or_a_missing_path_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "rules: []\n").unwrap();
    let out = run(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout)
            .contains("no suite files found (suite files are named *.test.yaml or *.test.yml)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["test", "tests/data/suites/no-such-suite.test.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    // An empty file named like a suite is a mistake, not a suite with nothing to check.
    let empty = dir.path().join("empty.test.yaml");
    std::fs::write(&empty, "").unwrap();
    let out = run(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout)
            .contains("  - a suite is a mapping with policy and cases, not an empty document\n"),
        "{}",
        text(&out.stdout)
    );
    // A failing case beside an unreadable suite: the unreadable suite decides the exit code.
    let out = run(&["test", WRONG, "tests/data/suites/bad"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn junit_output_is_well_formed_with_the_right_counts() {
    let out = run(&[
        "test",
        "-o",
        "junit",
        WRONG,
        "tests/data/suites/bad/typos.test.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The readable report still reaches the CI log, on standard error.
    assert!(text(&out.stderr).contains("1 passed, 3 failed, 1 suite could not be run"));
    // An XML parser that is not ours reads it back: the counts, the names as written (the
    // markup in one of them escaped and restored) and the diff in the failure.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.xml");
    std::fs::write(&report, &out.stdout).unwrap();
    let script = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
print(root.tag, root.get("tests"), root.get("failures"), root.get("errors"))
for suite in root.findall("testsuite"):
    print("suite", suite.get("file"), suite.get("tests"), suite.get("failures"), suite.get("errors"))
    for case in suite.findall("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        state = "failure" if failure is not None else "error" if error is not None else "pass"
        print("case", repr(case.get("name")), state)
        if failure is not None:
            print("message", repr(failure.get("message")))
            print("text", repr(failure.text))
"#;
    let parsed = Command::new("python3")
        .args(["-c", script, report.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(parsed.status.success(), "{}", text(&parsed.stderr));
    let parsed = text(&parsed.stdout);
    for expected in [
        "testsuites 5 3 1\n",
        &format!("suite {WRONG} 4 3 0\n"),
        "case 'right' pass\n",
        "case 'wrong label and node selector' failure\n",
        "message 'not as expected: expect.labels.cost-center, expect.nodeSelector.pool'\n",
        "text 'expect.labels.cost-center:\\n  --- expected\\n  +++ actual\\n  @@ -1 +1 @@\\n  -finance\\n  +spark-jobs\\n",
        "case 'markup <in> the \"name\" & \\'quotes\\'' failure\n",
        "suite tests/data/suites/bad/typos.test.yaml 1 0 1\n",
        "case '(load)' error\n",
    ] {
        assert!(
            parsed.contains(expected),
            "missing {expected:?} in:\n{parsed}"
        );
    }
}

/// A suite from an untrusted change (a pull request's CI runs it) must not read, and so print
/// in its diffs, files outside the tree it is run on, nor hang the run or exhaust memory on a
/// special file. Every such reference is refused, with the reason, in one report.
#[test]
fn a_suite_reads_only_regular_files_of_bounded_size_inside_its_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.yaml");
    std::fs::write(&secret, "metadata: {name: do-not-print-me}\n").unwrap();
    std::os::unix::fs::symlink(&secret, root.path().join("link.yaml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.path().join("zero.yaml")).unwrap();
    let fifo = root.path().join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let big = root.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 9 << 20]).unwrap();
    std::fs::create_dir(root.path().join("suites")).unwrap();
    let suite = root.path().join("suites/hostile.test.yaml");
    std::fs::write(
        &suite,
        format!(
            "policy: {{rules: [{{name: a}}]}}
cases:
  - {{name: absolute, input: {secret}, expect: {{admitted: true}}}}
  - {{name: dotdot, input: ../../{outside_name}/secret.yaml, expect: {{admitted: true}}}}
  - {{name: link, input: ../link.yaml, expect: {{admitted: true}}}}
  - {{name: zero, input: ../zero.yaml, expect: {{admitted: true}}}}
  - {{name: fifo, input: ../fifo.yaml, expect: {{admitted: true}}}}
  - {{name: big, input: ../big.yaml, expect: {{admitted: true}}}}
",
            secret = secret.display(),
            outside_name = outside.path().file_name().unwrap().to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["test", "--root", root.path().to_str().unwrap()])
        .arg(&suite)
        .output()
        .expect("binary runs");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("do-not-print-me"), "{stdout}");
    let root_shown = std::fs::canonicalize(root.path()).unwrap();
    let secret_shown = std::fs::canonicalize(&secret).unwrap();
    let outside_root = format!(
        "it resolves to {}, outside {}; a suite reads only files under the directory it runs in (or --root)",
        secret_shown.display(),
        root_shown.display()
    );
    for (case, reason) in [
        (0, outside_root.as_str()),
        (1, outside_root.as_str()),
        (2, outside_root.as_str()),
        (3, "it resolves to /dev/zero, outside"),
        (4, "not a regular file"),
        (5, "larger than the 8 MiB a suite file may hold"),
    ] {
        let line = stdout
            .lines()
            .find(|line| line.contains(&format!("cases[{case}].input: failed to read ")))
            .unwrap_or_else(|| panic!("no problem for case {case} in:\n{stdout}"));
        assert!(line.contains(reason), "case {case}: {line}");
    }
    assert!(stdout.contains("suite has 6 errors"), "{stdout}");
}

const WRONG_SPARK_CONF: &str = "tests/data/suites/wrong-spark-conf.test.yaml";

/// SPEC §5b: a case may give a driver's ConfigMap; what its stored `spark.properties` holds, and
/// its refusal, are checked, and a wrong expectation shows what came out.
#[test]
fn a_wrong_expectation_on_a_driver_configmap_fails_with_a_diff() {
    let out = run(&["test", WRONG_SPARK_CONF]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The captured ConfigMap asks for 6 executors; maxExecutors 3 lowers them to 3. In
    // namespace strict its 2 cores are over the max 1, so the submission is refused.
    let refusal = "spark-admission refused Spark application nightly-etl (spark-b80cad1763024b8b848f4455477ea33a): spark.executor.cores=2 is above the max 1 of rule small-executors; submit it again with these settings within the max";
    let expected = format!(
        "\
PASS {WRONG_SPARK_CONF}: right
FAIL {WRONG_SPARK_CONF}: wrong executor count and a setting expected unset
    expect.properties.spark.eventLog.enabled:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -(absent)
      +true
    expect.properties.spark.executor.instances:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -6
      +3
FAIL {WRONG_SPARK_CONF}: expects a refused submission to be admitted
    expect.admitted:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -admitted
      +refused: {refusal}
FAIL {WRONG_SPARK_CONF}: the wrong max in the refusal
    expect.message:
      --- expected
      +++ actual
      @@ -1 +1 @@
      -a message containing: above the max 2
      +{refusal}
1 passed, 3 failed
"
    );
    assert_eq!(stdout, expected);
}

/// The fields of a case must fit its input: a ConfigMap's answer holds no pod and names no
/// rules, a pod has no `spark.properties`, and a refused submission stores nothing to check.
#[test]
fn expectations_that_do_not_fit_the_input_exit_2_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("misfits.test.yaml");
    std::fs::write(
        &suite,
        r#"policy: {rules: [{name: logs, sparkConf: {set: {spark.eventLog.enabled: "true"}}}]}
cases:
  - name: pod fields on a ConfigMap
    input: &conf
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: spark-drv-1-conf-map
        ownerReferences: [{apiVersion: v1, kind: Pod, name: app-driver, uid: u1}]
      data: {spark.properties: "spark.app.id=spark-1\n"}
    kubernetesVersion: "1.29"
    expect:
      appliedRules: [logs]
      labels: {team: a}
      properties: {spark.eventLog.enabled: "true"}
  - name: properties of a pod
    input:
      metadata: {name: exec-1, labels: {spark-role: executor}}
      spec: {containers: [{name: spark-kubernetes-executor, image: spark}]}
    expect: {properties: {spark.eventLog.enabled: "true"}}
  - name: the stored ConfigMap of a refused submission
    input: *conf
    expect: {admitted: false, properties: {spark.eventLog.enabled: "true"}}
  - name: a setting expected as a list
    input: *conf
    expect: {properties: {spark.jars: [a.jar]}}
"#,
    )
    .unwrap();
    let out = run(&["test", suite.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "suite has 6 errors:",
        "  - cases[0].kubernetesVersion: is for pods: a driver ConfigMap is answered without the cluster's PriorityClasses or version; remove it\n",
        "  - cases[0].expect.appliedRules: is for pods, and this case's input is a driver ConfigMap; check it with admitted, message, warnings, properties, annotations or patch\n",
        "  - cases[0].expect.labels: is for pods, and this case's input is a driver ConfigMap;",
        "  - cases[1].expect.properties: is for a driver ConfigMap's spark.properties, and this case's input is a pod;",
        "  - cases[2].expect.properties: a refused submission's ConfigMap is not stored, so there is nothing of it to check; remove it or expect admitted: true\n",
        "  - cases[3].expect.properties.spark.jars: [\"a.jar\"] is not an expected setting; allowed: a value (a string, number or boolean), or null for unset\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

/// A ConfigMap's AdmissionReview, a bare ConfigMap inline, and the case's namespace (which
/// replaces the request's, as for a pod) all take the ConfigMap's path.
#[test]
fn a_driver_configmap_is_taken_inline_or_as_a_review_in_the_cases_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("inline.test.yaml");
    let root = std::env::current_dir().unwrap();
    std::fs::write(
        &suite,
        format!(
            r#"policy:
  rules:
    - name: logs
      match: {{namespaces: [team-a]}}
      sparkConf: {{set: {{spark.eventLog.dir: "s3a://logs/{{namespace}}/"}}}}
cases:
  - name: the review in another namespace
    input: {root}/tests/fixtures/spark-4.3/cluster-mode/configmap-review.json
    namespace: team-a
    expect:
      properties: {{spark.eventLog.dir: "s3a://logs/team-a/", spark.executor.instances: 6}}
      annotations: {{spark-admission.io/spark-conf-set: "spark.eventLog.dir=s3a://logs/team-a/ (was unset) by rule logs"}}
  - name: the review in its own namespace, which the rule does not match
    input: {root}/tests/fixtures/spark-4.3/cluster-mode/configmap-review.json
    expect: {{patch: [], properties: {{spark.eventLog.dir: null}}}}
  - name: a bare ConfigMap inline, with the escapes Java writes
    input:
      kind: ConfigMap
      metadata:
        name: spark-drv-2-conf-map
        namespace: team-a
        ownerReferences: [{{apiVersion: v1, kind: Pod, name: app-driver, uid: u2}}]
      data: {{spark.properties: "spark.app.id=spark-2\nspark.master=k8s\\://https\\://api\\:6443\n"}}
    expect:
      properties: {{spark.master: "k8s://https://api:6443", spark.eventLog.dir: "s3a://logs/team-a/"}}
"#,
            root = root.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["test", "--root", "/"])
        .arg(&suite)
        .output()
        .expect("binary runs");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.ends_with("\n3 passed, 0 failed\n"), "{stdout}");
}
