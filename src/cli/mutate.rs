//! `mutate`: one pod or driver ConfigMap (or its AdmissionReview) through the policy, printed as
//! the mutated object, the JSON Patch or a readable diff, with what the policy did and every
//! warning on stderr.
//!
//! The input takes the server's own path, never a copy of it: a bare pod or ConfigMap is wrapped
//! in the CREATE review the apiserver would send. A pod's review goes through
//! [`admission::parse_review`] and [`admission::review`], and quotas are decided on the `--pods`
//! snapshot as the server decides them on its watch. A ConfigMap's review is answered as
//! `/mutate-spark-conf` answers it ([`crate::suite::spark_conf`]): the `sparkConf` rules, then
//! the executor counts fitted to the quotas with the application's pods read from the
//! snapshot (SPEC §5a, §5b). What is printed is read from the server's answer.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::admission::AdmissionRequest;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::input::{load_policy, parse_document, read_input, read_pod_list};
use super::{MutateArgs, OutputFormat};
use crate::admission::Response;
use crate::policy::Policy;
use crate::suite::spark_conf::{self, Outcome};
use crate::{admission, engine};

/// The request uid and user of the review a bare pod or ConfigMap is wrapped in.
const UID: &str = "spark-admission-mutate";
const USERNAME: &str = "spark-admission-mutate";

/// The review to answer as the apiserver would send it, before it is parsed.
struct Document {
    review: Value,
    /// Whether the input was a bare object that this wrapped in `review`.
    wrapped: bool,
    /// Whether it is reviewed as a driver ConfigMap (`/mutate-spark-conf`) rather than a pod.
    config_map: bool,
}

fn read_document(args: &MutateArgs) -> anyhow::Result<Document> {
    let document = parse_document(&read_input(&args.input)?)?;
    let config_map = spark_conf::is_config_map(&document);
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Pod");
    let object_namespace = |object: &Value| {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(&args.namespace)
            .to_owned()
    };
    let (mut review, wrapped) = match kind {
        "AdmissionReview" => (document, false),
        "Pod" => {
            let namespace = object_namespace(&document);
            let review = admission::create_review(document, &namespace, UID, USERNAME);
            (review, true)
        }
        "ConfigMap" => {
            let namespace = object_namespace(&document);
            let review = spark_conf::create_review(document, &namespace, UID, USERNAME);
            (review, true)
        }
        other => bail!("input is a {other}; expected a Pod, a ConfigMap or an AdmissionReview"),
    };
    // The apiserver always names the namespace of a namespaced object's review; a review
    // written by hand may not, and then the object's own namespace, else --namespace, stands
    // in (SPEC §8).
    if let Some(request) = review.get_mut("request").and_then(Value::as_object_mut)
        && request.get("namespace").is_none_or(Value::is_null)
    {
        let namespace = request
            .get("object")
            .map_or_else(|| args.namespace.clone(), object_namespace);
        request.insert("namespace".to_owned(), Value::String(namespace));
    }
    Ok(Document {
        review,
        wrapped,
        config_map,
    })
}

/// Parses the review with the server's `parse` for its kind (`what`: "pod", "ConfigMap"), and
/// returns it with its object as sent: the answer's patch applies to that, as the apiserver
/// applies it.
fn parse<K: kube::Resource + DeserializeOwned>(
    document: Document,
    what: &str,
    parse: impl FnOnce(&[u8]) -> admission::Result<AdmissionRequest<K>>,
) -> anyhow::Result<(AdmissionRequest<K>, Value)> {
    let object = document.review.pointer("/request/object").cloned();
    let body = serde_json::to_vec(&document.review).context("failed to encode the review")?;
    let request = match parse(&body) {
        Ok(request) => request,
        // The parser's position is in the review made around the object, not in the input: say
        // what is wrong with the object itself.
        Err(error) if document.wrapped => match object.map(serde_json::from_value::<K>) {
            Some(Err(object_error)) => bail!("input is not a valid {what}: {object_error}"),
            _ => bail!("input is not a valid {what}: {error}"),
        },
        Err(error) => bail!("the webhook would answer this review with HTTP 400: {error}"),
    };
    // The server allows a review without an object unchanged; here there would be nothing to
    // print.
    let object = object
        .filter(|object| !object.is_null())
        .context("AdmissionReview request has no object")?;
    Ok((request, object))
}

/// Prints the object as the webhook would mutate it (or the patch, or a diff); exit 3 when
/// the webhook would deny it.
pub(super) fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    let document = read_document(args)?;
    if document.config_map {
        let (request, object) = parse(document, "ConfigMap", admission::parse_review_of)?;
        return mutate_config_map(args, &policy, request, object);
    }
    let (request, pod) = parse(document, "pod", admission::parse_review)?;
    mutate_pod(args, &policy, request, pod)
}

