//! A proxy-wasm HTTP filter that does nothing: every request continues untouched.
//!
//! `cargo xtask bench edge` loads it the way it loads auth-filter (V8, its own VM), so that the
//! difference between "no filter" and this one is what the wasm runtime itself costs per
//! request: creating the HTTP context, the calls across the ABI, and tearing the context down.
//!
//! Given a plugin configuration, it becomes a probe instead: per request it performs the host
//! calls the configuration lists, so that a benchmark can price each kind of call against the
//! no-op floor (see `Op` for the syntax). Without a configuration (as `cargo xtask bench edge`
//! loads it) the per-request path is the no-op one, unchanged.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, Bytes, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(NoopRoot::default()));
}}

/// The root context: creates one [`Noop`] per request, or one [`ProbeHttp`] when configured
/// with a probe.
#[derive(Debug, Default)]
struct NoopRoot {
    probe: Option<Rc<Probe>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
            .unwrap_or_default();
        if config.is_empty() {
            self.probe = None;
            return true;
        }
        match Probe::parse(&config).and_then(Probe::define_metric) {
            Ok(probe) => {
                self.probe = Some(Rc::new(probe));
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Critical, &format!("noop-filter probe: {e}"));
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.probe {
            None => Some(Box::new(Noop)),
            Some(probe) => Some(Box::new(ProbeHttp {
                probe: Rc::clone(probe),
                map: Vec::new(),
            })),
        }
    }
}

/// The per-request context: lets the request headers through, and (by the SDK's defaults)
/// everything after them.
#[derive(Debug)]
struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

/// The identity headers `set_map` writes, as auth-filter does on an allowed request (with
/// `authorization` removed).
const IDENTITY: [(&str, &str); 3] = [
    ("x-user-id", "0b7c6c5e-4c1f-4f43-9a55-6a1f3c2d9e10"),
    ("x-user-email", "bench@example.com"),
    ("x-user-roles", "user"),
];

/// One operation of a probe, done once per request (or `*N` times).
///
/// The configuration is a list separated by commas or whitespace, each item `op` or `op*N`:
/// - `get_map_bytes`, `get_map`: the whole request header map (`get_map` as UTF-8 strings);
///   the last one read is kept for `set_map`.
/// - `get_map_value_bytes:NAME`, `get_map_value:NAME`: one request header.
/// - `set_map`: the map read last, without `authorization` and the identity headers, plus the
///   identity headers ([`IDENTITY`]) — auth-filter's one-call rewrite.
/// - `set_map_value:NAME=VALUE` (Envoy's replace), `add_map_value:NAME=VALUE`,
///   `remove_map_value:NAME`: one request header changed.
/// - `get_current_time`, `get_log_level`, `get_property:A.B` (path split on `.`).
/// - `increment_metric`: a counter (`noop_probe_requests`) defined at configuration.
/// - `log`: a debug line, which Envoy drops below its level.
/// - `alloc:N`: N small strings built and dropped, like headers to set.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    GetMapBytes,
    GetMap,
    GetValueBytes(String),
    GetValue(String),
    SetMap,
    SetValue(String, String),
    AddValue(String, String),
    RemoveValue(String),
    CurrentTime,
    LogLevel,
    Property(Vec<String>),
    IncrementMetric,
    Log,
    Alloc(usize),
}

