//! Templates for label and annotation values: `{namespace}`, `{app_name}`, `{app_id}`, `{role}`,
//! `{service_account}`, expanded per pod. `{{` and `}}` write a literal brace.

use std::fmt;

/// A variable a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `request.namespace`.
    Namespace,
    /// Label `spark-app-name`, else `sparkoperator.k8s.io/app-name`.
    AppName,
    /// Label `spark-app-selector`.
    AppId,
    /// `driver` or `executor`.
    Role,
    /// `spec.serviceAccountName`, else `default`.
    ServiceAccount,
}

impl Variable {
    /// Every variable's name, for error messages.
    pub const ALLOWED: &'static str =
        "{namespace}, {app_name}, {app_id}, {role}, {service_account}";

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "namespace" => Self::Namespace,
            "app_name" => Self::AppName,
            "app_id" => Self::AppId,
            "role" => Self::Role,
            "service_account" => Self::ServiceAccount,
            _ => return None,
        })
    }

    /// The variable's name as written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::AppName => "app_name",
            Self::AppId => "app_id",
            Self::Role => "role",
            Self::ServiceAccount => "service_account",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Variable(Variable),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`; unknown variables and unbalanced braces are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "{text:?} opens '{{' at {at} without a closing '}}'; write {{{{ for a literal brace"
                        ));
                    };
                    let name = &rest[..end];
                    let variable = Variable::from_name(name).ok_or_else(|| {
                        format!(
                            "{text:?} uses unknown variable {{{name}}}; allowed: {}",
                            Variable::ALLOWED
                        )
                    })?;
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Variable(variable));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "{text:?} has a '}}' at {at} that closes nothing; write }}}} for a literal brace"
                    ));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal text with every variable left out; what validation checks for characters.
    pub fn literal_text(&self) -> String {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Variable(_) => None,
            })
            .collect()
    }

    /// Whether the template uses any variable.
    pub fn has_variables(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Variable(_)))
    }

    /// Expands the template. `lookup` returns `None` for a variable this pod has no value for;
    /// the first such variable is returned as the error.
    pub fn expand(&self, lookup: impl Fn(Variable) -> Option<String>) -> Result<String, Variable> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Variable(v) => out.push_str(&lookup(*v).ok_or(*v)?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(v: Variable) -> Option<String> {
        match v {
            Variable::Namespace => Some("analytics".into()),
            Variable::AppName => Some("nightly".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_expand_and_braces_escape() {
        let t = Template::parse("{namespace}-{app_name}-{{x}}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.expand(lookup), Ok("analytics-nightly-{x}".to_owned()));
        assert_eq!(t.literal_text(), "--{x}");
        assert!(t.has_variables());
        let plain = Template::parse("true").unwrap_or_else(|e| panic!("{e}"));
        assert!(!plain.has_variables());
    }

    #[test]
    fn a_missing_value_names_the_variable() {
        let t = Template::parse("{app_id}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.expand(lookup), Err(Variable::AppId));
    }

    #[test]
    fn unknown_variables_and_unbalanced_braces_are_errors() {
        let err = Template::parse("{team}").expect_err("unknown");
        assert!(
            err.contains("unknown variable {team}") && err.contains("{app_name}"),
            "{err}"
        );
        assert!(Template::parse("{namespace").is_err());
        assert!(Template::parse("a}b").is_err());
    }
}
