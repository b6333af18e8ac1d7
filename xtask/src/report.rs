//! What the benchmark reports share: the machine they ran on, the commit they measured, the
//! notes section, and writing the report out. What each report measures and how it lays out its
//! tables stays with its benchmark.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::bench_load::cpu_model;

/// The machine, as the reports name it: `<CPUs this process may use> × <CPU model>`.
pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} × {}", cpu_model())
}

/// Which source was measured: `commit <short hash>`, saying so when `paths` (relative to
/// `root`) had uncommitted changes, or `an unknown commit` when git cannot tell.
pub(crate) fn source_commit(root: &Path, paths: &[&str]) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend_from_slice(paths);
    match (git(&["rev-parse", "--short", "HEAD"]), git(&status)) {
        (Some(commit), Some(changes)) if changes.is_empty() => format!("commit {commit}"),
        (Some(commit), Some(_)) => format!(
            "commit {commit} with uncommitted changes in {}",
            paths
                .iter()
                .map(|path| format!("{path}/"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        _ => "an unknown commit".to_owned(),
    }
}

/// Appends a `Notes:` list of `notes` to `md`, nothing when there are none.
pub(crate) fn push_notes(md: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    md.push_str("\nNotes:\n\n");
    for note in notes {
        md.push_str(&format!("- {note}\n"));
    }
}

/// Prints `report` and writes it to `path`.
pub(crate) fn publish(report: &str, path: &Path) -> anyhow::Result<()> {
    println!("\n{report}");
    std::fs::write(path, report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("(written to {})", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_a_list_and_absent_when_there_are_none() {
        let mut md = "table\n".to_owned();
        push_notes(&mut md, &[]);
        assert_eq!(md, "table\n");
        push_notes(&mut md, &["one".to_owned(), "two".to_owned()]);
        assert_eq!(md, "table\n\nNotes:\n\n- one\n- two\n");
    }
}
