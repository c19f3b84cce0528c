"""Golden files: each artefact in tests/golden/ gives exactly the findings in its .expected file
(like pkilint's .crttest files). Regenerate with tests/golden/make_golden.py."""

import json
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_every_golden_artefact_gives_exactly_its_expected_findings(run_smki):
    artefacts = sorted(GOLDEN.glob("*.der"))
    assert len(artefacts) >= 15
    result = run_smki("lint", *map(str, artefacts), "--environment", "test", "--json")
    assert result.returncode == 1, result.stderr  # some golden artefacts are broken on purpose
    found = {Path(row["file"]).name: sorted(f["rule"] for f in row["findings"]) for row in json.loads(result.stdout)}
    for artefact in artefacts:
        expected = (GOLDEN / f"{artefact.name}.expected").read_text().split()
        assert found[artefact.name] == expected, artefact.name
