//! Prometheus's own checks of the alert rules: `promtool check rules` (what Prometheus would
//! refuse to load) and `promtool test rules` (each alert fires, or stays quiet, in the scenarios
//! of `deploy/observability/alerts.test.yaml`). promtool comes from Debian's `prometheus`
//! package, installed when missing.
//!
//! promtool compares an alert's annotations word for word; the scenarios assert when alerts fire
//! and with which labels, not their prose, so the rules are tested from a copy without
//! annotations (`target/observability/rules.yaml`).

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::tools::{ensure_debian_packages, status};

/// Where Debian's `prometheus` package puts promtool.
const PROMTOOL: &str = "/usr/bin/promtool";

/// The rule file and the unit tests, relative to the workspace root.
const RULES: &str = "deploy/observability/alerts.yaml";
const TESTS: &str = "deploy/observability/alerts.test.yaml";

/// Runs both checks; fails naming what promtool refused.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    ensure_debian_packages(PROMTOOL, &["prometheus"])?;
    let mut check = Command::new(PROMTOOL);
    check.current_dir(root).args(["check", "rules", RULES]);
    status(check).context("promtool refuses the alert rules")?;
    let scratch = root.join("target/observability");
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(
        scratch.join("rules.yaml"),
        without_annotations(&std::fs::read_to_string(root.join(RULES))?)?,
    )?;
    std::fs::copy(root.join(TESTS), scratch.join("alerts.test.yaml"))?;
    let mut test = Command::new(PROMTOOL);
    test.current_dir(&scratch)
        .args(["test", "rules", "alerts.test.yaml"]);
    status(test)
        .context("an alert rule does not behave as deploy/observability/alerts.test.yaml expects")
}

/// The rule file with every rule's `annotations` removed (and nothing else changed).
fn without_annotations(rules: &str) -> anyhow::Result<String> {
    let mut doc: serde_norway::Value =
        serde_norway::from_str(rules).context("alerts.yaml is not YAML")?;
    let groups = doc
        .get_mut("groups")
        .and_then(serde_norway::Value::as_sequence_mut)
        .context("alerts.yaml has no groups")?;
    for group in groups {
        if let Some(rules) = group
            .get_mut("rules")
            .and_then(serde_norway::Value::as_sequence_mut)
        {
            for rule in rules {
                if let Some(rule) = rule.as_mapping_mut() {
                    rule.remove("annotations");
                }
            }
        }
    }
    Ok(serde_norway::to_string(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_go_and_everything_else_stays() {
        let rules = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n    labels: {severity: critical}\n    annotations: {summary: down}\n";
        let stripped = without_annotations(rules).unwrap();
        assert!(!stripped.contains("annotations"), "{stripped}");
        for kept in ["alert: A", "expr: up == 0", "for: 1m", "severity: critical"] {
            assert!(stripped.contains(kept), "{kept} in {stripped}");
        }
    }
}
