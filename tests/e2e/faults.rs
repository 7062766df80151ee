//! Faults under load: two replicas behind a TCP proxy (haproxy passing TLS through, as a
//! Service does, and taking a replica out when its `/readyz` fails), Spark executor pods
//! created continuously through the real apiserver, and one fault at a time: SIGTERM and
//! restart, SIGKILL and restart, the serving certificate rotated, the policy ConfigMap
//! rewritten in a loop. Every creation is counted by phase, and every stored pod is checked
//! for the policy of exactly one version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::support::certificate_not_after;
use super::{
    EXECUTOR_REVIEW, Haproxy, Registration, TestNamespace, Webhook, annotation, client,
    create_fixture, ensure_namespace, kubectl, labels, put_policy, spark_container,
    webhook_kubeconfig,
};

/// The phases, in order; creations are counted against the phase they ended in.
const PHASES: [&str; 5] = [
    "steady",
    "SIGTERM and restart, each replica",
    "SIGKILL and restart, each replica",
    "certificate rotated",
    "policy ConfigMap rewritten every 250 ms",
];

/// Creations in flight at any moment.
const CONCURRENCY: usize = 4;

/// One version of the policy: every field it sets names the version, so a pod carrying fields
/// of two versions shows.
fn policy(version: &str) -> String {
    format!(
        "rules:\n  - name: versioned\n    labels: {{policy-version: {version}}}\n    annotations: {{e2e/policy-version: {version}}}\n    env: [{{name: POLICY_VERSION, value: {version}}}]\n"
    )
}

/// haproxy in TCP mode: TLS passes through to the replicas (the apiserver sees their
/// certificates), a new connection goes to the next replica whose `/readyz` answers 200, and a
/// connection refused by a dead replica is retried on the other.
fn tcp_balancer(replicas: &[&Webhook]) -> Haproxy {
    Haproxy::start(|_, port| {
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, replica)| {
                format!(
                    "  server replica{i} 127.0.0.1:{} check port {}\n",
                    replica.port, replica.admin_port
                )
            })
            .collect();
        format!(
            "global\n  maxconn 1024\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n\
             frontend webhook\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n  default-server inter 200ms fall 1 rise 2\n{servers}"
        )
    })
}

/// What the creations of one phase came to.
#[derive(Default, Debug)]
struct PhaseResult {
    created: Vec<String>,
    failed: Vec<(String, String)>,
}

