#!/usr/bin/env python3
"""Reads one oha JSON report on stdin and prints
`<ok req/s> <p50 ms> <p99 ms> <ok requests> <other statuses> <errors>`.

Only 2xx answers count as served requests; requests cut by the -z deadline are not
errors of the server and are left out of <errors>.
"""

import json
import sys


def main() -> int:
    report = json.load(sys.stdin)
    summary = report.get("summary", {})
    total_s = float(summary.get("total") or 0.0)
    codes = {str(k): int(v) for k, v in (report.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    other = sum(v for k, v in codes.items() if not k.startswith("2"))
    errors = sum(
        int(v)
        for k, v in (report.get("errorDistribution") or {}).items()
        if "deadline" not in k.lower()
    )
    pct = report.get("latencyPercentiles") or {}
    p50 = float(pct.get("p50") or 0.0) * 1000.0
    p99 = float(pct.get("p99") or 0.0) * 1000.0
    rps = ok / total_s if total_s > 0 else 0.0
    print(f"{rps:.1f} {p50:.3f} {p99:.3f} {ok} {other} {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
