"""The Python API (farm.render, farm.submit, farm.status): what a studio's script calls, and what the CLI runs."""
from __future__ import annotations

import pytest

import farm
from farm.media.decode import read_frames
from tests.test_render import MEDIA

DRAWING = {"skeleton": MEDIA / "childdrawing_char1_skeleton.yaml", "mask": MEDIA / "childdrawing_char1_mask.png"}
SMALL = ["output.size=96", "output.pose_preview=false"]


def test_render_returns_the_shot_and_reuses_it(tmp_path):
    shot = farm.render(MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png", out=tmp_path, overrides=SMALL,
                       shot_id="please", rights={"consent": "published sample media"}, **DRAWING)
    assert isinstance(shot, farm.ShotResult) and shot.status == "succeeded", shot.error
    assert len(read_frames(shot.video)) == 73 and shot.manifest["rights"] == {"consent": "published sample media"}
    again = farm.render(MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png", out=tmp_path, overrides=SMALL,
                        shot_id="please", rights={"consent": "published sample media"}, **DRAWING)
    assert again.status == "reused" and again.video == shot.video


def test_bad_input_raises_one_farm_error():
    with pytest.raises(farm.FarmError, match="output.szie"):
        farm.render(MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png", overrides=["output.szie=96"])


@pytest.mark.usefixtures("ray_cluster")
def test_submit_and_status_return_the_campaign_record(tmp_path):
    campaign = tmp_path / "api.yaml"
    campaign.write_text(
        f"name: api\ndefaults: [{', '.join(SMALL)}]\nshots:\n"
        f"  - {{id: please, motion: {MEDIA / 'gesture_asl_please.mkv'}, character: {MEDIA / 'childdrawing_char1.png'}, "
        f"skeleton: {DRAWING['skeleton']}, mask: {DRAWING['mask']}}}\n"
        f"  - {{id: missing, motion: {tmp_path / 'nope.mp4'}, character: {MEDIA / 'childdrawing_char1.png'}}}\n"
    )
    result = farm.submit(campaign, out=tmp_path / "out")
    assert isinstance(result, farm.CampaignResult)
    assert result.uri == str(tmp_path / "out" / "api") and result.report == str(tmp_path / "out" / "api" / "report.html")
    assert [r.status for r in result.results] == ["succeeded", "failed"]
    assert result.counts["shots_succeeded"] == 1 and result.counts["shots_failed"] == 1
    assert "nope.mp4" in result.results[1].error
    doc = farm.status(result.uri)
    assert doc["status"] == "finished" and sorted(row["shot_id"] for row in doc["shots"]) == ["missing", "please"]  # as they finished
