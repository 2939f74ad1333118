"""Runs a trained segmenter's int8 file (uint8 input, TFLite metadata) in MediaPipe Tasks.

Exports ``--model`` (a .keras file from train.py) at ``--size`` as a post-training int8 file
that takes uint8 RGB pixels (``export_tflite(..., input_type="uint8")``), writes its TFLite
metadata (``write_metadata``), runs MediaPipe's ``ImageSegmenter`` on the held-out images and
prints how often its category mask equals (a) the LiteRT interpreter's argmax of the same file
and (b) the Keras model's argmax. Needs the ``[mediapipe]`` extra.

    python applications/segmentation/mediapipe_check.py --model runs/ca/model.keras \\
        --source pennfudan --data-dir ../shared/data/pennfudan --eval-size 224
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import add_data_arguments, finish_data_arguments, load_split  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    add_data_arguments(parser)
    args = finish_data_arguments(parser.parse_args(argv))
    import keras
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision

    import keras_coordatt  # noqa: F401 - registers the layers
    from keras_coordatt.export import LiteRTModel, export_tflite, write_metadata
    from keras_coordatt.tasks import at_input_size
    from keras_coordatt.tasks import segmentation_data as sd

    size = args.eval_size
    model = at_input_size(keras.saving.load_model(args.model, compile=False), size)

    def pixels(split: str, count: int | None = None):
        """uint8 images (the evaluation resize + pad) and their masks."""
        raw, names = load_split(args, split)
        data = sd.eval_pipeline(raw, size, args.batch_size).unbatch()
        images, masks = [], []
        for image, mask in data.take(count) if count else data:
            images.append(np.clip(np.round((image.numpy() + 1.0) * 127.5), 0, 255))
            masks.append(mask.numpy())
        return np.stack(images).astype(np.uint8), np.stack(masks), names

    calibration, _, _ = pixels(args.train_split, args.calibration_images)
    images, masks, names = pixels(args.val_split)
    labels = list(names or [str(i) for i in range(model.output_shape[-1])])
    with tempfile.TemporaryDirectory() as folder:
        path = export_tflite(model, os.path.join(folder, "segmenter_uint8.tflite"), mode="int8",
                             input_type="uint8", representative_dataset=calibration)
        write_metadata(path, labels=labels, name="DeepLabV3 (keras-coordatt)")
        interpreter = LiteRTModel(path)
        options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=path),
                                               output_category_mask=True)
        same_as_interpreter = same_as_keras = labelled = 0
        with vision.ImageSegmenter.create_from_options(options) as segmenter:
            for image, mask in zip(images, masks, strict=True):
                result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                    data=np.ascontiguousarray(image)))
                category = result.category_mask.numpy_view().squeeze()
                lite = interpreter(image[None])[0].argmax(-1)
                pre = keras_coordatt.applications.preprocess_input(image[None].astype("float32"))
                reference = model.predict_on_batch(pre)[0].argmax(-1)
                valid = mask != 255  # not the evaluation padding
                labelled += valid.sum()
                same_as_interpreter += (category == lite)[valid].sum()
                same_as_keras += (category == reference)[valid].sum()
    print(f"{len(images)} held-out images at {size}x{size}, {labelled} labelled pixels")
    print(f"MediaPipe category mask == LiteRT argmax of the same file: "
          f"{100 * same_as_interpreter / labelled:.2f} %")
    print(f"MediaPipe category mask == Keras model argmax: {100 * same_as_keras / labelled:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
