"""Campaign files: YAML, CSV and Parquet shot lists, variants, rights, and errors that say where."""
from __future__ import annotations

import re
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from farm.campaign import load_campaign
from farm.errors import FarmError
from tests.conftest import REPO

MEDIA = REPO / "jobs" / "media"
MOTION = "media/gesture_asl_please.mkv"
CHARACTER = "media/childdrawing_char1.png"


@pytest.fixture
def folder(tmp_path):
    """A campaign folder whose `media/` is the repository's real demo media."""
    (tmp_path / "media").symlink_to(MEDIA)
    return tmp_path


def write_yaml(folder, text: str, name: str = "c.yaml"):
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def write_csv(folder, text: str, name: str = "shots.csv"):
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def error_of(path) -> str:
    with pytest.raises(FarmError) as caught:
        load_campaign(path)
    return str(caught.value)


def test_shipped_demo_campaign_loads_with_three_shots():
    campaign = load_campaign(REPO / "jobs" / "demo.yaml")
    assert campaign.name == "demo" and campaign.defaults == ["output.size=512"]
    assert [s.shot.shot_id for s in campaign.shots] == ["please-crown-man", "walk-candycorn", "book-candycorn-video-framing"]
    for item in campaign.shots:
        assert item.shot.motion.is_file() and item.shot.character.is_file() and item.shot.mask.is_file()
        assert set(item.shot.rights) == {"motion_source", "character_source", "license", "consent"}
        assert (item.variant, item.seed_offset) == (1, 0)
    assert campaign.shots[2].overrides == ["match=video"]


def test_yaml_error_names_file_line_field_and_fix(folder):
    path = write_yaml(folder, f"""
        name: lines
        shots:
          - id: one
            motion: {MOTION}
            character: {CHARACTER}
          - id: two
            motion: {MOTION}
            prompt: a character is missing here
    """)
    assert error_of(path) == f"{path} line 6: shots[1].character: missing — give the character image"


def test_yaml_error_points_at_the_line_of_the_bad_field(folder):
    path = write_yaml(folder, f"""
        name: lines
        shots:
          - motion: {MOTION}
            character: {CHARACTER}
            variants: 0
    """)
    assert error_of(path).startswith(f"{path} line 5: shots[0].variants: 0 is not a whole number >= 1 — ")
    path = write_yaml(folder, f"""
        name: lines
        shots:
          - motion: {MOTION}

            character: {CHARACTER}
            colour: red
    """)
    assert error_of(path).startswith(f"{path} line 6: shots[0].colour: unknown field — allowed fields: id, motion")
    path = write_yaml(folder, "name: lines\nshots: []\nextra: 1\n")
    assert error_of(path).startswith(f"{path} line 3: extra: unknown field")


def test_rights_take_only_the_four_known_fields_as_written(folder):
    rights = "rights: {motion_source: Intel, character_source: Meta, license: CC-BY-4.0, consent: 'yes'}"
    path = write_yaml(folder, f"""
        name: rights
        shots:
          - motion: {MOTION}
            character: {CHARACTER}
            {rights}
    """)
    assert load_campaign(path).shots[0].shot.rights == {
        "motion_source": "Intel", "character_source": "Meta", "license": "CC-BY-4.0", "consent": "yes",
    }
    path = write_yaml(folder, f"""
        name: rights
        shots:
          - motion: {MOTION}
            character: {CHARACTER}
            rights:
              license: MIT
              owner: me
    """)
    assert error_of(path) == (
        f"{path} line 7: shots[0].rights.owner: unknown field — rights take motion_source, character_source, license, "
        "license_file, consent, motion_consent, character_consent, usage"
    )
    path = write_yaml(folder, f"""
        name: rights
        shots:
          - motion: {MOTION}
            character: {CHARACTER}
            rights:
              consent: [yes, no]
    """)
    assert error_of(path) == f"{path} line 6: shots[0].rights.consent: [True, False] is not a value — give text, yes/no, a number or a date"
    path = write_yaml(folder, f"name: rights\nshots:\n  - {{motion: {MOTION}, character: {CHARACTER}, rights: [MIT]}}\n")
    assert "line 3: shots[0].rights: must be a mapping" in error_of(path)


