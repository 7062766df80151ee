//! Reading a policy has explicit limits: hostile or broken text (an alias bomb, deep nesting,
//! a huge scalar, thousands of mistakes) is refused with a clear, bounded message, never a
//! crash, a hang or a megabyte-long error. Times are printed, not asserted.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use spark_admission::Policy;

/// Parses `text`, which must be refused; returns the message and prints how long it took.
fn refused(what: &str, text: &str) -> String {
    let started = Instant::now();
    let error = Policy::parse(text).expect_err(what);
    let message = error.to_string();
    eprintln!(
        "{what}: {} bytes refused in {:?}, message {} bytes",
        text.len(),
        started.elapsed(),
        message.len()
    );
    message
}

#[test]
fn a_billion_laughs_alias_bomb_is_refused_as_too_many_anchored_values() {
    // Nine levels of nine aliases each: 387 bytes that expand to 9^9 strings.
    let mut bomb = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..9u8 {
        let previous = char::from(b'a' + level - 1);
        let this = char::from(b'a' + level);
        let aliases = vec![format!("*{previous}"); 9].join(", ");
        bomb.push_str(&format!("{this}: &{this} [{aliases}]\n"));
    }
    bomb.push_str("rules: [{name: x}]\n");
    let message = refused("alias bomb", &bomb);
    assert!(
        message.contains("cannot be read") && message.contains("write the repeated parts out"),
        "{message}"
    );
}

#[test]
fn a_few_aliases_for_repeated_blocks_are_fine() {
    let policy = Policy::parse(
        "rules:\n  - name: a\n    tolerations: &spark [{key: dedicated, operator: Equal, value: spark, effect: NoSchedule}]\n  - name: b\n    tolerations: *spark\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.rules[1].tolerations.len(), 1);
}

#[test]
fn nesting_ten_thousand_deep_is_refused_naming_the_depth_limit() {
    for (what, text) in [
        (
            "10,000 nested flow sequences",
            format!("rules: {}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "10,000 nested block sequences",
            format!("rules:\n{}x\n", "- ".repeat(10_000)),
        ),
        (
            "10,000 nested flow mappings",
            format!("rules: {}{}", "{a: ".repeat(10_000), "}".repeat(10_000)),
        ),
    ] {
        let message = refused(what, &text);
        assert!(
            message.contains("nests deeper than 32 levels"),
            "{what}: {message}"
        );
    }
}

#[test]
fn a_huge_document_is_refused_before_it_is_parsed() {
    let text = format!(
        "rules: [{{name: a, labels: {{k: \"{}\"}}}}]",
        "x".repeat(2 << 20)
    );
    let message = refused("a 2 MiB scalar", &text);
    assert!(
        message.contains("over the limit of 1048576 bytes"),
        "{message}"
    );
}

#[test]
fn a_huge_scalar_within_the_size_limit_is_quoted_cut_short() {
    // 900 KiB of label value: a valid document, an invalid label, and a message that quotes
    // the start of it only.
    let text = format!(
        "rules: [{{name: a, labels: {{k: \"{}\"}}}}]",
        "x".repeat(900 << 10)
    );
    let message = refused("a 900 KiB label value", &text);
    assert!(
        message.contains("rules[0].labels.k") && message.contains("more characters"),
        "{}",
        &message[..message.len().min(600)]
    );
    assert!(message.len() < 2_000, "{} bytes", message.len());
}

#[test]
fn ten_thousand_mistakes_are_counted_and_the_first_fifty_listed() {
    let mut text = String::from("rules:\n");
    for i in 0..10_000 {
        text.push_str(&format!("  - {{name: Bad_{i}}}\n"));
    }
    let message = refused("10,000 bad rule names", &text);
    assert!(message.starts_with("policy has 10000 errors:"), "{message}");
    assert!(message.contains("rules[49].name"), "{message}");
    assert!(!message.contains("rules[50].name"), "{message}");
    assert!(message.contains("... and 9950 more"), "{message}");
    // Every problem is still there for callers that want them.
    let error = Policy::parse(&text).unwrap_err();
    assert_eq!(error.problems().len(), 10_000);
}

#[test]
fn a_long_unknown_key_is_reported_without_a_hint_search() {
    let key = "k".repeat(500 << 10);
    let message = refused(
        "a 500 KiB unknown key",
        // An explicit key: YAML limits implicit ones to 1024 characters.
        &format!("rules:\n  - name: a\n    ? {key}\n    : 1\n"),
    );
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.len() < 2_000, "{} bytes", message.len());
}
