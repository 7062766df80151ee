//! Template expansion and label sanitising: whatever the application name and namespace, every
//! label value the policy sets is one Kubernetes accepts.
//!
//! Validity is judged here, not by the crate: by the regular expression Kubernetes validates
//! label values with (`k8s.io/apimachinery/pkg/util/validation`, `IsValidLabelValue`) and its
//! 63-character limit. Checked three ways: the crate's own check agrees with that rule on any
//! text; `sanitize_label_value` turns any text into a valid value (and leaves a valid one alone);
//! and the engine, given a pod whose `spark-app-name` and namespace are the fuzzer's, sets only
//! valid label values from templates that use them.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use regex::Regex;
use spark_admission::Policy;
use spark_admission::engine::{self, RequestContext};
use spark_admission::policy::{Template, Variable, check_label_value, sanitize_label_value};

static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(
        || match Regex::new("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$") {
            Ok(regex) => regex,
            Err(error) => panic!("the Kubernetes label value regex does not compile: {error}"),
        },
    );

fn kubernetes_accepts(value: &str) -> bool {
    value.len() <= 63 && LABEL_VALUE.is_match(value)
}

/// Label templates a platform team might write, each leaning on the fuzzed values.
const POLICY: &str = r#"
rules:
  - name: names
    labels:
      app: "{app_name}"
      team: "{namespace}"
      both: "{namespace}-{app_name}"
      padded: "_{app_name}_"
      role: "{role}.{app_name}"
      account: "{service_account}"
      id: "{app_id}"
"#;

static LABELS_POLICY: LazyLock<Policy> = LazyLock::new(|| match Policy::parse(POLICY) {
    Ok(policy) => policy,
    Err(error) => panic!("the target's policy does not parse: {error}"),
});

fn check_value(value: &str) {
    assert_eq!(
        check_label_value(value).is_ok(),
        kubernetes_accepts(value),
        "check_label_value disagrees with Kubernetes on {value:?}"
    );
    let sanitized = sanitize_label_value(value);
    assert!(
        kubernetes_accepts(&sanitized),
        "{value:?} sanitised to {sanitized:?}, which Kubernetes refuses"
    );
    if kubernetes_accepts(value) {
        assert_eq!(sanitized, value, "a valid value is left as it is");
    }
    assert_eq!(sanitize_label_value(&sanitized), sanitized);
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let template_text: &str = u.arbitrary()?;
    let app_name: &str = u.arbitrary()?;
    let namespace: &str = u.arbitrary()?;
    let account: &str = u.arbitrary()?;
    check_value(app_name);

    if let Ok(template) = Template::parse(template_text) {
        assert_eq!(template.as_str(), template_text);
        let lookup = |v: Variable| match v {
            Variable::AppName => Some(app_name.to_owned()),
            Variable::Namespace => Some(namespace.to_owned()),
            Variable::Role => Some("driver".to_owned()),
            Variable::ServiceAccount | Variable::AppId => None,
        };
        match template.expand(lookup) {
            Ok(expanded) => {
                if !template.has_variables() {
                    assert_eq!(expanded, template.literal_text());
                }
                check_value(&expanded);
            }
            Err(missing) => assert!(matches!(
                missing,
                Variable::ServiceAccount | Variable::AppId
            )),
        }
    }

    let role = if u.arbitrary::<bool>()? {
        "driver"
    } else {
        "executor"
    };
    let labels = BTreeMap::from([
        ("spark-role".to_owned(), role.to_owned()),
        ("spark-app-name".to_owned(), app_name.to_owned()),
        (
            "spark-app-selector".to_owned(),
            "spark-0123456789abcdef".to_owned(),
        ),
    ]);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            service_account_name: Some(account.to_owned()),
            ..Default::default()
        }),
        ..Pod::default()
    };
    let context = RequestContext {
        namespace: namespace.to_owned(),
        ..RequestContext::default()
    };
    let Some(evaluation) = engine::evaluate(&pod, &context, &LABELS_POLICY) else {
        panic!("a pod labelled spark-role={role} is not taken as a Spark pod");
    };
    let set = evaluation.desired.metadata.labels.unwrap_or_default();
    for key in ["app", "team", "both", "padded", "role", "account", "id"] {
        if let Some(value) = set.get(key) {
            assert!(
                kubernetes_accepts(value),
                "the engine set label {key}={value:?}, which Kubernetes refuses"
            );
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