def test_variants_expand_into_seeded_renders_with_suffixed_ids(folder):
    path = write_yaml(folder, f"""
        name: variants
        shots:
          - id: wave
            motion: {MOTION}
            character: {CHARACTER}
            overrides: [match=video]
            variants: 3
          - motion: {MOTION}
            character: {CHARACTER}
            variants: 2
    """)
    shots = load_campaign(path).shots
    assert [s.shot.shot_id for s in shots] == ["wave", "wave-v2", "wave-v3", None, None]
    assert [(s.variant, s.seed_offset) for s in shots] == [(1, 0), (2, 1), (3, 2), (1, 0), (2, 1)]
    assert all(s.overrides == ["match=video"] for s in shots[:3])
    shots[0].overrides.append("seed=9")
    assert shots[1].overrides == ["match=video"]  # each render owns its list


def test_duplicate_ids_after_variant_expansion_name_both_places(folder):
    path = write_yaml(folder, f"""
        name: dupes
        shots:
          - id: wave
            motion: {MOTION}
            character: {CHARACTER}
            variants: 2
          - id: wave-v2
            motion: {MOTION}
            character: {CHARACTER}
    """)
    assert error_of(path) == (
        f"{path} line 7: shots[1].id: duplicate shot id 'wave-v2', already used at {path} line 3: shots[0].id (variant 2)"
        " — give every shot its own id"
    )


def test_csv_campaign_reads_rows_relative_to_the_list(folder):
    path = write_csv(folder, f"""
        id,motion,character,mask,prompt,overrides,variants,rights.license,rights.consent
        please,{MOTION},{CHARACTER},media/childdrawing_char1_mask.png,"a wave, slowly",match=video output.size=256,2,MIT,yes
        ,{MEDIA / 'gesture_asl_book.mkv'},media/childdrawing_char3_candycorn.png,,,,,,
    """, name="night-batch.csv")
    campaign = load_campaign(path)
    assert (campaign.name, campaign.defaults) == ("night-batch", [])
    first, second, third = campaign.shots
    assert [s.shot.shot_id for s in campaign.shots] == ["please", "please-v2", None]
    assert first.shot.motion == folder / MOTION and first.shot.motion.is_file()
    assert first.shot.mask == folder / "media" / "childdrawing_char1_mask.png"
    assert first.shot.prompt == "a wave, slowly"
    assert first.overrides == ["match=video", "output.size=256"]
    assert first.shot.rights == {"license": "MIT", "consent": "yes"}
    assert (second.variant, second.seed_offset) == (2, 1)
    assert third.shot.motion == MEDIA / "gesture_asl_book.mkv" and third.shot.mask is None
    assert (third.shot.rights, third.overrides, third.shot.prompt) == ({}, [], "")


def test_yaml_campaign_adds_shots_from_a_parquet_list(folder):
    table = pa.table({
        "id": ["walk", None],
        "motion": ["media/walk_two_people_toward_camera.gif", "s3://renders/clips/book.mkv"],
        "character": [CHARACTER, "s3://renders/characters/candycorn.png"],
        "variants": pa.array([2, None], pa.int64()),
        "rights.motion_source": ["Intel", None],
    })
    pq.write_table(table, folder / "extra.parquet")
    path = write_yaml(folder, f"""
        name: mixed
        defaults: [output.size=256]
        shots_file: extra.parquet
        shots:
          - id: please
            motion: {MOTION}
            character: {CHARACTER}
    """)
    campaign = load_campaign(path)
    assert campaign.defaults == ["output.size=256"]
    assert [s.shot.shot_id for s in campaign.shots] == ["please", "walk", "walk-v2", None]
    walk = campaign.shots[1].shot
    assert walk.motion == folder / "media" / "walk_two_people_toward_camera.gif" and walk.motion.is_file()
    assert walk.rights == {"motion_source": "Intel"}
    remote = campaign.shots[3].shot
    assert remote.motion == "s3://renders/clips/book.mkv"
    assert remote.character == "s3://renders/characters/candycorn.png"


