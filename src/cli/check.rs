//! `check`, `usage` and `test`: what a platform team runs on a policy before it goes live, and
//! against the cluster once it is.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::input::{load_policy, read_pod_list};
use super::kube_state_metrics::Allowlist;
use super::{CheckArgs, TestArgs, TestFormat, UsageArgs, UsageFormat};

/// Prints a valid policy's summary, or every problem of an invalid one (exit 1); with
/// `--kube-state-metrics`, the allowlist of its labels instead of the summary.
pub(super) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    if args.kube_state_metrics {
        return kube_state_metrics(args, &policy);
    }
    println!("{}: ok, {}", args.policy.display(), policy.summary());
    Ok(ExitCode::SUCCESS)
}

/// The allowlist alone on standard output, so that
/// `--metric-labels-allowlist=$(spark-admission check --kube-state-metrics POLICY)` works; the
/// Prometheus label names on standard error.
fn kube_state_metrics(args: &CheckArgs, policy: &crate::Policy) -> anyhow::Result<ExitCode> {
    match Allowlist::of(policy) {
        Ok(allowlist) => {
            println!("{}", allowlist.flag_value());
            eprint!(
                "kube-state-metrics exposes them on kube_pod_labels as:\n{}",
                allowlist.mapping()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            let problems = crate::policy::Problems(problems);
            let text = problems
                .to_string()
                .replacen("policy has", "labels have", 1);
            eprintln!("{}: {text}", args.policy.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// Prints each quota's usage per namespace and application, from a pod list or the cluster.
pub(super) fn usage(args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    if policy.quotas.is_empty() {
        eprintln!("{}: the policy has no quotas", args.policy.display());
        return Ok(ExitCode::SUCCESS);
    }
    let ledger = match &args.pods {
        Some(path) => read_pod_list(path)?,
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            runtime.block_on(crate::quota::watch::list_cluster())?
        }
    };
    let rows = crate::quota::report::usage(&policy, &ledger, true);
    let mut out = std::io::stdout().lock();
    match args.output {
        UsageFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        UsageFormat::Table => write!(out, "{}", usage_table(&rows))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per quota and scope; each limit as `used/limit (percent)`.
fn usage_table(rows: &[crate::quota::report::ScopeUsage]) -> String {
    const RESOURCES: [&str; 4] = ["applications", "executors", "cpu", "memory"];
    let mut table = vec![vec![
        "QUOTA".to_owned(),
        "NAMESPACE".to_owned(),
        "APPLICATION".to_owned(),
        "APPLICATIONS".to_owned(),
        "EXECUTORS".to_owned(),
        "CPU".to_owned(),
        "MEMORY".to_owned(),
    ]];
    for row in rows {
        let application = match (&row.application, &row.application_name) {
            (Some(id), Some(name)) => format!("{id} ({name})"),
            (Some(id), None) => id.clone(),
            (None, _) => "-".to_owned(),
        };
        let mut line = vec![row.quota.clone(), row.namespace.clone(), application];
        for resource in RESOURCES {
            line.push(
                row.measures
                    .iter()
                    .find(|m| m.resource == resource)
                    .map_or_else(
                        || "-".to_owned(),
                        |m| format!("{}/{} ({:.0}%)", m.used, m.limit, m.ratio * 100.0),
                    ),
            );
        }
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|column| {
            table
                .iter()
                .map(|line| line[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    if rows.is_empty() {
        text.push_str("(no Spark pods in the namespaces the quotas select)\n");
    }
    text
}

/// Runs the suites and reports every case; the exit code says how it went.
pub(super) fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let (reports, totals) = crate::suite::run_paths(&args.paths, &args.root);
    let text = crate::suite::text_report(&reports, totals);
    match args.output {
        TestFormat::Text => {
            print!("{text}");
            std::io::stdout().flush()?;
        }
        TestFormat::Junit => {
            eprint!("{text}");
            let mut out = std::io::stdout().lock();
            write!(out, "{}", crate::suite::junit::write(&reports))?;
            out.flush()?;
        }
    }
    Ok(ExitCode::from(totals.exit_code()))
}
