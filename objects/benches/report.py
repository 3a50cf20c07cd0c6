#!/usr/bin/env python3
"""Prints the codec benchmark as a Markdown table of ratios to the baseline.

Reads criterion's estimates under target/criterion (run `cargo bench -p
lwm2m-objects --bench codecs` first). Each row is one (group, operation,
format); the ratio divides its mean time by the baseline's mean time measured
in the same run and group, so machine noise common to both cancels out.
"""
import json
import pathlib
import sys

FORMATS = {"0": "text", "42": "opaque", "60": "cbor", "110": "senml+json",
           "112": "senml+cbor", "11542": "tlv", "11543": "lwm2m+json",
           "11544": "lwm2m+cbor"}

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = {}
for est in root.glob("*/*/*/new/estimates.json"):
    group, op, fmt = est.parts[-5], est.parts[-4], est.parts[-3]
    mean = json.loads(est.read_text())["mean"]["point_estimate"]
    rows[(group, op, fmt)] = mean

print("| object | operation | format | mean | baseline (generic JSON) | ratio |")
print("|---|---|---|---:|---:|---:|")
for (group, op, fmt), mean in sorted(rows.items()):
    if fmt == "baseline":
        continue
    base = rows.get((group, op, "baseline"))
    ratio = f"{mean / base:.2f}" if base else "n/a"
    base_s = f"{base / 1000:.2f} µs" if base else "n/a"
    print(f"| {group} | {op} | {FORMATS.get(fmt, fmt)} ({fmt}) | {mean / 1000:.2f} µs | {base_s} | {ratio} |")
