"""The query matcher (engine.index.find) against a naive oracle over generated archives, plus its rules."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.index import Index, InvalidQueryError, find, instances_by_unique_keys, is_narrow, unsupported_keys

PATIENTS = (("PAT1", "Smith^John"), ("PAT2", "SMITH^JOHN^^"), ("pat1", "Smyth^Jane"), ("X-9", "O'Brien^Mary"), ("", ""),
            ("DE1", "Straße^Hans"))
DATES = ("20240101", "20240215", "20231231", "20240131", "", "2024.02.20")  # the last in the ACR-NEMA form
MODALITIES = ("CT", "MR", "PT", "SR")


@dataclass(frozen=True)
class Study:
    patient: int
    date: str
    accession: str
    series: tuple[tuple[str, int], ...]  # (modality, instances)


studies_strategy = st.lists(
    st.builds(
        Study,
        st.integers(0, len(PATIENTS) - 1),
        st.sampled_from(DATES),
        st.sampled_from(("ACC1", "ACC12", "acc1", "B7", "")),
        st.lists(st.tuples(st.sampled_from(MODALITIES), st.integers(1, 3)), min_size=1, max_size=3).map(tuple),
    ),
    min_size=1,
    max_size=5,
)

KEY_VALUES = {
    "PatientID": ("PAT1", "pat1", "PAT*", "?AT1", "*1", "PAT1\\X-9", "X-9", "*", "NOPE"),
    "PatientName": ("smith^john", "SMITH*", "smi*", "*JOHN", "Sm?th*", "O'BRIEN^MARY", "Smyth^Jane\\Doe", "*",
                    "Stra?e*", "strasse^hans", "STRAß*"),
    "StudyDate": ("20240101", "20240101-20240131", "-20231231", "20240201-", "2024-", "20231231\\20240215", "",
                  "20240220", "20240216-20240221"),
    "AccessionNumber": ("ACC1", "ACC*", "acc1", "*1*", "B7\\ACC12"),
    "ModalitiesInStudy": ("CT", "MR\\PT", "C*", "SR"),
    "Modality": ("CT", "MR\\SR", "?T"),
    "NumberOfStudyRelatedSeries": ("1", "2"),
    "InstanceNumber": ("1", "2\\3", "3"),
}
# Keys of lower levels too (Modality at STUDY level, ...): a record matches when one below it does.
LEVEL_KEYS = {
    "PATIENT": ("PatientID", "PatientName", "StudyDate", "AccessionNumber", "Modality", "InstanceNumber"),
    "STUDY": ("PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "Modality", "InstanceNumber"),
    "SERIES": ("PatientID", "PatientName", "StudyDate", "AccessionNumber", "Modality", "InstanceNumber"),
    "IMAGE": ("PatientID", "StudyDate", "Modality", "InstanceNumber"),
}


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    level = draw(st.sampled_from(tuple(LEVEL_KEYS)))
    keys = draw(st.lists(st.sampled_from(LEVEL_KEYS[level]), max_size=3, unique=True))
    return level, {k: draw(st.sampled_from(KEY_VALUES[k])) for k in keys}


# --- the oracle: the standard's rules written out plainly, with none of the engine's code ------------------


def wild(pattern: str, text: str) -> bool:
    if not pattern:
        return not text
    if pattern[0] == "*":
        return any(wild(pattern[1:], text[i:]) for i in range(len(text) + 1))
    return bool(text) and (pattern[0] == "?" or pattern[0] == text[0]) and wild(pattern[1:], text[1:])


def oracle_match(keyword: str, query: str, stored: object) -> bool:
    alternatives = query.split("\\")
    if any(a in ("", "*") for a in alternatives):
        return True
    value = str(stored)
    if not value:
        return False
    pn = keyword == "PatientName"
    if keyword == "StudyDate":
        value = value.replace(".", "")  # 2024.02.20 is the date 20240220 (PS3.5 Table 6.2-1)
    values = [value] if pn else value.split("\\")
    for alt in alternatives:
        for v in values:
            if keyword == "StudyDate" and "-" in alt:
                low, high = alt.split("-")
                if (not low or v >= low.ljust(8, "0")) and (not high or v <= high.ljust(8, "9")):
                    return True
            elif "*" in alt or "?" in alt:
                # PN case-insensitively, one character for one: "?" is the ß of Straße
                if wild(letters(alt) if pn else alt, letters(v) if pn else v):
                    return True
            elif (alt.upper().rstrip("^ ") == v.upper().rstrip("^ ")) if pn else alt == v:
                return True
    return False


def letters(name: str) -> str:
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name).rstrip("^ ")


def build(index: Index, factory, studies: list[Study]) -> list[dict[str, object]]:
    """Index the studies; return one plain dict per instance with everything the oracle needs."""
    rows: list[dict[str, object]] = []
    entries = []
    for s_no, study in enumerate(studies):
        pid, name = PATIENTS[study.patient]
        modalities = "\\".join(sorted({m for m, _ in study.series}))
        for se_no, (modality, n) in enumerate(study.series):
            for i in range(n):
                rec = factory.record(study=s_no, series=se_no, number=i + 1, patient_id=pid, patient_name=name,
                                     study_date=study.date, modality=modality, accession=study.accession)
                entries.append(factory.entry(rec))
                rows.append({"PatientID": pid, "PatientName": name, "StudyDate": study.date,
                             "AccessionNumber": study.accession, "Modality": modality,
                             "ModalitiesInStudy": modalities, "NumberOfStudyRelatedSeries": str(len(study.series)),
                             "StudyInstanceUID": rec.study_instance_uid,
                             "SeriesInstanceUID": rec.series_instance_uid, "SOPInstanceUID": rec.sop_instance_uid,
                             "InstanceNumber": str(i + 1)})
    index.put_instances(entries)
    return rows


UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(studies=studies_strategy, asked=st.lists(queries(), min_size=1, max_size=8))
def test_find_agrees_with_a_naive_oracle(factory, studies: list[Study], asked: list[tuple[str, dict[str, str]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, Index(Path(tmp) / "index", map_size=1 << 24) as index:
        rows = build(index, factory, studies)
        for level, criteria in asked:
            expected = {str(row[UNIQUE[level]]) for row in rows
                        if all(oracle_match(k, v, row[k]) for k, v in criteria.items())}
            model = "PATIENT" if level == "PATIENT" else "STUDY"
            found = [m[UNIQUE[level]] for m in find(index, level, criteria, model=model)]
            assert len(found) == len(set(found)), (level, criteria)
            assert set(found) == expected, (level, criteria)


@pytest.fixture
def populated(index: Index, factory) -> Index:
    build(index, factory, [
        Study(0, "20240101", "ACC1", (("CT", 3), ("PT", 2))),
        Study(3, "20240215", "B7", (("MR", 1),)),
        Study(1, "", "", (("CT", 1),)),
    ])
    return index


def test_computed_attributes_and_order(populated: Index) -> None:
    studies = list(find(populated, "STUDY", {}))
    assert [s["StudyInstanceUID"] for s in studies] == sorted(s["StudyInstanceUID"] for s in studies)
    ct_pt = next(s for s in studies if s["AccessionNumber"] == "ACC1")
    assert (ct_pt["ModalitiesInStudy"], ct_pt["NumberOfStudyRelatedSeries"], ct_pt["NumberOfStudyRelatedInstances"]) == (
        "CT\\PT", 2, 5)
    series = list(find(populated, "SERIES", {"StudyInstanceUID": str(ct_pt["StudyInstanceUID"])}))
    assert sorted(s["NumberOfSeriesRelatedInstances"] for s in series) == [2, 3]
    patients = {p["PatientID"]: p for p in find(populated, "PATIENT", {}, model="PATIENT")}
    assert (patients["PAT1"]["NumberOfPatientRelatedStudies"], patients["PAT1"]["NumberOfPatientRelatedInstances"]) == (1, 5)
    images = list(find(populated, "IMAGE", {"SeriesInstanceUID": str(series[0]["SeriesInstanceUID"])}))
    assert [i["InstanceNumber"] for i in images] == [str(n + 1) for n in range(len(images))]


def test_limit_offset_and_requested_fields(populated: Index) -> None:
    everything = [m["SOPInstanceUID"] for m in find(populated, "IMAGE", {})]
    assert len(everything) == 7
    page = [m["SOPInstanceUID"] for m in find(populated, "IMAGE", {}, offset=2, limit=3)]
    assert page == everything[2:5]
    (study,) = find(populated, "STUDY", {"AccessionNumber": "B7"}, fields=["PatientAge", "SeriesDescription", "Unknown"])
    assert study["PatientAge"] == "042Y"  # the study record lacks it: from the first instance, which repeats it
    assert study["SeriesDescription"] == ""  # a series' attribute, not the study's: no one series answers for it
    assert study["Unknown"] == ""


def test_keys_of_lower_levels_match_the_records_below(populated: Index) -> None:
    """A study matches Modality=PT when one of its series does, whichever series comes first; an
    instance's own attributes are never answered for its study or series."""
    (ct_pt,) = find(populated, "STUDY", {"Modality": "PT"}, fields=["SOPInstanceUID"])
    assert ct_pt["AccessionNumber"] == "ACC1" and ct_pt["Modality"] == "" and ct_pt["SOPInstanceUID"] == ""
    assert [s["AccessionNumber"] for s in find(populated, "STUDY", {"Modality": "PT", "InstanceNumber": "3"})] == []
    assert [s["AccessionNumber"] for s in find(populated, "STUDY", {"Modality": "CT", "InstanceNumber": "3"})] == ["ACC1"]
    pt_sop = next(m["SOPInstanceUID"] for m in find(populated, "IMAGE", {"Modality": "PT"}))
    (named,) = find(populated, "SERIES", {"SOPInstanceUID": str(pt_sop)})
    assert named["Modality"] == "PT" and named["SOPInstanceUID"] == ""
    (patient,) = find(populated, "PATIENT", {"Modality": "MR"}, model="PATIENT")
    assert patient["PatientID"] == "X-9" and patient["Modality"] == ""


