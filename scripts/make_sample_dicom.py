#!/usr/bin/env python
"""Write the synthetic sample DICOM data in ``sample_dicom/`` (deterministic).

All images are SYNTHETIC: rendered by :func:`lungdamage.phantom.make_phantom`,
no patient data.  Two patients (one treated, one placebo) with two visits
each (baseline and month 4, with less damage at month 4), each visit one
axial CT series (128 × 128, 5 mm slices, 64 slices, uncompressed Explicit VR
Little Endian), plus

- ``visits.csv``: patient_id, arm, study_date (YYYY-MM-DD), visit;
- ``truth.csv``: the phantom's exact per-lung truth for every visit;
- ``README.md``: what the data is.

Usage::

    python scripts/make_sample_dicom.py [--out sample_dicom]

Re-running produces byte-identical files (fixed seeds, UIDs derived from
the patient, date and series).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

from lungdamage.phantom import make_phantom, write_dicom_series

ROOT = Path(__file__).resolve().parents[1]

#: patient, arm, seed, [(visit, study date, damage scale)]
VISITS = [
    ("P001", "treated", 101, [("baseline", "2020-04-01", 1.0), ("month4", "2020-08-01", 0.25)]),
    ("P002", "placebo", 202, [("baseline", "2020-05-10", 1.2), ("month4", "2020-09-10", 0.7)]),
]
MATRIX = 128
SLICE_MM = 5.0

README = """# Sample DICOM data (synthetic)

Everything in this folder is **synthetic**: CT volumes rendered by
`lungdamage.phantom.make_phantom` (an analytic thorax phantom with known
ground truth). No patient data is included; patient IDs, dates and arms are
invented.

Regenerate with `python scripts/make_sample_dicom.py` (deterministic: the
files come out byte-identical).

Layout:

```
sample_dicom/
  visits.csv                    patient_id, arm, study_date (YYYY-MM-DD), visit
  truth.csv                     exact phantom truth per visit and lung
  P001/2020-04-01_baseline/IM0001.dcm ... IM0064.dcm
  P001/2020-08-01_month4/...
  P002/2020-05-10_baseline/...
  P002/2020-09-10_month4/...
```

Each series: CT Image Storage, Explicit VR Little Endian (uncompressed),
128 x 128 pixels of 2.73 mm, 64 axial slices of 5 mm (head-first supine,
320 mm coverage), RescaleIntercept -1024, kernel STANDARD, 15 HU correlated
noise, vessels on. Month-4 visits carry less damage than baseline (lesions
scaled down), more so in the treated patient.

`truth.csv` gives, per visit and lung (right, left, total), the lung volume
and the GGO / consolidation / damage percentages computed from the continuous
phantom geometry (not from the voxels).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_dicom")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    visit_rows, truth_rows = [], []
    for pid, arm, seed, visits in VISITS:
        for number, (visit, date, scale) in enumerate(visits, start=1):
            ph = make_phantom(matrix=MATRIX, slice_thickness_mm=SLICE_MM, damage_scale=scale,
                              seed=seed + number, patient_id=pid, study_date=date.replace("-", ""))
            folder = out / pid / f"{date}_{visit}"
            write_dicom_series(ph.ct, folder, patient_id=pid, study_date=date, series_number=number,
                               series_description=f"CHEST {SLICE_MM:g}mm {visit} (synthetic)")
            visit_rows.append({"patient_id": pid, "arm": arm, "study_date": date, "visit": visit})
            for region, fr in ph.truth.fractions.items():
                truth_rows.append({"patient_id": pid, "visit": visit, "study_date": date, "region": region,
                                   **{k: f"{v:.4f}" for k, v in fr.items()}})
    with (out / "visits.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(visit_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(visit_rows)
    with (out / "truth.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(truth_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(truth_rows)
    (out / "README.md").write_text(README)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(visit_rows)} series to {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
