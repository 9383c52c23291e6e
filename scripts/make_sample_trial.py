#!/usr/bin/env python
"""Write a SYNTHETIC two-arm trial of phantom CT series (not patient data).

17 patients (11 treated, 6 placebo, as in the UC-MSC COVID-19 trial design)
x 5 visits (day 0, 7, 14, 60, 120) = 85 DICOM series of the lungdamage
phantom, with a planted treatment effect: the treated arm keeps a smaller
fraction of its baseline lesion burden at month 4.  Also writes the manifest
(arms.csv), the true damage of every scan (truth.csv) and a README.

    python scripts/make_sample_trial.py --out sample_trial
    lungdamage batch sample_trial/dicom --store sample_trial/results.sqlite
    lungdamage study --store sample_trial/results.sqlite --manifest sample_trial/arms.csv --out sample_trial/study

Runtime: about a minute at the default 96x96 matrix and 5 mm slices.
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="sample_trial", help="output folder (default sample_trial)")
    p.add_argument("--matrix", type=int, default=96, help="phantom matrix (rows = columns; default 96)")
    p.add_argument("--slice-thickness", type=float, default=5.0, help="slice thickness in mm (default 5)")
    p.add_argument("--patients", type=int, nargs=2, default=(11, 6), metavar=("TREATED", "PLACEBO"),
                   help="patients per arm (default 11 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)

    from lungdamage.study.synthetic import make_trial

    t0 = time.perf_counter()
    truth = make_trial(
        args.out, n_treated=args.patients[0], n_placebo=args.patients[1], matrix=args.matrix,
        slice_thickness_mm=args.slice_thickness, seed=args.seed,
    )
    m4 = truth[truth["planned_visit_day"] == 120].groupby("arm")["true_damage_pct"].median()
    print(f"SYNTHETIC trial: {truth['patient_id'].nunique()} patients, {len(truth)} series -> {args.out} "
          f"({time.perf_counter() - t0:.0f} s)")
    print("true median damage % at month 4: " + ", ".join(f"{a} {v:.1f}" for a, v in m4.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
