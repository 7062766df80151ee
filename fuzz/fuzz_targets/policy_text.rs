//! Arbitrary text through policy parsing and validation (`Policy::parse`, what `check`, the
//! file source and the ConfigMap source all call).
//!
//! Never a panic. A policy that parses is stable: parsing the same text again gives the same
//! policy, and the document it was read from, written out as JSON (which the policy format
//! accepts, being YAML), gives the same rules and quotas. A policy that does not parse says
//! what is wrong, at least once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use spark_admission::Policy;
use spark_admission::policy::{Error, from_yaml};

/// Everything the model holds, the hash aside (it is of the text, which differs in JSON).
fn model(policy: &Policy) -> String {
    format!("{:?}\n{:?}", policy.rules, policy.quotas)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text) {
        Ok(policy) => policy,
        Err(error) => {
            let problems = error.problems();
            assert!(!problems.is_empty(), "a refusal lists no problem");
            for problem in &problems {
                assert!(!problem.message.is_empty(), "a problem without a message");
            }
            if let Error::Invalid(found) = &error {
                assert_eq!(found.0.len(), problems.len());
            }
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert_eq!(policy.hash.len(), 12, "the hash is 12 hex digits");
    let again = match Policy::parse(text) {
        Ok(again) => again,
        Err(error) => panic!("the same text parsed once, then failed: {error}"),
    };
    assert_eq!(model(&policy), model(&again));
    assert_eq!(policy.hash, again.hash);
    assert_eq!(policy.summary(), again.summary());

    // The same document as JSON is the same policy.
    let document: Value = if text.trim().is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        match from_yaml(text) {
            Ok(document) => document,
            Err(error) => panic!("Policy::parse accepted text from_yaml refuses: {error}"),
        }
    };
    let json = match serde_json::to_string(&document) {
        Ok(json) => json,
        Err(error) => panic!("the policy document does not encode as JSON: {error}"),
    };
    match Policy::parse(&json) {
        Ok(reparsed) => assert_eq!(
            model(&policy),
            model(&reparsed),
            "the policy written as JSON ({json}) is another policy"
        ),
        Err(error) => panic!("the policy written as JSON ({json}) is refused: {error}"),
    }
});
