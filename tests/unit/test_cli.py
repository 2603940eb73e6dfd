"""The `agentgov` command: help, render and crds generate, with good and hostile input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentgov.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "render" in out and "crds" in out and "examples:" in out


def test_render_without_a_path_says_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render")
    assert code == 2 and "name at least one file or folder" in err


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 2 and "usage: agentgov" in out


def test_console_script_is_installed_next_to_the_interpreter() -> None:
    script = Path(sys.executable).parent / "agentgov"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("agentgov ")


def test_render_of_the_examples_describes_each_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "render", str(EXAMPLES))
    assert code == 0, err
    assert "AgentDeployment research/research-assistant" in out
    assert "daily $16.67 (monthly / 30)" in out
    assert "sensitive-on-premise: required on-premise for sensitive, pii" in out
    assert "skipped 1 object(s) of other API groups: v1 Namespace research" in out
    assert "creates: ServiceAccount/research-assistant, ConfigMap/research-assistant-bundle" in out
    assert out.strip().endswith(
        "4 object(s) valid (1 AgentBudget, 1 AgentDeployment, 1 RegionPolicy, 1 ToolPolicy); "
        "8 child object(s) rendered (-o yaml to see them)")
    assert err == ""


def test_render_as_yaml_prints_the_children_the_operator_would_create(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES), "-o", "yaml")
    assert code == 0
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out)]
    assert kinds == ["ServiceAccount", "ConfigMap", "NetworkPolicy", "Deployment", "Service",
                     "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress"]


def test_render_output_is_the_same_on_every_run(capsys: pytest.CaptureFixture[str]) -> None:
    first = run(capsys, "render", "-f", str(EXAMPLES), "-o", "yaml")[1]
    assert run(capsys, "render", "-f", str(EXAMPLES), "-o", "yaml")[1] == first


def test_render_as_json_is_one_parseable_array(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", str(EXAMPLES), "-o", "json")
    assert code == 0
    children = json.loads(out)
    assert {c["metadata"]["namespace"] for c in children} == {"research"}
    assert all(c["metadata"]["ownerReferences"][0]["name"] == "research-assistant" for c in children)


def test_render_without_the_referenced_policies_warns_and_renders_no_children(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "render", str(EXAMPLES / "research-agent.yaml"), "-o", "yaml")
    assert code == 0 and out.strip() == ""
    assert "cannot render its children, not found: AgentBudget research/research-team" in err


def test_render_with_a_bad_operator_setting_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGOV_RESYNC_SECONDS", "soon")
    code, _, err = run(capsys, "render", str(EXAMPLES))
    assert code == 2 and "AGENTGOV_RESYNC_SECONDS" in err


def test_render_of_invalid_examples_names_file_object_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render", str(EXAMPLES / "invalid"))
    assert code == 1
    assert (
        "budget-daily-over-monthly.yaml: AgentBudget/inverted-limits: "
        "spec.limits.dailyUsd: the daily limit must not exceed the monthly limit"
    ) in err
    assert "AgentDeployment/broken-agent: spec.port:" in err
    assert "spec.autoscaling.minReplicas: minReplicas must not exceed maxReplicas" in err
    assert "2 invalid object(s)" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        ("kind: [unclosed", "not valid YAML at line 1"),
        ("apiVersion: agentgov.io/v1alpha1\nkind: AgentBudget\nmetadata: {name: x}\nspec: 5\n", "spec: Input should be"),
        ("- just\n- a list\n", "expected a mapping, got list"),
        ("apiVersion: agentgov.io/v1alpha1\nkind: AgentBudget\n", "metadata: Field required"),
        ("\xff\xfe binary", "cannot read: UnicodeDecodeError"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ],
    ids=[
        "broken YAML is reported with its line",
        "a spec that is not an object",
        "a document that is a list",
        "an object without metadata",
        "a file that is not UTF-8",
        "a YAML tag that would run code is refused",
    ],
)
def test_render_reports_malformed_files_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content.encode("latin-1") if content.startswith("\xff") else content.encode())
    code, _, err = run(capsys, "render", str(path))
    assert code == 1
    assert expected in err
    assert "Traceback" not in err


def test_render_refuses_an_oversized_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (5 * 1024 * 1024))
    code, _, err = run(capsys, "render", str(path))
    assert code == 1 and "over the 4194304 limit" in err


def test_render_of_a_missing_path_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render", str(tmp_path / "nope.yaml"))
    assert code == 1 and "no such file or directory" in err


def test_render_of_an_empty_folder_says_nothing_was_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render", str(tmp_path))
    assert code == 1 and "no manifests found" in err


def test_render_warns_about_references_to_objects_it_was_not_given(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render", str(EXAMPLES / "research-agent.yaml"))
    assert code == 0
    assert "spec.budgetRefs names AgentBudget research/research-team, which is not among the rendered objects" in err


def test_crds_check_passes_on_the_committed_crds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "crds", "generate", "--check", "--out", str(REPO / "crds"))
    assert code == 0, f"crds/ is out of date with the models; run `agentgov crds generate`\n{err}"
    assert "4 CRDs up to date" in out


def test_crds_check_fails_on_a_hand_edited_crd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "crds", "generate", "--out", str(tmp_path))[0] == 0
    edited = tmp_path / "agentbudgets.agentgov.io.yaml"
    edited.write_text(edited.read_text().replace("monthlyUsd", "monthlyUSD"))
    (tmp_path / "stray.yaml").write_text("{}")
    code, _, err = run(capsys, "crds", "generate", "--check", "--out", str(tmp_path))
    assert code == 1
    assert "agentbudgets.agentgov.io.yaml: out of date" in err
    assert "stray.yaml: not generated from any model" in err


def test_field_reference_in_docs_matches_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "crds", "docs")
    assert code == 0
    committed = (REPO / "docs" / "resources.md").read_text(encoding="utf-8")
    assert out == committed, "docs/resources.md is out of date; run `agentgov crds docs > docs/resources.md`"
