"""The README's reference is generated from the models: it may not drift."""

from __future__ import annotations

from pathlib import Path

from prefect_ml_automations.automations import triggers
from prefect_ml_automations.reference import END, START, render, splice

README = Path(__file__).parent.parent / "README.md"


def test_the_readme_reference_is_the_generated_one() -> None:
    text = README.read_text()
    assert splice(text) == text, "run: python -m prefect_ml_automations.reference --write README.md"


def test_the_reference_lists_every_event_type() -> None:
    reference = render()
    assert reference.startswith(START)
    assert reference.endswith(END)
    for model in (triggers.RunMetricZScore, triggers.RemoveArtifactTag, triggers.CreateArtifact):
        kind = model.model_fields["type"].annotation.__args__[0]
        assert f"| `{kind}` |" in reference


def test_every_yaml_example_in_the_readme_is_a_valid_config() -> None:
    import re

    import yaml

    from prefect_ml_automations.config import parse_config

    env = {"RECEIVER_TOKEN": "t", "RECEIVER_SECRET": "s", "WANDB_API_KEY": "k"}
    checked = 0
    for block in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S):
        document = yaml.safe_load(block)
        if isinstance(document, list):  # a list of automations
            document = {"automations": document}
        if document.get("automations") == ["..."]:  # (an elided list)
            document["automations"] = []
        parse_config(document, env=env, secrets=lambda name: "secret")
        checked += 1
    assert checked >= 5
