"""The pandas + sqlite3 peer of benches/pandas_peer.rs: the same CSV import into SQLite.

Usage: python3 pandas_peer.py CSV DB. Reads the user id and the 10 mapped columns as text
(pandas.read_csv(dtype=str)), renames them to the attribute names and writes them with
DataFrame.to_sql into a table of DB, then prints one JSON line: rows, seconds, peak RSS in MB.
"""

import json
import resource
import sqlite3
import sys
import time

import pandas

COLUMNS = {
    "Email": "user_id",
    "Plan": "plan",
    "Seats": "seats",
    "Country": "country",
    "Signup": "signup",
    "Tickets": "support_tickets",
    "MRR": "mrr",
    "Active": "active",
    "Company": "company",
    "Notes": "notes",
    "City": "city",
}


def main() -> None:
    path, db = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    frame = pandas.read_csv(
        path,
        dtype=str,
        usecols=list(COLUMNS),
        keep_default_na=False,
        encoding="utf-8-sig",
    )
    frame = frame.rename(columns=COLUMNS)
    con = sqlite3.connect(db)
    frame.to_sql("attributes", con, index=False, if_exists="replace", chunksize=5000)
    con.commit()
    con.close()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"rows": len(frame), "seconds": seconds, "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main()
