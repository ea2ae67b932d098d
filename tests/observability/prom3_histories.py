#!/usr/bin/env python3
"""Writes the promtool unit tests again as Prometheus 3 would store their series.

    prom3_histories.py OUTDIR TEST.yaml...

Prometheus 3 rewrites the `le` label of classic histogram buckets (and the `quantile` label of
summaries) as a float on ingestion: `le="7200"` is stored as `le="7200.0"`, `le="0.5"` stays,
`le="+Inf"` stays (its migration guide, "le and quantile label values"). Prometheus 2 (Debian's
2.42, the one that runs here) stores what the exporter wrote; Gleaner writes `le="7200"`.
Prometheus 3 is not obtainable here, so its ingestion is reproduced on the histories instead:
every `le`/`quantile` label value of every input series is rewritten with Prometheus 3's
formatting (formatOpenMetricsFloat: integral values get `.0`), the rule files are named by
absolute path, and the expected alerts and samples are left as they are. A rule that selects a
bucket by its Prometheus 2 text (`le="7200"`) then finds nothing, and its test fails.

Only the files with at least one such label are written (the others would be the same test
twice); their paths are printed, one a line, after a summary on standard error.
"""

import math
import os
from decimal import Decimal
import re
import sys

import yaml

LABEL = re.compile(r'\b(le|quantile)\s*=\s*"([^"]*)"')


def go_shortest_g(value):
    """Go's strconv.FormatFloat(value, 'g', -1, 64): the shortest digits that read back as the
    same float, in exponent form when the decimal exponent is below -4 or at least 6."""
    digits, exponent = Decimal(repr(value)).normalize().as_tuple()[1:]
    sign = "-" if value < 0 else ""
    digits = "".join(map(str, digits))
    point = len(digits) + exponent  # the decimal point's position after the first digit
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def prom3_float(text):
    """A label value as Prometheus 3 stores it (formatOpenMetricsFloat in model/textparse): Go's
    shortest 'g' form, with `.0` appended when that has neither a point nor an exponent."""
    try:
        value = float(text)
    except ValueError:
        return text
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0.0"
    out = go_shortest_g(value)
    return out if ("." in out or "e" in out) else out + ".0"


def rewrite_series(series):
    return LABEL.sub(lambda m: f'{m.group(1)}="{prom3_float(m.group(2))}"', series)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    written = 0
    for path in sys.argv[2:]:
        data = yaml.safe_load(open(path, encoding="utf-8"))
        base = os.path.dirname(os.path.abspath(path))
        data["rule_files"] = [os.path.normpath(os.path.join(base, f)) for f in data["rule_files"]]
        changed = 0
        for test in data["tests"]:
            for series in test.get("input_series", []):
                new = rewrite_series(series["series"])
                changed += new != series["series"]
                series["series"] = new
        name = os.path.basename(path)
        if not changed:
            print(f"{name}: no le or quantile label, same test for both versions", file=sys.stderr)
            continue
        out = os.path.join(outdir, name)
        with open(out, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=False, width=1000)
        print(f"{name}: {changed} series rewritten as Prometheus 3 stores them", file=sys.stderr)
        print(out)
        written += 1
    if not written:
        sys.exit("no test has a le or quantile label: the Prometheus 3 run would prove nothing")


if __name__ == "__main__":
    main()
