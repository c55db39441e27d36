"""Regenerate ``usssl/privacy/ps315_table.py``: PS3.15 Table E.1-1 as data.

Two offline inputs, both only read (never imported, never copied as code):

- the Basic Profile column, from the ``dicom-anonymizer`` package (BSD 3-clause, Kitware
  Europe): ``pip download dicom-anonymizer --no-deps -d /tmp/dicomanon``. Its
  ``dicomanonymizer/dicom_anonymization_databases/dicomfields_<edition>.py`` files hold one list
  of tags per action; the newest edition is taken unless ``--edition`` says otherwise.
- the two option columns usssl offers (Retain Longitudinal Temporal Information with Modified
  Dates, Clean Descriptors), from ``standard/confidentiality_profile_attributes.json`` of
  innolitics/dicom-standard (MIT), a JSON rendering of the same table. The copy inside the
  ``dicom-standard`` wheel on PyPI (2020) works too; the repository's copy is newer.

Keywords come from pydicom's data dictionary; a tag pydicom does not know yet gets a keyword made
from the attribute name in dicom-anonymizer's comment. Usage::

    python tools/make_ps315_table.py /tmp/dicomanon/dicom_anonymizer-2.1.0-py3-none-any.whl \\
        --options confidentiality_profile_attributes.json --options-label "..." \\
        --out usssl/privacy/ps315_table.py
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import textwrap
import zipfile
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag

ACTIONS = {  # dicom-anonymizer list name -> Table E.1-1 action
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}  # fmt: skip
DATABASE = "dicomanonymizer/dicom_anonymization_databases/dicomfields_"
DATE_VRS = {"DA", "DT", "TM"}
WIDTH = 118


def read_anonymizer(wheel: Path, edition: str | None) -> tuple[str, str, str, str, str]:
    """(package version, edition, database file, its source, licence text) from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        editions = sorted(n[len(DATABASE):-3] for n in names if n.startswith(DATABASE) and n.endswith(".py"))
        edition = edition or editions[-1]
        path = f"{DATABASE}{edition}.py"
        if path not in names:
            raise SystemExit(f"{wheel}: no edition {edition} (it has {', '.join(editions)})")
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        version = re.search(r"^Version: (\S+)", zf.read(meta).decode(), re.M).group(1)
        licence = next(n for n in names if "dist-info" in n and Path(n).name.startswith("LICENSE"))
        return version, edition, path, zf.read(path).decode(), zf.read(licence).decode()


def parse_database(source: str) -> dict[str, tuple[str, str]]:
    """Tag text ("00080050", or "50xxxxxx" for a repeating group) -> (action, name in the comment)."""
    names = {}  # (group, element) -> the comment that follows the tuple
    for match in re.finditer(r"\(\s*(0x[0-9A-Fa-f]{4}),\s*(0x[0-9A-Fa-f]{4})[^)]*\),?\s*#\s*([^\n]+)", source):
        names[(int(match[1], 16), int(match[2], 16))] = match[3].strip()
    table = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)):
            continue
        action = ACTIONS.get(node.targets[0].id)
        for element in node.value.elts if action else []:
            entry = ast.literal_eval(element)  # (group, element) or (group, element, gmask, emask)
            group, elem = entry[:2]
            text = f"{group:04X}{elem:04X}"
            if len(entry) == 4:  # masked nibbles become x: (0x6000, 0x3000, 0xFF00, 0xFFFF) -> 60xx3000
                mask = f"{entry[2]:04X}{entry[3]:04X}"
                text = "".join(c if m == "F" else "x" for c, m in zip(text, mask))
            assert text not in table, f"{text} listed twice"
            table[text] = (action, names.get((group, elem), ""))
    return table


def keyword(tag: str, name: str) -> str:
    known = keyword_for_tag(int(tag, 16)) if "x" not in tag else ""
    return known or "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", name.replace("'", "")))


def read_options(path: Path) -> list[dict]:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("confidentiality_profile_attributes.json"))
            return json.loads(zf.read(name))
    return json.loads(path.read_text())


def packed(words: list[str], indent: str = "") -> str:
    """``words`` several to a line, lines at most WIDTH characters."""
    lines, line = [], indent
    for word in words:
        if len(line) + len(word) + 1 > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += word + " "
    return "\n".join([*lines, line.rstrip()])


