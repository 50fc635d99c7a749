"""Batch cutouts' listing: shards, output names, locations and what a listing skips."""

from __future__ import annotations

import pytest

from serving.batch.listing import (
    Shard,
    ShardError,
    Source,
    collisions,
    images,
    output_path,
    parse_shard,
    shard_from_env,
    take_shard,
)
from serving.batch.locations import LocalFolder, open_location, overlap, safe_relative


def test_shards_cover_every_image_once_balanced_and_stable():
    listing = [Source(f"d{i % 7}/img{i:03d}.jpg", i) for i in range(100)] + [Source("notes.txt", 1)]
    candidates = images(listing)
    assert len(candidates) == 100
    assert [s.path for s in candidates] == sorted(s.path for s in candidates)
    shards = [take_shard(candidates, Shard(i, 3)) for i in range(3)]
    taken = [s.path for shard in shards for s in shard]
    assert sorted(taken) == sorted(s.path for s in candidates)
    assert len(set(taken)) == 100
    assert sorted(len(shard) for shard in shards) == [33, 33, 34]
    shuffled = images(list(reversed(listing)))  # the order a listing arrives in does not matter
    assert [s.path for s in take_shard(shuffled, Shard(1, 3))] == [s.path for s in shards[1]]


def test_output_names_keep_the_path_and_take_the_formats_extension():
    assert output_path("a/b/photo.JPG", "png") == "a/b/photo.png"
    assert output_path("scan001", "webp") == "scan001.webp"
    assert output_path("x.tar.gz.jpeg", "jpeg") == "x.tar.gz.jpg"
    sources = [Source("p/photo.jpg", 1), Source("p/photo.png", 1), Source("p/other.png", 1)]
    assert collisions(images(sources), "png") == {"p/photo.png": "p/photo.jpg"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("3/3", "index must be from 0"),
        ("0/0", "count at least 1"),
        ("-1/3", "INDEX/COUNT"),
        ("1", "INDEX/COUNT"),
    ],
)
def test_bad_shards_are_refused(text, error):
    with pytest.raises(ShardError, match=error):
        parse_shard(text)


def test_shard_from_cloud_run_variables():
    assert shard_from_env({}) == Shard(0, 1)
    assert shard_from_env({"CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "5"}) == Shard(2, 5)
    for env, error in (
        ({"CLOUD_RUN_TASK_INDEX": "1"}, "both"),
        ({"CLOUD_RUN_TASK_INDEX": "x", "CLOUD_RUN_TASK_COUNT": "2"}, "whole number"),
        ({"CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "2"}, "index must be"),
    ):
        with pytest.raises(ShardError, match=error):
            shard_from_env(env)


def test_remote_names_that_leave_a_folder_and_overlapping_locations_are_refused(tmp_path):
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "a//b.jpg", "a\\b.jpg", "./a.jpg"):
        assert not safe_relative(bad), bad
    assert safe_relative("a/b/photo.jpg")
    src = open_location(str(tmp_path / "in"))
    assert overlap(src, open_location(str(tmp_path / "in" / "out")))
    assert overlap(src, open_location(str(tmp_path)))
    assert not overlap(src, open_location(str(tmp_path / "input")))  # a shared name prefix is not a folder
    assert overlap(open_location("gs://b/in"), open_location("gs://b/in/out"))
    assert overlap(open_location("gs://b"), open_location("gs://b/out"))
    assert not overlap(open_location("gs://b/in"), open_location("gs://b/inx"))
    assert not overlap(open_location("gs://b/in"), open_location("gs://c/in"))


def test_local_listing_skips_hidden_files_and_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / ".inspyrenet-batch").mkdir()
    (tmp_path / ".inspyrenet-batch" / "y.png").write_bytes(b"1")
    (tmp_path / "a" / ".z.png.123.part").write_bytes(b"1")
    (tmp_path / "link.jpg").symlink_to("/etc/hostname")
    assert [s.path for s in LocalFolder(tmp_path).list_sources()] == ["a/x.jpg"]


def test_the_inspyrenet_command_has_batch_too():
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, ["batch", "--help"])
    assert result.exit_code == 0
    assert "CLOUD_RUN_TASK_INDEX" in result.output
