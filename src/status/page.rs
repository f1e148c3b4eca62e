//! The `/` status page: a self-contained HTML document, without JavaScript, that answers "is my
//! fleet in sync, and if not, which instance is behind and why" at the top (a verdict line and
//! the current problems), then per LMDB what this instance did last (local change, snapshot
//! stored and its size) and what it has merged of every other instance (newest snapshot in
//! storage, merged here, lag, delta chain), and the LMDB figures last. Every dynamic string is
//! HTML-escaped (DBI and instance names come from outside) and URL query strings are cut from
//! error texts, since a presigned S3 URL carries the access key ID; configuration values are
//! never shown. Rows carry `data-*` attributes so that tests can read the page's DOM.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{DbBoard, DbInfo};
use crate::core::display::human_size;
use crate::core::flags::dbi_flags_string;
use crate::core::name::SnapshotName;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The snapshot time (ns) of an object name.
fn snapshot_ns(name: &str) -> Option<i64> {
    SnapshotName::parse_object(name)
        .ok()
        .map(|(n, _)| n.timestamp_ns)
}

/// The snapshot time of an object name, as RFC 3339, or `-`.
fn snapshot_time(name: &str) -> String {
    snapshot_ns(name)
        .map(crate::core::display::rfc3339_nano)
        .unwrap_or_else(|| "-".to_string())
}

/// A duration in whole seconds as Go prints it (`45s`, `1h2m3s`); negative ones (clock skew
/// between instances) are shown as zero.
fn secs(ns: i64) -> String {
    crate::config::GoDuration::from_secs(ns.max(0) / 1_000_000_000).to_string()
}

/// A time and how long ago it was.
fn when(ts: i64, now: i64) -> String {
    format!(
        "{} <span class=\"ago\">({} ago)</span>",
        crate::core::display::rfc3339_nano(ts),
        secs(now - ts)
    )
}

/// Error text without URL query strings (a presigned S3 URL holds the access key ID).
fn redact(text: &str) -> String {
    text.split(' ')
        .map(|w| match w.find("://").and_then(|_| w.find('?')) {
            Some(q) => format!("{}?…", &w[..q]),
            None => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An instance whose newest snapshot is not merged here this long after it was written is
/// "behind"; before that it is "catching up" (the download and merge are normally seconds).
const BEHIND_AFTER_NS: i64 = 30_000_000_000;

/// How one remote instance stands from here.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    InSync,
    CatchingUp,
    Behind,
}

impl State {
    fn class(self) -> &'static str {
        match self {
            State::InSync => "ok",
            State::CatchingUp => "warn",
            State::Behind => "error",
        }
    }
    fn id(self) -> &'static str {
        match self {
            State::InSync => "in-sync",
            State::CatchingUp => "catching-up",
            State::Behind => "behind",
        }
    }
}

/// One remote instance's row: its state, the lag behind its newest snapshot and why.
struct Row<'a> {
    instance: &'a str,
    latest: &'a str,
    merged: Option<&'a String>,
    state: State,
    lag_ns: i64,
    reason: String,
}

