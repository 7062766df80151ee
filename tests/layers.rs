//! The library's modules form layers, and imports only run down them (README, "Library
//! layout"): each module may use the modules of lower layers, never one of its own layer or a
//! higher one. This reads every `crate::` path in `src/` outside comments and test modules
//! (tests beside the code may reach up to check how the layers fit together) and names each
//! path that breaks the order, so a new upward arrow or cycle fails CI where it is written.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The layers, lowest first (the same order as README's library layout).
const LAYERS: &[&[&str]] = &[
    &["policy", "lean", "files", "certs", "metrics", "events"],
    &["engine"],
    &["patch"],
    &["sparkconf"],
    &["quota"],
    &["cluster", "gang", "source", "templates"],
    &["state"],
    &["admission"],
    &["server"],
    &["suite"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/quota/watch.rs` is `quota`), or
/// `None` for the crate root and the binary.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then(|| module.to_owned())
}

/// Files that are test modules as a whole (`#[cfg(test)] mod x;` in their parent).
fn test_only_files(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut test_only = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            let declared = pair[1].trim();
            if pair[0].trim() == "#[cfg(test)]"
                && declared.starts_with("mod ")
                && declared.ends_with(';')
            {
                let name = declared.trim_start_matches("mod ").trim_end_matches(';');
                let dir = if file
                    .file_name()
                    .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
                {
                    file.parent().expect("parent").to_path_buf()
                } else {
                    file.with_extension("")
                };
                test_only.push(dir.join(format!("{name}.rs")));
                test_only.push(dir.join(name).join("mod.rs"));
            }
        }
    }
    test_only
}

/// Every `crate::module` named in `text` outside comments and the `#[cfg(test)]` module that
/// closes a file, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_tests = false;
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code == "#[cfg(test)]" {
            in_tests = true;
        }
        if in_tests || code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let module: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some(braced) = after.strip_prefix('{') {
                // `use crate::{a, b::c}`: every first segment inside the braces.
                let inner = braced.split('}').next().unwrap_or_default();
                for part in inner.split(',') {
                    let first = part.trim().split("::").next().unwrap_or_default();
                    if !first.is_empty() {
                        found.push((number + 1, first.to_owned()));
                    }
                }
            } else if !module.is_empty() {
                found.push((number + 1, module));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn imports_run_only_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let test_only = test_only_files(&files);
    let mut modules_seen = std::collections::BTreeSet::new();
    let mut broken = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            broken.push(format!(
                "{}: module `{module}` is in no layer; add it to LAYERS here and to README's library layout",
                file.display()
            ));
            continue;
        };
        modules_seen.insert(module.clone());
        if test_only.contains(file) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (line, used) in crate_paths(&text) {
            if used == module || used == "Policy" {
                // Its own module, or the crate root's re-export of the policy (lowest layer).
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                Some(layer) => broken.push(format!(
                    "{}:{line}: `{module}` (layer {own}) uses `crate::{used}` (layer {layer}): imports must run down the layers",
                    file.display()
                )),
                None => broken.push(format!(
                    "{}:{line}: `crate::{used}` is in no layer",
                    file.display()
                )),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // The check saw the whole library, so it cannot pass by reading nothing.
    for layer in LAYERS {
        for module in *layer {
            assert!(
                modules_seen.contains(*module),
                "no file of module `{module}` found under src/"
            );
        }
    }
}

#[test]
fn the_reader_finds_upward_imports_in_every_form_and_skips_comments_and_tests() {
    let text = "use crate::state::State;\n\
                use crate::{admission, policy::Role};\n\
                // see crate::server for why\n\
                let x = crate::cli::run(); // and crate::suite\n\
                #[cfg(test)]\n\
                mod tests { use crate::cli; }\n";
    let found: Vec<String> = crate_paths(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["state", "admission", "policy", "cli"]);
}
