//! A segmentation [`Filter`] as parameterised SQL over a store's attribute table, in either [`Layout`] (SQLite and PostgreSQL).
//!
//! Each value is kept as its text and `num`, the [`Decimal::sort_key`] of
//! values that are plain decimal numbers (NULL otherwise). PostgreSQL keeps
//! one row per (tenant, user, attribute) in `attribute_values`, indexed on
//! (tenant, name, value) and (tenant, name, num); SQLite keeps one row per
//! (tenant, user, owner) in `attribute_rows`, the owner's values packed in
//! one blob read through `sb_text`/`sb_num` (expression indexes built on
//! demand, see [`Plan::indexed`]). Every condition compares the text or `num` exactly as
//! [`Filter::matches`] compares in Rust; the only condition SQL cannot decide
//! exactly is `contains` (Unicode case folding), which is narrowed to "has the
//! attribute" and decided in Rust on the candidates ([`Plan::exact`]).
//! Values never appear in the SQL text: each is a bound parameter.
// Only the SQL stores build queries; `page_of` serves every store.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

use super::filter::{Comparison, Filter};
use super::number::Decimal;

/// Which placeholder syntax to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?1`, `?2`, …
    Sqlite,
    /// `$1`, `$2`, …
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    /// Text (tenant, names, values, user ids).
    Text(String),
    /// A [`Decimal::sort_key`].
    Blob(Vec<u8>),
    /// An integer (limits).
    Int(i64),
}

/// The SQL of one query under construction and its parameters (`?1`/`$1` is
/// always the tenant).
#[derive(Debug, Clone)]
pub(crate) struct Builder {
    dialect: Dialect,
    /// The parameters, in placeholder order.
    pub(crate) params: Vec<Param>,
}

impl Builder {
    /// A builder whose first parameter is `tenant`.
    pub(crate) fn new(dialect: Dialect, tenant: &str) -> Builder {
        Builder {
            dialect,
            params: vec![Param::Text(tenant.to_owned())],
        }
    }

    /// Binds `param`; returns its placeholder.
    pub(crate) fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(Param::Text(s.to_owned()))
    }

    /// The tenant's placeholder.
    pub(crate) fn tenant(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "?1",
            Dialect::Postgres => "$1",
        }
    }
}

/// Where one attribute's values live: the rows of the layout's table whose
/// group column (`name` or `owner`) is `group`, read by the expressions
/// `value` and `num` (`{a}` stands for the row's alias).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// The group column's value.
    pub(crate) group: String,
    /// The text, e.g. `{a}.value`.
    pub(crate) value: String,
    /// The numeric key, e.g. `{a}.num`.
    pub(crate) num: String,
    /// The names of the indexes reading `value` and `num`.
    pub(crate) indexes: [String; 2],
    /// A row of the group may lack this attribute (`value IS NULL`).
    pub(crate) nullable: bool,
}

/// How a store lays attribute values out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout<'a> {
    /// `attribute_values`: one row per (tenant, user, name) with `value`, `num`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Values,
    /// `attribute_rows`: one row per (tenant, user, owner); the map gives each
    /// registered name's owner and columns.
    Rows(&'a std::collections::HashMap<String, Column>),
}

impl Layout<'_> {
    fn table(self) -> &'static str {
        match self {
            Layout::Values => "attribute_values",
            Layout::Rows(_) => "attribute_rows",
        }
    }

    fn group_column(self) -> &'static str {
        match self {
            Layout::Values => "name",
            Layout::Rows(_) => "owner",
        }
    }

    /// Where `name` lives; `None`: no user has it.
    fn column(self, name: &str) -> Option<Column> {
        match self {
            Layout::Values => Some(Column {
                group: name.to_owned(),
                value: "{a}.value".to_owned(),
                num: "{a}.num".to_owned(),
                indexes: ["value".to_owned(), "num".to_owned()],
                nullable: false,
            }),
            Layout::Rows(columns) => columns.get(name).cloned(),
        }
    }

    /// The conditions selecting the rows of `alias` that hold `column`.
    fn row_key(self, b: &mut Builder, column: &Column, alias: &str) -> String {
        let group = b.text(&column.group);
        let mut key = format!("{alias}.{} = {group}", self.group_column());
        if column.nullable {
            key.push_str(&format!(
                " AND {} IS NOT NULL",
                column.value.replace("{a}", alias)
            ));
        }
        key
    }
}

