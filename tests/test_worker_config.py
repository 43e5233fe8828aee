"""Worker settings: one declaration per setting, options by keyword, tables that must agree."""

import argparse
from dataclasses import fields

import pytest

from common.config import to_argv
from common.errors import FatalError
from inference import config as wconfig
from inference.config import MAX_MASK_AGE_S, MODEL_FIELDS, WorkerConfig, max_mask_age
from inference.run import add_model_arguments, parse, segmenter_options
from inference.segmenter import SegmenterOptions, available
from inference.segmenter import max_mask_age as module_max_mask_age


def test_max_mask_age_table_equals_each_segmenter_module():
    """launch.py reads the table (no OpenCV import); the modules state the truth."""
    assert sorted(MAX_MASK_AGE_S) == available() == wconfig.model_names()
    for model in available():
        assert max_mask_age(model) == module_max_mask_age(model), model


def test_segmenter_options_built_by_keyword_from_every_model_knob():
    c = parse(["--confidence", "0.7", "--mask-threshold", "0.2", "--people", "all",
               "--proposals", "20", "--input-size", "320", "--threads", "1",
               "--selfie-variant", "square"])  # fmt: skip
    o = segmenter_options(c)
    assert o == SegmenterOptions(
        confidence=0.7,
        mask_threshold=0.2,
        people="all",
        proposals=20,
        input_size=320,
        threads=1,
        selfie_variant="square",
    )
    knobs = {f.name for f in fields(SegmenterOptions)} - {"extra"}
    assert knobs <= set(MODEL_FIELDS)


def test_defaults_and_round_trip_through_the_command_line():
    c = parse([])
    assert (c.model, c.nice, c.mask_interval, c.liveness, c.verbose) == (
        "maskrcnn",
        10,
        0.0,
        5.0,
        False,
    )
    d = parse(["--model", "selfie", "--mask-interval", "2.5", "--verbose", "--name", "w"])
    assert parse(to_argv(d)) == d


@pytest.mark.parametrize(
    "kw",
    [
        {"mask_interval": -1.0},
        {"mask_interval": float("nan")},
        {"proposals": 0},
        {"liveness": 0.2},
        {"nice": 20},
        {"connect": "localhost:1"},
    ],  # fmt: skip
)
def test_invalid_settings_cannot_exist(kw):
    with pytest.raises(FatalError):
        WorkerConfig(**kw)


def test_launch_model_flags_are_the_workers_own():
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    a = p.parse_args(["--model", "selfie", "--proposals", "20"])
    assert set(vars(a)) == set(MODEL_FIELDS)
    assert (a.model, a.proposals, a.threads) == ("selfie", 20, 0)
