//! The revocation set at a million live entries, as each gateway worker holds it: ids kept as
//! 64-bit hashes (ours) next to ids kept as strings (what the whole-document feed held), side by
//! side in one run. Measured: applying one 10,000-entry page of the feed (parse included), the
//! per-request lookup, and (printed before the timings) the heap bytes each set holds: the
//! maps' tables from their capacity, plus each string's buffer (allocator overhead not counted,
//! which only widens the gap: one allocation per string id).

use std::collections::HashMap;

use auth_filter::bench_support::{map_heap_bytes, IdClaim, Page, Revocations, TokenIds};
use criterion::{black_box, Criterion};

const LIVE: usize = 1_000_000;
const PAGE: usize = 10_000;
const UNTIL: i64 = 1_800_000_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A session id as auth-api makes them (UUID text).
fn sid(i: usize) -> String {
    format!(
        "{i:08x}-0000-4000-8000-{:012x}",
        i.wrapping_mul(2_654_435_761)
    )
}

/// One page of the feed holding sessions `from..from + PAGE`.
fn page_body(from: usize) -> String {
    let sessions: Vec<String> = (from..from + PAGE)
        .map(|i| format!(r#"{{"sid":"{}","until":{UNTIL}}}"#, sid(i)))
        .collect();
    format!(
        r#"{{"epoch":"e","full":false,"tag":"00000000000000aa","seq":{},"more":false,"sessions":[{}],"users":[]}}"#,
        from + PAGE,
        sessions.join(",")
    )
}

/// The string-keyed set: `sid` → `until`, as the whole-document feed was held.
#[derive(serde::Deserialize)]
struct StringPage {
    sessions: Vec<StringEntry>,
}

#[derive(serde::Deserialize)]
struct StringEntry {
    sid: String,
    until: i64,
}

fn apply_strings(set: &mut HashMap<String, i64>, body: &str) -> Result<()> {
    let page: StringPage = serde_json::from_str(body)?;
    for entry in page.sessions {
        set.insert(entry.sid, entry.until);
    }
    Ok(())
}

fn bench(c: &mut Criterion) -> Result<()> {
    let pages: Vec<String> = (0..LIVE / PAGE).map(|p| page_body(p * PAGE)).collect();

    let mut hashed = Revocations::default();
    for body in &pages {
        hashed.apply(&Page::parse(body.as_bytes())?);
    }
    let hashed_bytes = hashed.heap_bytes();
    let mut strings = HashMap::<String, i64>::new();
    for body in &pages {
        apply_strings(&mut strings, body)?;
    }
    let string_bytes =
        map_heap_bytes(&strings) + strings.keys().map(String::capacity).sum::<usize>();
    assert_eq!(hashed.len().0, LIVE);
    assert_eq!(strings.len(), LIVE);
    println!(
        "heap held at {LIVE} live sessions: hashed ids {:.1} MiB, string ids {:.1} MiB ({:.2}x); \
         one page of {PAGE}: {:.0} KiB",
        hashed_bytes as f64 / 1048576.0,
        string_bytes as f64 / 1048576.0,
        string_bytes as f64 / hashed_bytes as f64,
        pages[0].len() as f64 / 1024.0,
    );

    let mut group = c.benchmark_group("revocations at 1M live");
    let next = page_body(LIVE);
    group.bench_function("apply a 10k page: hashed ids", |b| {
        b.iter_batched(
            || hashed.clone(),
            |mut set| set.apply(&Page::parse(next.as_bytes()).unwrap_or_else(|e| panic!("{e}"))),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("apply a 10k page: string ids", |b| {
        b.iter_batched(
            || strings.clone(),
            |mut set| apply_strings(&mut set, &next).unwrap_or_else(|e| panic!("{e}")),
            criterion::BatchSize::LargeInput,
        )
    });
    let probe = sid(LIVE / 2);
    group.bench_function("lookup: hashed ids", |b| {
        b.iter(|| {
            let ids = TokenIds {
                sid: IdClaim::Text(black_box(&probe)),
                ..TokenIds::default()
            };
            hashed.revokes(&ids, 1_700_000_000, 60)
        })
    });
    group.bench_function("lookup: string ids", |b| {
        b.iter(|| {
            strings
                .get(black_box(probe.as_str()))
                .is_some_and(|&until| until + 60 > 1_700_000_000)
        })
    });
    group.finish();
    Ok(())
}

/// What `criterion_main!` would generate, except that a failed set-up is an error exit.
fn main() -> Result<()> {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion)?;
    criterion.final_summary();
    Ok(())
}