/// A condition and whether it is exact (else only necessary: candidates are
/// checked with [`Filter::matches`]).
struct Cond {
    sql: String,
    exact: bool,
}

impl Cond {
    /// A leaf no row matches: its parameters (bound after `bound`) are dropped.
    fn never(b: &mut Builder, bound: usize) -> Cond {
        b.params.truncate(bound);
        Cond {
            sql: "FALSE".to_owned(),
            exact: true,
        }
    }
}

/// The condition on one row `a` of the attribute a leaf names (the row exists
/// means the user has the attribute), and whether it is exact. `None` for a
/// leaf that matches no row.
fn row_condition(b: &mut Builder, leaf: &Filter, a: &str, c: &Column) -> Option<(String, bool)> {
    let (text_col, num_col) = (c.value.replace("{a}", a), c.num.replace("{a}", a));
    let cond = match leaf {
        Filter::Eq { value, .. } => match Decimal::parse(value) {
            Some(d) => format!("{num_col} = {}", b.bind(Param::Blob(d.sort_key()))),
            None => format!("{text_col} = {}", b.text(value)),
        },
        Filter::Ne { value, .. } => match Decimal::parse(value) {
            Some(d) => format!(
                "({num_col} IS NULL OR {num_col} <> {})",
                b.bind(Param::Blob(d.sort_key()))
            ),
            None => format!("{text_col} <> {}", b.text(value)),
        },
        Filter::In { values, .. } => {
            let mut nums = Vec::new();
            let mut texts = Vec::new();
            for v in values {
                match Decimal::parse(v) {
                    Some(d) => nums.push(b.bind(Param::Blob(d.sort_key()))),
                    None => texts.push(b.text(v)),
                }
            }
            let mut parts = Vec::new();
            if !nums.is_empty() {
                parts.push(format!("{num_col} IN ({})", nums.join(", ")));
            }
            if !texts.is_empty() {
                parts.push(format!("{text_col} IN ({})", texts.join(", ")));
            }
            if parts.is_empty() {
                return None;
            }
            format!("({})", parts.join(" OR "))
        }
        // Unicode case folding is decided in Rust.
        Filter::Contains { .. } => return Some(("TRUE".to_owned(), false)),
        Filter::Cmp { cmp, value, .. } => {
            let op = match cmp {
                Comparison::Gt => ">",
                Comparison::Gte => ">=",
                Comparison::Lt => "<",
                Comparison::Lte => "<=",
            };
            match Decimal::parse(value) {
                // NULL (not a number) never compares true.
                Some(d) => format!("{num_col} {op} {}", b.bind(Param::Blob(d.sort_key()))),
                None => format!("{text_col} {op} {}", b.text(value)),
            }
        }
        Filter::Exists { .. } => "TRUE".to_owned(),
        Filter::And(_) | Filter::Or(_) | Filter::Not(_) => return None,
    };
    Some((cond, true))
}

fn leaf_attr(leaf: &Filter) -> Option<&str> {
    match leaf {
        Filter::Eq { attr, .. }
        | Filter::Ne { attr, .. }
        | Filter::In { attr, .. }
        | Filter::Contains { attr, .. }
        | Filter::Cmp { attr, .. }
        | Filter::Exists { attr } => Some(attr),
        Filter::And(_) | Filter::Or(_) | Filter::Not(_) => None,
    }
}

