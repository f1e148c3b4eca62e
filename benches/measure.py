#!/usr/bin/env python3
"""Run a command and print one line of figures: wall time, CPU time (user+sys of the process
and its children, from wait4), peak RssAnon and RssFile in MiB (sampled from /proc every 10 ms).
The command's stderr (the daemon's log) goes to the file named by $MEASURE_LOG (default
/tmp/measure.log); stdout is discarded.

usage: measure.py CMD [ARGS...]
"""
import os, subprocess, sys, time

def field(pid, name):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None

log = open(os.environ.get("MEASURE_LOG", "/tmp/measure.log"), "w")
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=log)
peak = {"RssAnon": 0, "RssFile": 0}
while True:
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if pid:
        break
    for k in peak:
        v = field(p.pid, k)
        if v is not None:
            peak[k] = max(peak[k], v)
    time.sleep(0.01)
wall = time.monotonic() - t0
rc = os.waitstatus_to_exitcode(status)
print(f"rc={rc} wall_s={wall:.2f} cpu_s={ru.ru_utime + ru.ru_stime:.2f} "
      f"peak_anon_MiB={peak['RssAnon']} peak_file_MiB={peak['RssFile']}")
sys.exit(0 if rc == 0 else 1)
