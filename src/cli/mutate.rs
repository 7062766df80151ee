//! `mutate`: one pod (or AdmissionReview) through the policy, printed as the mutated pod, the
//! JSON Patch or a readable diff, with the rules applied and every warning on stderr.
//!
//! The pod takes the server's own path, never a copy of it: a bare pod is wrapped in the CREATE
//! review the apiserver would send, the review goes through [`admission::parse_review`] and
//! [`admission::review`], and quotas are decided on the `--pods` snapshot as the server decides
//! them on its watch. What is printed is read from the server's answer.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionRequest;
use serde_json::Value;

use super::input::{load_policy, parse_document, read_input, read_pod_list};
use super::{MutateArgs, OutputFormat};
use crate::{admission, engine};

/// The request uid and user of the review a bare pod is wrapped in.
const UID: &str = "spark-admission-mutate";
const USERNAME: &str = "spark-admission-mutate";

/// The review to answer, and its pod as sent: the answer's patch applies to that, as the
/// apiserver applies it.
struct Input {
    request: AdmissionRequest<Pod>,
    pod: Value,
}

fn read_review(args: &MutateArgs) -> anyhow::Result<Input> {
    let document = parse_document(&read_input(&args.input)?)?;
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Pod");
    let (mut review, wrapped) = match kind {
        "AdmissionReview" => (document, false),
        "Pod" => {
            let namespace = document
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&args.namespace)
                .to_owned();
            let review = admission::create_review(document, &namespace, UID, USERNAME);
            (review, true)
        }
        other => bail!("input is a {other}; expected a Pod or an AdmissionReview"),
    };
    // The apiserver always names the namespace of a pod's review; a review written by hand may
    // not, and then the pod's own namespace, else --namespace, stands in (SPEC §8).
    if let Some(request) = review.get_mut("request").and_then(Value::as_object_mut)
        && request.get("namespace").is_none_or(Value::is_null)
    {
        let namespace = request
            .get("object")
            .and_then(|pod| pod.pointer("/metadata/namespace"))
            .and_then(Value::as_str)
            .unwrap_or(&args.namespace)
            .to_owned();
        request.insert("namespace".to_owned(), Value::String(namespace));
    }
    let pod = review.pointer("/request/object").cloned();
    let body = serde_json::to_vec(&review).context("failed to encode the review")?;
    let request = match admission::parse_review(&body) {
        Ok(request) => request,
        // The parser's position is in the review made around the pod, not in the input: say
        // what is wrong with the pod itself.
        Err(error) if wrapped => match pod.map(serde_json::from_value::<Pod>) {
            Some(Err(pod_error)) => bail!("input is not a valid pod: {pod_error}"),
            _ => bail!("input is not a valid pod: {error}"),
        },
        Err(error) => bail!("the webhook would answer this review with HTTP 400: {error}"),
    };
    // The server allows a review without a pod unchanged; here there would be nothing to print.
    let pod = pod
        .filter(|pod| !pod.is_null())
        .context("AdmissionReview request has no object")?;
    Ok(Input { request, pod })
}

/// Prints the pod as the webhook would mutate it (or the patch, or a diff); exit 3 when the
/// webhook would deny it.
pub(super) fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    let Input { request, pod } = read_review(args)?;
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
    let mutated_here = admission::mutates(&request);
    let target = match &request.sub_resource {
        Some(sub_resource) => format!("the {sub_resource} subresource of a {}", request.kind.kind),
        None => format!("a {}", request.kind.kind),
    };

    let cluster = std::sync::Arc::new(engine::ClusterFacts {
        global_default_priority_class: args.global_default_priority_class.clone(),
        kubernetes_version: args.kubernetes_version,
    });
    let (mut review, mut summary) = admission::review(request, &policy, &cluster);
    // Quotas, decided against the pods given as the server decides them against its watch, and
    // applied to the answer the same way. Nothing outlives this decision, so there is nothing
    // to reserve: decided as a dry run.
    let mut quota_refusal = None;
    let mut quotas_met = None;
    if let Some(ledger) = quota_pods.filter(|_| summary.role.is_some()) {
        match summary.quota_claim.take() {
            None => quotas_met = Some("quotas: none applies to this pod".to_owned()),
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
                admission::apply_quota_decision(&mut review, &mut summary, &decision);
                if decision.admitted() {
                    quotas_met = Some(format!(
                        "quotas: within {} with these pods",
                        names.join(", ")
                    ));
                } else {
                    quota_refusal = Some(decision.violations);
                }
            }
        }
    }
    let response = review.response;
    match summary.role {
        None if summary.operation != "CREATE" => eprintln!(
            "operation {} is allowed unchanged; only CREATE is mutated",
            summary.operation
        ),
        None if !mutated_here => {
            eprintln!("the review is for {target}, not a pod: allowed unchanged");
        }
        None => eprintln!(
            "not a Spark pod (no spark-role label of driver or executor): allowed unchanged"
        ),
        Some(role) => {
            eprintln!(
                "{role} pod in namespace {}; rules applied: {}",
                summary.namespace,
                if summary.applied_rules.is_empty() {
                    "none".to_owned()
                } else {
                    summary.applied_rules.join(", ")
                }
            );
            for warning in &response.warnings {
                eprintln!("warning: {warning}");
            }
        }
    }
    if let Some(violations) = quota_refusal {
        // One line for each limit exceeded, rather than the answer's one joined message.
        for violation in &violations {
            eprintln!("denied: {violation}");
        }
        return Ok(ExitCode::from(3));
    }
    if !response.allowed {
        let message = response.status.as_ref().map_or("", |s| s.message.as_str());
        eprintln!("denied: {message}");
        return Ok(ExitCode::from(3));
    }
    if let Some(met) = quotas_met {
        eprintln!("{met}");
    }
    let patch = match response.patch {
        None => json_patch::Patch(Vec::new()),
        Some(_) => response
            .decoded_patch()
            .context("the webhook's answer carries a patch that does not decode")?,
    };

    let mut out = std::io::stdout().lock();
    if args.patch {
        writeln!(out, "{}", serde_json::to_string_pretty(&patch)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The apiserver applies the patch to the pod as it sent it; so does this.
    let mut mutated = pod.clone();
    json_patch::patch(&mut mutated, &patch)
        .context("failed to apply the patch to the input pod")?;
    if args.diff {
        let color = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        write!(
            out,
            "{}",
            readable_diff(&to_yaml(&pod)?, &to_yaml(&mutated)?, color)
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
