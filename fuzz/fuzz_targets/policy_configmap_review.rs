//! Arbitrary bytes as the body of a `/validate-policy` request (the validating webhook for
//! policy ConfigMaps), through the calls the route makes: `parse_review_of::<ConfigMap>`, then
//! `validate_policy` with the default data key.
//!
//! Never a panic; every readable request gets a well-formed AdmissionReview answer carrying its
//! uid; and the answer is the one the README asks for, judged here from the request directly: a
//! CREATE or UPDATE of the core ConfigMap `spark-admission/spark-admission-policy` (the server's
//! default identity; labels play no part) is refused (422, with a message) exactly when its
//! policy key is missing or `Policy::parse` refuses it.
//! A body that cannot be read is an error whose message says what was expected.

#![no_main]

use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::admission::Operation;
use libfuzzer_sys::fuzz_target;
use spark_admission::Policy;
use spark_admission::admission::{self, Outcome};
use spark_admission::policy::ConfigMapRef;

/// The CLI's default `--policy-key`.
const KEY: &str = "policy.yaml";
/// The default identity of the policy ConfigMap.
const NAMESPACE: &str = "spark-admission";
const NAME: &str = "spark-admission-policy";

fuzz_target!(|data: &[u8]| {
    let request = match admission::parse_review_of::<ConfigMap>(data) {
        Ok(request) => request,
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains("AdmissionReview"),
                "the error says what was expected: {message}"
            );
            return;
        }
    };
    let uid = request.uid.clone();
    let expect_refusal = matches!(request.operation, Operation::Create | Operation::Update)
        && request.kind.group.is_empty()
        && request.kind.kind == "ConfigMap"
        && request.object.as_ref().is_some_and(|config_map| {
            let namespace = request
                .namespace
                .as_deref()
                .or(config_map.metadata.namespace.as_deref())
                .unwrap_or_default();
            let name = match config_map.metadata.name.as_deref() {
                Some(name) if !name.is_empty() => name,
                _ => request.name.as_str(),
            };
            namespace == NAMESPACE
                && name == NAME
                && config_map
                    .data
                    .as_ref()
                    .and_then(|data| data.get(KEY))
                    .is_none_or(|text| Policy::parse(text).is_err())
        });

    let (review, outcome) =
        admission::validate_policy(request, &ConfigMapRef::default_with_key(KEY));
    assert_eq!(
        review.response.uid, uid,
        "the answer carries the request's uid"
    );
    assert_eq!(review.kind, "AdmissionReview");
    assert_eq!(review.api_version, "admission.k8s.io/v1");
    assert!(review.response.patch.is_none() && review.response.patch_type.is_none());
    let body = match serde_json::to_vec(&review) {
        Ok(body) => body,
        Err(error) => panic!("answer does not encode: {error}"),
    };
    let echoed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(echoed) => echoed,
        Err(error) => panic!("answer is not JSON: {error}"),
    };
    assert_eq!(echoed["response"]["uid"].as_str(), Some(uid.as_str()));
    if expect_refusal {
        assert_eq!(outcome, Outcome::Denied);
        assert!(!review.response.allowed);
        let Some(status) = &review.response.status else {
            panic!("a refusal without a status");
        };
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert!(!status.message.is_empty());
    } else {
        assert_eq!(outcome, Outcome::Unchanged);
        assert!(review.response.allowed && review.response.status.is_none());
    }
});
