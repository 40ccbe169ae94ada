"""`BeamOptions`: each view made once, and every view still the same options."""

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from shardflow.beam_jobs.beam_options import BeamOptions


def test_views_are_made_once_and_share_the_options():
    options = BeamOptions(["--direct_num_workers=3", "--runner=FnApiRunner"])
    direct = options.view_as(DirectOptions)
    assert options.view_as(DirectOptions) is direct and direct.direct_num_workers == 3
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    direct.direct_num_workers = 5  # set through one view: seen by a new view, by the options, and by plain Beam's
    assert options.view_as(DirectOptions).direct_num_workers == 5
    assert options.get_all_options()["direct_num_workers"] == 5
    assert PipelineOptions.from_dictionary(options.get_all_options()).view_as(DirectOptions).direct_num_workers == 5