/// The condition that the user `user` (an SQL expression) matches `filter`.
/// Leaves whose attribute lives in the row `d` of the group `inline` (the
/// driving row) are tested on that row; the others probe by primary key.
fn condition(
    b: &mut Builder,
    layout: Layout<'_>,
    filter: &Filter,
    user: &str,
    inline: Option<&str>,
    under_not: bool,
) -> Cond {
    match filter {
        Filter::And(items) | Filter::Or(items) => {
            let and = matches!(filter, Filter::And(_));
            if items.is_empty() {
                return Cond {
                    sql: if and { "TRUE" } else { "FALSE" }.to_owned(),
                    exact: true,
                };
            }
            let parts: Vec<Cond> = items
                .iter()
                .map(|f| condition(b, layout, f, user, inline, under_not))
                .collect();
            Cond {
                exact: parts.iter().all(|c| c.exact),
                sql: format!(
                    "({})",
                    parts
                        .iter()
                        .map(|c| c.sql.as_str())
                        .collect::<Vec<_>>()
                        .join(if and { " AND " } else { " OR " })
                ),
            }
        }
        Filter::Not(inner) => {
            let bound = b.params.len();
            let c = condition(b, layout, inner, user, inline, true);
            if c.exact {
                Cond {
                    sql: format!("NOT {}", c.sql),
                    exact: true,
                }
            } else {
                // The negation of a necessary condition is not one.
                b.params.truncate(bound);
                Cond {
                    sql: "TRUE".to_owned(),
                    exact: false,
                }
            }
        }
        leaf => {
            let column = leaf_attr(leaf).and_then(|attr| layout.column(attr));
            let Some(column) = column else {
                return Cond {
                    sql: "FALSE".to_owned(),
                    exact: true,
                };
            };
            let bound = b.params.len();
            if inline == Some(column.group.as_str()) {
                // A comparison is not true on a missing value (NULL) by
                // itself; under a negation, NULL must become false.
                let compares = matches!(
                    leaf,
                    Filter::Eq { .. } | Filter::In { .. } | Filter::Cmp { .. }
                );
                let presence = if column.nullable && (under_not || !compares) {
                    format!("{} IS NOT NULL AND ", column.value.replace("{a}", "d"))
                } else {
                    String::new()
                };
                return match row_condition(b, leaf, "d", &column) {
                    None => Cond::never(b, bound),
                    Some((cond, exact)) => Cond {
                        sql: if under_not {
                            format!("COALESCE(({presence}{cond}), FALSE)")
                        } else {
                            format!("({presence}{cond})")
                        },
                        exact,
                    },
                };
            }
            let tenant = b.tenant();
            let key = layout.row_key(b, &column, "a");
            match row_condition(b, leaf, "a", &column) {
                None => Cond::never(b, bound),
                Some((cond, exact)) => Cond {
                    sql: format!(
                        "EXISTS (SELECT 1 FROM {} a WHERE a.tenant = {tenant} \
                         AND a.user_id = {user} AND {key} AND {cond})",
                        layout.table()
                    ),
                    exact,
                },
            }
        }
    }
}

/// How well a leaf drives a query (lower is better): one that selects rows of
/// its attribute through an index.
fn driver_rank(leaf: &Filter) -> Option<u8> {
    match leaf {
        Filter::Eq { .. } => Some(0),
        Filter::In { values, .. } if !values.is_empty() => Some(1),
        Filter::Cmp { .. } => Some(2),
        Filter::Exists { .. } | Filter::Ne { .. } | Filter::Contains { .. } => Some(3),
        _ => None,
    }
}

/// The columns a driving leaf reads through an index.
fn driver_columns(leaf: &Filter, column: &Column) -> Vec<String> {
    let numeric = |v: &str| Decimal::parse(v).is_some();
    match leaf {
        Filter::Eq { value, .. } | Filter::Cmp { value, .. } if numeric(value) => {
            vec![column.indexes[1].clone()]
        }
        Filter::In { values, .. } => {
            let mut out = Vec::new();
            if values.iter().any(|v| numeric(v)) {
                out.push(column.indexes[1].clone());
            }
            if values.iter().any(|v| !numeric(v)) {
                out.push(column.indexes[0].clone());
            }
            out
        }
        _ => vec![column.indexes[0].clone()],
    }
}

/// A filter planned as SQL: `FROM … WHERE …` selecting each matching user once
/// as `d.user_id`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The query's parameters so far (add more with [`Builder::bind`]).
    pub(crate) builder: Builder,
    /// `FROM … WHERE …` (without ORDER BY or LIMIT).
    pub(crate) from_where: String,
    /// True if every row the query returns matches; otherwise the rows are
    /// candidates to check with [`Filter::matches`] on the attributes in
    /// [`Plan::referenced`].
    pub(crate) exact: bool,
    /// The attribute names the filter reads.
    pub(crate) referenced: Vec<String>,
    /// The indexes the plan reads (a store that builds indexes on demand
    /// makes sure they exist): the driving condition's, with the same row's
    /// comparisons joined by `_` (`t0_n5`: text of slot 0, then number of 5).
    pub(crate) indexed: Vec<String>,
}

