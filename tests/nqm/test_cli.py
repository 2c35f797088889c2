"""`star nqm figures`: writes the four PNGs and their JSON; a bad --out is one line and exit 2."""

import json

import numpy as np
import pytest

from services.cli.main import main


@pytest.mark.slow
def test_figures_quick_writes_pngs_and_json(tmp_path, capsys):
    out = tmp_path / "nqm"
    assert main(["nqm", "figures", "--out", str(out), "--quick"]) == 0
    for name in ("fig1", "fig2a", "fig2b", "fig2c"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert str(out) in capsys.readouterr().out

    fig1 = json.loads((out / "fig1.json").read_text())
    panels = fig1["panels"]
    assert set(panels) == {"a", "b", "c", "d"}
    assert all(p["spectral_radius_before"] > 1.0 for p in panels.values())
    assert panels["d"]["spectral_radius_after"] < 1.0  # all three interventions: stable
    after_d = np.array(panels["d"]["after"])
    radius_d = np.max(np.hypot(after_d[:, 0], after_d[:, 1]))
    assert radius_d == pytest.approx(panels["d"]["spectral_radius_after"], rel=1e-12)

    fig2a = json.loads((out / "fig2a.json").read_text())
    assert fig2a["problem"]["dimension"] == 6 and len(fig2a["alphas"]) == 9
    fig2c = json.loads((out / "fig2c.json").read_text())
    runs = fig2c["estimators"]["closed_form"]
    assert [r["alpha_fraction"] for r in runs] == [0.0, 0.1, 0.2, 0.3, 0.4]
    # Larger alpha (inside the bounds) starts from a lower meta-loss and ends lower too.
    finals = [r["final_meta_loss"] for r in runs]
    assert finals[-1] < finals[0]
    assert all(r["final_meta_loss"] >= fig2c["optimal_meta_loss"] * (1 - 1e-9) for r in runs)


def test_figures_bad_out_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    assert main(["nqm", "figures", "--out", str(blocker / "sub"), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("star: error:") and "file.txt" in err[0]
    assert main(["nqm", "figures", "--out", str(blocker), "--quick"]) == 2
