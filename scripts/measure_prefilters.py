"""Regenerate the vessel / noise table of docs/metrics.md (not collected by pytest).

    python scripts/measure_prefilters.py [--matrix 256] [--slice-mm 1.25]

For each noise level and vessels on/off, renders the phantom and scores it on
its *true* lung mask (so segmentation plays no part) with every combination of
vessel suppression and the Gaussian pre-filter; prints the damage % error
(measured - truth, percentage points) as a Markdown table.
"""

from __future__ import annotations

import argparse
import time

from lungdamage.phantom import make_phantom
from lungdamage.score import score


def measure(*, matrix: int, slice_mm: float, noise_hu: float, vessels: bool, sigma_mm: float, seed: int = 1):
    ph = make_phantom(matrix=matrix, slice_thickness_mm=slice_mm, noise_hu=noise_hu, vessels=vessels, seed=seed)
    regions = ph.truth.lung_regions()
    truth = ph.truth.fractions["total"]["damage_pct"]
    out = {"truth": truth}
    for key, sv, sm in (("plain", False, None), ("vessels_off", True, None),
                        ("smooth", False, sigma_mm), ("both", True, sigma_mm)):
        t0 = time.perf_counter()
        row = score(ph.ct, regions, suppress_vessels=sv, smooth_sigma_mm=sm).to_frame().set_index("region").loc["total"]
        out[key] = row["damage_pct"] - truth
        out[key + "_s"] = time.perf_counter() - t0
        out[key + "_vessel_pct"] = row["vessel_pct"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--matrix", type=int, default=256)
    ap.add_argument("--slice-mm", type=float, default=1.25)
    ap.add_argument("--sigma-mm", type=float, default=1.5)
    ap.add_argument("--noise", type=float, nargs="*", default=[10, 20, 40, 60])
    a = ap.parse_args()
    print(f"matrix {a.matrix}, slices {a.slice_mm} mm, Gaussian sigma {a.sigma_mm} mm; damage % error (points)\n")
    print("| noise σ (HU) | vessels | truth % | plain | vessel suppression | smoothing | both |")
    print("|---:|:---:|---:|---:|---:|---:|---:|")
    for noise in a.noise:
        for ves in (False, True):
            m = measure(matrix=a.matrix, slice_mm=a.slice_mm, noise_hu=noise, vessels=ves, sigma_mm=a.sigma_mm)
            print(f"| {noise:g} | {'yes' if ves else 'no'} | {m['truth']:.2f} | {m['plain']:+.2f} | "
                  f"{m['vessels_off']:+.2f} | {m['smooth']:+.2f} | {m['both']:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