def test_keys_no_record_keeps_are_not_matched(populated: Index) -> None:
    """PS3.4 C.2.2.1.3: a key the archive cannot match is ignored for matching, not matched as absent."""
    everything = [m["StudyInstanceUID"] for m in find(populated, "STUDY", {})]
    criteria = {"PatientComments": "VIP", "AcquisitionDateTime": "20240101-20240201", "StudyDate": ""}
    assert unsupported_keys(criteria) == ["AcquisitionDateTime", "PatientComments"]
    assert [m["StudyInstanceUID"] for m in find(populated, "STUDY", criteria)] == everything
    assert [m["AccessionNumber"] for m in find(populated, "STUDY", {**criteria, "AccessionNumber": "B7"})] == ["B7"]
    assert unsupported_keys({"PatientComments": "", "PatientID": "PAT1", "SpecificCharacterSet": "ISO_IR 100"}) == []


def test_utc_offsets_and_acr_nema_dates() -> None:
    from engine.index._match import parse_condition

    offset = parse_condition("AcquisitionDateTime", "20240105101500-0500")  # one value, not a range
    assert offset is not None and offset.matches("20240105101500-0500") and not offset.matches("20240105101501")
    years = parse_condition("AcquisitionDateTime", "2023-2024")  # -2024 is no UTC offset: a range
    assert years is not None and years.matches("20230601") and not years.matches("20250101")
    acr = parse_condition("StudyDate", "20240315")
    assert acr is not None and acr.matches("2024.03.15") and not acr.matches("2024.03.16")


