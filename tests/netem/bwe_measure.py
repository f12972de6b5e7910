"""Drives and measures tests/netem/bwe.sh: polls the admin overview every
100 ms for the subscriber's bandwidth estimate, limits the subscriber's
link with `tc tbf` (run by the caller's command lines), then lifts the
limit, and judges the estimate against the link rate.

Usage: bwe_measure.py URL TOKEN ROOM NAME LIMIT_BPS REPORT.json
       LIMIT_CMD... -- UNLIMIT_CMD...
Environment: BWE_BASELINE_S (5), BWE_LIMITED_S (15), BWE_LIFTED_S (20).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

url, token, room, name, limit_bps, report = sys.argv[1:7]
limit_bps = int(limit_bps)
rest = sys.argv[7:]
split = rest.index("--")
limit_cmd, unlimit_cmd = rest[:split], rest[split + 1:]
BASELINE = float(os.environ.get("BWE_BASELINE_S", "5"))
LIMITED = float(os.environ.get("BWE_LIMITED_S", "15"))
LIFTED = float(os.environ.get("BWE_LIFTED_S", "20"))
# What the issue asks: within 20 % of the link rate within 5 s of the cut.
TOLERANCE = 0.20
CONVERGE_S = 5.0


def bandwidth():
    req = urllib.request.Request(f"{url}/api/overview", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=2) as r:
        o = json.load(r)
    for rm in o.get("rooms", []):
        if rm.get("name") != room:
            continue
        for p in rm.get("participants", []):
            if p.get("name") == name:
                return ((p.get("media") or {}).get("bandwidth")) or None
    return None


def counters():
    """Server-wide counters that explain what the link had to carry."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("noom_udp_sent_bytes_total", "noom_rtp_retransmissions_total", "noom_nacks_received_total"):
            if line.startswith(name + "{"):
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def rates(before, after, seconds):
    return {k: round((after.get(k, 0) - before.get(k, 0)) / seconds) for k in after}


def sample(seconds, phase, series, t0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        b = bandwidth()
        if b and b.get("feedbacks", 0) > 0:
            series.append({"t": round(time.monotonic() - t0, 2), "phase": phase,
                           "estimate": b["estimate_bps"], "acked": b.get("acknowledged_bps"),
                           "loss": b.get("loss")})
        time.sleep(0.1)


def fail(msg, series):
    json.dump({"error": msg, "series": series}, open(report, "w"), indent=1)
    print("bwe: FAIL:", msg)
    sys.exit(1)


series = []
start = time.monotonic()
# The subscriber's feedback must be flowing and the estimate above the limit
# with room to spare (the publisher sends about 1.5 Mbit/s).
while True:
    b = bandwidth()
    if b and b.get("feedbacks", 0) > 0 and b["estimate_bps"] > 2 * limit_bps:
        break
    if time.monotonic() - start > 60:
        fail(f"no estimate above {2 * limit_bps} bit/s within 60 s (last: {b})", series)
    time.sleep(0.2)
t0 = time.monotonic()
c0 = counters()
sample(BASELINE, "baseline", series, t0)
cut_at = time.monotonic() - t0
c1 = counters()
subprocess.run(limit_cmd, check=True)
sample(LIMITED, "limited", series, t0)
lift_at = time.monotonic() - t0
c2 = counters()
subprocess.run(unlimit_cmd, check=True)
sample(LIFTED, "lifted", series, t0)
c3 = counters()
per_second = {"baseline": rates(c0, c1, cut_at), "limited": rates(c1, c2, lift_at - cut_at),
              "lifted": rates(c2, c3, time.monotonic() - t0 - lift_at)}
print("bwe: server counters per second (all subscribers: here one):", json.dumps(per_second))

baseline = [s["estimate"] for s in series if s["phase"] == "baseline"]
limited = [s for s in series if s["phase"] == "limited"]
lifted = [s for s in series if s["phase"] == "lifted"]
lo, hi = limit_bps * (1 - TOLERANCE), limit_bps * (1 + TOLERANCE)
# Converged: from this sample on, every estimate of the limited phase is
# within the tolerance.
converged = next((s["t"] - cut_at for i, s in enumerate(limited)
                  if all(lo <= x["estimate"] <= hi for x in limited[i:])), None)
first_within = next((s["t"] - cut_at for s in limited if lo <= s["estimate"] <= hi), None)
settled = [s["estimate"] for s in limited if s["t"] - cut_at >= CONVERGE_S]
mean_err = (sum(settled) / len(settled) / limit_bps - 1) if settled else None
base_mean = sum(baseline) / len(baseline) if baseline else 0
back = next((s["t"] - lift_at for s in lifted if s["estimate"] >= 0.8 * base_mean), None)
result = {
    "limit_bps": limit_bps, "baseline_mean_bps": round(base_mean),
    "first_within_20pct_after_s": first_within and round(first_within, 2),
    "converged_within_20pct_after_s": converged and round(converged, 2),
    "limited_mean_error": mean_err and round(mean_err, 4),
    "limited_min_max_bps": [min(settled), max(settled)] if settled else None,
    "back_to_80pct_of_baseline_after_s": back and round(back, 2),
    "counters_per_second": per_second,
    "series": series,
}
json.dump(result, open(report, "w"), indent=1)
print(f"bwe: baseline estimate {base_mean / 1e3:.0f} kbit/s; link limited to {limit_bps / 1e3:.0f} kbit/s")
print(f"bwe: estimate first within 20 % of the link {first_within if first_within is None else round(first_within, 1)} s after the cut,"
      f" and stays within from {converged if converged is None else round(converged, 1)} s;"
      f" from {CONVERGE_S:.0f} s on mean error {mean_err if mean_err is None else f'{mean_err:+.1%}'},"
      f" range {result['limited_min_max_bps']}")
print(f"bwe: back to 80 % of the baseline {back if back is None else round(back, 1)} s after the limit was lifted")
ok = converged is not None and converged <= CONVERGE_S and back is not None
print("bwe:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