def render(args: argparse.Namespace) -> str:
    version, edition, db_path, source, licence = read_anonymizer(args.anonymizer, args.edition)
    table = parse_database(source)
    rows = {r["id"].upper(): r for r in read_options(args.options) if re.fullmatch(r"[0-9A-Fa-f]{8}", r["id"])}
    keywords = {tag: keyword(tag, name) for tag, (_, name) in table.items()}
    known = [t for t in table if "x" not in t and keyword_for_tag(int(t, 16))]
    vr = {t: dictionary_VR(int(t, 16)) for t in known}
    unmatched = sorted(t for t in table if "x" not in t and t not in rows)
    # Modified Dates: the column's C cells of date/time VR (a Timezone Offset or an OB timestamp
    # cannot be shifted: it keeps its Basic action); a tag the JSON lacks: its VR decides.
    dates = sorted(keywords[t] for t in known if vr[t] in DATE_VRS and (
        rows[t].get("rtnLongModifDatesOpt") == "C" if t in rows else True))  # fmt: skip
    skipped = sorted(keywords[t] for t in known
                     if vr[t] not in DATE_VRS and rows.get(t, {}).get("rtnLongModifDatesOpt"))  # fmt: skip
    descriptors = sorted(keywords[t] for t in table if rows.get(t, {}).get("cleanDescOpt") == "C")
    entries = [f"{t} {a} {keywords[t]}" for t, (a, _) in sorted(table.items())]
    counts = {a: sum(v[0] == a for v in table.values()) for a in ACTIONS.values()}
    bsd = "\n".join(f"#   {line}".rstrip() for line in licence.strip().splitlines())
    about = textwrap.fill(
        f"Basic Profile column: the ``dicom-anonymizer`` package {version} (PyPI), {db_path}, which "
        f"names the table's edition {edition}. Option columns (Retain Longitudinal Temporal Information "
        f"with Modified Dates, Clean Descriptors): {args.options_label}; the {len(unmatched)} attributes "
        "that file does not list are kept by neither option unless their VR is DA, DT or TM.", 98)
    return f'''"""PS3.15 Table E.1-1 (DICOM {edition}) as data. GENERATED by tools/make_ps315_table.py: do not edit.

{about}

Only the table's content (tags, keywords, actions: the DICOM standard's) is taken, no code.
{len(table)} attributes: {", ".join(f"{a} {n}" for a, n in counts.items())}.
"""

# dicom-anonymizer's licence (BSD 3-clause), for the Basic Profile column:
{bsd}
#
# innolitics/dicom-standard's licence (MIT), for the option columns:
#   Copyright (c) 2017 Innolitics, LLC. Permission is hereby granted, free of charge, to any person
#   obtaining a copy of this software and associated documentation files (the "Software"), to deal
#   in the Software without restriction, including without limitation the rights to use, copy,
#   modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
#   permit persons to whom the Software is furnished to do so, subject to the following conditions:
#   The above copyright notice and this permission notice shall be included in all copies or
#   substantial portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY
#   KIND, EXPRESS OR IMPLIED.

EDITION = "{edition}"
SOURCE = "dicom-anonymizer {version} ({Path(db_path).name})"
OPTIONS_SOURCE = "{args.options_label}"

# "tag action keyword" triples; x in a tag: any hex digit (repeating groups)
BASIC_PROFILE = """
{packed(entries)}
"""

# Retain Longitudinal Temporal Information with Modified Dates Option, its C cells of VR DA, DT, TM
# (not {", ".join(skipped)}: they keep their Basic action)
RETAIN_LONGITUDINAL_MODIFIED_DATES = """
{packed(dates)}
"""

# Clean Descriptors Option, its C cells
CLEAN_DESCRIPTORS = """
{packed(descriptors)}
"""
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("anonymizer", type=Path, help="dicom-anonymizer wheel (.whl)")
    parser.add_argument("--options", type=Path, required=True,
                        help="confidentiality_profile_attributes.json, or a dicom-standard wheel")  # fmt: skip
    parser.add_argument("--options-label", required=True, help="where --options came from (written in the module)")
    parser.add_argument("--edition", help="dicom-anonymizer edition (default: its newest)")
    parser.add_argument("--out", type=Path, default=Path("usssl/privacy/ps315_table.py"))
    args = parser.parse_args()
    args.out.write_text(render(args))
    print(f"wrote {args.out} ({len(args.out.read_text().splitlines())} lines)")


if __name__ == "__main__":
    main()