impl Plan {
    /// The query of one page: the matching users after `after`, in user order,
    /// `limit + 1` of them (the extra one tells whether a next page exists),
    /// and its parameters.
    pub(crate) fn page_query(&self, after: Option<&str>, limit: usize) -> (String, Builder) {
        let mut b = self.builder.clone();
        let after_sql = match after {
            Some(a) => format!(" AND d.user_id > {}", b.bind(Param::Text(a.to_owned()))),
            None => String::new(),
        };
        let lim = b.bind(Param::Int(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
        let query = format!(
            "SELECT d.user_id {}{after_sql} ORDER BY d.user_id LIMIT {lim}",
            self.from_where
        );
        (query, b)
    }
}

/// Plans `filter` for `tenant`. A top-level conjunct that is a simple
/// condition drives the query through an index of its attribute's rows; the
/// other conjuncts are tested on the same row when their attribute lives in
/// it, or probed by primary key. Otherwise the tenant's users are scanned
/// once (in user order) and each is probed.
pub(crate) fn plan(dialect: Dialect, layout: Layout<'_>, tenant: &str, filter: &Filter) -> Plan {
    let mut b = Builder::new(dialect, tenant);
    let conjuncts: Vec<&Filter> = match filter {
        Filter::And(items) => items.iter().collect(),
        other => vec![other],
    };
    let driver = conjuncts
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let column = leaf_attr(f).and_then(|attr| layout.column(attr))?;
            driver_rank(f).map(|r| (r, i, column))
        })
        .min_by_key(|(r, i, _)| (*r, *i));
    let mut referenced = Vec::new();
    collect_names(filter, &mut referenced);
    referenced.sort();
    referenced.dedup();
    let table = layout.table();
    let mut indexed = Vec::new();
    let (from_where, exact) = match driver {
        Some((_, i, column)) => {
            let leaf = conjuncts[i];
            let tenant_p = b.tenant();
            let key = layout.row_key(&mut b, &column, "d");
            indexed = driver_columns(leaf, &column);
            // One index serves the driver and the comparisons on the same row
            // (up to three columns), so that counting reads the index alone.
            if let [driver_index] = indexed.as_slice() {
                let mut composite = vec![driver_index.clone()];
                for (j, other) in conjuncts.iter().enumerate() {
                    let same_row = leaf_attr(other)
                        .and_then(|attr| layout.column(attr))
                        .filter(|c| c.group == column.group);
                    if let (true, Some(c)) = (j != i && composite.len() < 3, same_row) {
                        if let (Filter::Eq { .. } | Filter::Cmp { .. }, [one]) =
                            (other, driver_columns(other, &c).as_slice())
                        {
                            if !composite.contains(one) {
                                composite.push(one.clone());
                            }
                        }
                    }
                }
                indexed = vec![composite.join("_")];
            }
            // A driver always has a condition (`driver_rank` skips empty lists).
            let (cond, mut exact) = row_condition(&mut b, leaf, "d", &column)
                .unwrap_or_else(|| ("FALSE".to_owned(), true));
            let mut sql =
                format!("FROM {table} d WHERE d.tenant = {tenant_p} AND {key} AND {cond}");
            for (j, other) in conjuncts.iter().enumerate() {
                if j != i {
                    let c = condition(
                        &mut b,
                        layout,
                        other,
                        "d.user_id",
                        Some(&column.group),
                        false,
                    );
                    exact &= c.exact;
                    sql.push_str(" AND ");
                    sql.push_str(&c.sql);
                }
            }
            (sql, exact)
        }
        None => {
            let tenant_p = b.tenant();
            let c = condition(&mut b, layout, filter, "d.user_id", None, false);
            (
                format!(
                    "FROM (SELECT DISTINCT user_id FROM {table} WHERE tenant = {tenant_p}) d \
                     WHERE {}",
                    c.sql
                ),
                c.exact,
            )
        }
    };
    Plan {
        builder: b,
        from_where,
        exact,
        referenced,
        indexed,
    }
}

fn collect_names(filter: &Filter, out: &mut Vec<String>) {
    match filter {
        Filter::And(items) | Filter::Or(items) => {
            for f in items {
                collect_names(f, out);
            }
        }
        Filter::Not(inner) => collect_names(inner, out),
        leaf => {
            if let Some(attr) = leaf_attr(leaf) {
                out.push(attr.to_owned());
            }
        }
    }
}

