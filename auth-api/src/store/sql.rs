//! One statement in the SQL of each engine, written side by side where it is used.
//!
//! PostgreSQL and SQLite share most of their SQL, `$n` placeholders included; MySQL and
//! MariaDB take `?` and differ in upserts, `RETURNING` and locking. Each statement is therefore
//! written out for its engines, next to the code that runs it, rather than translated at run
//! time: a reader sees the behaviour once and each engine's text under it, and a statement
//! that needs a different shape on MySQL (a locking read instead of `UPDATE … RETURNING`) is
//! visibly a different branch of the code, not a string rewrite.
//!
//! Every engine's text takes the same binds in the same order, so one chain of `.bind` calls
//! serves all of them. [`sql!`] checks that at compile time: the `$n` text must use `$1`, `$2`,
//! … once each and in order, and the `?` text must have as many placeholders.

use super::Backend;

/// A statement's text on each engine.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sql {
    postgres: &'static str,
    sqlite: &'static str,
    mysql: &'static str,
}

impl Sql {
    /// The text for PostgreSQL and SQLite (`$n`) and for MySQL (`?`), checked to take the same
    /// binds. Panics (at compile time, through [`sql!`]) when they don't.
    pub(super) const fn checked(
        postgres: &'static str,
        sqlite: &'static str,
        mysql: &'static str,
    ) -> Self {
        let binds = checked_binds(postgres, mysql);
        assert!(
            dollar_binds(sqlite) == binds,
            "the SQLite text takes other binds than the PostgreSQL text"
        );
        Self {
            postgres,
            sqlite,
            mysql,
        }
    }

    /// The text for `backend`.
    pub(super) const fn on(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Postgres => self.postgres,
            Backend::Sqlite => self.sqlite,
            Backend::Mysql => self.mysql,
        }
    }
}

/// How many binds the `$n` text `dollar` and the `?` text `mysql` take, checked as [`sql!`]
/// checks a statement: `$1`, `$2`, … once each and in order, and as many `?`.
///
/// Public (and hidden) for the API tests, whose statements of their own (`RawDb::sql`) are
/// checked by this same code; not part of auth-api's interface.
///
/// # Panics
/// When they take different binds (at compile time in a `const`).
#[doc(hidden)]
#[track_caller]
pub const fn checked_binds(dollar: &str, mysql: &str) -> usize {
    let binds = dollar_binds(dollar);
    assert!(
        question_marks(mysql) == binds,
        "the MySQL text has another number of `?` than the `$n` text has binds"
    );
    binds
}

/// How many binds a `$n` text takes, checking that it uses `$1`, `$2`, … once each, in order:
/// then `?` on MySQL binds the same values in the same order.
#[track_caller]
const fn dollar_binds(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut next = 1;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut n = 0;
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                n = n * 10 + (bytes[j] - b'0') as usize;
                j += 1;
            }
            assert!(j > i + 1, "a `$` that is not a placeholder");
            assert!(
                n == next,
                "placeholders must be $1, $2, … once each, in order"
            );
            next += 1;
            i = j;
        } else {
            i += 1;
        }
    }
    next - 1
}

/// How many `?` placeholders a MySQL text has (our statements have no `?` in literals).
const fn question_marks(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'?' {
            count += 1;
        }
        i += 1;
    }
    count
}

/// A statement on each engine, its binds checked at compile time (see the module docs):
///
/// ```ignore
/// sql! {
///     postgres_sqlite: "UPDATE t SET a = $1 WHERE id = $2",
///     mysql:           "UPDATE t SET a = ? WHERE id = ?",
/// }
/// ```
///
/// or, where SQLite differs from PostgreSQL, `postgres:`, `sqlite:` and `mysql:`. It evaluates
/// to a `&'static Sql`.
macro_rules! sql {
    (postgres_sqlite: $ps:expr, mysql: $m:expr $(,)?) => {{
        const SQL: $crate::store::sql::Sql = $crate::store::sql::Sql::checked($ps, $ps, $m);
        &SQL
    }};
    (postgres: $p:expr, sqlite: $s:expr, mysql: $m:expr $(,)?) => {{
        const SQL: $crate::store::sql::Sql = $crate::store::sql::Sql::checked($p, $s, $m);
        &SQL
    }};
}
pub(super) use sql;

/// `?, ?, …, ?` for a MySQL `IN (…)` list of `n` values.
pub(super) fn question_list(n: usize) -> String {
    let mut list = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            list.push_str(", ");
        }
        list.push('?');
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_counted_in_order() {
        assert_eq!(dollar_binds("SELECT 1"), 0);
        assert_eq!(
            dollar_binds("UPDATE t SET a = $1 WHERE b = $2 AND c = $3"),
            3
        );
        assert_eq!(question_marks("UPDATE t SET a = ? WHERE b = ?"), 2);
        assert_eq!(
            checked_binds("WHERE a = $1 AND b = $2", "WHERE a = ? AND b = ?"),
            2
        );
        assert_eq!(question_list(3), "?, ?, ?");
        assert_eq!(question_list(0), "");
    }

    #[test]
    #[should_panic(expected = "once each, in order")]
    fn a_reused_placeholder_is_refused() {
        dollar_binds("VALUES ($1, $2, $1)");
    }

    #[test]
    #[should_panic(expected = "once each, in order")]
    fn placeholders_out_of_order_are_refused() {
        dollar_binds("WHERE a = $2 AND b = $1");
    }

    #[test]
    fn each_engine_gets_its_text() {
        let sql = sql! {
            postgres: "SELECT $1",
            sqlite: "SELECT $1 -- sqlite",
            mysql: "SELECT ?",
        };
        assert_eq!(sql.on(Backend::Postgres), "SELECT $1");
        assert_eq!(sql.on(Backend::Sqlite), "SELECT $1 -- sqlite");
        assert_eq!(sql.on(Backend::Mysql), "SELECT ?");
    }
}
