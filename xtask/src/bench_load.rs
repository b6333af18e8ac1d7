//! What the benchmarks share: wrk (installed when missing) and its output, the machine's CPUs
//! for pinning, medians over rounds, and Ctrl-C between runs.
//!
//! Every benchmark alternates its configurations in rounds (A B C … A B C …), so that a noisy
//! neighbour on a shared machine hits all of them alike, and reports medians over rounds.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _};

/// wrk (installed with apt-get when missing and running as root) and taskset.
pub(crate) fn ensure_load_tools() -> anyhow::Result<()> {
    if which("wrk").is_none() {
        if !is_root() {
            bail!("wrk is missing: install it (Debian/Ubuntu: sudo apt-get install -y wrk)");
        }
        println!("    installing wrk with apt-get");
        let install = || {
            let mut cmd = Command::new("apt-get");
            cmd.args(["install", "-y", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive");
            crate::tools::status(cmd)
        };
        if install().is_err() {
            let mut update = Command::new("apt-get");
            update.arg("update");
            crate::tools::status(update)?;
            install().context("cannot install wrk (apt-get install -y wrk)")?;
        }
        if which("wrk").is_none() {
            bail!("apt-get installed wrk, but it is not on PATH");
        }
    }
    if which("taskset").is_none() {
        bail!("taskset is missing: install it (Debian/Ubuntu package util-linux)");
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A field of `/proc/self/status`, e.g. `Uid` or `Cpus_allowed_list`.
fn self_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

fn is_root() -> bool {
    // Uid: real, effective, saved, filesystem.
    self_status("Uid").is_some_and(|uids| uids.split_whitespace().nth(1) == Some("0"))
}

/// The CPUs this process may run on, in order (empty when unreadable).
pub(crate) fn allowed_cpus() -> Vec<u32> {
    self_status("Cpus_allowed_list")
        .map(|list| parse_cpu_list(&list))
        .unwrap_or_default()
}

/// `0-2,4` → `[0, 1, 2, 4]`; unreadable parts are skipped.
pub(crate) fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
                    cpus.extend(first..=last);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

/// `lscpu`'s model name (read from `/proc/cpuinfo`).
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// User plus system time of process `pid` (all its threads) so far, in seconds, from
/// `/proc/<pid>/stat`.
pub(crate) fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu_ticks(&stat)
        .map(|ticks| ticks / envoy_harness::clock_ticks())
        .with_context(|| format!("unexpected {path}: {stat}"))
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks. `pid (comm) state ppid …`: comm
/// may hold spaces, so the fields are counted after its `)`; utime and stime are fields 14 and
/// 15, i.e. the 12th and 13th after comm.
fn parse_stat_cpu_ticks(stat: &str) -> Option<f64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
    Some((utime + stime) as f64)
}

/// After Ctrl-C, wrk and the servers die of it too: say so rather than blame them.
pub(crate) fn or_interrupted(error: anyhow::Error, stop: &AtomicBool) -> anyhow::Error {
    if stop.load(Ordering::SeqCst) {
        anyhow::anyhow!("interrupted")
    } else {
        error
    }
}

pub(crate) fn interrupted(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match (values.len() % 2, values.get(mid), mid.checked_sub(1)) {
        (1, Some(&m), _) => m,
        (0, Some(&high), Some(low)) => values.get(low).map_or(f64::NAN, |&low| (low + high) / 2.0),
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------------
// wrk.

/// One wrk run: one thread (so that a Lua script has one state), optionally pinned to a CPU.
pub(crate) struct Wrk<'a> {
    pub(crate) load_cpu: Option<u32>,
    /// e.g. `http://127.0.0.1:8080/validate`.
    pub(crate) url: String,
    pub(crate) seconds: u32,
    pub(crate) connections: u32,
    /// `name: value` headers sent with every request (of a request without a script).
    pub(crate) headers: Vec<String>,
    /// A Lua script (`-s`) that writes the requests.
    pub(crate) script: Option<&'a Path>,
    /// wrk's `--timeout` in seconds (its default is 2: an answer slower than that counts as a
    /// socket error and is left out of the latencies).
    pub(crate) timeout_secs: Option<u32>,
}

/// What one wrk run reports.
#[derive(Debug)]
pub(crate) struct WrkOutput {
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Answers other than 2xx or 3xx.
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: Option<String>,
    /// wrk's whole output (a script may print to it; `bench api`'s says why answers failed).
    #[cfg_attr(not(feature = "api-bench"), allow(dead_code))]
    pub(crate) stdout: String,
}

impl Wrk<'_> {
    pub(crate) fn run(&self) -> anyhow::Result<WrkOutput> {
        let mut cmd = match self.load_cpu {
            Some(cpu) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &cpu.to_string(), "wrk"]);
                cmd
            }
            None => Command::new("wrk"),
        };
        cmd.args([
            "-t1",
            &format!("-c{}", self.connections),
            &format!("-d{}s", self.seconds),
            "--latency",
        ]);
        for header in &self.headers {
            cmd.args(["-H", header]);
        }
        if let Some(timeout) = self.timeout_secs {
            cmd.arg(format!("--timeout={timeout}s"));
        }
        if let Some(script) = self.script {
            cmd.arg("-s").arg(script);
        }
        cmd.arg(&self.url);
        let output = cmd.output().context("cannot run wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk exited with {}:\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        parse_wrk(&stdout).with_context(|| format!("cannot read wrk's output:\n{stdout}"))
    }
}

pub(crate) fn parse_wrk(out: &str) -> anyhow::Result<WrkOutput> {
    let mut requests = None;
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in out.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = value.trim().parse::<f64>().ok();
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = parse_duration_us(value.trim());
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = parse_duration_us(value.trim());
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = value.trim().parse().context("Non-2xx or 3xx responses")?;
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            socket_errors = Some(value.trim().to_owned());
        } else if line.contains(" requests in ") {
            requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok());
        }
    }
    Ok(WrkOutput {
        requests: requests.context("no \"N requests in\" line")?,
        rps: rps.context("no Requests/sec")?,
        p50_us: p50.context("no 50% latency (--latency)")?,
        p99_us: p99.context("no 99% latency (--latency)")?,
        non_2xx,
        socket_errors,
        stdout: out.to_owned(),
    })
}

