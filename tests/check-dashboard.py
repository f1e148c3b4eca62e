#!/usr/bin/env python3
"""Checks the Grafana dashboard packaging/grafana/lightningstream.json against promtool and a
real daemon's /metrics output: every PromQL expression, with the dashboard's variables put in
($job as the "All" value, $__rate_interval as 5m), becomes a recording rule of a generated rules
file that `promtool check rules` must accept; every metric name an expression uses must be in
the given /metrics scrapes (histograms by their _bucket/_sum/_count series), and every
expression must use at least one of ours. Also: unique panel IDs, a datasource on every panel,
no variable the dashboard does not define.

usage: check-dashboard.py DASHBOARD.json PROMTOOL METRICS.txt...
Prints one "ok"/"FAIL" line per check and "dashboard: N passed, M failed" last.
"""
import json
import re
import subprocess
import sys
import tempfile

# What Grafana puts in for the dashboard's variables when promtool checks the expressions.
VARIABLES = {"$job": ".+", "$__rate_interval": "5m", "${datasource}": None}
OURS = re.compile(r"\b((?:lightningstream|storage_s3|lmdb)_[a-zA-Z0-9_]+)\b")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    dashboard, promtool, scrapes = sys.argv[1], sys.argv[2], sys.argv[3:]
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f"\n     {detail}" if detail and not ok else ""))

    d = json.load(open(dashboard))
    panels = []
    for p in d["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    ids = [p["id"] for p in panels]
    check(f"{len(panels)} panels, unique ids", len(ids) == len(set(ids)), f"ids {ids}")
    defined = {v["name"] for v in d["templating"]["list"]}
    check("variables datasource and job defined", {"datasource", "job"} <= defined, str(defined))

    exprs = []
    for p in panels:
        if p["type"] == "row":
            continue
        targets = p.get("targets", [])
        check(f"panel {p['id']} ({p['title']}): datasource ${{datasource}}, targets",
              p.get("datasource", {}).get("uid") == "${datasource}" and len(targets) > 0)
        for t in targets:
            exprs.append((f"panel {p['id']} {t['refId']}", t["expr"]))

    # Series names in the scrapes: "name{...} value" or "name value" lines.
    series = set()
    for path in scrapes:
        for line in open(path):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
            if m and not line.startswith("#"):
                series.add(m.group(1))
    check(f"{len(series)} series names in {len(scrapes)} /metrics scrape(s)", len(series) > 50)

    rules = []
    for where, expr in exprs:
        e = expr
        for var, value in VARIABLES.items():
            if value is not None:
                e = e.replace(var, value)
        leftover = re.findall(r"\$\{?\w+", e)
        names = set(OURS.findall(e))
        missing = sorted(names - series)
        check(f"{where}: no undefined variable", not leftover, f"{leftover} in {expr}")
        check(f"{where}: uses our metrics ({', '.join(sorted(names)) or 'none'}), all in /metrics",
              bool(names) and not missing, f"not in /metrics: {missing}")
        rules.append({"record": "dashboard:" + re.sub(r"\W", "_", where), "expr": e})

    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        # JSON is YAML: promtool reads the rules file as it is.
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
        f.flush()
        out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    check(f"promtool check rules: all {len(rules)} expressions", out.returncode == 0,
          (out.stdout + out.stderr).strip().replace("\n", "\n     "))

    failed = results.count(False)
    print(f"dashboard: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
