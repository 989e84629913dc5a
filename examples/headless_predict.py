"""Segment an image with deepseg through ImageJ, headless (no display needed), from Python.

    python examples/headless_predict.py MODEL_FOLDER IMAGE.tif OUT_LABELS.tif

Two equivalent routes are shown: running the menu command "DeepSeg Predict..." on an ImageJ image, and
calling the engine on the image converted to xarray, then converting the labels back to an ImagePlus.
"""

from __future__ import annotations

import sys

import numpy as np

import fiji_bridge
from engine.prediction import predict


def main(model: str, image_path: str, out_path: str) -> None:
    session = fiji_bridge.start(mode="headless", memory="4g")  # embedded ImageJ 1.x, no window, no display

    imp = session.open_image(image_path)  # ImageJ reads the file (any format ImageJ opens)
    print(f"opened {imp.getTitle()}: {imp.getWidth()}x{imp.getHeight()}, {imp.getStackSize()} plane(s)")

    # Route 1: the Plugins > deepseg command, exactly as a macro would run it.
    result = session.run("DeepSeg Predict...", f"model=[{model}] overlap=0.25 output=labels", image=imp)
    labels_imp = result.images[0]  # 8/16-bit, label LUT, calibration of the source image

    # Route 2: the engine on the xarray view of the image, then back to an ImagePlus.
    image = session.to_xarray(imp)  # dims ("pln",) "row", "col"; spacing and unit in attrs
    prediction = predict(model, image, overlap=0.25)
    labels_imp2 = session.labels_to_imageplus(prediction.labels, f"{imp.getTitle()}-labels")
    assert np.array_equal(session.to_xarray(labels_imp).values, session.to_xarray(labels_imp2).values)

    # Save with ImageJ (a TIFF Fiji opens with the label colours and the calibration).
    session.IJ.saveAsTiff(labels_imp, out_path)
    counts = np.bincount(session.to_xarray(labels_imp).values.ravel())
    print(f"saved {out_path}; voxels per class: {counts.tolist()}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
