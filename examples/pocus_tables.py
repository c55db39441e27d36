"""Write usssl's label and subject tables for the lung POCUS clips (a bring-your-own-videos example).

The public COVID-19 lung ultrasound collection (Born et al.) ships a spreadsheet with one row per
clip. usssl wants two CSVs beside (or pointed to from) the pipeline YAML:

- ``labels.csv``: ``recording, label``: one diagnosis per clip (regular / pneumonia / covid;
  bacterial and viral pneumonia together); every frame carries it and ``evaluate`` scores clips.
- ``subjects.csv``: ``video, patient_id`` from the column ``Patient ID / Name``, for every clip whose
  patient is known: splits are by patient, never by clip (70 patients, 110 clips). The id is hashed on ingest and never stored.

Clips under ``label_uncertain`` (or with any other label) are left out.

    python examples/pocus_tables.py ../shared/realdata/covid19_ultrasound_lung_pocus runs/pocus/tables
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

CLASSES = {"regular": "regular", "bacterial pneumonia": "pneumonia", "viral pneumonia": "pneumonia",
           "covid-19": "covid"}


def write_tables(root: Path, out: Path) -> Counter:
    """Write ``labels.csv`` and ``subjects.csv`` into ``out``; returns the clip count per class."""
    clips = json.loads((root / "videos_metadata.json").read_text())
    with open(root / "repo_files" / "data" / "dataset_metadata.csv", newline="") as f:
        patients = {row["Filename"].strip(): row["Patient ID / Name"].strip() for row in csv.DictReader(f)}
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    with open(out / "labels.csv", "w", newline="") as lf, open(out / "subjects.csv", "w", newline="") as sf:
        labels, subjects = csv.writer(lf), csv.writer(sf)
        labels.writerow(["recording", "label"])
        subjects.writerow(["video", "patient_id"])
        for clip in clips:
            stem = Path(clip["local"]).stem
            if patients.get(stem):  # every clip whose patient is known, labelled or not
                subjects.writerow([stem, patients[stem]])
            plane = CLASSES.get(str(clip["label"]).lower())
            if plane is None or "label_uncertain" in clip["local"] or not patients.get(stem):
                continue
            counts[plane] += 1
            labels.writerow([stem, plane])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the covid19_ultrasound_lung_pocus folder")
    parser.add_argument("out", type=Path, help="where labels.csv and subjects.csv go")
    args = parser.parse_args()
    counts = write_tables(args.root, args.out)
    print(f"wrote {args.out}/labels.csv and subjects.csv: {dict(counts)} clips")


if __name__ == "__main__":
    main()