/// Each user's attributes of a batch, in first-seen order.
#[cfg(feature = "postgres")]
pub(crate) type ByUser<'a> = Vec<(&'a str, std::collections::BTreeMap<&'a str, &'a str>)>;

/// A batch grouped by user in first-seen order (later records win per
/// attribute), and every attribute name it writes: what the SQL stores insert.
#[cfg(feature = "postgres")]
pub(crate) fn merge_by_user(
    batch: &[super::AttributeRecord],
) -> (ByUser<'_>, std::collections::BTreeSet<String>) {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut merged: Vec<(&str, BTreeMap<&str, &str>)> = Vec::with_capacity(batch.len());
    let mut names = BTreeSet::new();
    for record in batch {
        let i = *index.entry(record.user_id.as_str()).or_insert_with(|| {
            merged.push((record.user_id.as_str(), BTreeMap::new()));
            merged.len() - 1
        });
        if let Some((_, attrs)) = merged.get_mut(i) {
            for (k, v) in &record.attributes {
                if !names.contains(k) {
                    names.insert(k.clone());
                }
                attrs.insert(k.as_str(), v.as_str());
            }
        }
    }
    (merged, names)
}

/// The `num` column's value for `value`: its sort key if it is a plain
/// decimal number.
pub(crate) fn num_key(value: &str) -> Option<Vec<u8>> {
    Decimal::parse(value).map(|d| d.sort_key())
}

/// The matching users among candidates: `rows` are (user, attribute name,
/// value) sorted by user, a user without any referenced attribute as one row
/// with `None`s.
pub(crate) fn residual(
    filter: &Filter,
    rows: impl IntoIterator<Item = (String, Option<String>, Option<String>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(String, super::Attributes)> = None;
    for (user, name, value) in rows {
        if current.as_ref().is_none_or(|(u, _)| *u != user) {
            if let Some((u, attrs)) = current.take() {
                if filter.matches(&attrs) {
                    out.push(u);
                }
            }
            current = Some((user, super::Attributes::new()));
        }
        if let (Some((_, attrs)), Some(name), Some(value)) = (current.as_mut(), name, value) {
            attrs.insert(name, value);
        }
    }
    if let Some((u, attrs)) = current {
        if filter.matches(&attrs) {
            out.push(u);
        }
    }
    out
}

/// `limit` capped to [`super::MAX_PAGE`] (at least 1).
pub(crate) fn page_limit(limit: usize) -> usize {
    limit.clamp(1, super::MAX_PAGE)
}

/// The page after `after` of the sorted `matches`.
pub(crate) fn page_of(
    matches: Vec<String>,
    after: Option<&str>,
    limit: usize,
) -> super::AttributePage {
    let limit = page_limit(limit);
    let total = matches.len() as u64;
    let start = after.map_or(0, |a| matches.partition_point(|u| u.as_str() <= a));
    let mut users: Vec<String> = matches.into_iter().skip(start).take(limit + 1).collect();
    let next = if users.len() > limit {
        users.truncate(limit);
        users.last().cloned()
    } else {
        None
    };
    super::AttributePage { users, total, next }
}

/// The page from rows fetched with `LIMIT limit + 1`.
pub(crate) fn page_from_rows(
    mut users: Vec<String>,
    total: u64,
    limit: usize,
) -> super::AttributePage {
    let limit = page_limit(limit);
    let next = if users.len() > limit {
        users.truncate(limit);
        users.last().cloned()
    } else {
        None
    };
    super::AttributePage { users, total, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_written_into_the_sql() {
        let f = Filter::parse(r#"plan = "Pre'mium; DROP" and tickets > 2 and not x contains "é""#)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = plan(Dialect::Sqlite, Layout::Values, "t'1", &f);
        assert!(!p.from_where.contains("Pre'mium"), "{}", p.from_where);
        assert!(!p.from_where.contains("t'1"));
        assert!(!p.exact, "contains is decided in Rust");
        assert!(
            p.builder
                .params
                .contains(&Param::Text("Pre'mium; DROP".to_owned()))
        );
        assert_eq!(p.referenced, ["plan", "tickets", "x"]);
        let pg = plan(
            Dialect::Postgres,
            Layout::Values,
            "t",
            &Filter::gt("tickets", "5"),
        );
        assert!(pg.exact);
        assert!(pg.from_where.contains("$2") && !pg.from_where.contains('?'));
    }
}
