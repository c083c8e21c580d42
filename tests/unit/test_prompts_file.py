"""The prompts file of interactive prediction: parsing, 3D boxes, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samnet.core.errors import SamnetError
from samnet.prompting.prompts_file import SlicePrompt, load_prompts

SHAPES = {"case_a": (10, 40, 50), "xray": (1, 64, 64)}
LABELS = {1, 2}


def write(tmp_path: Path, content) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_boxes_clicks_and_3d_boxes_become_slice_prompts(tmp_path: Path) -> None:
    content = {
        "case_a": [
            {"class": 1, "slice": 3, "box": [1, 2, 11, 12]},
            {
                "class": 2,
                "slice": 4,
                "points": [[5, 6], [30, 30]],
                "point_labels": [1, 0],
            },
            {"class": 2, "box3d": [0, 0, 7, 50, 40, 10]},
        ],
        "xray": [{"class": 1, "points": [[10.5, 20]]}],
    }
    prompts = load_prompts(write(tmp_path, content), SHAPES, LABELS)
    case = prompts["case_a"]
    assert case[0] == SlicePrompt(1, 3, box=(1.0, 2.0, 11.0, 12.0))
    assert case[1] == SlicePrompt(
        2, 4, points=((5.0, 6.0), (30.0, 30.0)), point_labels=(1, 0)
    )
    assert [p.slice for p in case[2:]] == [7, 8, 9]
    assert all(p.box == (0.0, 0.0, 50.0, 40.0) and p.label == 2 for p in case[2:])
    assert prompts["xray"] == [
        SlicePrompt(1, 0, points=((10.5, 20.0),), point_labels=(1,))
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ([1, 2], "must hold a JSON object"),
        ({"case_z": []}, "case 'case_z' is not among the input images"),
        ({"case_a": [{"class": 3, "slice": 0, "box": [0, 0, 1, 1]}]}, "class 3 is not"),
        ({"case_a": [{"slice": 0, "box": [0, 0, 1, 1]}]}, "class None is not"),
        (
            {"case_a": [{"class": 1, "slice": 0, "box": [0, 0, 60, 10]}]},
            "not a box inside",
        ),
        ({"case_a": [{"class": 1, "slice": 0, "box": [9, 0, 3, 10]}]}, "x0 < x1"),
        ({"case_a": [{"class": 1, "slice": 0, "box": [0, 0, 3]}]}, "list of 4 numbers"),
        (
            {"case_a": [{"class": 1, "slice": 10, "box": [0, 0, 3, 3]}]},
            "slice 10 is not",
        ),
        ({"case_a": [{"class": 1, "box": [0, 0, 3, 3]}]}, "slice None is not"),
        (
            {"case_a": [{"class": 1, "slice": 1, "points": [[50, 1]]}]},
            "outside the image",
        ),
        (
            {
                "case_a": [
                    {"class": 1, "slice": 1, "points": [[5, 1]], "point_labels": [2]}
                ]
            },
            "'point_labels' must be",
        ),
        (
            {"case_a": [{"class": 1, "box3d": [0, 0, 5, 9, 9, 11]}]},
            "spans slices 5.0 to 11.0",
        ),
        ({"case_a": [{"class": 1, "slice": 1}]}, "neither 'box', 'points' nor 'box3d'"),
    ],
)
def test_each_bad_entry_names_the_file_the_entry_and_the_problem(
    tmp_path: Path, content, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(SamnetError, match=message) as raised:
        load_prompts(path, SHAPES, LABELS)
    assert raised.value.path == path and raised.value.fix
    if isinstance(content, dict) and content.get("case_a"):
        assert "case 'case_a', prompt 0" in str(raised.value)
