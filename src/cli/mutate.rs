//! `mutate`: one pod (or AdmissionReview) through the policy, printed as the mutated pod, the
//! JSON Patch or a readable diff, with the rules applied and every warning on stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::input::{load_policy, parse_document, read_input, read_pod_list};
use super::{MutateArgs, OutputFormat};
use crate::engine::{self, RequestContext};

/// The pod to mutate, with what the request says about it.
struct Input {
    pod: Value,
    namespace: String,
    operation: String,
}

fn read_pod_input(args: &MutateArgs) -> anyhow::Result<Input> {
    let document = parse_document(&read_input(&args.input)?)?;
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Pod");
    match kind {
        "AdmissionReview" => {
            let request = document
                .get("request")
                .context("AdmissionReview has no request")?;
            let pod = request
                .get("object")
                .filter(|o| !o.is_null())
                .context("AdmissionReview request has no object")?
                .clone();
            let namespace = request
                .get("namespace")
                .and_then(Value::as_str)
                .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
                .unwrap_or(&args.namespace)
                .to_owned();
            let operation = request
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("CREATE")
                .to_owned();
            Ok(Input {
                pod,
                namespace,
                operation,
            })
        }
        "Pod" => {
            let namespace = document
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&args.namespace)
                .to_owned();
            Ok(Input {
                pod: document,
                namespace,
                operation: "CREATE".to_owned(),
            })
        }
        other => bail!("input is a {other}; expected a Pod or an AdmissionReview"),
    }
}

pub(super) fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    let input = read_pod_input(args)?;
    let quota_pods = match &args.pods {
        Some(path) => Some(read_pod_list(path)?),
        None => {
            if !policy.quotas.is_empty() {
                let names: Vec<&str> = policy.quotas.iter().map(|q| q.name.as_str()).collect();
                eprintln!(
                    "note: quotas ({}) need the cluster's Spark pods and are not evaluated; give them with --pods",
                    names.join(", ")
                );
            }
            None
        }
    };
    let mut pod: Pod =
        serde_json::from_value(input.pod.clone()).context("input is not a valid pod")?;
    pod.metadata.managed_fields = None;

    let evaluation = if input.operation == "CREATE" {
        engine::evaluate(
            &pod,
            &RequestContext {
                namespace: input.namespace.clone(),
            },
            &policy,
        )
    } else {
        eprintln!(
            "operation {} is allowed unchanged; only CREATE is mutated",
            input.operation
        );
        None
    };
    let patch = match evaluation {
        None => {
            if input.operation == "CREATE" {
                eprintln!(
                    "not a Spark pod (no spark-role label of driver or executor): allowed unchanged"
                );
            }
            json_patch::Patch(Vec::new())
        }
        Some(evaluation) => {
            eprintln!(
                "{} pod in namespace {}; rules applied: {}",
                evaluation.role,
                input.namespace,
                if evaluation.applied_rules.is_empty() {
                    "none".to_owned()
                } else {
                    evaluation.applied_rules.join(", ")
                }
            );
            for warning in &evaluation.warnings {
                eprintln!("warning: {warning}");
            }
            if let Some(denial) = &evaluation.denial {
                eprintln!("denied: {denial}");
                return Ok(ExitCode::from(3));
            }
            if let Some(ledger) = quota_pods {
                let claim = crate::quota::Claim::new(
                    &policy,
                    &evaluation.spark,
                    &evaluation.desired,
                    "mutate",
                );
                match claim {
                    None => eprintln!("quotas: none applies to this pod"),
                    Some(claim) => {
                        let names: Vec<&str> = claim
                            .quotas
                            .iter()
                            .filter_map(|&i| policy.quotas.get(i))
                            .map(|q| q.name.as_str())
                            .collect();
                        let decision = crate::quota::Tracker::offline(ledger).admit_locally(
                            &policy.quotas,
                            &claim,
                            true,
                        );
                        if !decision.admitted() {
                            for violation in &decision.violations {
                                eprintln!("denied: {violation}");
                            }
                            return Ok(ExitCode::from(3));
                        }
                        eprintln!("quotas: within {} with these pods", names.join(", "));
                    }
                }
            }
            crate::patch::diff(pod, evaluation.desired)?
        }
    };

    let mut out = std::io::stdout().lock();
    if args.patch {
        writeln!(out, "{}", serde_json::to_string_pretty(&patch)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The apiserver applies the patch to the pod as it sent it; so does this.
    let mut mutated = input.pod.clone();
    json_patch::patch(&mut mutated, &patch)
        .context("failed to apply the patch to the input pod")?;
    if args.diff {
        let color = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        write!(
            out,
            "{}",
            readable_diff(&to_yaml(&input.pod)?, &to_yaml(&mutated)?, color)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    match args.output {
        OutputFormat::Yaml => write!(out, "{}", to_yaml(&mutated)?)?,
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&mutated)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn to_yaml(value: &Value) -> anyhow::Result<String> {
    serde_saphyr::to_string(value).context("failed to write YAML")
}

/// A unified diff with three lines of context, coloured for terminals.
fn readable_diff(before: &str, after: &str, color: bool) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    let mut text = String::new();
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let header = hunk.header().to_string();
        text.push_str(&paint(&format!("{header}\n"), "36", color));
        for change in hunk.iter_changes() {
            let (sign, code) = match change.tag() {
                similar::ChangeTag::Delete => ("-", "31"),
                similar::ChangeTag::Insert => ("+", "32"),
                similar::ChangeTag::Equal => (" ", ""),
            };
            let line = format!("{sign}{}", change.value());
            let line = if line.ends_with('\n') {
                line
            } else {
                format!("{line}\n")
            };
            text.push_str(&paint(&line, code, color && !code.is_empty()));
        }
    }
    text
}

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        let body = text.trim_end_matches('\n');
        format!("\x1b[{code}m{body}\x1b[0m\n")
    } else {
        text.to_owned()
    }
}