/// wrk's durations, e.g. `312.00us`, `1.25ms`, `2.00s`, in microseconds.
pub(crate) fn parse_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:18100/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   371.39us  112.91us   5.73ms   93.14%
    Req/Sec    43.32k     1.47k   45.59k    78.00%
  Latency Distribution
     50%  353.00us
     75%  380.00us
     90%  422.00us
     99%    1.02ms
  215559 requests in 5.00s, 28.51MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  43106.97
Transfer/sec:      5.70MB
";

    #[test]
    fn reads_wrk_output() {
        let out = parse_wrk(WRK).unwrap();
        assert_eq!(out.requests, 215_559);
        assert!((out.rps - 43_106.97).abs() < 1e-6);
        assert!((out.p50_us - 353.0).abs() < 1e-6);
        assert!((out.p99_us - 1020.0).abs() < 1e-6);
        assert_eq!(out.non_2xx, 12);
        assert_eq!(out.socket_errors, None);
    }

    #[test]
    fn durations_in_microseconds() {
        assert_eq!(parse_duration_us("312.00us"), Some(312.0));
        assert_eq!(parse_duration_us("1.50ms"), Some(1500.0));
        assert_eq!(parse_duration_us("2.00s"), Some(2e6));
        assert_eq!(parse_duration_us("3.00x"), None);
        assert_eq!(parse_duration_us("fast"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), [0, 1]);
        assert_eq!(parse_cpu_list("0-2,4,6-7\n"), [0, 1, 2, 4, 6, 7]);
        assert_eq!(parse_cpu_list("3"), [3]);
        assert!(parse_cpu_list("").is_empty());
    }

    #[test]
    fn cpu_ticks_of_a_stat_line() {
        let stat = "4242 (auth api) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 9 0 \
                    100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(175.0));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
        assert!(process_cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}

/// Calls per second, p50 and p99 (µs) of `latencies` completed in `elapsed`, for the
/// benchmarks' own load generators (the in-process bounds, `bench_client`).
#[cfg(feature = "api-bench")]
pub(crate) fn latency_summary(
    latencies: &mut [std::time::Duration],
    elapsed: std::time::Duration,
) -> LatencySummary {
    latencies.sort_unstable();
    let at = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    };
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    LatencySummary {
        rps,
        p50_us: at(50),
        p99_us: at(99),
    }
}

/// What [`latency_summary`] returns.
#[cfg(feature = "api-bench")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencySummary {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}
