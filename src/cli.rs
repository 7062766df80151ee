//! The command line: clap structs (their doc comments are the help text) and the commands.
//!
//! Exit codes are part of the contract: 0 success (for `mutate`: admitted), 1 bad input or
//! policy, 2 bad usage, 3 the pod would be denied.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::engine::{self, RequestContext};
use crate::policy::Policy;

/// Applies one cluster policy to every Apache Spark driver and executor pod: a Kubernetes
/// mutating admission webhook and the tools to check and try its policy.
#[derive(Debug, Parser)]
#[command(name = "spark-admission", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file; prints every error with its path and exits 1, or a summary.
    Check(CheckArgs),
    /// Apply a policy to one pod (or AdmissionReview) and print the mutated pod.
    Mutate(MutateArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The policy file (YAML or JSON), or - for standard input.
    policy: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
struct MutateArgs {
    /// The policy file (YAML or JSON).
    #[arg(long, short = 'p')]
    policy: PathBuf,
    /// A pod (YAML or JSON) or an AdmissionReview; - for standard input.
    input: PathBuf,
    /// Namespace for a pod that names none (an AdmissionReview's own namespace wins).
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Output format of the mutated pod.
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    output: OutputFormat,
    /// Print the JSON Patch the webhook would answer with, instead of the pod.
    #[arg(long, conflicts_with = "diff")]
    patch: bool,
    /// Print a readable diff from the pod to the mutated pod, instead of the pod.
    #[arg(long)]
    diff: bool,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => report(check(&args)),
        Command::Mutate(args) => report(mutate(&args)),
    }
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
    }
}

/// Loads and validates a policy file; on failure prints every problem and returns `None`.
fn load_policy(path: &Path) -> anyhow::Result<Option<Policy>> {
    let text = read_input(path)?;
    match Policy::parse(&text) {
        Ok(policy) => Ok(Some(policy)),
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            Ok(None)
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    println!("{}: ok, {}", args.policy.display(), policy.summary());
    Ok(ExitCode::SUCCESS)
}

/// A document read as JSON when it is JSON (exact, fast), else as YAML.
fn parse_document(text: &str) -> anyhow::Result<Value> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => crate::policy::from_yaml(text)
            .map_err(|e| anyhow::anyhow!("input is neither JSON nor YAML: {e}")),
    }
}

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

fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    let input = read_pod_input(args)?;
    if !policy.quotas.is_empty() {
        let names: Vec<&str> = policy.quotas.iter().map(|q| q.name.as_str()).collect();
        eprintln!(
            "note: quotas ({}) need live cluster state and are not evaluated here",
            names.join(", ")
        );
    }
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
    let patch = match &evaluation {
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
            crate::patch::diff(pod.clone(), evaluation.desired.clone())?
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
