//! The `/` status page: a self-contained HTML document for a person with a browser — each LMDB
//! with its DBIs, what every syncer has seen of the other instances, and links to the machine
//! endpoints. Every dynamic string is HTML-escaped (DBI and instance names come from outside).

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

/// The snapshot time of an object name, as RFC 3339, or `-`.
fn snapshot_time(name: &str) -> String {
    SnapshotName::parse_object(name)
        .map(|(n, _)| crate::core::display::rfc3339_nano(n.timestamp_ns))
        .unwrap_or_else(|_| "-".to_string())
}

const STYLE: &str = "body{font-family:sans-serif}table,td,th{border:1px solid #ccc;\
border-collapse:collapse}td,th{padding:5px;text-align:left}td.n{text-align:right}\
td.error{background-color:#ffb8b8}td.ok{background-color:#a6f3a6}a{text-decoration:none;\
color:#3c6ac5}";

pub fn render(dbs: &[DbInfo], boards: &BTreeMap<String, DbBoard>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"UTF-8\">\n\
         <title>Lightning Stream Status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>\u{26a1} Lightning Stream Status</h1>\n\
         <p><a href=\"/metrics\">Prometheus metrics</a> | <a href=\"/healthz\">healthz</a> | \
         <a href=\"/storage\">storage listing</a></p>\n<p>version {} &middot; up {}</p>\n",
        esc(crate::base::VERSION),
        esc(&crate::config::GoDuration::from_secs(
            super::health::health().uptime().as_secs() as i64
        )
        .to_string()),
    );

    h.push_str(
        "<h2>LMDBs</h2>\n<table>\n<thead><tr><th>DB Name</th><th>MapSize</th><th>Used</th>\
         <th>File size</th><th>LastTxnID</th><th>Readers</th><th>Error</th></tr></thead>\n<tbody>\n",
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

    for (db, b) in boards {
        let _ = writeln!(
            h,
            "<h2>Sync state of {} (instance {})</h2>\n<p>Start-up: {}. Last snapshot stored: {}</p>",
            esc(db),
            esc(&b.instance),
            if b.startup_complete {
                "complete"
            } else {
                "in progress"
            },
            match &b.last_stored {
                Some((name, ts)) => format!(
                    "{} ({})",
                    esc(name),
                    crate::core::display::rfc3339_nano(*ts)
                ),
                None => "none yet".to_string(),
            }
        );
        h.push_str(
            "<table>\n<thead><tr><th>Instance</th><th>Newest snapshot in storage</th>\
             <th>Snapshot time</th><th>Merged here</th></tr></thead>\n<tbody>\n",
        );
        for (inst, latest) in &b.latest {
            let merged = b.merged.get(inst);
            let class = if merged == Some(latest) || *inst == b.instance {
                "ok"
            } else {
                "error"
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                esc(inst),
                esc(latest),
                esc(&snapshot_time(latest)),
                merged.map(|m| esc(&snapshot_time(m))).unwrap_or("-".into()),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

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

    #[test]
    fn escapes_names_and_shows_everything() {
        let stat = DbStat {
            page_size: 4096,
            depth: 1,
            branch_pages: 0,
            leaf_pages: 2,
            overflow_pages: 0,
            entries: 7,
        };
        let dbs = vec![DbInfo {
            name: "main".into(),
            map_size: 1 << 20,
            last_txn_id: 42,
            readers: (1, 126),
            file_size: 8192,
            data_path: "/x".into(),
            dbis: vec![("<script>".into(), 0x04, stat)],
            error: None,
        }];
        let mut board = DbBoard {
            instance: "a".into(),
            ..Default::default()
        };
        let name = "main__b__20240501-100000-000000001__GX.pb.gz";
        board.latest.insert("b".into(), name.into());
        board.merged.insert("b".into(), name.into());
        let html = render(&dbs, &BTreeMap::from([("main".to_string(), board)]));
        assert!(html.contains("Lightning Stream Status"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("MDB_DUPSORT"));
        assert!(html.contains(name));
        assert!(html.contains("2024-05-01T10:00:00.000000001Z"));
        assert!(html.contains("<td class=\"n\">42</td>"));
    }
}
