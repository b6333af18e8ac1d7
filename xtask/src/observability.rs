//! `cargo xtask check-observability` (and a step of `cargo xtask test`): what promtool and
//! Grafana would refuse in `deploy/observability`, checked without either (neither installs
//! here).
//!
//! - `alerts.yaml`: Prometheus's rule-file structure (`groups:`, each group named once, each
//!   rule an `alert` or a `record` with an `expr`, `for` a Prometheus duration, labels and
//!   annotations string maps, no unknown keys); our conventions on top: alert names unique
//!   across the file, a `severity` label of `critical`, `warning` or `info`, and `summary` and
//!   `description` annotations.
//! - `grafana-dashboard.json`: panel ids unique, every target on the datasource variable.
//! - Every expression of both parses as PromQL, and each filter metric it names is one the
//!   filter defines ([`auth_filter::counter_names`], as Envoy exposes them). The auth-api names
//!   are checked against a real scrape by auth-api's API test `metrics_catalog`: their names,
//!   and the labels each selector, `by (…)` and `on (…)` uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::observability_catalog::{self as catalog, Exporter};

/// A Prometheus rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    query_offset: Option<String>,
    /// The most alerts (or series) a rule may produce; 0 for no limit.
    #[serde(default)]
    #[allow(dead_code, reason = "Prometheus's field, accepted and not checked")]
    limit: Option<u64>,
    /// Labels added to every rule of the group.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "Prometheus's field, accepted (serde checks it is a string map)"
    )]
    labels: BTreeMap<String, String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// Runs every check, failing with the list of what is wrong; with `exposition` (a saved scrape
