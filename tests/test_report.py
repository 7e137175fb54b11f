"""Report items: the curves of a phase fit their figure, and a report built with another config
than the results' says so."""

import json

import matplotlib.text

from stresnet.report import phase_curves_figure
from stresnet.report_config import SAME_CONFIG, config_check


def test_every_text_of_the_curves_figure_lies_inside_it(tmp_path):
    """The y label once read "raining loss (summed over positions and stream": cut by the edge."""
    curves = tmp_path / "st_resnet_star" / "curves.csv"
    curves.parent.mkdir()
    curves.write_text("step,lr,loss,accuracy,samples_per_s,data_wait\n"
                      "1,0.001,4.2,0.0,10,0.1\n2,0.001,3.1,0.25,10,0.1\n3,0.0001,2.5,0.5,10,0.1\n")
    fig = phase_curves_figure(curves)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = {t.get_text() for t in fig.findobj(matplotlib.text.Text)}
    assert {"loss, summed over positions and streams", "training accuracy, mean of 5 steps", "learning rate",
            "loss", "accuracy", "SGD step", "st_resnet_star: 3 steps"} <= shown
    # all that is drawn (titles, labels, tick labels) inside the figure; get_tightbbox is in inches
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= fig.bbox.width and drawn.y1 <= fig.bbox.height, drawn
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]  # each axes with its texts, in pixels
    for left, right in zip(boxes, boxes[1:]):  # neighbours side by side do not overlap
        assert left.x1 <= right.x0, (left, right)


def test_results_of_another_config_are_named_with_both_digests(tmp_path):
    split = tmp_path / "split1.json"
    split.write_text(json.dumps({"stages": {}, "config_digest": "aaaa"}))
    mean = tmp_path / "mean.json"
    mean.write_text(json.dumps({"splits": 2, "table3": {}, "config_digests": ["aaaa", "bbbb"]}))
    assert config_check(split, "aaaa") == SAME_CONFIG
    assert config_check(split, "cccc") == ("WARNING: made with another config (digest aaaa), not the one of this "
                                           "report (cccc); build the report with the run's --configfile")
    # splits made with two configs are another config's even where one of them is this one
    assert config_check(mean, "aaaa").startswith("WARNING: made with another config (digest aaaa, bbbb)")
