//! Reading what the commands are given: files or standard input, JSON or YAML documents,
//! policies (every problem reported) and pod lists.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::policy::Policy;

/// The text of a file, or of standard input for `-`.
pub(super) fn read_input(path: &Path) -> anyhow::Result<String> {
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
pub(super) fn load_policy(path: &Path) -> anyhow::Result<Option<Policy>> {
    let text = read_input(path)?;
    match Policy::parse(&text) {
        Ok(policy) => Ok(Some(policy)),
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            Ok(None)
        }
    }
}

/// A document read as JSON when it is JSON (exact, fast), else as YAML.
pub(super) fn parse_document(text: &str) -> anyhow::Result<Value> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => crate::policy::from_yaml(text)
            .map_err(|e| anyhow::anyhow!("input is neither JSON nor YAML: {e}")),
    }
}

/// A ledger of the live Spark pods in a pod list (a `List`/`PodList` with `items`, a JSON
/// array, or a single pod), as the server's watch would hold them.
pub(super) fn read_pod_list(path: &Path) -> anyhow::Result<crate::quota::Ledger> {
    let document = parse_document(&read_input(path)?)
        .with_context(|| format!("{} is not a pod list", path.display()))?;
    let pods = crate::suite::pod_list(document)
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
    Ok(crate::quota::watch::ledger_of(&pods))
}
