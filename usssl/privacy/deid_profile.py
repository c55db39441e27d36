"""PS3.15 Table E.1-1 as usssl applies it: the table (data in ``ps315_table``), its options, and the
action resolved for each attribute of a file's SOP class. ``usssl.privacy.deid`` applies them.

    >>> resolve_action(tag_for_keyword("PatientName"))
    'Z'
    >>> describe_options(date_shift_days=-31)
    'PS3.15 Basic Profile (Table E.1-1, DICOM 2026c); retain-longitudinal-modified-dates: ...'
"""

from __future__ import annotations

from functools import cache

from usssl.privacy import ps315_table

EDITION = ps315_table.EDITION


def _table() -> tuple[dict[int, str], list[tuple[int, int, str]], dict[int, str]]:
    tokens = ps315_table.BASIC_PROFILE.split()
    exact, masked, names = {}, [], {}
    for tag, action, keyword in zip(tokens[::3], tokens[1::3], tokens[2::3]):
        if "x" in tag:  # a repeating group: (mask, value)
            masked.append((int("".join("0" if c == "x" else "F" for c in tag), 16), int(tag.replace("x", "0"), 16),
                           action))  # fmt: skip
        else:
            exact[int(tag, 16)], names[int(tag, 16)] = action, keyword
    return exact, masked, names


PROFILE, PROFILE_MASKS, KEYWORDS = _table()
"""Tag -> Basic Profile action of Table E.1-1 ("X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D",
"X/Z/U*"); repeating groups as (mask, value, action); tag -> keyword."""
_BY_KEYWORD = {keyword: tag for tag, keyword in KEYWORDS.items()}
MODIFIED_DATES_C = frozenset(_BY_KEYWORD[k] for k in ps315_table.RETAIN_LONGITUDINAL_MODIFIED_DATES.split())
CLEAN_DESCRIPTORS_C = frozenset(_BY_KEYWORD[k] for k in ps315_table.CLEAN_DESCRIPTORS.split())

US_IMAGE, US_MULTIFRAME, ENHANCED_US_VOLUME = (
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6.2")  # fmt: skip
_IMAGE = {"ContentDate": 2, "ContentTime": 2, "PatientSexNeutered": 2}  # General Image 2C, Patient 2C
US_IOD_TYPES: dict[str, dict[str, int]] = {  # PS3.3 A.6, A.7, A.59: Table E.1-1 combinations only
    US_IMAGE: _IMAGE, US_MULTIFRAME: _IMAGE,
    ENHANCED_US_VOLUME: {**_IMAGE, "ContentDate": 1, "ContentTime": 1,  # Multi-frame Functional Groups
                         "AcquisitionDateTime": 1,  # Enhanced US Image
                         "DeviceSerialNumber": 1,  # Enhanced General Equipment
                         "AcquisitionContextSequence": 2},  # Acquisition Context
}  # fmt: skip
"""SOP class -> keyword -> Type (1 or 2) in that IOD, for the attributes whose Table E.1-1 action is
a combination. PatientSexNeutered is 2C (an animal patient): it counts only with a species."""

RETAIN_DATES, FULL_DATES, KEEP_DESCRIPTORS = (
    "retain-longitudinal-modified-dates", "retain-longitudinal-full-dates", "keep-descriptors")  # fmt: skip
OPTIONS = {
    RETAIN_DATES: "dates shifted by {days} days, times of day kept (PS3.15 Retain Longitudinal "
                  "Temporal Information with Modified Dates Option, 113107)",
    FULL_DATES: "real dates and times kept (PS3.15 Retain Longitudinal Temporal Information with Full "
                "Dates Option, 113106)",
    KEEP_DESCRIPTORS: "descriptions, comments and labels of the Clean Descriptors Option column kept "
                      "unchanged: read them before release (not cleaned, so 113105 is not claimed)",
}  # fmt: skip
"""Option name -> what it does ({days}: the shift)."""
OPTION_CODES = {"basic": ("113100", "Basic Application Confidentiality Profile"),
          RETAIN_DATES: ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
          FULL_DATES: ("113106", "Retain Longitudinal Temporal Information Full Dates Option")}  # fmt: skip
PROFILE_CODE, MODIFIED_DATES_CODE = OPTION_CODES["basic"], OPTION_CODES[RETAIN_DATES]


def applied_options(date_shift_days: int | None = None, keep_descriptors: bool = False) -> list[str]:
    """The names of the options these settings apply (keys of :data:`OPTIONS`), in a fixed order."""
    dates = [] if date_shift_days is None else [FULL_DATES if date_shift_days == 0 else RETAIN_DATES]
    return dates + ([KEEP_DESCRIPTORS] if keep_descriptors else [])


def describe_options(date_shift_days: int | None = None, keep_descriptors: bool = False) -> str:
    """One line naming the profile, its edition and every applied option, e.g. for the CLI."""
    names = applied_options(date_shift_days, keep_descriptors)
    parts = [f"{n}: {OPTIONS[n].format(days=date_shift_days)}" for n in names] or ["no options"]
    return f"PS3.15 Basic Profile (Table E.1-1, DICOM {EDITION}); " + "; ".join(parts)


def option_attributes(name: str) -> list[str]:
    """Keywords of the Table E.1-1 attributes that option ``name`` keeps (sorted), for the docs."""
    tags = {RETAIN_DATES: MODIFIED_DATES_C, FULL_DATES: MODIFIED_DATES_C, KEEP_DESCRIPTORS: CLEAN_DESCRIPTORS_C}
    if name not in tags:
        raise ValueError(f"unknown option {name!r}; options: {', '.join(OPTIONS)}")
    return sorted(KEYWORDS[t] for t in tags[name])


@cache
def resolve_action(tag: int, sop_class: str = "", *, retain_dates: bool = False, keep_descriptors: bool = False,
                   animal: bool = False) -> str | None:  # fmt: skip
    """The action usssl takes on ``tag`` (module docstring): "X", "Z", "D", "U", "K" (keep) or "C"
    (a date or time of the Modified Dates column, shifted or kept); None when the table lacks it."""
    action = PROFILE.get(tag) or next((a for mask, value, a in PROFILE_MASKS if tag & mask == value), None)
    if action is None:
        return None
    if keep_descriptors and tag in CLEAN_DESCRIPTORS_C:
        return "K"
    if retain_dates and tag in MODIFIED_DATES_C:
        return "C"
    if "/" not in action:
        return action
    keyword = KEYWORDS.get(tag, "")
    required = US_IOD_TYPES.get(sop_class, {}).get(keyword)
    if keyword == "PatientSexNeutered" and not animal:
        required = None
    if required == 1 and ("D" in action or "U" in action):
        return "D" if "D" in action else "U"
    if required in (1, 2) or "X" not in action:
        return "Z" if "Z" in action else "D"
    return "X"
