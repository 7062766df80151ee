//! JUnit XML for CI systems (GitLab, Jenkins, GitHub test reporters): one `<testsuite>` per
//! suite file, one `<testcase>` per case, a `<failure>` with the diff for a failed case and an
//! `<error>` for a suite that could not be run.
//!
//! Written by hand: the format is a few elements, and every piece of text goes through
//! [`escape`], which also drops the characters XML 1.0 cannot carry at all (most control
//! characters), so a policy message can never make the report unreadable.

use std::fmt::Write;

use super::SuiteReport;

/// The report as a JUnit XML document.
pub fn write(reports: &[SuiteReport]) -> String {
    let tests: usize = reports
        .iter()
        .map(|r| r.cases.len().max(usize::from(r.error.is_some())))
        .sum();
    let failures: usize = reports
        .iter()
        .flat_map(|r| &r.cases)
        .filter(|c| !c.passed())
        .count();
    let errors = reports.iter().filter(|r| r.error.is_some()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // Writing to a String cannot fail.
    let _ = writeln!(
        xml,
        "<testsuites name=\"spark-admission test\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">"
    );
    for report in reports {
        let path = report.path.display().to_string();
        let name = if report.name.is_empty() {
            &path
        } else {
            &report.name
        };
        match &report.error {
            Some(error) => {
                let _ = writeln!(
                    xml,
                    "  <testsuite name=\"{}\" file=\"{}\" tests=\"1\" failures=\"0\" errors=\"1\">",
                    escape(name),
                    escape(&path)
                );
                let _ = writeln!(
                    xml,
                    "    <testcase name=\"(load)\" classname=\"{}\">\n      <error message=\"{}\">{}</error>\n    </testcase>",
                    escape(&path),
                    escape(error.lines().next().unwrap_or_default()),
                    escape(error)
                );
            }
            None => {
                let failed = report.cases.iter().filter(|c| !c.passed()).count();
                let _ = writeln!(
                    xml,
                    "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\">",
                    escape(name),
                    escape(&path),
                    report.cases.len()
                );
                for case in &report.cases {
                    let _ = write!(
                        xml,
                        "    <testcase name=\"{}\" classname=\"{}\"",
                        escape(&case.name),
                        escape(&path)
                    );
                    if case.passed() {
                        xml.push_str("/>\n");
                        continue;
                    }
                    let summary: Vec<&str> =
                        case.failures.iter().map(|f| f.path.as_str()).collect();
                    let details: String = case.failures.iter().map(ToString::to_string).collect();
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(&format!("not as expected: {}", summary.join(", "))),
                        escape(&details)
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Text made safe for XML content and attribute values (double- or single-quoted).
///
/// Newlines and tabs are written as character references: in an attribute a parser would turn
/// them into spaces, and in content a reference reads back the same.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\n' => escaped.push_str("&#10;"),
            '\r' => escaped.push_str("&#13;"),
            '\t' => escaped.push_str("&#9;"),
            // XML 1.0's Char production: everything else below 0x20, the surrogates (which a
            // Rust char never is) and U+FFFE/U+FFFF cannot appear, not even as references.
            '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => escaped.push(c),
            _ => escaped.push('\u{FFFD}'),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_quotes_and_characters_xml_cannot_hold() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\n\u{1b}[31m\u{0}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;\u{FFFD}[31m\u{FFFD}"
        );
        assert_eq!(escape("é ☃ 😀"), "é ☃ 😀");
    }
}