def test_level_model_and_malformed_keys_are_refused(populated: Index) -> None:
    with pytest.raises(InvalidQueryError, match="PATIENT"):
        list(find(populated, "PATIENT", {}, model="STUDY"))
    with pytest.raises(InvalidQueryError):
        list(find(populated, "FRAME", {}))
    with pytest.raises(InvalidQueryError, match="StudyDate"):
        list(find(populated, "STUDY", {"StudyDate": "yesterday"}))
    with pytest.raises(InvalidQueryError, match="range"):
        list(find(populated, "STUDY", {"StudyDate": "2024x-2025"}))


def test_indexed_keys_do_not_scan_the_level(populated: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.index import IndexReader

    def refuse(self: IndexReader) -> list[str]:
        raise AssertionError("query on an indexed key listed every study")

    monkeypatch.setattr(IndexReader, "study_uids", refuse)
    for criteria in ({"PatientID": "PAT1"}, {"AccessionNumber": "ACC*"}, {"StudyDate": "20240101-20240301"},
                     {"PatientName": "smith*"}, {"ModalitiesInStudy": "MR"}):
        assert len(list(find(populated, "STUDY", criteria))) >= 1, criteria
    assert len(list(find(populated, "SERIES", {"Modality": "PT"}))) == 1
    assert len(list(find(populated, "IMAGE", {"PatientID": "X-9"}))) == 1


def test_time_ranges_and_precision() -> None:
    from engine.index._match import parse_condition

    c = parse_condition("StudyTime", "0800-1200")
    assert c is not None
    assert [c.matches(v) for v in ("075959", "0800", "120059.999", "1201", "")] == [False, True, True, False, False]
    single = parse_condition("StudyTime", "0800")
    assert single is not None and single.matches("080000.000") and not single.matches("080001")
    assert parse_condition("PatientName", "*") is None and parse_condition("StudyDate", "") is None
    uid_list = parse_condition("StudyInstanceUID", "1.2.3\\1.2.4")
    assert uid_list is not None and uid_list.matches("1.2.4") and not uid_list.matches("1.2.*")
    case = parse_condition("StudyDescription", "Chest*")
    assert case is not None and case.matches("Chest CT") and not case.matches("CHEST CT")


def test_narrow_queries_are_one_exact_value_of_a_narrowing_key() -> None:
    assert is_narrow("STUDY", {"PatientID": "PAT1"})
    assert is_narrow("study", {"AccessionNumber": "ACC1", "StudyDate": "2024*"})
    assert is_narrow("SERIES", {"StudyInstanceUID": "1.2.3"})
    assert is_narrow("IMAGE", {"SOPInstanceUID": "1.2.3.4"})
    assert is_narrow("PATIENT", {"PatientID": "PAT1"})
    assert not is_narrow("STUDY", {"PatientID": "PAT*"})  # a wild card can name every patient
    assert not is_narrow("STUDY", {"PatientID": ""})  # universal
    assert not is_narrow("STUDY", {"StudyInstanceUID": "1.2.3\\1.2.4"})  # a list is not one value
    assert not is_narrow("STUDY", {"StudyDate": "20240101"})  # a day of an archive can be thousands
    assert not is_narrow("IMAGE", {"SeriesInstanceUID": "1.2.3"})  # a series can hold thousands
    assert not is_narrow("NOWHERE", {"PatientID": "PAT1"})


def test_retrieve_selection_by_unique_keys_is_what_find_selects(populated: Index) -> None:
    """instances_by_unique_keys (C-GET / C-MOVE of studies and series) gives find's IMAGE-level answer, in
    find's order, for every combination of unique keys, including keys that contradict each other."""
    series = [m for m in find(populated, "SERIES", {})]
    studies = sorted({str(s["StudyInstanceUID"]) for s in series})
    first, other = series[0], series[-1]
    assert first["StudyInstanceUID"] != other["StudyInstanceUID"]
    asked = [
        {"StudyInstanceUID": studies[0]},
        {"StudyInstanceUID": "\\".join(studies)},
        {"StudyInstanceUID": first["StudyInstanceUID"], "SeriesInstanceUID": first["SeriesInstanceUID"]},
        {"SeriesInstanceUID": f"{other['SeriesInstanceUID']}\\{first['SeriesInstanceUID']}"},
        {"StudyInstanceUID": other["StudyInstanceUID"], "SeriesInstanceUID": first["SeriesInstanceUID"]},  # none
        {"PatientID": str(first["PatientID"]), "StudyInstanceUID": "\\".join(studies)},
        {"PatientID": "NOBODY", "StudyInstanceUID": studies[0]},
        {"SeriesInstanceUID": "1.2.3.404"},
        {"StudyInstanceUID": "1.2.3.404"},
        {"StudyInstanceUID": "1.2.*"},  # no wild cards in UIDs (PS3.4 C.2.2.2.2): a value that names nothing
    ]
    for criteria in asked:
        expected = [m["SOPInstanceUID"] for m in find(populated, "IMAGE", criteria)]
        assert instances_by_unique_keys(populated, criteria) == expected, criteria
    # anything but unique keys down to the series goes to the matcher
    for criteria in ({"SOPInstanceUID": "1.2.3"}, {"PatientID": "PAT1"}, {"StudyInstanceUID": studies[0],
                                                                          "Modality": "CT"}, {}):
        assert instances_by_unique_keys(populated, criteria) is None, criteria
