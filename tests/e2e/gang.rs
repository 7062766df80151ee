//! Gang admission (SPEC §5b) with real `spark-submit --deploy-mode cluster` through two
//! replicas behind a round-robin balancer: with room in the namespace for 2 applications with
//! their minimum executors, 4 concurrent submissions end with exactly 2 admitted and 2 refused
//! at their driver ConfigMap, whose spark-submit fails at once and deletes its driver; the 2
//! admitted hold their room in the namespace's Lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::quotas::LoadBalancer;
use super::{
    Registration, SparkSubmit, TestNamespace, Webhook, client, ensure_namespace, kubectl,
    webhook_kubeconfig,
};

/// 4 CPUs in the namespace: 2 applications of a 1-CPU driver and one 1-CPU executor (Spark's
/// defaults: 1 core; without dynamic allocation the minimum is 1 executor).
const POLICY: &str = "quotas: [{name: team, perNamespace: {maxCpu: '4'}}]";
const GANG_ANNOTATION: &str = "spark-admission.io/gang-reservation";

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn of_four_concurrent_submissions_through_two_replicas_exactly_two_are_admitted() {
    let client = client().await;
    // As deployed: the replicas read pods and ConfigMaps with deploy/'s RBAC only.
    ensure_namespace(&client, "spark-admission").await;
    kubectl(&["apply", "-f", "deploy/base/rbac.yaml"]);
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let kubeconfig = webhook_kubeconfig(kubeconfig_dir.path());
    let env = [("KUBECONFIG", kubeconfig.display().to_string())];
    let first = Webhook::start_with(POLICY, &[], &env).await;
    let second = Webhook::start_in(POLICY, &[], &env, Some(&first.pki())).await;
    let balancer = LoadBalancer::start(&first.pki(), &[first.port, second.port]);
    for run in 1..=3 {
        let namespace = TestNamespace::create(&client, &format!("gang-{run}")).await;
        let _pods = Registration::through_balancer(
            &client,
            &format!("e2e-gang-pods-{run}"),
            &balancer,
            &first.ca_bundle,
            &namespace,
        )
        .await;
        // As deployed: failurePolicy Ignore, so a slow or failed answer would let a ConfigMap
        // through and show up as a third admission.
        let _conf = Registration::create_for_configmaps(
            &client,
            &format!("e2e-gang-conf-{run}"),
            &format!("https://127.0.0.1:{}/mutate-spark-conf", balancer.port),
            &first.ca_bundle,
            &namespace,
            "Ignore",
        )
        .await;
        let refused_before = refused(&first).await + refused(&second).await;
        let started = Instant::now();
        let mut submissions: Vec<SparkSubmit> = (0..4)
            .map(|i| SparkSubmit::cluster_mode(&namespace.name, &format!("app-{i}"), &[]))
            .collect();
        let mut codes = Vec::new();
        for spark in &mut submissions {
            codes.push(spark.wait_exit(Duration::from_secs(180)).await);
        }
        let took = started.elapsed();
        let admitted = codes.iter().filter(|c| **c == Some(0)).count();
        let logs: Vec<String> = submissions.iter().map(SparkSubmit::log).collect();
        assert_eq!(
            admitted,
            2,
            "run {run}: exit codes {codes:?} after {took:?}:\n{}",
            logs.join("\n-----\n")
        );
        for (code, log) in codes.iter().zip(&logs) {
            if *code != Some(0) {
                assert_eq!(*code, Some(1), "{log}");
                assert!(
                    log.contains("leaves room in namespace")
                        && log.contains("for 0 of the 1 executors it needs to start"),
                    "run {run}: the refusal says why:\n{log}"
                );
            }
        }
        assert_eq!(
            refused(&first).await + refused(&second).await - refused_before,
            2.0,
            "run {run}"
        );
        // The refused submissions' drivers are deleted by spark-submit; the 2 left each have
        // their configuration stored with the room granted, and together with their minimum
        // executors they fit the namespace's 4 CPUs.
        let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
        let started = Instant::now();
        let drivers = loop {
            let drivers = pods
                .list(&ListParams::default().labels("spark-role=driver"))
                .await
                .unwrap()
                .items;
            if drivers.len() <= 2 || started.elapsed() > Duration::from_secs(10) {
                break drivers;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(drivers.len(), 2, "run {run}: 2 drivers left");
        let mut granted = 0;
        for driver in &drivers {
            let conf = super::spark_conf::driver_configmap(&client, &namespace.name, driver)
                .await
                .unwrap_or_else(|| panic!("run {run}: the admitted driver's ConfigMap is stored"));
            let record = conf
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(GANG_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            assert!(
                record.starts_with("executors=1 cpu=1000m "),
                "run {run}: {record:?}"
            );
            granted += 1;
        }
        assert_eq!(granted, 2);
        // What made it exact: the room of the 2 admitted, held in the Lease the replicas wrote
        // with compare-and-swap, in the webhook's own namespace.
        let leases = Api::<Lease>::namespaced(client.clone(), "spark-admission");
        let lease = leases
            .get(&format!("spark-admission-gang-{}", namespace.name))
            .await
            .unwrap_or_else(|e| panic!("run {run}: the namespace's reservations are stored: {e}"));
        let held: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            &lease.metadata.annotations.unwrap_or_default()["spark-admission.io/gang-reservations"],
        )
        .unwrap();
        let mut held_uids: Vec<&String> = held.keys().collect();
        let mut driver_uids: Vec<&String> = drivers
            .iter()
            .filter_map(|d| d.metadata.uid.as_ref())
            .collect();
        held_uids.sort();
        driver_uids.sort();
        assert_eq!(held_uids, driver_uids, "run {run}: {held:?}");
        eprintln!("run {run}: 4 submissions decided in {took:?}");
    }
    // What deciding cost: the namespace reads, waits for earlier submissions included.
    for (name, replica) in [("first", &first), ("second", &second)] {
        let count = replica
            .metric("spark_admission_gang_read_duration_seconds_count")
            .await;
        let sum = replica
            .metric("spark_admission_gang_read_duration_seconds_sum")
            .await;
        assert!(count >= 1.0, "{name} replica decided some submissions");
        let held = replica
            .metric("spark_admission_gang_reservations_total{outcome=\"held\"}")
            .await;
        let conflicts = replica
            .metric("spark_admission_gang_reservations_total{outcome=\"conflict\"}")
            .await;
        eprintln!(
            "{name} replica: {count} namespace reads, {:.1} ms each on average; {held} reservations held, {conflicts} writes decided again after a conflict",
            1000.0 * sum / count
        );
    }
}

async fn refused(webhook: &Webhook) -> f64 {
    webhook
        .metric("spark_admission_spark_conf_refused_total{reason=\"gang\"}")
        .await
}
