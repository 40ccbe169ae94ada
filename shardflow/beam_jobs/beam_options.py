"""Beam's pipeline options, each view made once.

Beam asks the options for a view (`options.view_as(TypeOptions)`) at every transform applied and every type
check: hundreds of times while the conversion's pipeline is built, each time parsing the flags anew with a parser
of every option Beam knows (0.6 s of the launcher's time at start). A view holds no state of its own (every view
reads and writes the options' one dictionary), so one view per class serves every ask.
"""

from __future__ import annotations

from typing import TypeVar

from apache_beam.options.pipeline_options import PipelineOptions

View = TypeVar("View", bound=PipelineOptions)


class BeamOptions(PipelineOptions):
    """`PipelineOptions` whose `view_as` makes each class's view once."""

    def view_as(self, cls: type[View]) -> View:
        views = self.__dict__.setdefault("_views", {})  # (PipelineOptions refuses attributes it does not know)
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]