impl Op {
    fn parse(item: &str) -> Result<Op, String> {
        let (name, arg) = match item.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (item, None),
        };
        let header = |arg: Option<&str>| match arg {
            Some(h) if !h.is_empty() => Ok(h.to_ascii_lowercase()),
            _ => Err(format!("`{item}` needs a header name (`{name}:NAME`)")),
        };
        let pair = |arg: Option<&str>| match arg.and_then(|a| a.split_once('=')) {
            Some((h, v)) if !h.is_empty() => Ok((h.to_ascii_lowercase(), v.to_owned())),
            _ => Err(format!("`{item}` needs `{name}:NAME=VALUE`")),
        };
        let op = match name {
            "get_map_bytes" => Op::GetMapBytes,
            "get_map" => Op::GetMap,
            "get_map_value_bytes" => Op::GetValueBytes(header(arg)?),
            "get_map_value" => Op::GetValue(header(arg)?),
            "set_map" => Op::SetMap,
            "set_map_value" => {
                let (h, v) = pair(arg)?;
                Op::SetValue(h, v)
            }
            "add_map_value" => {
                let (h, v) = pair(arg)?;
                Op::AddValue(h, v)
            }
            "remove_map_value" => Op::RemoveValue(header(arg)?),
            "get_current_time" => Op::CurrentTime,
            "get_log_level" => Op::LogLevel,
            "get_property" => match arg {
                Some(path) if !path.is_empty() => {
                    Op::Property(path.split('.').map(str::to_owned).collect())
                }
                _ => return Err(format!("`{item}` needs a path (`get_property:A.B`)")),
            },
            "increment_metric" => Op::IncrementMetric,
            "log" => Op::Log,
            "alloc" => Op::Alloc(
                arg.and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("`{item}` needs a count (`alloc:N`)"))?,
            ),
            _ => return Err(format!("unknown operation `{item}`")),
        };
        // Operations that carry no argument must not be given one.
        if arg.is_some()
            && !matches!(
                op,
                Op::GetValueBytes(_)
                    | Op::GetValue(_)
                    | Op::SetValue(..)
                    | Op::AddValue(..)
                    | Op::RemoveValue(_)
                    | Op::Property(_)
                    | Op::Alloc(_)
            )
        {
            return Err(format!("`{name}` takes no argument (in `{item}`)"));
        }
        Ok(op)
    }
}

/// A parsed probe configuration: the operations of one request, in order.
#[derive(Debug)]
struct Probe {
    ops: Vec<Op>,
    /// The counter of `increment_metric`, if any operation needs it.
    metric: Option<u32>,
}

impl Probe {
    fn parse(config: &str) -> Result<Probe, String> {
        let mut ops = Vec::new();
        for item in config
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let (op, times) = match item.rsplit_once('*') {
                Some((op, n)) => (
                    op,
                    n.parse::<usize>()
                        .map_err(|_| format!("`{item}`: `*N` needs a number"))?,
                ),
                None => (item, 1),
            };
            let op = Op::parse(op)?;
            ops.extend(std::iter::repeat_n(op, times));
        }
        // `set_map` writes back what was read: without a read it would empty the map.
        let first_read = ops
            .iter()
            .position(|op| matches!(op, Op::GetMapBytes | Op::GetMap));
        let first_set = ops.iter().position(|op| *op == Op::SetMap);
        if let Some(set) = first_set {
            if first_read.is_none_or(|read| read > set) {
                return Err("`set_map` needs a `get_map_bytes` or `get_map` before it".to_owned());
            }
        }
        Ok(Probe { ops, metric: None })
    }

    /// Defines the counter of `increment_metric` if an operation needs it (a host call, so not
    /// in [`Probe::parse`]).
    fn define_metric(mut self) -> Result<Probe, String> {
        if self.ops.contains(&Op::IncrementMetric) {
            self.metric = Some(
                hostcalls::define_metric(MetricType::Counter, "noop_probe_requests")
                    .map_err(|s| format!("cannot define the probe counter: {s:?}"))?,
            );
        }
        Ok(self)
    }
}

/// The per-request context of a probe.
#[derive(Debug)]
struct ProbeHttp {
    probe: Rc<Probe>,
    /// The header map read last in this request, for `set_map`.
    map: Vec<(String, Bytes)>,
}

