//! Kubernetes name rules for label keys and values, and the sanitiser that turns any text into
//! a valid label value (so an application name with a space never gets a pod rejected).

/// Longest label value and name part of a key that Kubernetes accepts.
pub const MAX_LABEL_LEN: usize = 63;
const MAX_PREFIX_LEN: usize = 253;

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` that start and end
/// alphanumeric. Returns what is wrong.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value, "a label value")
}

/// Checks a qualified name (label key, annotation key): an optional DNS subdomain prefix and
/// `/`, then a name part as for label values (but not empty).
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|why| format!("its prefix {prefix:?} {why}"))?;
    }
    if name.is_empty() {
        return Err("the name part (after any prefix/) must not be empty".to_owned());
    }
    check_name_part(name, "the name part of a key")
}

fn check_name_part(text: &str, what: &str) -> Result<(), String> {
    if text.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{what} must be at most {MAX_LABEL_LEN} characters, this one has {}",
            text.len()
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{what} may only hold letters, digits, '-', '_' and '.', not {bad:?}"
        ));
    }
    let bytes = text.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(format!("{what} must start and end with a letter or digit"));
    }
    Ok(())
}

/// At least one character of a-z, 0-9 and '-', starting and ending with a letter or digit:
/// the text of an RFC 1123 label, whatever its length limit (a DNS label, each part of a
/// subdomain, a port name).
pub(crate) fn is_rfc1123_label(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Checks a DNS-1123 label: 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a
/// letter or digit (a namespace, a volume or a container name).
pub fn check_dns_label(value: &str) -> Result<(), String> {
    if value.len() <= 63 && is_rfc1123_label(value) {
        Ok(())
    } else {
        Err("must be a DNS-1123 label: 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit".to_owned())
    }
}

/// Checks a DNS subdomain (RFC 1123): lower case alphanumerics, '-' and '.', at most 253
/// characters, each dot-separated part starting and ending alphanumeric.
pub fn check_dns_subdomain(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "must be 1 to {MAX_PREFIX_LEN} characters of a DNS subdomain"
        ));
    }
    for part in text.split('.') {
        if !is_rfc1123_label(part) {
            return Err("must be a DNS subdomain: lower case letters, digits, '-' and '.', each part starting and ending with a letter or digit".to_owned());
        }
    }
    Ok(())
}

/// Turns any text into a valid label value: invalid characters become `-`, the result is cut to
/// 63 characters and trimmed until it starts and ends with a letter or digit. Case is kept,
/// because label values may hold upper case.
pub fn sanitize_label_value(text: &str) -> String {
    if check_label_value(text).is_ok() {
        return text.to_owned();
    }
    let replaced: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL_LEN)
        .collect();
    replaced
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitised_values_are_always_valid() {
        let long = "x".repeat(100);
        for input in [
            "Nightly ETL (prod)",
            "-leading",
            "trailing.",
            "ünïcödé",
            "a b",
            long.as_str(),
            "---",
            "",
        ] {
            let out = sanitize_label_value(input);
            assert!(check_label_value(&out).is_ok(), "{input:?} -> {out:?}");
        }
        assert_eq!(
            sanitize_label_value("Nightly ETL (prod)"),
            "Nightly-ETL--prod"
        );
        assert_eq!(sanitize_label_value("nightly-etl"), "nightly-etl");
    }

    #[test]
    fn qualified_names_follow_kubernetes() {
        assert!(check_qualified_name("prometheus.io/scrape").is_ok());
        assert!(check_qualified_name("cost-center").is_ok());
        assert!(check_qualified_name("Bad_Prefix/x").is_err());
        assert!(check_qualified_name("a/").is_err());
        assert!(check_qualified_name("has space").is_err());
        assert!(check_label_value(&"v".repeat(64)).is_err());
    }
}
