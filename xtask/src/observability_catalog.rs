//! What `deploy/observability` asks Prometheus for: every PromQL expression of the Grafana
//! dashboard and of the alert rules, parsed as Prometheus parses it (`promql-parser`), and the
//! metric names each one selects, sorted by who exports them.
//!
//! Shared, as a file, by `cargo xtask check-observability` (which also checks the rules' and the
//! dashboard's structure, and the filter's names) and by auth-api's API test `metrics_catalog`
//! (which checks the auth-api names against a real scrape), so that both read the files alike.
//! It only reads and parses: no structure rules here, apart from [`label_problems`], the one
//! check both callers make against a scrape.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use promql_parser::{
    label::MatchOp,
    parser::{self, Expr, LabelModifier},
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

/// `expression` parsed, Grafana's range variables replaced first.
fn parse(expression: &Expression) -> anyhow::Result<Expr> {
    let mut text = expression.text.clone();
    for (variable, value) in GRAFANA_RANGES {
        text = text.replace(variable, value);
    }
    parser::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: not PromQL: {e}\n  {}", expression.origin, text))
}

/// The metric names the selectors of `expression` name (by name, by `__name__="…"`, or by a
/// `__name__=~"a|b"` of plain names).
pub(crate) fn metric_names(expression: &Expression) -> anyhow::Result<BTreeSet<String>> {
    let parsed = parse(expression)?;
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
    // `{__name__="x"}` names x, and `{__name__=~"x|y"}` x and y; any other regular expression
    // on `__name__` names no one metric.
    for matcher in selector.matchers.find_matchers("__name__") {
        match matcher.op {
            MatchOp::Equal => {
                names.insert(matcher.value);
            }
            MatchOp::Re(_) => {
                let alternatives: Vec<&str> = matcher.value.split('|').collect();
                if alternatives.iter().all(|a| is_metric_name(a)) {
                    names.extend(alternatives.into_iter().map(str::to_owned));
                }
            }
            MatchOp::NotEqual | MatchOp::NotRe(_) => {}
        }
    }
}

