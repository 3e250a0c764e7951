"""graft.api.locations: one canonical reading of a path or URI; every spelling of another tenant's
part of the storage is seen as that part (issue 21, finding 6)."""

from __future__ import annotations

import pytest

from graft.api.locations import LocationError, canonical, parse, part_below, under

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

ROOT = "/mnt/graft"

OTHER_TENANT_SPELLINGS = [
    "/mnt/graft/team-b/model",
    "//mnt/graft/team-b/model",
    "///mnt//graft///team-b/./model/",
    "file:///mnt/graft/team-b/model",
    "file://localhost/mnt/graft/team-b/model",
    "file:/mnt/graft/team-b/model",
    "FILE:///mnt/graft/team-b/model",
    "file:///mnt/graft/team-%62/model",
    "file:////mnt/graft/team-b/model",
]


@pytest.mark.parametrize("value", OTHER_TENANT_SPELLINGS)
def test_every_spelling_of_another_part_is_that_part(value: str) -> None:
    assert part_below(value, ROOT) == "team-b"


@pytest.mark.parametrize("value", [
    "/mnt/graft/team-a/../team-b/model",
    "/mnt/graft/team-a/%2e%2e/team-b",
    "/mnt/graft/team-a/%252e%252e/team-b",
    "file:///mnt/graft/team-a/%2e%2e/team-b",
    "file:///mnt/graft/team-a/%252e%252e/team-b",
    "/mnt/graft/team-%62/model",
    "s3://bucket/../other/x",
    "s3://bucket/a/%2e%2e/b",
    "s3://../x",
    "s3:///no-bucket",
    "/mnt/graft/team-a\\..\\team-b",
    "/mnt/graft/team-a/\x00/x",
    "file://other-host/mnt/graft/team-a",
    "file:relative/path",
    "https://example.com/a/%2e%2e/b",
    "",
])
def test_ambiguous_or_climbing_spellings_are_refused(value: str) -> None:
    with pytest.raises(LocationError):
        parse(value)


def test_relative_paths_stay_relative_and_are_under_no_root() -> None:
    assert canonical("./data//train.csv") == "data/train.csv"
    assert not under("mnt/graft/team-b", ROOT)


def test_roots_match_on_segment_boundaries() -> None:
    assert under("/mnt/graft/team-a/x", "/mnt/graft/team-a/")
    assert under("/mnt/graft/team-a", "/mnt/graft/team-a")
    assert not under("/mnt/graft/team-ab/x", "/mnt/graft/team-a")
    assert part_below(ROOT, ROOT) is None


def test_object_store_uris_are_canonical() -> None:
    assert canonical("S3A://Bucket//team-a/./x/") == "s3://bucket/team-a/x"
    assert part_below("s3a://BUCKET/graft/team-b/x", "s3://bucket/graft") == "team-b"
    assert not under("gs://bucket/graft/team-a", "s3://bucket/graft")
    assert not under("s3://bucket-b/graft", "s3://bucket")


def test_web_urls_decode_their_own_percent_encoding_once() -> None:
    assert canonical("https://example.com/data%20set/x.csv") == "https://example.com/data set/x.csv"
