#!/usr/bin/env python3
"""Writes records into a native-schema LMDB the way PowerDNS Auth 4.8+ does (a 24-byte
Lightning Stream header before every value), like examples/seed.rs but without compiling
anything: tests/packaging.sh and packaging/container-rootfs.sh use it.

usage: seed-lmdb.py LMDB_FILE KEY=VALUE...   (needs python3-lmdb or PyPI's lmdb)
"""
import struct
import sys
import time

import lmdb


def main():
    if len(sys.argv) < 3 or not all("=" in a for a in sys.argv[2:]):
        sys.exit(__doc__)
    env = lmdb.open(sys.argv[1], subdir=False, max_dbs=64, map_size=1 << 30)
    now = time.time_ns()
    with env.begin(write=True) as txn:
        dbi = env.open_db(b"records", txn=txn)
        # Transaction.id() is missing from old py-lmdb: the next ID is the last one plus one.
        txn_id = txn.id() if hasattr(txn, "id") else env.info()["last_txnid"] + 1
        for pair in sys.argv[2:]:
            key, value = pair.split("=", 1)
            # timestamp (ns, BE), transaction ID (BE), version 0, flags 0, 4 reserved, 2 extra
            header = struct.pack(">QQBB4xH", now, txn_id, 0, 0, 0)
            txn.put(key.encode(), header + value.encode(), db=dbi)
    env.close()
    print(f"wrote {len(sys.argv) - 2} record(s) to {sys.argv[1]}")


if __name__ == "__main__":
    main()