/// of auth-api's `/metrics`), also checks the auth-api names against it.
pub(crate) fn check(root: &Path, exposition: Option<&Path>) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    problems.extend(check_rules(root)?);
    problems.extend(check_dashboard(root)?);
    let filter_names: BTreeSet<String> = auth_filter::counter_names()
        .map(|name| name.replace('.', "_"))
        .collect();
    let mut auth_api = BTreeSet::new();
    let expressions = catalog::expressions(root)?;
    for expression in &expressions {
        match catalog::metric_names(expression) {
            Ok(names) => {
                for name in names {
                    match catalog::exporter(&name) {
                        Exporter::Filter if !filter_names.contains(&name) => {
                            problems.push(format!(
                                "{}: the filter defines no counter {name}",
                                expression.origin
                            ))
                        }
                        Exporter::AuthApi => {
                            auth_api.insert(name);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        problems.extend(job_problems(expression));
    }
    if let Some(path) = exposition {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let exposed = catalog::exposed_names(&text);
        for name in auth_api.iter().filter(|n| !exposed.contains(*n)) {
            problems.push(format!("{}: no metric {name}", path.display()));
        }
        let labels = catalog::exposed_labels(&text);
        for expression in &expressions {
            // Unparsable expressions are reported above.
            problems.extend(catalog::label_problems(expression, &labels).unwrap_or_default());
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "deploy/observability has {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    println!(
        "deploy/observability: rules and dashboard well-formed, every expression parsed, the \
         filter's names defined; {} auth-api names (checked against a scrape by auth-api's \
         metrics_catalog test)",
        auth_api.len()
    );
    Ok(())
}

/// The rules select auth-api's series (and its `up`) by `job="auth-api"`, the job name the
/// ServiceMonitor gives and the README names, and the dashboard by its `$job` variable: a
/// selector without it, or with another job, would mix in other targets' series or see none.
fn job_problems(expression: &catalog::Expression) -> Vec<String> {
    let wanted = if expression.origin.starts_with("alerts.yaml") {
        r#"job="auth-api""#
    } else if expression
        .origin
        .starts_with("grafana-dashboard.json: panel")
    {
        r#"job=~"$job""#
    } else {
        return Vec::new();
    };
    let Ok(selectors) = catalog::selector_jobs(expression) else {
        // Unparsable expressions are reported by the names' check.
        return Vec::new();
    };
    selectors
        .into_iter()
        .filter(|(names, _)| {
            !names.is_empty()
                && names
                    .iter()
                    .all(|n| catalog::exporter(n) == Exporter::AuthApi || n == "up")
        })
        .filter(|(_, job)| job.as_deref() != Some(wanted))
        .map(|(names, job)| {
            format!(
                "{}: the selector of {names:?} has {}, not {wanted}",
                expression.origin,
                job.as_deref().unwrap_or("no job matcher")
            )
        })
        .collect()
}

fn check_rules(root: &Path) -> anyhow::Result<Vec<String>> {
    let path = catalog::path(root, catalog::ALERTS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file: RuleFile = match serde_norway::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            return Ok(vec![format!(
                "alerts.yaml: not a Prometheus rule file: {e}"
            )])
        }
    };
    let mut problems = Vec::new();
    if file.groups.is_empty() {
        problems.push("alerts.yaml: no groups".to_owned());
    }
    let mut groups = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for group in &file.groups {
        let at = format!("alerts.yaml: group {}", group.name);
        if !groups.insert(group.name.as_str()) {
            problems.push(format!("{at}: a second group of this name"));
        }
        for (field, value) in [
            ("interval", &group.interval),
            ("query_offset", &group.query_offset),
        ] {
            if let Some(value) = value {
                if !is_duration(value) {
                    problems.push(format!("{at}: {field} {value:?} is no duration"));
                }
            }
        }
        if group.rules.is_empty() {
            problems.push(format!("{at}: no rules"));
        }
        for rule in &group.rules {
            problems.extend(check_rule(&at, rule, &mut alerts));
        }
    }
    Ok(problems)
}

fn check_rule<'a>(at: &str, rule: &'a Rule, alerts: &mut BTreeSet<&'a str>) -> Vec<String> {
    let mut problems = Vec::new();
    let name = match (&rule.alert, &rule.record) {
        (Some(alert), None) => alert,
        (None, Some(record)) => {
            // A recording rule: a metric name, no alerting fields.
            if rule.for_.is_some() || !rule.annotations.is_empty() {
                problems.push(format!("{at}: record {record}: `for` or annotations"));
            }
            return problems;
        }
        _ => {
            problems.push(format!(
                "{at}: a rule needs exactly one of `alert` and `record`"
            ));
            return problems;
        }
    };
    let at = format!("{at}: alert {name}");
    if !alerts.insert(name.as_str()) {
        problems.push(format!("{at}: a second alert of this name"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        problems.push(format!("{at}: not a valid alert name"));
    }
    for (field, value) in [
        ("for", &rule.for_),
        ("keep_firing_for", &rule.keep_firing_for),
    ] {
        if let Some(value) = value {
            if !is_duration(value) {
                problems.push(format!("{at}: {field} {value:?} is no duration"));
            }
        }
    }
    match rule.labels.get("severity") {
        Some(severity) if SEVERITIES.contains(&severity.as_str()) => {}
        Some(other) => problems.push(format!(
            "{at}: severity {other:?} is none of {SEVERITIES:?}"
        )),
        None => problems.push(format!("{at}: no severity label")),
    }
    for annotation in ["summary", "description"] {
        if rule
            .annotations
            .get(annotation)
            .is_none_or(|v| v.trim().is_empty())
        {
            problems.push(format!("{at}: no {annotation} annotation"));
        }
    }
    if rule.expr.trim().is_empty() {
        problems.push(format!("{at}: an empty expr"));
    }
    problems
}

/// A Prometheus duration: one or more `<integer><unit>`, units `ms`, `s`, `m`, `h`, `d`, `w`,
/// `y`, largest first (`1h30m`), as `model.ParseDuration` accepts it.
fn is_duration(text: &str) -> bool {
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = text;
    let mut last_unit = None;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        // `ms` before `m`.
        let Some(unit) = ["ms", "y", "w", "d", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        let Some(position) = UNITS.iter().position(|u| *u == unit) else {
            return false;
        };
        if last_unit.is_some_and(|last| position <= last) {
            return false;
        }
        last_unit = Some(position);
        rest = &rest[unit.len()..];
    }
    true
}

fn check_dashboard(root: &Path) -> anyhow::Result<Vec<String>> {
    let dashboard = catalog::read_json(&catalog::path(root, catalog::DASHBOARD))?;
    let mut problems = Vec::new();
    for field in ["title", "uid", "panels", "schemaVersion"] {
        if dashboard.get(field).is_none() {
            problems.push(format!("grafana-dashboard.json: no {field}"));
        }
    }
    let mut ids = BTreeSet::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("");
        let Some(id) = panel["id"].as_u64() else {
            problems.push(format!("grafana-dashboard.json: panel {title:?} has no id"));
            continue;
        };
        if !ids.insert(id) {
            problems.push(format!("grafana-dashboard.json: panel id {id} twice"));
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!(
                "grafana-dashboard.json: panel {id} {title:?} has no target"
            ));
        }
        for target in targets {
            if target["expr"].as_str().is_none_or(str::is_empty) {
                problems.push(format!(
                    "grafana-dashboard.json: panel {id} {title:?}: a target without expr"
                ));
            }
            let datasource = target["datasource"]["uid"]
                .as_str()
                .or_else(|| panel["datasource"]["uid"].as_str());
            if datasource != Some("${datasource}") {
                problems.push(format!(
                    "grafana-dashboard.json: panel {id} {title:?}: not on the ${{datasource}} variable"
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_prometheus_reads_them() {
        for ok in ["5m", "1h30m", "90s", "250ms", "1d", "2w", "1y"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "5", "m", "5 m", "1.5h", "30m1h", "5mm", "-5m", "5M"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn a_rule_without_severity_or_summary_is_refused_and_a_name_used_twice_too() {
        let rule: Rule = serde_norway::from_str(
            "alert: Foo\nexpr: up == 0\nfor: 5m\nlabels: {team: auth}\nannotations: {description: d}",
        )
        .unwrap();
        let mut alerts = BTreeSet::new();
        let first = check_rule("g", &rule, &mut alerts);
        assert!(first.iter().any(|p| p.contains("no severity")), "{first:?}");
        assert!(first.iter().any(|p| p.contains("no summary")), "{first:?}");
        let again = check_rule("g", &rule, &mut alerts);
        assert!(
            again.iter().any(|p| p.contains("a second alert")),
            "{again:?}"
        );
    }

    #[test]
    fn a_label_that_is_no_string_is_not_a_rule() {
        let parsed = serde_norway::from_str::<Rule>(
            "alert: Foo\nexpr: up == 0\nlabels: {severity: [critical]}",
        );
        assert!(parsed.is_err());
    }

    #[test]
    fn the_shipped_files_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check(root, None).unwrap();
    }

    #[test]
    fn a_label_the_scrape_does_not_show_is_refused_wherever_it_is_used() {
        let scrape = "# TYPE auth_login counter\n\
                      auth_login_total{result=\"success\"} 1\n\
                      auth_signup_total{result=\"a \\\"quoted\\\" one\",extra=\"x\"} 1\n\
                      d_bucket{route=\"/login\",le=\"1\"} 0\n";
        let labels = catalog::exposed_labels(scrape);
        assert_eq!(
            labels["auth_signup_total"],
            BTreeSet::from(["result".to_owned(), "extra".to_owned()])
        );
        let problems = |text: &str| {
            let expression = catalog::Expression {
                origin: "here".to_owned(),
                text: text.to_owned(),
            };
            catalog::label_problems(&expression, &labels).unwrap()
        };
        for good in [
            r#"rate(auth_login_total{job="auth-api", result="x"}[5m])"#,
            r#"sum by (instance, result) ({__name__=~"auth_login_total|auth_signup_total", result="x"})"#,
            r#"histogram_quantile(0.9, sum by (route, le) (rate(d_bucket[5m]))) and on (route) up"#,
            r#"sum by (anything) (rate(auth_filter_allowed[5m]))"#,
        ] {
            assert_eq!(problems(good), Vec::<String>::new(), "{good}");
        }
        for bad in [
            r#"auth_login_total{reslt="x"}"#,
            r#"{__name__=~"auth_login_total|auth_signup_total", extra="x"}"#,
            r#"sum by (stor) (rate(auth_login_total[5m]))"#,
            r#"d_bucket > on (rout) d_bucket"#,
        ] {
            assert!(!problems(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn an_auth_api_selector_on_another_job_or_none_is_refused() {
        let problems = |origin: &str, text: &str| {
            job_problems(&catalog::Expression {
                origin: origin.to_owned(),
                text: text.to_owned(),
            })
        };
        let rule = "alerts.yaml: group g: alert A";
        let panel = "grafana-dashboard.json: panel 1 \"P\" A";
        assert!(problems(rule, r#"up{job="auth-api"} == 0"#).is_empty());
        assert!(problems(rule, r#"rate(auth_filter_allowed[5m]) > 0"#).is_empty());
        assert!(problems(panel, r#"rate(auth_login_total{job=~"$job"}[5m])"#).is_empty());
        for (origin, bad) in [
            (rule, r#"up{job="auth_api"} == 0"#),
            (
                rule,
                r#"rate(auth_login_total[5m]) / rate(auth_login_total{job="auth-api"}[5m])"#,
            ),
            (panel, r#"rate(auth_login_total{job="auth-api"}[5m])"#),
        ] {
            assert_eq!(problems(origin, bad).len(), 1, "{bad}");
        }
    }

    #[test]
    fn exposed_names_include_the_suffixes_prometheus_stores() {
        let text = "# TYPE auth_login counter\n# TYPE d histogram\nd_bucket{le=\"1\"} 0\n";
        let names = catalog::exposed_names(text);
        for name in ["auth_login_total", "d_bucket", "d_sum", "d_count"] {
            assert!(names.contains(name), "{name}: {names:?}");
        }
    }
}
