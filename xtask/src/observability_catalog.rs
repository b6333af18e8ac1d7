//! What `deploy/observability` asks Prometheus for: every PromQL expression of the Grafana
//! dashboard and of the alert rules, parsed as Prometheus parses it (`promql-parser`), and the
//! metric names each one selects, sorted by who exports them.
//!
//! Shared, as a file, by `cargo xtask check-observability` (which also checks the rules' and the
//! dashboard's structure, and the filter's names) and by auth-api's API test `metrics_catalog`
//! (which checks the auth-api names against a real scrape), so that both read the files alike.
//! It only reads and parses: no structure rules here.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use promql_parser::{
    label::MatchOp,
    parser::{self, Expr},
};

/// The dashboard, relative to the workspace root.
pub(crate) const DASHBOARD: &str = "deploy/observability/grafana-dashboard.json";
/// The alert rules, relative to the workspace root.
pub(crate) const ALERTS: &str = "deploy/observability/alerts.yaml";

/// The Grafana variables of ranges and steps, and the value that stands for each when parsing:
/// Grafana replaces them before Prometheus sees the query.
const GRAFANA_RANGES: [(&str, &str); 4] = [
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("${__rate_interval}", "5m"),
];

/// One PromQL expression and where it is written.
#[derive(Debug, Clone)]
pub(crate) struct Expression {
    /// e.g. `alerts.yaml: alert AuthApiDown` or `grafana-dashboard.json: panel 3 "Logins" A`.
    pub(crate) origin: String,
    /// The expression as written.
    pub(crate) text: String,
}

/// Who exports a metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exporter {
    /// auth-api's `/metrics`.
    AuthApi,
    /// The filter's counters, as Envoy's `/stats/prometheus` shows them (`auth_filter_*`).
    Filter,
    /// Envoy's own statistics (`envoy_*`).
    Envoy,
    /// Prometheus itself: `up`, `ALERTS`, `scrape_*`.
    Prometheus,
}

/// Who exports `name`, by its prefix: everything that is not the filter's, Envoy's or
/// Prometheus's own is auth-api's.
pub(crate) fn exporter(name: &str) -> Exporter {
    if name.starts_with("auth_filter_") {
        Exporter::Filter
    } else if name.starts_with("envoy_") {
        Exporter::Envoy
    } else if matches!(name, "up" | "ALERTS" | "ALERTS_FOR_STATE") || name.starts_with("scrape_") {
        Exporter::Prometheus
    } else {
        Exporter::AuthApi
    }
}

/// The path of a file of `deploy/observability` under `root`.
pub(crate) fn path(root: &Path, file: &str) -> PathBuf {
    root.join(file)
}

/// Every expression of the dashboard (each panel target's `expr`, rows' panels included, and
/// each templating query) and of the alert rules (each rule's `expr`).
pub(crate) fn expressions(root: &Path) -> anyhow::Result<Vec<Expression>> {
    let mut found = dashboard_expressions(&read_json(&path(root, DASHBOARD))?);
    found.extend(rule_expressions(&read_yaml(&path(root, ALERTS))?)?);
    Ok(found)
}

/// The dashboard as JSON.
pub(crate) fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The alert rules as a YAML value.
pub(crate) fn read_yaml(path: &Path) -> anyhow::Result<serde_norway::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<Expression> {
    let mut found = Vec::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    if let Some(top) = dashboard["panels"].as_array() {
        for panel in top {
            panels.push(panel);
            // A collapsed row holds its panels itself.
            if let Some(inner) = panel["panels"].as_array() {
                panels.extend(inner);
            }
        }
    }
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("");
        let id = &panel["id"];
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let ref_id = target["refId"].as_str().unwrap_or("?");
                found.push(Expression {
                    origin: format!("grafana-dashboard.json: panel {id} {title:?} {ref_id}"),
                    text: expr.to_owned(),
                });
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // `label_values(metric, label)` is Grafana's, not PromQL: its metric is what matters.
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str());
        if let (Some("query"), Some(query)) = (variable["type"].as_str(), query) {
            let name = variable["name"].as_str().unwrap_or("?");
            let text = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map_or(query, |(selector, _label)| selector);
            found.push(Expression {
                origin: format!("grafana-dashboard.json: variable {name}"),
                text: text.to_owned(),
            });
        }
    }
    found
}

fn rule_expressions(rules: &serde_norway::Value) -> anyhow::Result<Vec<Expression>> {
    let mut found = Vec::new();
    let groups = rules["groups"]
        .as_sequence()
        .context("alerts.yaml: no `groups:` list")?;
    for group in groups {
        let group_name = group["name"].as_str().unwrap_or("?");
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .map(|a| format!("alert {a}"))
                .or_else(|| rule["record"].as_str().map(|r| format!("record {r}")))
                .unwrap_or_else(|| "a rule without a name".to_owned());
            let expr = rule["expr"]
                .as_str()
                .with_context(|| format!("alerts.yaml: group {group_name}: {name}: no `expr`"))?;
            found.push(Expression {
                origin: format!("alerts.yaml: group {group_name}: {name}"),
                text: expr.to_owned(),
            });
        }
    }
    Ok(found)
}

/// `expression` parsed (Grafana's range variables replaced first), and the metric names its
/// selectors name (by name or by `__name__="…"`).
pub(crate) fn metric_names(expression: &Expression) -> anyhow::Result<BTreeSet<String>> {
    let mut text = expression.text.clone();
    for (variable, value) in GRAFANA_RANGES {
        text = text.replace(variable, value);
    }
    let parsed = parser::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: not PromQL: {e}\n  {}", expression.origin, text))?;
    let mut names = BTreeSet::new();
    collect_names(&parsed, &mut names);
    anyhow::ensure!(
        !names.is_empty(),
        "{}: selects no metric by name",
        expression.origin
    );
    Ok(names)
}

fn collect_names(expr: &Expr, names: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(aggregate) => {
            collect_names(&aggregate.expr, names);
            if let Some(param) = &aggregate.param {
                collect_names(param, names);
            }
        }
        Expr::Unary(unary) => collect_names(&unary.expr, names),
        Expr::Binary(binary) => {
            collect_names(&binary.lhs, names);
            collect_names(&binary.rhs, names);
        }
        Expr::Paren(paren) => collect_names(&paren.expr, names),
        Expr::Subquery(subquery) => collect_names(&subquery.expr, names),
        Expr::VectorSelector(selector) => selector_name(selector, names),
        Expr::MatrixSelector(matrix) => selector_name(&matrix.vs, names),
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect_names(arg, names);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_name(selector: &parser::VectorSelector, names: &mut BTreeSet<String>) {
    if let Some(name) = &selector.name {
        names.insert(name.clone());
    }
    // `{__name__="x"}` names x; a regular expression on `__name__` names no one metric.
    for matcher in selector.matchers.find_matchers("__name__") {
        if matcher.op == MatchOp::Equal {
            names.insert(matcher.value);
        }
    }
}

/// The metric names a Prometheus text exposition offers to queries: each sample's name, and for
/// each `# TYPE` family the names Prometheus stores for it (a counter's `_total`, a histogram's
/// `_bucket`, `_sum` and `_count`), so that a family with no sample yet still counts as exported.
pub(crate) fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let mut parts = family.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total", "_created"],
                    "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                    "summary" => &["_sum", "_count", "_created", ""],
                    _ => &[""],
                };
                for suffix in suffixes {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}
