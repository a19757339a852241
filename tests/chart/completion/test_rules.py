"""The completion rule set: defaults, a site's TOML file, and refusal of bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from chartkeeper.chart.completion.rules import (
    CompletionRules,
    OperativeReportRule,
    PathologyReportRule,
    RulesError,
    load_rules,
    parse_rules,
    pcs_matches,
    rules_to_toml,
)


def test_the_default_rules_written_as_toml_read_back_the_same() -> None:
    text = rules_to_toml(CompletionRules())
    assert "[history-and-physical]" in text and "threshold_days = 30" in text
    assert parse_rules(text) == CompletionRules()


def test_a_site_file_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "completion.toml"
    path.write_text('[delinquency]\nthreshold_days = 14\n\n'
                    '[pathology-report]\nenabled = false\n\n'
                    '[discharge-summary]\nencounter_classes = ["IMP", "OBSENC"]\n'
                    'loinc = ["18842-5", "11490-0"]\n', encoding="utf-8")
    rules = load_rules(path)
    assert rules.delinquency.threshold_days == 14
    assert rules.pathology_report.enabled is False
    assert rules.discharge_summary.encounter_classes == ("IMP", "OBSENC")
    assert rules.discharge_summary.loinc == ("18842-5", "11490-0")
    assert rules.history_and_physical == CompletionRules().history_and_physical
    assert rules.analysed_classes() == {"IMP", "OBSENC", "EMER", "AMB"}


@pytest.mark.parametrize(("text", "setting", "words"), [
    ("[discharge-sumary]\nenabled = true\n", "discharge-sumary", "unknown rule"),
    ("[delinquency]\nthreshold_days = -1\n", "delinquency.threshold_days",
     "must not be negative, got -1"),
    ("[delinquency]\nthreshold_days = \"30\"\n", "delinquency.threshold_days",
     "must be an integer, got a string ('30')"),
    ("[delinquency]\nthreshold_days = true\n", "delinquency.threshold_days",
     "must be an integer, got a boolean"),
    ("[delinquency]\nthreshold_days = 30.5\n", "delinquency.threshold_days",
     "must be an integer, got a number"),
    ("[delinquency]\naverage_months = 0\n", "delinquency.average_months", "at least 1"),
    ("[authentication]\nenabled = \"yes\"\n", "authentication.enabled",
     "must be true or false"),
    ("[authentication]\nsigned_statuses = [\"signed\"]\n", "authentication.signed_statuses",
     "'signed' is not a DocumentReference.docStatus"),
    ("[history-and-physical]\nhours_after = 24\n", "history-and-physical.hours_after",
     "unknown setting"),
    ("[history-and-physical]\nloinc = \"34117-2\"\n", "history-and-physical.loinc",
     "must be an array of strings"),
    ("[history-and-physical]\nloinc = [\"H&P\"]\n", "history-and-physical.loinc",
     "'H&P' is not a LOINC code"),
    ("[history-and-physical]\nloinc = []\n", "history-and-physical.loinc",
     "at least one LOINC code"),
    ("[discharge-summary]\nencounter_classes = [\"INPATIENT\"]\n",
     "discharge-summary.encounter_classes", "'INPATIENT' is not an Encounter.class code"),
    ("[operative-report]\noperating_room_pcs = [\"0???0??\", \"0??0\"]\n",
     "operative-report.operating_room_pcs[1]", "has 4 positions"),
    ("[pathology-report]\ntissue_pcs = [\"0?[BT????\"]\n", "pathology-report.tissue_pcs[0]",
     "never closed"),
    ("[pathology-report]\ntissue_pcs = [\"0?I????\"]\n", "pathology-report.tissue_pcs[0]",
     "'I' is not an ICD-10-PCS character"),
    ("delinquency = 30\n", "delinquency", "must be a table"),
    ("[delinquency\n", "TOML", "not valid TOML"),
])
def test_a_bad_setting_is_refused_naming_it(text: str, setting: str, words: str) -> None:
    with pytest.raises(RulesError) as refused:
        parse_rules(text, source="site.toml")
    assert refused.value.setting == setting
    assert str(refused.value).startswith(f"site.toml: {setting}: ")
    assert words in str(refused.value)


def test_an_unreadable_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="missing.toml: file: cannot be read"):
        load_rules(tmp_path / "missing.toml")


@pytest.mark.parametrize(("code", "operation", "tissue"), [
    ("0BTC4ZZ", True, True),  # thoracoscopic lobectomy
    ("07B74ZX", True, True),  # endoscopic node sampling (diagnostic excision)
    ("0HTU0ZZ", True, True),  # open mastectomy
    ("0SR9029", True, False),  # open hip replacement: no tissue rule
    ("0QS636Z", True, False),  # percutaneous intramedullary nail
    ("10D00Z1", True, False),  # low cesarean section
    ("10E0XZZ", False, False),  # vaginal delivery
    ("8E0W4CZ", False, False),  # robotic assistance
    ("0W9930Z", False, False),  # percutaneous drainage (paracentesis)
    ("0DB", False, False),  # not a code
])
def test_icd10pcs_operations_and_tissue_removal(code: str, operation: bool,
                                                tissue: bool) -> None:
    assert pcs_matches(code, OperativeReportRule().operating_room_pcs) is operation
    assert pcs_matches(code, PathologyReportRule().tissue_pcs) is tissue