/// Creates executor pods from `CONCURRENCY` tasks until `stop`, each counted in the phase
/// current when it ended.
fn start_load(
    pods: Api<Pod>,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (
    Arc<Vec<Mutex<PhaseResult>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let results: Arc<Vec<Mutex<PhaseResult>>> =
        Arc::new(PHASES.iter().map(|_| Mutex::default()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let tasks = (0..CONCURRENCY)
        .map(|_| {
            let (pods, phase, stop, results, next) = (
                pods.clone(),
                phase.clone(),
                stop.clone(),
                results.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("exec-{}", next.fetch_add(1, Ordering::SeqCst));
                    let outcome = create_fixture(&pods, EXECUTOR_REVIEW, &name).await;
                    // Counted where it ended: a creation in flight when a fault hits
                    // belongs to that fault.
                    let in_phase = phase.load(Ordering::SeqCst);
                    let mut result = results[in_phase].lock().unwrap();
                    match outcome {
                        Ok(_) => result.created.push(name),
                        Err(error) => result.failed.push((name, error.to_string())),
                    }
                }
            })
        })
        .collect();
    (results, tasks)
}

/// Writes a new serving certificate for 127.0.0.1 from the CA in `pki` (valid 30 days, where
/// the first one is valid for a year), key first, each file replaced by a rename.
fn rotate_certificate(pki: &Path, copies: &[&Path]) {
    let work = tempfile::tempdir().unwrap();
    let (key, csr, crt, ext) = (
        work.path().join("tls.key"),
        work.path().join("tls.csr"),
        work.path().join("tls.crt"),
        work.path().join("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req".as_ref(),
        "-new".as_ref(),
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:prime256v1".as_ref(),
        "-nodes".as_ref(),
        "-subj".as_ref(),
        "/CN=127.0.0.1".as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    openssl(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr.as_os_str(),
        "-CA".as_ref(),
        pki.join("ca.crt").as_os_str(),
        "-CAkey".as_ref(),
        pki.join("ca.key").as_os_str(),
        "-set_serial".as_ref(),
        "4242".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-out".as_ref(),
        crt.as_os_str(),
    ]);
    for target in std::iter::once(pki).chain(copies.iter().copied()) {
        for file in ["tls.key", "tls.crt"] {
            let staging = target.join(format!("{file}.new"));
            std::fs::copy(work.path().join(file), &staging).unwrap();
            std::fs::rename(staging, target.join(file)).unwrap();
        }
    }
}

const EXPIRY: &str = "spark_admission_certificate_expiry_timestamp_seconds";

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn two_replicas_under_load_survive_restarts_kills_certificate_rotation_and_policy_rewrites() {
    let client = client().await;
    ensure_namespace(&client, "spark-admission").await;
    kubectl(&["apply", "-f", "deploy/base/rbac.yaml"]);
    put_policy(&client, "v0", &policy("v0"))
        .await
        .expect("initial policy");
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let kubeconfig = webhook_kubeconfig(kubeconfig_dir.path());
    // Readiness turns false at SIGTERM; 1 s is five health checks of the proxy.
    let args = [
        "--policy-configmap",
        "spark-admission/spark-admission-policy",
        "--shutdown-delay",
        "1s",
    ];
    let env = [("KUBECONFIG", kubeconfig.display().to_string())];
    let first = Webhook::start_with("", &args, &env).await;
    let second = Webhook::start_in("", &args, &env, Some(&first.pki())).await;
    let mut replicas = [first, second];
    let balancer = tcp_balancer(&[&replicas[0], &replicas[1]]);
    let namespace = TestNamespace::create(&client, "faults").await;
    let _registration = Registration::through_balancer(
        &client,
        "e2e-faults",
        &balancer,
        &replicas[0].ca_bundle,
        &namespace,
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (results, load) = start_load(pods.clone(), phase.clone(), stop.clone());
    let started = Instant::now();

    tokio::time::sleep(Duration::from_secs(4)).await;

    phase.store(1, Ordering::SeqCst);
    for replica in replicas.iter_mut() {
        replica.signal("TERM");
        let status = replica.wait_exit(Duration::from_secs(20)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "SIGTERM: clean exit within shutdown delay + drain: {status:?}"
        );
        replica.restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    phase.store(2, Ordering::SeqCst);
    for replica in replicas.iter_mut() {
        replica.signal("KILL");
        assert!(replica.wait_exit(Duration::from_secs(5)).await.is_some());
        tokio::time::sleep(Duration::from_secs(2)).await;
        replica.restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    phase.store(3, Ordering::SeqCst);
    let expiry_before = [
        replicas[0].metric(EXPIRY).await,
        replicas[1].metric(EXPIRY).await,
    ];
    for (replica, before) in replicas.iter().zip(expiry_before) {
        assert_eq!(
            before,
            certificate_not_after(&replica.pki().join("tls.crt")) as f64,
            "the expiry shown is the serving certificate's notAfter"
        );
    }
    rotate_certificate(&replicas[0].pki(), &[&replicas[1].pki()]);
    let rotated_at = Instant::now();
    for (replica, before) in replicas.iter().zip(expiry_before) {
        let rotated = certificate_not_after(&replica.pki().join("tls.crt")) as f64;
        assert!(
            rotated < before - 300.0 * 86_400.0,
            "the new certificate is the 30-day one: {rotated}, was {before}"
        );
        loop {
            let now = replica.metric(EXPIRY).await;
            if now == rotated {
                break;
            }
            assert!(
                rotated_at.elapsed() < Duration::from_secs(15),
                "the 30-day certificate is not in force: expiry {now}, its notAfter {rotated} (was {before})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    phase.store(4, Ordering::SeqCst);
    let versions = 40;
    for version in 1..=versions {
        put_policy(
            &client,
            &format!("v{version}"),
            &policy(&format!("v{version}")),
        )
        .await
        .expect("policy rewrite");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let results: Vec<PhaseResult> = results
        .iter()
        .map(|result| std::mem::take(&mut *result.lock().unwrap()))
        .collect();

    // Every creation the apiserver acknowledged is stored, and nothing else is.
    let stored: BTreeMap<String, Pod> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|pod| (pod.metadata.name.clone().unwrap_or_default(), pod))
        .collect();
    let acknowledged: BTreeSet<&String> = results.iter().flat_map(|r| &r.created).collect();
    let stored_names: BTreeSet<&String> = stored.keys().collect();
    assert_eq!(
        acknowledged, stored_names,
        "stored pods = acknowledged creations"
    );

    // Every stored pod carries one version's policy, whole.
    let mut hash_of_version = BTreeMap::new();
    for (name, pod) in &stored {
        let version = labels(pod).get("policy-version").cloned();
        let env = spark_container(pod)
            .env
            .iter()
            .flatten()
            .find(|var| var.name == "POLICY_VERSION")
            .and_then(|var| var.value.clone());
        assert!(
            version.is_some()
                && annotation(pod, "e2e/policy-version") == version
                && env == version
                && annotation(pod, "spark-admission.io/applied-rules").as_deref()
                    == Some("versioned"),
            "pod {name} is not patched by exactly one policy version: label {version:?}, annotation {:?}, env {env:?}",
            annotation(pod, "e2e/policy-version")
        );
        let hash = annotation(pod, "spark-admission.io/policy-hash");
        let known = hash_of_version
            .entry(version.clone())
            .or_insert(hash.clone());
        assert_eq!(*known, hash, "one policy hash per version ({version:?})");
    }
    let rewritten: BTreeSet<_> = results[4]
        .created
        .iter()
        .filter_map(|name| labels(&stored[name]).get("policy-version").cloned())
        .collect();

    let mut report = format!(
        "{} s, {CONCURRENCY} creations in flight, 2 replicas behind haproxy (TCP):\n",
        elapsed.as_secs()
    );
    for (name, result) in PHASES.iter().zip(&results) {
        report += &format!(
            "  {name}: {} created, {} failed\n",
            result.created.len(),
            result.failed.len()
        );
        for (pod, error) in result.failed.iter().take(5) {
            report += &format!("    {pod}: {error}\n");
        }
    }
    report += &format!(
        "  policy versions seen in pods created while rewriting: {} of {versions}\n  stored: {} pods, none unpatched",
        rewritten.len(),
        stored.len()
    );
    eprintln!("{report}");

    for (index, result) in results.iter().enumerate() {
        assert!(
            !result.created.is_empty(),
            "phase {}: no load\n{report}",
            PHASES[index]
        );
        // A killed replica takes the requests it held with it; every other fault loses none.
        if index != 2 {
            assert!(
                result.failed.is_empty(),
                "phase {}: failures\n{report}",
                PHASES[index]
            );
        }
    }
    assert!(
        rewritten.len() >= 5,
        "pods saw the rewrites go into force\n{report}"
    );
    drop(namespace);
}