fn is_metric_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Each selector of `expression`: the metric names it names, and its `job` matcher as written
/// (`job="auth-api"`, `job=~"$job"`), if any.
pub(crate) fn selector_jobs(
    expression: &Expression,
) -> anyhow::Result<Vec<(BTreeSet<String>, Option<String>)>> {
    fn walk(expr: &Expr, found: &mut Vec<(BTreeSet<String>, Option<String>)>) {
        match expr {
            Expr::Aggregate(aggregate) => {
                walk(&aggregate.expr, found);
                if let Some(param) = &aggregate.param {
                    walk(param, found);
                }
            }
            Expr::Unary(unary) => walk(&unary.expr, found),
            Expr::Binary(binary) => {
                walk(&binary.lhs, found);
                walk(&binary.rhs, found);
            }
            Expr::Paren(paren) => walk(&paren.expr, found),
            Expr::Subquery(subquery) => walk(&subquery.expr, found),
            Expr::VectorSelector(selector) => found.push(job_of(selector)),
            Expr::MatrixSelector(matrix) => found.push(job_of(&matrix.vs)),
            Expr::Call(call) => {
                for arg in &call.args.args {
                    walk(arg, found);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    fn job_of(selector: &parser::VectorSelector) -> (BTreeSet<String>, Option<String>) {
        let mut names = BTreeSet::new();
        selector_name(selector, &mut names);
        let job = selector
            .matchers
            .find_matchers("job")
            .first()
            .map(|m| format!("job{}{:?}", m.op, m.value));
        (names, job)
    }
    let mut found = Vec::new();
    walk(&parse(expression)?, &mut found);
    Ok(found)
}

/// Labels every scraped series has besides the exporter's own: the target's, set by Prometheus.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// A label an expression uses, and the metric names it must be a label of.
struct LabelUse {
    label: String,
    /// The metric names of the selector (every one must have the label), or of the expression
    /// below a `by (…)` or an `on (…)` (at least one must).
    names: BTreeSet<String>,
    every: bool,
    /// `selector`, `by (…)` or `on (…)`.
    how: &'static str,
}

/// The labels of each sample name of a text exposition (`le` of a `_bucket` included).
pub(crate) fn exposed_labels(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let found = labels.entry(line[..end].to_owned()).or_default();
        let Some(mut rest) = line[end..].strip_prefix('{') else {
            continue;
        };
        // `name="value",…}`: a value is quoted, with `\"` and `\\` escaped.
        while let Some((name, after)) = rest.split_once("=\"") {
            found.insert(name.trim_start_matches([',', ' ']).to_owned());
            let mut escaped = false;
            let Some(close) = after.find(|c: char| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            }) else {
                break;
            };
            rest = &after[close + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    labels
}

/// Every label of `expression` (in a selector's matchers, a `by (…)` or an `on (…)`) that the
/// metrics it applies to do not have in `exposed` (from [`exposed_labels`]): a misspelt label
/// selects nothing, and an alert on it never fires. Metric names not in `exposed` (another
/// exporter's, or a family with no sample yet) are not judged.
pub(crate) fn label_problems(
    expression: &Expression,
    exposed: &BTreeMap<String, BTreeSet<String>>,
) -> anyhow::Result<Vec<String>> {
    let parsed = parse(expression)?;
    let mut uses = Vec::new();
    collect_label_uses(&parsed, &mut uses);
    let has = |name: &String, label: &str| {
        exposed
            .get(name)
            .is_none_or(|labels| labels.contains(label) || TARGET_LABELS.contains(&label))
    };
    let mut problems = Vec::new();
    for used in uses {
        let known: Vec<&String> = used
            .names
            .iter()
            .filter(|n| exposed.contains_key(*n))
            .collect();
        let ok = if used.every {
            known.iter().all(|n| has(n, &used.label))
        } else {
            known.is_empty() || known.iter().any(|n| has(n, &used.label))
        };
        if !ok {
            let labels: BTreeSet<&String> = known
                .iter()
                .flat_map(|n| exposed.get(*n).into_iter().flatten())
                .collect();
            problems.push(format!(
                "{}: label {:?} ({}) is not a label of {:?}, which have {:?} (and {:?})",
                expression.origin, used.label, used.how, known, labels, TARGET_LABELS
            ));
        }
    }
    Ok(problems)
}

fn collect_label_uses(expr: &Expr, uses: &mut Vec<LabelUse>) {
    let below = |expr: &Expr| {
        let mut names = BTreeSet::new();
        collect_names(expr, &mut names);
        names
    };
    match expr {
        Expr::Aggregate(aggregate) => {
            if let Some(LabelModifier::Include(labels)) = &aggregate.modifier {
                let names = below(&aggregate.expr);
                for label in &labels.labels {
                    uses.push(LabelUse {
                        label: label.clone(),
                        names: names.clone(),
                        every: false,
                        how: "by (…)",
                    });
                }
            }
            collect_label_uses(&aggregate.expr, uses);
            if let Some(param) = &aggregate.param {
                collect_label_uses(param, uses);
            }
        }
        Expr::Binary(binary) => {
            if let Some(LabelModifier::Include(labels)) =
                binary.modifier.as_ref().and_then(|m| m.matching.as_ref())
            {
                for side in [&binary.lhs, &binary.rhs] {
                    let names = below(side);
                    for label in &labels.labels {
                        uses.push(LabelUse {
                            label: label.clone(),
                            names: names.clone(),
                            every: false,
                            how: "on (…)",
                        });
                    }
                }
            }
            collect_label_uses(&binary.lhs, uses);
            collect_label_uses(&binary.rhs, uses);
        }
        Expr::Unary(unary) => collect_label_uses(&unary.expr, uses),
        Expr::Paren(paren) => collect_label_uses(&paren.expr, uses),
        Expr::Subquery(subquery) => collect_label_uses(&subquery.expr, uses),
        Expr::VectorSelector(selector) => selector_label_uses(selector, uses),
        Expr::MatrixSelector(matrix) => selector_label_uses(&matrix.vs, uses),
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect_label_uses(arg, uses);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_label_uses(selector: &parser::VectorSelector, uses: &mut Vec<LabelUse>) {
    let mut names = BTreeSet::new();
    selector_name(selector, &mut names);
    let matchers = &selector.matchers;
    for matcher in matchers
        .matchers
        .iter()
        .chain(matchers.or_matchers.iter().flatten())
    {
        if matcher.name != "__name__" {
            uses.push(LabelUse {
                label: matcher.name.clone(),
                names: names.clone(),
                every: true,
                how: "selector",
            });
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
