"""The operations guide (deploy/README.md, issue 7 §6) has its sections, and its settings tables are
generated from the Settings classes: the generator covers every variable every service reads."""

from __future__ import annotations

import sys

from tests.deploy.support import ROOT, SERVICES, env_names

GUIDE = ROOT / "deploy/README.md"


def settings_table():
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import settings_table
    finally:
        sys.path.pop(0)
    return settings_table


def test_guide_has_the_sections_the_issue_asks_for():
    headings = [
        line.lstrip("# ").strip() for line in GUIDE.read_text().splitlines() if line.startswith("## ")
    ]
    for wanted in (
        "Scaling delivery",
        "Backups and restore",
        "Certificate rotation",
        "Upgrading, with migrations",
        "Settings",
    ):
        assert wanted in headings


def test_settings_tables_cover_every_variable():
    tables = settings_table().render()
    for service in SERVICES:
        assert f"#### {service} (" in tables
        for var in env_names(service):
            assert f"`{var}`" in tables, f"{var} of {service} is missing from the settings tables"


def test_guide_carries_the_generated_tables():
    """The tables in the guide are the ones the code gives today: a setting added, renamed or given a new
    default without `deploy/settings_table.py --write` fails here."""
    text = GUIDE.read_text()
    mod = settings_table()
    begin, end = text.index(mod.BEGIN), text.index(mod.END)
    # every service's table, the common one and the certificate renewer's
    assert begin < end and text[begin:end].count("| variable | default | meaning |") == len(SERVICES) + 2
    assert text[begin + len(mod.BEGIN) : end].strip() == mod.render().strip(), (
        "deploy/README.md's settings tables are stale: run .venv/bin/python deploy/settings_table.py --write"
    )
