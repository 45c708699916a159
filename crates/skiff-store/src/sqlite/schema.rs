//! The on-disk layout (kine's etcd-in-SQL model) and the queries that read it back.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Event, KeyValue, Revision};

/// An append-only log: every create, update and delete is one row whose `rev` is the global
/// revision. A delete row (`deleted = 1`) carries the deleted value so its event needs no
/// lookup. `prev_rev` is the mod revision of the version this row replaced (0 on create).
/// `meta` keeps the revision counter and the compaction point, so neither can go backwards
/// when log rows are deleted.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER NOT NULL,
    deleted    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('current_rev', 0), ('compact_rev', 0);
";

pub(crate) const INSERT_ROW: &str = "INSERT INTO log (rev, key, value, create_rev, prev_rev, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

pub(crate) const SET_CURRENT_REV: &str =
    "UPDATE meta SET value = max(value, ?1) WHERE name = 'current_rev'";

/// Rows nothing at or after `?1` can need: versions replaced by a write at or before `?1`, and
/// delete rows at or before `?1` (a later re-create starts a fresh history).
pub(crate) const COMPACT: [&str; 3] = [
    "DELETE FROM log WHERE rev IN (SELECT prev_rev FROM log WHERE prev_rev != 0 AND rev <= ?1)",
    "DELETE FROM log WHERE deleted = 1 AND rev <= ?1",
    "UPDATE meta SET value = max(value, ?1) WHERE name = 'compact_rev'",
];

pub(crate) fn meta(conn: &Connection, name: &str) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
    .map(|v| v.unwrap_or(0))
}

/// The revision counter: never below the newest log row, even if `meta` lagged behind it.
pub(crate) fn current_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    let logged: Option<Revision> = conn.query_row("SELECT max(rev) FROM log", [], |r| r.get(0))?;
    Ok(meta(conn, "current_rev")?.max(logged.unwrap_or(0)))
}

/// The live key set: the newest row of every key, unless that row is a delete.
pub(crate) fn load_live(conn: &Connection) -> rusqlite::Result<BTreeMap<String, KeyValue>> {
    let mut stmt = conn.prepare(
        "SELECT key, value, create_rev, rev FROM log
         WHERE rev IN (SELECT max(rev) FROM log GROUP BY key) AND deleted = 0",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KeyValue {
            key: r.get(0)?,
            value: r.get(1)?,
            create_revision: r.get(2)?,
            mod_revision: r.get(3)?,
        })
    })?;
    let mut live = BTreeMap::new();
    for kv in rows {
        let kv = kv?;
        live.insert(kv.key.clone(), kv);
    }
    Ok(live)
}

/// Rebuilds the events after `floor`, in revision order, with their previous values.
pub(crate) fn load_events(conn: &Connection, floor: Revision) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare(
        "SELECT l.rev, l.key, l.value, l.create_rev, l.prev_rev, l.deleted, p.value, p.create_rev
         FROM log l LEFT JOIN log p ON p.rev = l.prev_rev AND l.deleted = 0
         WHERE l.rev > ?1 ORDER BY l.rev",
    )?;
    let rows = stmt.query_map([floor], |r| {
        let rev: Revision = r.get(0)?;
        let key: String = r.get(1)?;
        let value: Vec<u8> = r.get(2)?;
        let create_revision: Revision = r.get(3)?;
        let prev_rev: Revision = r.get(4)?;
        let deleted: bool = r.get(5)?;
        if deleted {
            let prev = KeyValue {
                key,
                value,
                create_revision,
                mod_revision: prev_rev,
            };
            return Ok(Event::Delete {
                prev,
                revision: rev,
            });
        }
        let prev_value: Option<Vec<u8>> = r.get(6)?;
        let prev_create: Option<Revision> = r.get(7)?;
        let prev = match (prev_rev, prev_value, prev_create) {
            (p, Some(value), Some(create_revision)) if p != 0 => Some(KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision: p,
            }),
            _ => None,
        };
        let kv = KeyValue {
            key,
            value,
            create_revision,
            mod_revision: rev,
        };
        Ok(Event::Put { kv, prev })
    })?;
    rows.collect()
}

/// The smallest string greater than every key starting with `prefix`, when easy to name.
fn prefix_end(prefix: &str) -> Option<String> {
    let last = *prefix.as_bytes().last()?;
    if last >= 0x7f {
        return None;
    }
    let mut end = prefix[..prefix.len() - 1].to_string();
    end.push(char::from(last + 1));
    Some(end)
}

/// A range read at a past revision: for each key under `prefix` (after `start_after`) its newest
/// row at or before `revision`, skipping keys deleted by then. Reads `limit + 1` rows (0 = all)
/// so the caller can tell whether more follow.
pub(crate) fn range_at(
    conn: &Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    revision: Revision,
) -> rusqlite::Result<Vec<KeyValue>> {
    let (lower, inclusive) = match start_after {
        Some(after) if after >= prefix => (after.to_string(), false),
        _ => (prefix.to_string(), true),
    };
    // The upper bound only narrows the index scan; the prefix is checked again below.
    let upper = prefix_end(prefix);
    let sql = format!(
        "SELECT l.key, l.value, l.create_rev, l.rev, l.deleted FROM log l
         WHERE l.key {} ?1 {} AND l.rev = (SELECT max(m.rev) FROM log m WHERE m.key = l.key AND m.rev <= ?2)
         ORDER BY l.key",
        if inclusive { ">=" } else { ">" },
        if upper.is_some() { "AND l.key < ?3" } else { "AND ?3 IS NULL" },
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![lower, revision, upper])?;
    let mut kvs = Vec::new();
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        if !key.starts_with(prefix) {
            break;
        }
        let deleted: bool = r.get(4)?;
        if deleted {
            continue;
        }
        kvs.push(KeyValue {
            key,
            value: r.get(1)?,
            create_revision: r.get(2)?,
            mod_revision: r.get(3)?,
        });
        if limit != 0 && kvs.len() > limit {
            break;
        }
    }
    Ok(kvs)
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_exactly_the_prefix() {
        assert_eq!(prefix_end("/a/").as_deref(), Some("/a0"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("/é"), None);
        let end = prefix_end("/registry/pods/").unwrap_or_default();
        assert!("/registry/pods/zzz" < end.as_str());
        assert!("/registry/pods0" >= end.as_str());
    }
}