def test_uris_are_kept_verbatim_and_unknown_schemes_refused(folder):
    path = write_csv(folder, """
        motion,character,skeleton
        s3://bucket/a b/walk.MP4,s3://bucket/x/../char.png,file:///data/skeleton.yaml
    """)
    shot = load_campaign(path).shots[0].shot
    assert (shot.motion, shot.character, shot.skeleton) == (
        "s3://bucket/a b/walk.MP4", "s3://bucket/x/../char.png", "file:///data/skeleton.yaml",
    )
    path = write_csv(folder, f"motion,character\n{MOTION},https://example.com/c.png\n")
    assert error_of(path) == (
        f"{path} row 1, column character: unsupported URI scheme 'https' — use a local path, file:// or s3://bucket/key"
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (f"motion,character\n{MOTION},{CHARACTER}\n{MOTION},\n", " row 2, column character: missing — give the character image"),
        (f"motion,character,variants\n{MOTION},{CHARACTER},1\n\n{MOTION},{CHARACTER},two\n",
         " row 3, column variants: 'two' is not a whole number — give variants as a whole number >= 1"),
        (f"motion,character,id\n{MOTION},{CHARACTER},../up\n", " row 1, column id: '../up' is not a valid id"),
        (f"motion,character,rights.license\n{MOTION},{CHARACTER},MIT,extra\n", " row 1: 4 values for 3 columns"),
        (f"motion,character,rights.owner\n{MOTION},{CHARACTER},me\n", " header, column 'rights.owner': unknown column"),
        (f"motion,prompt\n{MOTION},hi\n", " header: no character column — add a character column"),
        ("motion,character\n", ": has no rows"),
    ],
)
def test_bad_csv_rows_name_the_row_and_column(folder, rows, expected):
    path = write_csv(folder, rows)
    assert error_of(path).startswith(f"{path}{expected}")


def test_duplicate_ids_across_yaml_and_list_name_the_line_and_the_row(folder):
    write_csv(folder, f"id,motion,character\nsolo,{MOTION},{CHARACTER}\nwave,{MOTION},{CHARACTER}\n")
    path = write_yaml(folder, f"""
        name: dupes
        shots_file: shots.csv
        shots:
          - id: wave
            motion: {MOTION}
            character: {CHARACTER}
    """)
    assert error_of(path) == (
        f"{folder / 'shots.csv'} row 2, column id: duplicate shot id 'wave', already used at {path} line 4: shots[0].id"
        " — give every shot its own id"
    )


def test_parquet_row_errors_name_the_row_and_column(folder):
    pq.write_table(pa.table({"motion": [MOTION, MOTION], "character": [CHARACTER, None], "variants": [1, 2]}), folder / "list.parquet")
    assert error_of(folder / "list.parquet") == f"{folder / 'list.parquet'} row 2, column character: missing — give the character image"


def test_campaign_file_problems_are_named(folder):
    path = write_yaml(folder, "name: nothing\n")
    assert error_of(path) == f"{path}: no shots — add `shots:` (a list) or `shots_file:` (a CSV or Parquet list)"
    path = write_yaml(folder, "name: missing-list\nshots_file: nope.csv\n")
    assert re.match(rf"{re.escape(str(path))} line 2: shots_file: .*nope.csv not found", error_of(path))
    path = write_yaml(folder, "name: remote\nshots_file: s3://bucket/list.csv\n")
    assert error_of(path).startswith(f"{path} line 2: shots_file: must be a local file")
    (folder / "bad name.csv").write_text(f"motion,character\n{MOTION},{CHARACTER}\n")
    assert "is not a valid campaign name" in error_of(folder / "bad name.csv")
    (folder / "broken.parquet").write_text("not parquet")
    assert "not a readable Parquet file" in error_of(folder / "broken.parquet")


def test_a_shot_list_is_named_by_submit_name_not_only_by_its_file(folder, capsys):
    from farm import cli

    write_csv(folder, f"motion,character,id\n{MOTION},{CHARACTER},solo\n")
    assert load_campaign(folder / "shots.csv").name == "shots"  # OUT/shots/shots/solo without a name
    assert load_campaign(folder / "shots.csv", name="spring-ads").name == "spring-ads"
    assert cli.run(["submit", str(folder / "shots.csv"), "--name", "spring-ads", "--check"]) == 0
    assert "campaign spring-ads: 1 shot(s) ready" in capsys.readouterr().out
    # A name the output folder cannot take, or one name for a folder of campaigns, is refused before anything runs.
    assert cli.run(["submit", str(folder / "shots.csv"), "--name", "../up", "--check"]) == 2
    assert "--name '../up': not a valid campaign name" in capsys.readouterr().err
    assert cli.run(["submit", str(folder), "--name", "spring-ads"]) == 2
    assert "names one campaign, but a folder holds several" in capsys.readouterr().err
    (folder / "bad name.csv").write_text(f"motion,character\n{MOTION},{CHARACTER}\n")
    assert load_campaign(folder / "bad name.csv", name="good-name").name == "good-name"
