//! The policy's `sparkConf` rules on real cluster-mode submissions (SPEC §5b): settings written
//! into the driver's ConfigMap reach the running driver (its Prometheus endpoint, its event
//! log), and a submission over a `max` is refused at that ConfigMap, which makes spark-submit
//! fail and delete its driver pod.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use super::spark_conf::properties_of;
use super::{Registration, SparkSubmit, TestNamespace, Webhook, client, free_port, labels};

const SET_ANNOTATION: &str = "spark-admission.io/spark-conf-set";

/// The `spark-drv-*-conf-map` ConfigMap stored in `namespace` and owned by `driver`.
async fn stored_driver_configmap(
    client: &kube::Client,
    namespace: &str,
    driver: &Pod,
) -> ConfigMap {
    super::spark_conf::driver_configmap(client, namespace, driver)
        .await
        .expect("a spark-drv ConfigMap owned by the driver pod")
}

/// The value of `key` in a `spark.properties` text (as `java.util.Properties.store` writes
/// it), its backslash escapes undone: enough for these values, which have no `\uXXXX` and no
/// continuation lines.
fn property(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let escaped = line.strip_prefix(key)?.strip_prefix('=')?;
        let mut value = String::new();
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            value.push(if c == '\\' { chars.next()? } else { c });
        }
        Some(value)
    })
}