fn rows<'a>(b: &'a DbBoard, now: i64) -> Vec<Row<'a>> {
    let mut out = Vec::new();
    for (inst, latest) in &b.latest {
        if *inst == b.instance {
            continue;
        }
        let merged = b.merged.get(inst);
        let latest_ns = snapshot_ns(latest).unwrap_or(now);
        let (state, lag_ns, reason) = if merged == Some(latest) {
            (State::InSync, 0, String::new())
        } else {
            // Lag: how much newer the newest snapshot is than what we merged of it.
            let lag = match merged.and_then(|m| snapshot_ns(m)) {
                Some(m) => latest_ns - m,
                None => now - latest_ns,
            };
            let error = b.errors.get(&format!("load {inst}"));
            let broken = b.chains.get(inst).filter(|c| c.starts_with("broken"));
            let reason = match (error, broken) {
                (Some((_, e)), _) => format!("load error: {}", redact(e)),
                (None, Some(c)) => format!("delta chain {c}"),
                (None, None) if !b.startup_complete && merged.is_none() => {
                    "start-up: first download not merged yet".to_string()
                }
                (None, None) => {
                    "newest snapshot not merged yet (download or merge under way)".to_string()
                }
            };
            let stale = now - latest_ns > BEHIND_AFTER_NS;
            let state = if stale || error.is_some() {
                State::Behind
            } else {
                State::CatchingUp
            };
            (state, lag, reason)
        };
        out.push(Row {
            instance: inst,
            latest,
            merged,
            state,
            lag_ns,
            reason,
        });
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em 2em}table,td,th{border:1px solid #ccc;\
border-collapse:collapse}td,th{padding:4px 6px;text-align:left;vertical-align:top}\
td.n{text-align:right}.error{background-color:#ffb8b8}.ok{background-color:#a6f3a6}\
.warn{background-color:#ffe9a6}.ago{color:#555}a{text-decoration:none;color:#3c6ac5}\
#verdict{padding:10px 14px;font-size:1.25em;border:1px solid #999;margin:0.5em 0}\
#problems li{margin:2px 0}th{background:#f2f2f2}";

pub fn render(dbs: &[DbInfo], boards: &BTreeMap<String, DbBoard>) -> String {
    let (_, report) = super::health::health().report();
    render_at(dbs, boards, &report, crate::base::now_ns())
}

/// The page for the health report `health` (the `/healthz` body) at time `now` (ns).
fn render_at(
    dbs: &[DbInfo],
    boards: &BTreeMap<String, DbBoard>,
    health: &serde_json::Value,
    now: i64,
) -> String {
    let instance = boards
        .values()
        .map(|b| b.instance.as_str())
        .find(|i| !i.is_empty())
        .unwrap_or("-");
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"UTF-8\">\n\
         <meta http-equiv=\"refresh\" content=\"10\">\n\
         <title>Lightning Stream {inst}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>\u{26a1} Lightning Stream: instance <span id=\"instance\">{inst}</span></h1>\n\
         <p>version {} &middot; up {} &middot; page time {} &middot; refreshes every 10 s &middot; \
         <a href=\"/metrics\">metrics</a> | <a href=\"/healthz\">healthz</a> | \
         <a href=\"/storage\">storage listing</a></p>\n",
        esc(crate::base::VERSION),
        esc(&crate::config::GoDuration::from_secs(
            super::health::health().uptime().as_secs() as i64
        )
        .to_string()),
        crate::core::display::rfc3339_nano(now),
        inst = esc(instance),
    );

    // The verdict: the worst state of any remote instance, health failures, and problems.
    let all: Vec<(&String, &DbBoard, Vec<Row>)> =
        boards.iter().map(|(db, b)| (db, b, rows(b, now))).collect();
    let mut problems: Vec<String> = Vec::new();
    for (check, key) in [("failing", "failures"), ("warning", "warnings")] {
        if let Some(m) = health.get(key).and_then(|v| v.as_object()) {
            for (name, msg) in m {
                problems.push(format!(
                    "<li class=\"{}\" data-kind=\"health\">health check <b>{}</b> {check}: {}</li>",
                    if check == "failing" { "error" } else { "warn" },
                    esc(name),
                    esc(&redact(msg.as_str().unwrap_or_default())),
                ));
            }
        }
    }
    for (db, b, _) in &all {
        for (what, (ts, e)) in &b.errors {
            problems.push(format!(
                "<li class=\"error\" data-kind=\"error\">LMDB <b>{}</b>, {}: {} &middot; {}</li>",
                esc(db),
                esc(what),
                esc(&redact(e)),
                when(*ts, now),
            ));
        }
    }
    for d in dbs.iter().filter(|d| d.error.is_some()) {
        problems.push(format!(
            "<li class=\"error\" data-kind=\"lmdb\">LMDB <b>{}</b> cannot be read: {}</li>",
            esc(&d.name),
            esc(d.error.as_deref().unwrap_or_default()),
        ));
    }
    let worst = all
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(|r| r.state))
        .max()
        .unwrap_or(State::InSync);
    let starting: Vec<&str> = all
        .iter()
        .filter(|(_, b, _)| !b.startup_complete)
        .map(|(db, _, _)| db.as_str())
        .collect();
    let behind: Vec<String> = all
        .iter()
        .flat_map(|(db, _, rows)| {
            rows.iter()
                .filter(|r| r.state != State::InSync)
                .map(move |r| {
                    format!(
                        "<b>{}</b> (LMDB {}, {} behind: {})",
                        esc(r.instance),
                        esc(db),
                        secs(r.lag_ns),
                        esc(&r.reason)
                    )
                })
        })
        .collect();
    let failing = health.get("ok").and_then(|v| v.as_bool()) == Some(false);
    let others: std::collections::BTreeSet<&str> = all
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(|r| r.instance))
        .collect();
    let (class, state, text) = if all.is_empty() {
        (
            "warn",
            "starting",
            "No syncer has reported yet.".to_string(),
        )
    } else if worst == State::Behind || failing {
        let what = if behind.is_empty() {
            "health checks failing, see the problems below".to_string()
        } else {
            behind.join("; ")
        };
        ("error", "behind", format!("Not in sync: {what}."))
    } else if worst == State::CatchingUp || !starting.is_empty() {
        let mut parts = behind.clone();
        if !starting.is_empty() {
            parts.push(format!(
                "start-up in progress for {}",
                esc(&starting.join(", "))
            ));
        }
        (
            "warn",
            "catching-up",
            format!("Catching up: {}.", parts.join("; ")),
        )
    } else {
        (
            if problems.is_empty() { "ok" } else { "warn" },
            "in-sync",
            format!(
                "In sync: the newest snapshot of every other instance ({}) is merged here, in {} LMDB{}.",
                if others.is_empty() {
                    "none seen in storage yet".to_string()
                } else {
                    esc(&others.into_iter().collect::<Vec<_>>().join(", "))
                },
                all.len(),
                if all.len() == 1 { "" } else { "s" },
            ),
        )
    };
    let _ = writeln!(
        h,
        "<div id=\"verdict\" class=\"{class}\" data-state=\"{state}\">{text}</div>"
    );
    h.push_str("<h2>Problems</h2>\n<ul id=\"problems\">\n");
    if problems.is_empty() {
        h.push_str("<li class=\"ok\" data-kind=\"none\">none</li>\n");
    }
    for p in &problems {
        h.push_str(p);
        h.push('\n');
    }
    h.push_str("</ul>\n");

    for (db, b, rows) in &all {
        let info = dbs.iter().find(|d| d.name == **db);
        let _ = writeln!(h, "<h2>LMDB {}</h2>", esc(db));
        let _ = writeln!(
            h,
            "<table class=\"local\" data-lmdb=\"{}\">\n<tbody>\n\
             <tr><th>Start-up</th><td class=\"{}\">{}</td></tr>\n\
             <tr><th>Last transaction</th><td>{}</td></tr>\n\
             <tr><th>Last local change</th><td data-field=\"last-local-change\">{}</td></tr>\n\
             <tr><th>Last snapshot stored</th><td data-field=\"last-stored\">{}</td></tr>\n\
             <tr><th>Its size</th><td data-field=\"last-stored-size\">{}</td></tr>\n\
             </tbody>\n</table>",
            esc(db),
            if b.startup_complete { "ok" } else { "warn" },
            if b.startup_complete {
                "complete"
            } else {
                "in progress"
            },
            info.map_or("-".to_string(), |i| i.last_txn_id.to_string()),
            match b.last_local_change {
                Some((txn, ts)) => format!("txn {txn}, seen {}", when(ts, now)),
                None => "none since start".to_string(),
            },
            match &b.last_stored {
                Some((name, ts)) => format!("{} &middot; {}", when(*ts, now), esc(name)),
                None => "none yet".to_string(),
            },
            if b.last_stored.is_some() {
                format!(
                    "{} ({} bytes)",
                    human_size(b.last_stored_size),
                    b.last_stored_size
                )
            } else {
                "-".to_string()
            },
        );
        let _ = writeln!(
            h,
            "<h3>Other instances, as seen by {} in LMDB {}</h3>\n<table class=\"instances\" \
             data-lmdb=\"{}\">\n<thead><tr><th>Instance</th><th>State</th>\
             <th>Newest snapshot in storage</th><th>Merged here</th><th>Lag</th>\
             <th>Delta chain</th><th>Why</th></tr></thead>\n<tbody>",
            esc(&b.instance),
            esc(db),
            esc(db),
        );
        if rows.is_empty() {
            h.push_str("<tr><td colspan=\"7\">no other instance in storage</td></tr>\n");
        }
        for r in rows {
            let _ = writeln!(
                h,
                "<tr data-instance=\"{}\" data-state=\"{}\"><td>{}</td><td class=\"{}\">{}</td>\
                 <td title=\"{}\">{}</td><td>{}</td><td class=\"n\" data-lag-seconds=\"{}\">{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(r.instance),
                r.state.id(),
                esc(r.instance),
                r.state.class(),
                r.state.id().replace('-', " "),
                esc(r.latest),
                snapshot_ns(r.latest).map_or("-".to_string(), |t| when(t, now)),
                r.merged
                    .map(|m| esc(&snapshot_time(m)))
                    .unwrap_or("nothing yet".into()),
                r.lag_ns.max(0) / 1_000_000_000,
                secs(r.lag_ns),
                esc(b.chains.get(r.instance).map_or("-", |c| c.as_str())),
                esc(&r.reason),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    h.push_str(
        "<h2>LMDB figures</h2>\n<table id=\"lmdbs\">\n<thead><tr><th>DB Name</th><th>MapSize</th>\
         <th>Used</th><th>File size</th><th>LastTxnID</th><th>Readers</th><th>Error</th></tr>\
         </thead>\n<tbody>\n",
    );
    for d in dbs {
        let (class, err) = match &d.error {
            Some(e) => ("error", esc(e)),
            None => ("ok", String::new()),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{} / {}</td><td class=\"{class}\">{err}</td></tr>",
            esc(&d.name),
            human_size(d.map_size),
            human_size(d.used()),
            human_size(d.file_size),
            d.last_txn_id,
            d.readers.0,
            d.readers.1,
        );
    }
    h.push_str("</tbody>\n</table>\n");

    for d in dbs {
        let _ = writeln!(
            h,
            "<h3>DBIs in {}</h3>\n<table>\n<thead><tr><th>DBI</th><th>Used</th><th>Entries</th>\
             <th>Depth</th><th>BranchPages</th><th>LeafPages</th><th>OverflowPages</th>\
             <th>Flags</th></tr></thead>\n<tbody>",
            esc(&d.name)
        );
        for (name, flags, s) in &d.dbis {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(name),
                human_size(s.used_bytes()),
                s.entries,
                s.depth,
                s.branch_pages,
                s.leaf_pages,
                s.overflow_pages,
                esc(&dbi_flags_string(u64::from(*flags))),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lmdb::DbStat;

    const B1: &str = "main__b__20240501-100000-000000001__GX.pb.gz";
    const B2: &str = "main__b__20240501-100100-000000000__GX.pb.gz";
    /// 2024-05-01T10:01:10Z, ten seconds after B2.
    const NOW: i64 = 1_714_557_670_000_000_000;

    fn db() -> DbInfo {
        let stat = DbStat {
            page_size: 4096,
            depth: 1,
            branch_pages: 0,
            leaf_pages: 2,
            overflow_pages: 0,
            entries: 7,
        };
        DbInfo {
            name: "main".into(),
            map_size: 1 << 20,
            last_txn_id: 42,
            readers: (1, 126),
            file_size: 8192,
            data_path: "/x".into(),
            dbis: vec![("<script>".into(), 0x04, stat)],
            error: None,
        }
    }

    fn board(merged: &str) -> DbBoard {
        let mut board = DbBoard {
            instance: "a".into(),
            startup_complete: true,
            last_stored: Some(("main__a__20240501-100000-000000000__GX.pb.gz".into(), NOW)),
            last_stored_size: 1234,
            last_local_change: Some((41, NOW - 5_000_000_000)),
            ..Default::default()
        };
        board.latest.insert("b".into(), B2.into());
        board.merged.insert("b".into(), merged.into());
        board
            .chains
            .insert("b".into(), "full snapshot, up to txn 9".into());
        board
    }

    fn page(b: DbBoard, health: serde_json::Value, now: i64) -> String {
        render_at(
            &[db()],
            &BTreeMap::from([("main".to_string(), b)]),
            &health,
            now,
        )
    }

    fn healthy() -> serde_json::Value {
        serde_json::json!({"ok": true, "failures": {}, "warnings": {}})
    }

    #[test]
    fn in_sync_page_shows_everything_escaped() {
        let html = page(board(B2), healthy(), NOW);
        assert!(html.contains(
            "data-state=\"in-sync\">In sync: the newest snapshot of every other instance (b)"
        ));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script"));
        assert!(html.contains("MDB_DUPSORT"));
        assert!(html.contains(B2));
        assert!(html.contains("2024-05-01T10:01:00Z"));
        assert!(html.contains("<td class=\"n\">42</td>"));
        assert!(html.contains("1.2 KB (1234 bytes)"));
        assert!(html.contains("txn 41, seen 2024-05-01T10:01:05Z"));
        assert!(html.contains("(5s ago)"));
        assert!(html.contains("full snapshot, up to txn 9"));
        assert!(html.contains("data-kind=\"none\">none</li>"));
    }

    #[test]
    fn an_unmerged_snapshot_is_catching_up_then_behind_with_the_reason() {
        let html = page(board(B1), healthy(), NOW);
        assert!(html.contains("data-instance=\"b\" data-state=\"catching-up\""));
        assert!(html.contains("id=\"verdict\" class=\"warn\" data-state=\"catching-up\""));
        // B2 is 59.999999999 s newer than B1.
        assert!(html.contains("data-lag-seconds=\"59\""));

        let later = NOW + 60_000_000_000;
        let mut b = board(B1);
        b.errors.insert(
            "load b".into(),
            (
                later,
                "HTTP 500 from http://s3:9000/b/x?X-Amz-Credential=AKIDSECRET".into(),
            ),
        );
        let html = page(b, healthy(), later);
        assert!(html.contains("data-instance=\"b\" data-state=\"behind\""));
        assert!(
            html.contains("Not in sync: <b>b</b> (LMDB main, 59s behind: load error: HTTP 500")
        );
        assert!(html.contains("http://s3:9000/b/x?…"));
        assert!(!html.contains("AKIDSECRET"));
        assert!(html.contains("data-kind=\"error\">LMDB <b>main</b>, load b"));
    }

    #[test]
    fn failing_health_checks_and_a_broken_chain_are_named() {
        let mut b = board(B1);
        b.chains.insert(
            "b".into(),
            "broken: a delta is missing before txn 12; complete again with the next full snapshot"
                .into(),
        );
        let health = serde_json::json!({"ok": false, "failures": {"main_storage_list_failed_duration": "failing for 5m"}, "warnings": {}});
        let html = page(b, health, NOW + 120_000_000_000);
        assert!(html.contains("id=\"verdict\" class=\"error\" data-state=\"behind\""));
        assert!(html.contains("delta chain broken: a delta is missing before txn 12"));
        assert!(html.contains(
            "health check <b>main_storage_list_failed_duration</b> failing: failing for 5m"
        ));
    }

    #[test]
    fn redact_cuts_url_queries_only() {
        assert_eq!(
            redact("GET https://h/b/o?X-Amz-Signature=abc failed"),
            "GET https://h/b/o?… failed"
        );
        assert_eq!(redact("why? because"), "why? because");
    }
}