impl ProbeHttp {
    fn run(&mut self, op: &Op) -> Result<(), String> {
        let failed = |s| format!("{op:?}: {s:?}");
        let headers = MapType::HttpRequestHeaders;
        match op {
            Op::GetMapBytes => self.map = hostcalls::get_map_bytes(headers).map_err(failed)?,
            Op::GetMap => {
                self.map = hostcalls::get_map(headers)
                    .map_err(failed)?
                    .into_iter()
                    .map(|(n, v)| (n, v.into_bytes()))
                    .collect();
            }
            Op::GetValueBytes(name) => {
                black_box(hostcalls::get_map_value_bytes(headers, name).map_err(failed)?);
            }
            Op::GetValue(name) => {
                black_box(hostcalls::get_map_value(headers, name).map_err(failed)?);
            }
            Op::SetMap => {
                let replaced = |name: &str| {
                    name == "authorization" || IDENTITY.iter().any(|(n, _)| *n == name)
                };
                let map: Vec<(&str, &str)> = self
                    .map
                    .iter()
                    .filter(|(name, _)| !replaced(name))
                    .filter_map(|(name, value)| {
                        Some((name.as_str(), std::str::from_utf8(value).ok()?))
                    })
                    .chain(IDENTITY)
                    .collect();
                hostcalls::set_map(headers, map).map_err(failed)?;
            }
            Op::SetValue(name, value) => {
                hostcalls::set_map_value(headers, name, Some(value)).map_err(failed)?;
            }
            Op::AddValue(name, value) => {
                hostcalls::add_map_value(headers, name, value).map_err(failed)?;
            }
            Op::RemoveValue(name) => hostcalls::remove_map_value(headers, name).map_err(failed)?,
            Op::CurrentTime => {
                black_box(hostcalls::get_current_time().map_err(failed)?);
            }
            Op::LogLevel => {
                black_box(hostcalls::get_log_level().map_err(failed)?);
            }
            Op::Property(path) => {
                let path = path.iter().map(String::as_str).collect();
                black_box(hostcalls::get_property(path).map_err(failed)?);
            }
            Op::IncrementMetric => {
                if let Some(id) = self.probe.metric {
                    hostcalls::increment_metric(id, 1).map_err(failed)?;
                }
            }
            Op::Log => hostcalls::log(LogLevel::Debug, "noop-filter probe: a debug line")
                .map_err(failed)?,
            Op::Alloc(n) => {
                let strings: Vec<String> = (0..*n)
                    .map(|i| format!("x-user-claim-{i}: {}", IDENTITY[0].1))
                    .collect();
                black_box(strings);
            }
        }
        Ok(())
    }
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let probe = Rc::clone(&self.probe);
        for op in &probe.ops {
            if let Err(e) = self.run(op) {
                // Loud, so that a benchmark run whose calls fail is not taken for a fast one.
                let _ = hostcalls::log(LogLevel::Critical, &format!("noop-filter probe: {e}"));
            }
        }
        Action::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_lists_its_operations_in_order_with_repeats() {
        let probe = Probe::parse(
            "get_current_time*2, get_map_value_bytes::path get_map_bytes,set_map \
             set_map_value:X-User-Id=a=b remove_map_value:authorization alloc:3",
        )
        .unwrap();
        assert_eq!(
            probe.ops,
            vec![
                Op::CurrentTime,
                Op::CurrentTime,
                Op::GetValueBytes(":path".to_owned()),
                Op::GetMapBytes,
                Op::SetMap,
                Op::SetValue("x-user-id".to_owned(), "a=b".to_owned()),
                Op::RemoveValue("authorization".to_owned()),
                Op::Alloc(3),
            ]
        );
        assert_eq!(probe.metric, None);
    }

    #[test]
    fn mistakes_in_a_probe_are_named() {
        for (config, error) in [
            ("get_map_bytez", "unknown operation `get_map_bytez`"),
            ("get_current_time:x", "takes no argument"),
            (
                "set_map_value:x-user-id",
                "needs `set_map_value:NAME=VALUE`",
            ),
            ("get_map_value_bytes:", "needs a header name"),
            ("log*many", "`*N` needs a number"),
            ("set_map get_map_bytes", "`set_map` needs a `get_map_bytes`"),
        ] {
            let e = Probe::parse(config).unwrap_err();
            assert!(e.contains(error), "{config}: {e}");
        }
    }
}