/// An HTTP/1.0 GET to 127.0.0.1 (so the answer is neither chunked nor kept alive): the status
/// code and the body, or `None` when nothing answers.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Every file under `dir`, by its path relative to `dir`, with its size.
fn files_under(dir: &std::path::Path) -> Vec<(String, u64)> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, found: &mut Vec<(String, u64)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            // Spark renames the files as it goes: one may be gone by now.
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                walk(root, &entry.path(), found);
            } else {
                let path = entry.path();
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                found.push((relative, metadata.len()));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn cluster_mode_spark_conf_set_turns_on_prometheus_and_event_logs_that_the_driver_then_serves_and_writes()
 {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "conf-set").await;
    // Spark refuses to start when the event log directory does not exist.
    let event_logs = tempfile::tempdir().unwrap();
    let event_log_dir = event_logs.path().join(&namespace.name);
    std::fs::create_dir_all(&event_log_dir).unwrap();
    // Matched by the application's name as Spark labels its pods: "Obs Test_1" is
    // `obs-test-1`.
    let policy = format!(
        r#"
rules:
  - name: observability
    match: {{namespaces: ["{namespace}"], appNames: [obs-test-1]}}
    sparkConf:
      set:
        spark.ui.prometheus.enabled: "true"
        spark.eventLog.enabled: "true"
        spark.eventLog.dir: "file://{dir}/{{namespace}}/"
"#,
        namespace = namespace.name,
        dir = event_logs.path().display(),
    );
    let webhook = Webhook::start(&policy).await;
    let _registrations =
        Registration::pods_and_driver_configmaps(&client, "e2e-conf-set", &webhook, &namespace)
            .await;

    // SparkSubmit::cluster_mode passes spark.ui.enabled=false first; a later --conf wins.
    let ui_port = free_port().to_string();
    let started = Instant::now();
    let mut submit = SparkSubmit::cluster_mode(
        &namespace.name,
        "Obs Test_1",
        &[
            ("spark.ui.enabled", "true"),
            ("spark.ui.port", &ui_port),
            // The driver run below then starts without waiting 30 s for executors.
            ("spark.scheduler.minRegisteredResourcesRatio", "0"),
        ],
    );
    let code = submit.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "submitted:\n{}", submit.log());
    eprintln!("spark-submit exited 0 after {:?}", started.elapsed());

    // The driver pod carries the label the rule matched on.
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let drivers = pods
        .list(&ListParams::default().labels("spark-role=driver"))
        .await
        .unwrap();
    assert_eq!(drivers.items.len(), 1, "one driver pod");
    let driver_labels = labels(&drivers.items[0]);
    assert_eq!(
        driver_labels.get("spark-app-name").map(String::as_str),
        Some("obs-test-1")
    );
    let app_id = driver_labels["spark-app-selector"].clone();

    // The stored ConfigMap carries the settings, what the user asked for, and the record.
    let stored = stored_driver_configmap(&client, &namespace.name, &drivers.items[0]).await;
    let text = properties_of(&stored);
    let expected_dir = format!("file://{}/", event_log_dir.display());
    for (key, value) in [
        ("spark.ui.prometheus.enabled", "true"),
        ("spark.eventLog.enabled", "true"),
        ("spark.eventLog.dir", expected_dir.as_str()),
        ("spark.ui.enabled", "true"),
        ("spark.ui.port", ui_port.as_str()),
        ("spark.app.name", "Obs Test_1"),
        ("spark.app.id", app_id.as_str()),
    ] {
        assert_eq!(
            property(&text, key).as_deref(),
            Some(value),
            "{key}:\n{text}"
        );
    }
    assert_eq!(
        stored
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get(SET_ANNOTATION)
            .map(String::as_str),
        Some(
            format!(
                "spark.eventLog.dir={expected_dir} (was unset) by rule observability, \
                 spark.eventLog.enabled=true (was unset) by rule observability, \
                 spark.ui.prometheus.enabled=true (was unset) by rule observability"
            )
            .as_str()
        )
    );
    assert_eq!(
        webhook
            .metric("spark_admission_spark_conf_set_total{rule=\"observability\"}")
            .await,
        3.0,
        "one per setting written"
    );

    // The driver's own command on the stored configuration.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let mut driver =
        SparkSubmit::driver_from_properties(&format!("{}-driver", namespace.name), file.path());
    let ready = format!("E2E_SPARK_JOB_READY app_id={app_id} ");
    let started = Instant::now();
    while !driver.log().contains(&ready) {
        assert!(
            started.elapsed() < Duration::from_secs(120) && driver.exit_code().is_none(),
            "the driver did not start as {app_id}:\n{}",
            driver.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("driver ready after {:?}", started.elapsed());

    // Prometheus text on the UI port the user asked for. Spark 4.3 defaults
    // spark.ui.prometheus.enabled to true, so this endpoint alone does not show the rule took
    // effect; the event log below does (spark.eventLog.enabled defaults to false).
    let port: u16 = ui_port.parse().unwrap();
    let (status, body) = http_get(port, "/metrics/executors/prometheus")
        .await
        .unwrap_or_else(|| panic!("nothing answers on {port}:\n{}", driver.log()));
    assert_eq!(status, 200, "{body}");
    let line = body
        .lines()
        .find(|line| {
            line.starts_with("metrics_executor_")
                && line.contains(&format!("application_id=\"{app_id}\""))
                && line.contains("executor_id=\"driver\"")
        })
        .unwrap_or_else(|| panic!("no executor metric of {app_id} for the driver:\n{body}"));
    eprintln!("prometheus line: {line}");

    // The event log, in the directory of the application's namespace. Spark 4 rolls event
    // logs by default: a directory eventlog_v2_<app id> holding events_<n>_<app id>[.<codec>]
    // and appstatus_<app id>.inprogress, renamed to appstatus_<app id> when the application
    // ends.
    let started = Instant::now();
    let running = loop {
        let files = files_under(&event_log_dir);
        if files.iter().any(|(path, _)| path.contains(&app_id)) {
            break files;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no event log of {app_id} in {}",
            event_log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("event log while running: {running:?}");
    assert!(
        running
            .iter()
            .all(|(path, _)| path.starts_with(&format!("eventlog_v2_{app_id}/"))),
        "{running:?}"
    );
    assert!(
        running
            .iter()
            .any(|(path, _)| path.ends_with(&format!("/appstatus_{app_id}.inprogress"))),
        "{running:?}"
    );
    assert!(
        running
            .iter()
            .any(|(path, _)| path.contains(&format!("/events_1_{app_id}"))),
        "{running:?}"
    );

    driver.stop();
    let finished = files_under(&event_log_dir);
    eprintln!("event log after the driver stopped: {finished:?}");
    assert!(
        finished
            .iter()
            .any(|(path, _)| path.ends_with(&format!("/appstatus_{app_id}"))),
        "the application ended: {finished:?}"
    );
    assert!(
        finished
            .iter()
            .any(|(path, size)| path.contains(&format!("/events_1_{app_id}")) && *size > 0),
        "events written: {finished:?}"
    );
    let log = driver.log();
    assert!(!log.contains("denied the request"), "no refusal:\n{log}");
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn cluster_mode_submission_over_a_spark_conf_max_is_refused_and_spark_submit_deletes_its_driver()
 {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "conf-max").await;
    let webhook = Webhook::start(&format!(
        r#"
rules:
  - name: caps
    match: {{namespaces: ["{}"]}}
    sparkConf:
      max: {{spark.executor.memory: 1g}}
"#,
        namespace.name
    ))
    .await;
    let _registrations =
        Registration::pods_and_driver_configmaps(&client, "e2e-conf-max", &webhook, &namespace)
            .await;

    // A timeline, from the start of spark-submit: the pods' events as a watch sees them, and
    // when the webhook counted the refusal.
    let started = Instant::now();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Duration, String)>::new()));
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let watch = {
        let (pods, events) = (pods.clone(), events.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            let stream = pods.watch(&WatchParams::default(), "0").await.unwrap();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                let (kind, pod) = match event {
                    WatchEvent::Added(pod) => ("ADDED", pod),
                    WatchEvent::Modified(pod) => ("MODIFIED", pod),
                    WatchEvent::Deleted(pod) => ("DELETED", pod),
                    _ => continue,
                };
                let name = pod.metadata.name.unwrap_or_default();
                events
                    .lock()
                    .unwrap()
                    .push((started.elapsed(), format!("{kind} {name}")));
            }
        })
    };
    let refused_series = "spark_admission_spark_conf_refused_total{reason=\"max\"}";
    let mut refused_at = None;
    let mut submit = SparkSubmit::cluster_mode(
        &namespace.name,
        "too-big",
        &[("spark.executor.memory", "2g")],
    );
    let code = loop {
        if refused_at.is_none() && webhook.metric(refused_series).await >= 1.0 {
            refused_at = Some(started.elapsed());
        }
        if let Some(code) = submit.exit_code() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "spark-submit still running:\n{}",
            submit.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exited = started.elapsed();
    assert_ne!(code, 0, "{}", submit.log());
    let refused_at = refused_at.expect("the webhook refused before spark-submit exited");
    eprintln!(
        "spark-submit exited {code} after {exited:?}, {:?} after the refusal was counted (at {refused_at:?})",
        exited - refused_at
    );
    assert!(
        exited - refused_at < Duration::from_secs(5),
        "spark-submit exits promptly once refused"
    );

    // The Service spark-submit created before the ConfigMap remains (no garbage collector
    // here), and names the application.
    let services = Api::<Service>::namespaced(client.clone(), &namespace.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(services.items.len(), 1, "the driver's Service");
    let app_id = services.items[0]
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.as_ref())
        .and_then(|selector| selector.get("spark-app-selector"))
        .cloned()
        .expect("the Service selects the driver by application");
    let message = format!(
        "admission webhook \"e2e-conf-max-conf.spark-admission.io\" denied the request: \
         spark-admission refused Spark application too-big ({app_id}): \
         spark.executor.memory=2g is above the max 1g of rule caps; \
         submit it again with these settings within the max"
    );
    let log = submit.log();
    assert!(log.contains(&message), "{message}\nnot in:\n{log}");
    assert!(
        log.contains("Failure executing: PATCH at:") && log.contains("-conf-map?fieldManager="),
        "{log}"
    );

    // spark-submit deleted its driver pod; no driver ConfigMap was stored.
    let deleted = loop {
        let seen = events.lock().unwrap().clone();
        if let Some((at, _)) = seen
            .iter()
            .find(|(_, event)| event.starts_with("DELETED ") && event.ends_with("-driver"))
        {
            break *at;
        }
        assert!(
            started.elapsed() < exited + Duration::from_secs(5),
            "no driver pod DELETED 5 s after spark-submit exited: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    watch.abort();
    let seen = events.lock().unwrap().clone();
    eprintln!("pod events: {seen:?}");
    eprintln!(
        "driver pod DELETED at {deleted:?}: {:?} after the refusal was counted",
        deleted.saturating_sub(refused_at)
    );
    assert!(
        seen.iter()
            .any(|(_, event)| event.starts_with("ADDED ") && event.ends_with("-driver")),
        "{seen:?}"
    );
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no pod left"
    );
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    let drv: Vec<_> = maps
        .items
        .iter()
        .filter_map(|map| map.metadata.name.as_deref())
        .filter(|name| name.starts_with("spark-drv-"))
        .collect();
    assert!(drv.is_empty(), "{drv:?}");
    assert_eq!(webhook.metric(refused_series).await, 1.0);
    assert_eq!(
        webhook
            .metric("spark_admission_spark_conf_set_total{rule=\"caps\"}")
            .await,
        0.0
    );
}