/// The cluster's Spark pods from `--pods`; without them, says on stderr that the policy's
/// quotas are not evaluated.
fn quota_pods(args: &MutateArgs, policy: &Policy) -> anyhow::Result<Option<crate::quota::Ledger>> {
    match &args.pods {
        Some(path) => Ok(Some(read_pod_list(path)?)),
        None => {
            if !policy.quotas.is_empty() {
                let names: Vec<&str> = policy.quotas.iter().map(|q| q.name.as_str()).collect();
                eprintln!(
                    "note: quotas ({}) need the cluster's Spark pods and are not evaluated; give them with --pods",
                    names.join(", ")
                );
            }
            Ok(None)
        }
    }
}

fn mutate_pod(
    args: &MutateArgs,
    policy: &Policy,
    request: AdmissionRequest<Pod>,
    pod: Value,
) -> anyhow::Result<ExitCode> {
    let quota_pods = quota_pods(args, policy)?;
    let mutated_here = admission::mutates(&request);
    let target = match &request.sub_resource {
        Some(sub_resource) => format!("the {sub_resource} subresource of a {}", request.kind.kind),
        None => format!("a {}", request.kind.kind),
    };

    let cluster = std::sync::Arc::new(engine::ClusterFacts {
        global_default_priority_class: args.global_default_priority_class.clone(),
        kubernetes_version: args.kubernetes_version,
    });
    let (mut review, mut summary) = admission::review(request, policy, &cluster);
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
    print_answer(args, &response, &pod, quotas_met.as_deref())
}

/// A driver ConfigMap, answered as `/mutate-spark-conf` answers it (SPEC §5a, §5b).
fn mutate_config_map(
    args: &MutateArgs,
    policy: &Policy,
    request: AdmissionRequest<ConfigMap>,
    config_map: Value,
) -> anyhow::Result<ExitCode> {
    let quota_pods = quota_pods(args, policy)?;
    let evaluated = quota_pods.is_some();
    let offline = spark_conf::answer(request, policy, quota_pods)
        .context("failed to start the runtime that reads the application's pods")?;
    let response = offline.review.response;
    let mut quotas_met = None;
    match &offline.outcome {
        Outcome::NothingToDo => eprintln!(
            "the policy has no sparkConf rules and no quotas: the ConfigMap is allowed unchanged"
        ),
        Outcome::Unchanged(reason) => {
            eprintln!("the ConfigMap is allowed unchanged: {reason}");
        }
        Outcome::Applied(application) => {
            eprintln!(
                "driver configuration of application {}{} in namespace {}",
                application.app,
                application
                    .app_name
                    .as_ref()
                    .map(|name| format!(" ({name})"))
                    .unwrap_or_default(),
                application.namespace
            );
            for warning in &response.warnings {
                eprintln!("warning: {warning}");
            }
            if application.namespace_unread {
                eprintln!(
                    "note: the room quotas leave in namespace {} for the application's minimum executors (gang admission) needs a consistent read of the namespace and is not evaluated offline; per-application limits are",
                    application.namespace
                );
            }
            let fitted = &application.answered.fitted;
            if evaluated && !application.answered.refused() {
                quotas_met = Some(match (&fitted.fit, application.limited) {
                    (Some(fit), _) => format!(
                        "quotas: {} executor{} fit quota {} ({}) with these pods",
                        fit.executors,
                        if fit.executors == 1 { "" } else { "s" },
                        fit.quota,
                        fit.limit
                    ),
                    (None, true) => {
                        "quotas: none applies to this application's executors".to_owned()
                    }
                    (None, false) => format!(
                        "quotas: none limits applications in namespace {}",
                        application.namespace
                    ),
                });
            }
        }
    }
    print_answer(args, &response, &config_map, quotas_met.as_deref())
}

/// Exit 3 with the denial on stderr when `response` refuses; else prints `object` as sent with
/// the answer's patch applied (or the patch, or the diff), and `quotas_met` on stderr.
fn print_answer(
    args: &MutateArgs,
    response: &Response,
    object: &Value,
    quotas_met: Option<&str>,
) -> anyhow::Result<ExitCode> {
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
    // The apiserver applies the patch to the object as it sent it; so does this.
    let mut mutated = object.clone();
    json_patch::patch(&mut mutated, &patch)
        .context("failed to apply the patch to the input object")?;
    if args.diff {
        let color = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        write!(
            out,
            "{}",
            readable_diff(&to_yaml(object)?, &to_yaml(&mutated)?, color)
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
